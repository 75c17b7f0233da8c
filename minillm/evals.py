"""TransformerLens' evals that make sense without a tokenizer: `induction_loss`.

TransformerLens' `evals.induction_loss(model)` draws random token ids, repeats them, and returns the
next-token loss on the second half: low when the model copies by induction. Its other evals read
text data sets (Pile, OpenWebText, ...), which toy models here do not have.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from minillm.model import GPT


def induction_loss(
    model: GPT,
    tokenizer=None,
    batch_size: int = 100,
    subseq_len: int | None = None,
    prepend_bos: bool = True,
    *,
    bos: int = 0,
    key: jax.Array | None = None,
) -> jax.Array:
    """The mean next-token loss on the second copy of a random sequence repeated twice, as
    TransformerLens' `evals.induction_loss`: tokens [batch_size, 2 * subseq_len] (the first replaced
    by `bos` if prepend_bos), the loss from position subseq_len + 1 on. Differences, said here:
    token ids are drawn from the whole vocabulary (TL draws 100..20000, a GPT-2 range), subseq_len
    defaults to what fits the context (n_ctx // 2; TL's 384), and the draw comes from `key`."""
    if tokenizer is not None:
        raise TypeError("induction_loss: minillm models have no tokenizer; leave tokenizer=None")
    n_ctx = model.cfg.n_ctx
    subseq_len = n_ctx // 2 if subseq_len is None else int(subseq_len)
    if not 1 <= subseq_len <= n_ctx // 2:
        raise ValueError(f"induction_loss: 2 * subseq_len must fit n_ctx={n_ctx}, got subseq_len={subseq_len}")
    key = jax.random.key(0) if key is None else key
    first = jax.random.randint(key, (batch_size, subseq_len), 0, model.cfg.d_vocab)
    tokens = jnp.concatenate([first, first], axis=1)
    if prepend_bos:
        tokens = tokens.at[:, 0].set(bos)
    per_token = model(tokens, return_type="loss", loss_per_token=True)  # [b, 2 * subseq_len - 1]
    return per_token[:, subseq_len + 1 :].mean()
