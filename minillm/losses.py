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

from minillm.tasks import Batch

if TYPE_CHECKING:
    from minillm.model import GPT

MetricFn = Callable[["GPT"], dict[str, float]]  # a metric callback of train(): model -> {name: value}


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


def masked_cross_entropy(logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over the positions where batch.mask is 1."""
    nll = cross_entropy(logits, batch.targets)  # [b, p]
    n = jnp.maximum(batch.mask.sum(), 1.0)
    loss = (nll * batch.mask).sum() / n
    accuracy = ((logits.argmax(-1) == batch.targets) * batch.mask).sum() / n
    return loss, accuracy


def loss_fn(model: GPT, batch: Batch) -> tuple[jax.Array, jax.Array]:
    return masked_cross_entropy(model(batch.tokens), batch)


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


def evaluate(model: GPT, batch: Batch, chunk_size: int = 128) -> tuple[jax.Array, jax.Array]:
    """Masked loss and accuracy over a large batch, computed `chunk_size` sequences at a time.

    The same numbers as `loss_fn` on the whole batch (padding rows have mask 0). Jit it, or call
    it inside jit: the chunks run as one `lax.map`.
    """

    def sums(chunk: Batch):
        logits = model(chunk.tokens)
        nll = cross_entropy(logits, chunk.targets)
        correct = logits.argmax(-1) == chunk.targets
        return (nll * chunk.mask).sum(), (correct * chunk.mask).sum(), chunk.mask.sum()

    loss_sum, correct_sum, count = (x.sum() for x in map_in_chunks(sums, batch, chunk_size))
    count = jnp.maximum(count, 1.0)
    return loss_sum / count, correct_sum / count
