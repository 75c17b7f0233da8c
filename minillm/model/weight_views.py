"""TransformerLens' weight properties: `model.W_Q`, `model.W_in`, `model.QK`, ... stacked over layers.

TransformerLens users write `model.W_Q[layer, head]` and `model.OV[layer, head]`; the weights live
per block here (`model.blocks[l].attn.W_Q`, `state_dict()["blocks.0.attn.W_Q"]`). These read-only
views stack them with TransformerLens' shapes:

    W_Q, W_K, W_V [n_layers, n_heads, d_model, d_head]     b_Q, b_K, b_V [n_layers, n_heads, d_head]
    W_O [n_layers, n_heads, d_head, d_model]                b_O [n_layers, d_model]
    W_in [n_layers, d_model, d_mlp]  b_in [n_layers, d_mlp]  W_out [n_layers, d_mlp, d_model]  b_out [n_layers, d_model]
    W_E [d_vocab, d_model]  W_pos [n_ctx, d_model]  W_E_pos [d_vocab + n_ctx, d_model]  W_U [d_model, d_vocab_out]  b_U
    QK, OV: FactoredMatrix [n_layers, n_heads, d_model, d_model]

They are read-only copies. Outside `jax.jit` they are NumPy arrays, so that `model.W_Q[5]` on a
2-layer model raises IndexError as in PyTorch (a JAX array would clamp it to the last layer and
return plausible numbers) and `model.W_Q[0, 1] = ...` raises instead of editing a copy (change
weights with `load_state_dict`). Inside a traced function they are JAX arrays. GPT inherits them;
this module imports nothing from the model. `stack_layers`, `QK` and `OV` are the functions the
views and minillm.circuits share: per-layer weights are stacked here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model.factored_matrix import FactoredMatrix


def _view(x: jax.Array) -> jax.Array | np.ndarray:
    """A read-only NumPy copy of a concrete array (range-checked indexing); traced arrays as they are."""
    if isinstance(x, jax.core.Tracer):
        return x
    out = np.array(x)
    out.setflags(write=False)
    return out


def stack_layers(model: Any, part: str, name: str) -> jax.Array:
    """The weight blocks.{l}.<part>.<name> of every layer, stacked: [n_layers, ...] (JAX, traced or not)."""
    if part == "mlp" and model.cfg.attn_only:
        raise AttributeError(f"{name}: this model is attention-only (attn_only=True), it has no MLPs")
    return jnp.stack([getattr(getattr(block, part), name)[...] for block in model.blocks])


def QK(model: Any) -> FactoredMatrix:
    """W_Q @ W_K^T for every head: [layer, head, d_model (query side), d_model (key side)], rank d_head."""
    W_K = stack_layers(model, "attn", "W_K")  # [l, h, d, e]
    return FactoredMatrix(stack_layers(model, "attn", "W_Q"), jnp.swapaxes(W_K, -1, -2))


def OV(model: Any) -> FactoredMatrix:
    """W_V @ W_O for every head: [layer, head, d_model (source), d_model (written)], rank d_head."""
    return FactoredMatrix(stack_layers(model, "attn", "W_V"), stack_layers(model, "attn", "W_O"))


class WeightViews:
    """Mixin for GPT: the stacked weight properties. Needs `self.blocks`, `self.embed`, ... and `self.cfg`."""

    def _stacked(self, part: str, name: str) -> jax.Array:
        return _view(stack_layers(self, part, name))

    # attention
    W_Q = property(lambda self: self._stacked("attn", "W_Q"), doc="[n_layers, n_heads, d_model, d_head]")
    W_K = property(lambda self: self._stacked("attn", "W_K"), doc="[n_layers, n_heads, d_model, d_head]")
    W_V = property(lambda self: self._stacked("attn", "W_V"), doc="[n_layers, n_heads, d_model, d_head]")
    W_O = property(lambda self: self._stacked("attn", "W_O"), doc="[n_layers, n_heads, d_head, d_model]")
    b_Q = property(lambda self: self._stacked("attn", "b_Q"), doc="[n_layers, n_heads, d_head]")
    b_K = property(lambda self: self._stacked("attn", "b_K"), doc="[n_layers, n_heads, d_head]")
    b_V = property(lambda self: self._stacked("attn", "b_V"), doc="[n_layers, n_heads, d_head]")
    b_O = property(lambda self: self._stacked("attn", "b_O"), doc="[n_layers, d_model]")
    # MLP
    W_in = property(lambda self: self._stacked("mlp", "W_in"), doc="[n_layers, d_model, d_mlp]")
    b_in = property(lambda self: self._stacked("mlp", "b_in"), doc="[n_layers, d_mlp]")
    W_out = property(lambda self: self._stacked("mlp", "W_out"), doc="[n_layers, d_mlp, d_model]")
    b_out = property(lambda self: self._stacked("mlp", "b_out"), doc="[n_layers, d_model]")
    # embeddings
    W_E = property(lambda self: _view(self.embed.W_E[...]), doc="[d_vocab, d_model]")
    W_pos = property(lambda self: _view(self.pos_embed.W_pos[...]), doc="[n_ctx, d_model]")
    W_E_pos = property(
        lambda self: _view(jnp.concatenate([self.embed.W_E[...], self.pos_embed.W_pos[...]])),
        doc="[d_vocab + n_ctx, d_model]: token and position embeddings as rows of one matrix",
    )
    W_U = property(lambda self: _view(self.unembed.W_U[...]), doc="[d_model, d_vocab_out]")
    b_U = property(lambda self: _view(self.unembed.b_U[...]), doc="[d_vocab_out]")

    QK = property(QK, doc="W_Q W_K^T of every head: FactoredMatrix [n_layers, n_heads, d_model, d_model]")
    OV = property(OV, doc="W_V W_O of every head: FactoredMatrix [n_layers, n_heads, d_model, d_model]")
