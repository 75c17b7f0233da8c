"""Losses and evaluation: what training minimises and what everything else measures it with.

The trainer, the Fourier tools, the lessons and the benchmarks all import their losses from here.
`cross_entropy` stays accurate in float32 when the loss is tiny; `masked_cross_entropy` and
`loss_fn` average it over the positions a task marks; `evaluate` computes the same over a data set
too large for one forward pass, in chunks, as one compiled program (`map_in_chunks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from minillm.model.network import Transformer

Batch = Any  # minillm.tasks.Batch: a NamedTuple of tokens, targets and mask [b, p]; only its fields are read here


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target], accurate in float32 even when the loss is tiny.

    The usual logsumexp(x) - x_target computes its gradient for the target as p_target - 1, which
    rounds to 0 once p_target > 1 - 6e-8, while the other classes keep gradients of ~1e-9: the
    update is then no longer a cross-entropy gradient, and grokking runs show "slingshot" loss
    spikes (Nanda et al. 2023 computed this loss in float64 to avoid them). Written as
    log(1 + sum_{j != target} exp(x_j - x_target)), every term and its gradient stay accurate.
    """
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)  # [..., 1]
    diff = logits - target_logit  # [..., v], 0 at the target
    shift = jnp.maximum(diff.max(axis=-1, keepdims=True), 0.0)  # > 0 only when a wrong class wins
    others = jnp.where(jnp.arange(logits.shape[-1]) == targets[..., None], 0.0, jnp.exp(diff - shift))
    # log(exp(-shift) + sum others) + shift, as log1p(...) so that a tiny sum keeps its digits
    return (jnp.log1p(jnp.expm1(-shift) + others.sum(axis=-1, keepdims=True)) + shift)[..., 0]


def check_next_tokens(tokens: jax.Array, d_vocab_out: int) -> None:
    """Refuse a next token that has no logit (concrete tokens only; traced ones cannot be read)."""
    if not isinstance(tokens, jax.core.Tracer) and int(jnp.max(tokens[:, 1:], initial=0)) >= d_vocab_out:
        raise ValueError(
            f"next_token_loss: a token id {int(jnp.max(tokens[:, 1:]))} has no logit (d_vocab_out = "
            f"{d_vocab_out}): the next-token loss needs the output vocabulary to hold the input tokens"
        )


def next_token_loss(
    logits: jax.Array, tokens: jax.Array, attention_mask: jax.Array | None = None, per_token: bool = False
) -> jax.Array:
    """TransformerLens' language-model loss (`lm_cross_entropy_loss`): the cross-entropy of each
    position's logits against the next token, logits [b, p, v] and tokens [b, p]. The mean over the
    p - 1 predicted positions, or per_token=True: [b, p - 1]. `attention_mask` [b, p] (1 for real
    tokens) leaves out predictions of, and from, padding, as TransformerLens does."""
    if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"next_token_loss: logits [b, p, v] and tokens [b, p], got {logits.shape} and {tokens.shape}")
    check_next_tokens(tokens, logits.shape[-1])
    nll = cross_entropy(logits[:, :-1], tokens[:, 1:])  # [b, p - 1]
    if attention_mask is None:
        return nll if per_token else nll.mean()
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape != tokens.shape:  # JAX would fail unnamed, or broadcast a [p] mask
        raise ValueError(
            f"next_token_loss: attention_mask must have the tokens' shape {tuple(tokens.shape)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    mask = (attention_mask[:, 1:] * attention_mask[:, :-1]).astype(nll.dtype)
    if per_token:
        return nll * mask
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


RETURN_TYPES = ("logits", "loss", "both", None)


def model_output(
    logits: jax.Array,
    targets: jax.Array | None,
    return_type: str | None,
    loss_per_token: bool = False,
    attention_mask: jax.Array | None = None,
) -> Any:
    """What a model call returns for TransformerLens' `return_type`: the logits, the next-token loss,
    both (logits, loss), or None. `targets`: the tokens the loss predicts (GPT.run_with_cache has
    checked the return type and worked them out)."""
    if return_type is None or return_type == "logits":
        return None if return_type is None else logits
    loss = next_token_loss(logits, targets, attention_mask, loss_per_token)
    return loss if return_type == "loss" else (logits, loss)


def masked_cross_entropy(logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over the positions where batch.mask is 1."""
    nll = cross_entropy(logits, batch.targets)  # [b, p]
    n = jnp.maximum(batch.mask.sum(), 1.0)
    loss = (nll * batch.mask).sum() / n
    accuracy = ((logits.argmax(-1) == batch.targets) * batch.mask).sum() / n
    return loss, accuracy


def loss_fn(model: Transformer, batch: Batch, positions: tuple[int, ...] | None = None) -> tuple[jax.Array, jax.Array]:
    """masked_cross_entropy of the model on a batch. `positions` (a task's loss_positions: the mask
    is 0 everywhere else) computes the logits there only, which gives the same loss for less work."""
    if positions is None:
        return masked_cross_entropy(model.forward(batch.tokens), batch)
    logits = model.forward(batch.tokens, output_positions=positions)  # [b, len(positions), v]
    at = jnp.asarray(positions)
    return masked_cross_entropy(logits, batch._replace(targets=batch.targets[:, at], mask=batch.mask[:, at]))


def map_in_chunks(fn: Callable[[Any], Any], xs: Any, chunk_size: int) -> Any:
    """fn on `chunk_size` rows of xs at a time (a pytree of [n, ...] arrays), as one `lax.map`.

    Returns fn's outputs stacked over chunks, [n_chunks, ...]. The last chunk is padded with rows
    of zeros: a caller drops them (`out.reshape(-1, ...)[:n]`) or gives them zero weight. Call it
    inside jit. Why chunks: the attention tensors of one big batch stop fitting in the CPU's
    cache, which makes one large forward pass slower than several small ones.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    chunk_size = min(chunk_size, n)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    padded = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)), xs)
    chunks = jax.tree.map(lambda x: x.reshape(n_chunks, chunk_size, *x.shape[1:]), padded)
    return jax.lax.map(fn, chunks)


def evaluate(model: Transformer, batch: Batch, chunk_size: int = 128) -> tuple[jax.Array, jax.Array]:
    """Masked loss and accuracy over a large batch, computed `chunk_size` sequences at a time.

    The same numbers as `loss_fn` on the whole batch (padding rows have mask 0). Jit it, or call
    it inside jit: the chunks run as one `lax.map`.
    """

    def sums(chunk: Batch):
        logits = model.forward(chunk.tokens)
        nll = cross_entropy(logits, chunk.targets)
        correct = logits.argmax(-1) == chunk.targets
        return (nll * chunk.mask).sum(), (correct * chunk.mask).sum(), chunk.mask.sum()

    loss_sum, correct_sum, count = (x.sum() for x in map_in_chunks(sums, batch, chunk_size))
    count = jnp.maximum(count, 1.0)
    return loss_sum / count, correct_sum / count
