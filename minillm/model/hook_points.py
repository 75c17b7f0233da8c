"""The hook points of a config, read off the model itself: names, in forward order, and shapes.

Nothing here lists names: one abstract forward pass (`jax.eval_shape`, no arithmetic done) of a
model whose weights are only shapes records every name the model's code reaches and the shape of
its activation. So this catalogue cannot drift from the model; the tests compare it with the
table in docs/conventions.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from minillm.model.config import GPTConfig
from minillm.model.hooks import record_hook_shapes, unknown_name_error
from minillm.model.network import Transformer


@functools.lru_cache(maxsize=64)
def hook_shapes(cfg: GPTConfig, batch: int = 1, pos: int = 1) -> dict[str, tuple[int, ...]]:
    """{hook name: activation shape} for tokens [batch, pos], in the order the forward pass reaches them."""
    tokens = jax.ShapeDtypeStruct((batch, pos), jnp.int32)
    return record_hook_shapes(Transformer.forward, nnx.eval_shape(lambda: Transformer(cfg)), tokens)


def hook_names(cfg: GPTConfig) -> list[str]:
    """Every hook point of a model with this config, in forward order."""
    return list(hook_shapes(cfg))


def hook_shape(cfg: GPTConfig, name: str, batch: int, pos: int) -> tuple[int, ...]:
    """The shape of a hook point's activation for an input of [batch, pos] tokens."""
    shapes = hook_shapes(cfg, batch, pos)
    if name not in shapes:
        raise unknown_name_error(name, list(shapes))
    return shapes[name]
