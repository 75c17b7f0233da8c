"""TransformerLens' induction_loss (minillm/evals.py): the loss on the second copy of a repeated
random sequence, and the requests it cannot serve refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT
from minillm.evals import induction_loss

CFG = CONFIGS["attn_only_ln"]  # d_vocab_out == d_vocab: every token is a next-token target


def test_induction_loss_is_the_loss_on_the_second_copy():
    model = GPT(CFG)
    key = jax.random.key(4)
    half = CFG.n_ctx // 2  # the default subseq_len: two copies fill the context
    first = jax.random.randint(key, (5, half), 0, CFG.d_vocab)
    tokens = jnp.concatenate([first, first], axis=1).at[:, 0].set(0)
    per_token = np.asarray(model(tokens, return_type="loss", loss_per_token=True))
    got = float(induction_loss(model, batch_size=5, key=key))
    assert got == pytest.approx(per_token[:, half + 1 :].mean(), rel=1e-5)
    with pytest.raises(TypeError, match="tokenizer"):
        induction_loss(model, tokenizer=object())
    with pytest.raises(ValueError, match="n_ctx"):
        induction_loss(model, subseq_len=half + 1)
