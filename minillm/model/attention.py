"""Attention: multi-head attention with the weights of each head kept apart (W_Q [h, d, e]).

`Attention.__call__` reads as its steps, each a method below it in the same order:

    q, k, v       the projections, hook_q, hook_k, hook_v              _project_qkv
    visible       which keys each query may see: causal, padding       _visible
    pattern       scores (hook_attn_scores), softmax, mixed with       _pattern
                  uniform attention (attention_rate), hook_pattern
    z             the pattern-weighted values, hook_z                  _weighted_values
    attn_out      z through W_O, and each head's part (hook_result)    _output

or, when nothing reads the scores or the pattern, the fused kernel goes from q, k, v to z in one
call (minillm/model/kernels.py). The hook names are TransformerLens' (docs/conventions.md).

Shapes: b batch, p position (q query, k key), h head, d d_model, e d_head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from minillm.model.components import as_dtype, normal, zeros
from minillm.model.config import GPTConfig
from minillm.model.hooks import HookScope
from minillm.model.kernels import fused_attention, may_fuse

Array = jax.Array


def at_positions(x: Array, positions: tuple[int, ...] | None) -> Array:
    """x [b, p, ...] at `positions` only, [b, len(positions), ...]; None: every position (x itself).
    The last block of a forward pass with output_positions computes its queries, and everything
    after its attention, at those positions only."""
    return x if positions is None else x[:, jnp.asarray(positions)]


def _project(x: Array, W: Array) -> Array:
    """x [b, p, d] (or one input per head, [b, p, h, d]) times W [h, d, e] -> [b, p, h, e]."""
    return jnp.einsum("bpd,hde->bphe" if x.ndim == 3 else "bphd,hde->bphe", x, W)


class Attention(nnx.Module):
    """Multi-head attention (causal unless cfg.attention_dir is "bidirectional"), with the weights of
    each head kept apart: W_Q [h, d, e]."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (normal(rngs, cfg, h, d, e) for _ in range(3))  # [h, d, e]
        self.b_Q, self.b_K, self.b_V = zeros(h, e), zeros(h, e), zeros(h, e)  # [h, e]
        self.W_O = normal(rngs, cfg, h, e, d)  # [h, e, d]
        self.b_O = zeros(d)  # [d]
        self.attention_rate = cfg.attention_rate
        self.causal = cfg.attention_dir == "causal"
        self.dtype = jnp.dtype(cfg.dtype)
        self.implementation = cfg.attn_implementation

    def __call__(
        self,
        x: Array | tuple[Array, Array, Array],
        hook: HookScope,
        attention_mask: Array | None = None,
        query_positions: tuple[int, ...] | None = None,
    ) -> Array:
        """x [b, p, d] -> attn_out [b, q, d] (before its hook); attention_mask [b, p], 0 at padding.
        x may be three inputs (query, key, value), each [b, p, d] or one per head [b, p, h, d].
        query_positions: attend from these positions only (q = len of it; default all p)."""
        x_q, x_k, x_v = x if isinstance(x, tuple) else (x, x, x)  # each [b, p, d], or [b, p, h, d] per head
        q, k, v = self._project_qkv(at_positions(x_q, query_positions), x_k, x_v, hook)
        visible = self._visible(x_k.shape[1], query_positions, attention_mask)  # [b or 1, 1, q, k]
        if may_fuse(self.implementation, self.attention_rate, attention_mask is not None, hook):
            # the kernel's own causal mask is right when every position is a query; else it takes ours
            z = fused_attention(q, k, v, self.causal, visible if query_positions is not None else None)
        else:
            pattern = self._pattern(q, k, visible, attention_mask is not None, hook)  # [b, h, q, k]
            z = self._weighted_values(pattern, v)
        z = hook("hook_z", z)  # [b, q, h, e]
        return self._output(z, hook)

    def _project_qkv(self, x_q: Array, x_k: Array, x_v: Array, hook: HookScope) -> tuple[Array, Array, Array]:
        """The queries [b, q, h, e], keys and values [b, p, h, e] of each head."""
        dt = self.dtype
        q = hook("hook_q", _project(x_q, as_dtype(self.W_Q, dt)) + as_dtype(self.b_Q, dt))  # [b, q, h, e]
        k = hook("hook_k", _project(x_k, as_dtype(self.W_K, dt)) + as_dtype(self.b_K, dt))  # [b, p, h, e]
        v = hook("hook_v", _project(x_v, as_dtype(self.W_V, dt)) + as_dtype(self.b_V, dt))  # [b, p, h, e]
        return q, k, v

    def _visible(self, n_pos: int, query_positions: tuple[int, ...] | None, attention_mask: Array | None) -> Array:
        """[b or 1, 1, q, k], True where a query may see a key: at or before itself (causal), and
        never a padding key. The queries sit at query_positions (default: every position)."""
        q_pos = jnp.arange(n_pos) if query_positions is None else jnp.asarray(query_positions)
        visible = jnp.ones((1, 1, len(q_pos), n_pos), bool)  # [b, h, q, k]
        if self.causal:
            visible = visible & (jnp.arange(n_pos) <= q_pos[:, None])  # a query sees keys at or before it
        if attention_mask is not None:
            visible = visible & (attention_mask[:, None, None, :] > 0)  # never a padding key
        return visible

    def _pattern(self, q: Array, k: Array, visible: Array, masked: bool, hook: HookScope) -> Array:
        """hook_attn_scores, then hook_pattern [b, h, q, k]: each query's weights over the keys,
        in float32 whatever the compute dtype."""
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
        scores = hook("hook_attn_scores", jnp.where(visible, scores, -jnp.inf))  # [b, h, q, k]
        pattern = jax.nn.softmax(scores, axis=-1)  # [b, h, q, k]
        if self.attention_rate != 1.0:  # mixed with uniform attention (Zhong et al. 2023's pizza models)
            uniform = visible / jnp.maximum(visible.sum(axis=-1, keepdims=True), 1)
            pattern = self.attention_rate * pattern + (1.0 - self.attention_rate) * uniform
        if masked:  # a padding query that sees no key attends to nothing (as TransformerLens)
            pattern = jnp.where(visible.any(axis=-1, keepdims=True), pattern, 0.0)
        return hook("hook_pattern", pattern)

    def _weighted_values(self, pattern: Array, v: Array) -> Array:
        """z [b, q, h, e]: each query's pattern-weighted sum of the values, in the compute dtype.
        Computed head-major then transposed: the same numbers as einsum("bhqk,bkhe->bqhe"), but
        that form falls off XLA's fast path on CPU (3x slower)."""
        return jnp.einsum("bhqk,bkhe->bhqe", pattern.astype(self.dtype), v).transpose(0, 2, 1, 3)

    def _output(self, z: Array, hook: HookScope) -> Array:
        """attn_out [b, q, d] = z through W_O, summed over heads, plus b_O.

        Each head's write to the residual stream (hook_result [b, q, h, d]) is made only when asked
        for: it is h times the size of attn_out. When a hook may replace it, attn_out is rebuilt
        from it; that sum equals the fused product up to float rounding."""
        W_O, b_O = as_dtype(self.W_O, self.dtype), as_dtype(self.b_O, self.dtype)  # [h, e, d], [d]
        attn_out = jnp.einsum("bqhe,hed->bqd", z, W_O) + b_O  # [b, q, d]
        if hook.wants("hook_result"):
            result = hook("hook_result", jnp.einsum("bqhe,hed->bqhd", z, W_O))  # [b, q, h, d]
            if hook.replaces("hook_result"):
                attn_out = result.sum(axis=2) + b_O
        return attn_out
