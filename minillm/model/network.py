"""The network: a decoder-only transformer in which every intermediate tensor has a name.

Read it top to bottom: LayerNorm, Attention, MLP, Block, the embeddings, then Transformer, which
holds `__init__` and `forward` and nothing else. Each activation passes through
`hook("name", tensor)` on the line that computes it; by default that call returns the tensor
unchanged, and the call that built the `Hooks` (minillm/model/hooks.py) decides what it records
or replaces. The weight and hook names and shapes are TransformerLens' (docs/conventions.md).

This file is only the network. The calls a user makes (`model(tokens)`, `run_with_cache`,
`model.W_Q`, `GPT.load`, ...) live on `GPT` (minillm/model/gpt.py), which checks inputs first
(minillm/model/inputs.py): `forward` trusts them.

Shapes: b batch, p position (q query, k key), h head, d d_model, e d_head, m d_mlp, v vocab.

References: Vaswani et al. 2017; Radford et al. 2019 (GPT-2, pre-LayerNorm); Elhage et al. 2021
(the residual-stream view and the names); TransformerLens (hook names, numerics); nanoGPT.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from minillm.model.config import GPTConfig
from minillm.model.hooks import Hooks, HookScope
from minillm.model.inputs import check_positions, layer_range
from minillm.model.kernels import fused_attention, may_fuse

Array = jax.Array


def _normal(rngs: nnx.Rngs, cfg: GPTConfig, *shape: int) -> nnx.Param:
    return nnx.Param(cfg.init_range * jax.random.normal(rngs.params(), shape, jnp.float32))


def _zeros(*shape: int) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


def _as(w: Any, dtype: Any) -> Array:
    """A float32 parameter in the compute dtype (no cast at all in float32)."""
    w = w[...]
    return w if w.dtype == dtype else w.astype(dtype)


def _project(x: Array, W: Array) -> Array:
    """x [b, p, d] (or one input per head, [b, p, h, d]) times W [h, d, e] -> [b, p, h, e]."""
    return jnp.einsum("bpd,hde->bphe" if x.ndim == 3 else "bphd,hde->bphe", x, W)


def at_positions(x: Array, positions: tuple[int, ...] | None) -> Array:
    """x [b, p, ...] at `positions` only, [b, len(positions), ...]; None: every position (x itself).
    The last block of a forward pass with output_positions computes its queries, and everything
    after its attention, at those positions only."""
    return x if positions is None else x[:, jnp.asarray(positions)]


class LayerNorm(nnx.Module):
    """LayerNorm as TransformerLens computes it: hook_scale and hook_normalized come before w, b.

    Its kind is the config's normalization_type: "LN" learns w and b; "LNPre" (TransformerLens'
    LayerNormPre, for folded weights) has neither and stops at hook_normalized. The statistics are
    computed in float32 whatever the compute dtype."""

    def __init__(self, cfg: GPTConfig):
        self.kind = cfg.normalization_type  # "LN" or "LNPre" (None builds no LayerNorm at all)
        if self.kind == "LN":
            self.w = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))  # [d]
            self.b = _zeros(cfg.d_model)  # [d]
        self.eps = cfg.eps
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d] (or [b, p, h, d])
        x = x.astype(jnp.float32)
        x = x - x.mean(axis=-1, keepdims=True)
        scale = hook("hook_scale", jnp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps))  # [..., 1]
        x = hook("hook_normalized", (x / scale).astype(self.dtype))  # [..., d]
        if self.kind == "LNPre":
            return x
        return x * _as(self.w, self.dtype) + _as(self.b, self.dtype)


class Attention(nnx.Module):
    """Multi-head attention (causal unless cfg.attention_dir is "bidirectional"), with the weights of
    each head kept apart: W_Q [h, d, e]."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (_normal(rngs, cfg, h, d, e) for _ in range(3))  # [h, d, e]
        self.b_Q, self.b_K, self.b_V = _zeros(h, e), _zeros(h, e), _zeros(h, e)  # [h, e]
        self.W_O = _normal(rngs, cfg, h, e, d)  # [h, e, d]
        self.b_O = _zeros(d)  # [d]
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
        q = hook("hook_q", _project(x_q, _as(self.W_Q, dt)) + _as(self.b_Q, dt))  # [b, q, h, e]
        k = hook("hook_k", _project(x_k, _as(self.W_K, dt)) + _as(self.b_K, dt))  # [b, p, h, e]
        v = hook("hook_v", _project(x_v, _as(self.W_V, dt)) + _as(self.b_V, dt))  # [b, p, h, e]
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
        W_O, b_O = _as(self.W_O, self.dtype), _as(self.b_O, self.dtype)  # [h, e, d], [d]
        attn_out = jnp.einsum("bqhe,hed->bqd", z, W_O) + b_O  # [b, q, d]
        if hook.wants("hook_result"):
            result = hook("hook_result", jnp.einsum("bqhe,hed->bqhd", z, W_O))  # [b, q, h, d]
            if hook.replaces("hook_result"):
                attn_out = result.sum(axis=2) + b_O
        return attn_out


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_in = _normal(rngs, cfg, cfg.d_model, cfg.d_mlp)  # [d, m]
        self.b_in = _zeros(cfg.d_mlp)  # [m]
        self.W_out = _normal(rngs, cfg, cfg.d_mlp, cfg.d_model)  # [m, d]
        self.b_out = _zeros(cfg.d_model)  # [d]
        self.act_fn = cfg.act_fn
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d] -> mlp_out [b, p, d] (before its hook)
        dt = self.dtype
        pre = hook("hook_pre", jnp.einsum("bpd,dm->bpm", x, _as(self.W_in, dt)) + _as(self.b_in, dt))  # [b, p, m]
        if self.act_fn == "relu":
            post = jax.nn.relu(pre)
        else:  # "gelu": the exact erf GELU; "gelu_new": GPT-2's tanh approximation (TransformerLens' names)
            post = jax.nn.gelu(pre, approximate=self.act_fn == "gelu_new")
        post = hook("hook_post", post)  # [b, p, m]
        return jnp.einsum("bpm,md->bpd", post, _as(self.W_out, dt)) + _as(self.b_out, dt)


class Block(nnx.Module):
    """resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        use_ln = cfg.normalization_type is not None
        self.ln1 = LayerNorm(cfg) if use_ln else None
        self.attn = Attention(cfg, rngs)
        self.ln2 = LayerNorm(cfg) if use_ln and not cfg.attn_only else None
        self.mlp = None if cfg.attn_only else MLP(cfg, rngs)

    def __call__(
        self,
        resid_pre: Array,
        hook: HookScope,
        attention_mask: Array | None = None,
        query_positions: tuple[int, ...] | None = None,
    ) -> Array:
        """resid_pre [b, p, d] -> resid_post [b, p, d], or [b, q, d] at query_positions only: the
        keys and values see every position, the queries and everything after them only these."""
        resid_pre = hook("hook_resid_pre", resid_pre)  # [b, p, d]
        attn_in = self._attn_in(resid_pre, hook)  # [b, p, d], or q, k, v inputs [b, p, h, d] on request
        attn_out = hook("hook_attn_out", self.attn(attn_in, hook.scope("attn"), attention_mask, query_positions))
        resid = at_positions(resid_pre, query_positions) + attn_out  # [b, q, d]
        if self.mlp is None:  # attention-only: no resid_mid
            return hook("hook_resid_post", resid)
        resid_mid = hook("hook_resid_mid", resid)
        return hook("hook_resid_post", resid_mid + self._mlp_out(resid_mid, hook))

    def _attn_in(self, resid_pre: Array, hook: HookScope) -> Array | tuple[Array, Array, Array]:
        """ln1(resid_pre). A call that hooks or caches hook_attn_in or hook_{q,k,v}_input gets the
        stream repeated per head [b, p, h, d], so one head's q, k or v input can change alone;
        ln1 then runs on each (its hooks fire for each, [b, p, h, 1], as in TransformerLens)."""
        ln = (lambda x: self.ln1(x, hook.scope("ln1"))) if self.ln1 is not None else (lambda x: x)
        if not any(hook.wants(f"hook_{n}") for n in ("attn_in", "q_input", "k_input", "v_input")):
            return ln(resid_pre)
        x = jnp.repeat(resid_pre[:, :, None], self.attn.W_Q.shape[0], axis=2)  # [b, p, h, d]
        x = hook("hook_attn_in", x) if hook.wants("hook_attn_in") else x
        if not any(hook.wants(f"hook_{n}_input") for n in "qkv"):
            return ln(x)
        return tuple(ln(hook(f"hook_{n}_input", x)) for n in "qkv")  # type: ignore[return-value]

    def _mlp_out(self, resid_mid: Array, hook: HookScope) -> Array:
        """hook_mlp_out = mlp(ln2(resid_mid)), with hook_mlp_in before ln2 on request."""
        mlp_in = hook("hook_mlp_in", resid_mid) if hook.wants("hook_mlp_in") else resid_mid
        mlp_in = self.ln2(mlp_in, hook.scope("ln2")) if self.ln2 is not None else mlp_in
        return hook("hook_mlp_out", self.mlp(mlp_in, hook.scope("mlp")))  # [b, q, d]


class Embed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_E = _normal(rngs, cfg, cfg.d_vocab, cfg.d_model)  # [v, d]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, tokens: Array) -> Array:  # tokens [b, p] -> [b, p, d]
        # Traced tokens cannot be range-checked (inputs.check_tokens), and JAX would clamp a bad id
        # to a real token: give NaN instead, which attention then spreads over the whole sequence.
        d_vocab = self.W_E.shape[0]
        in_range = (tokens >= 0) & (tokens < d_vocab)
        rows = _as(self.W_E, self.dtype)[jnp.clip(tokens, 0, d_vocab - 1)]
        return jnp.where(in_range[..., None], rows, jnp.nan)


class PosEmbed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_pos = _normal(rngs, cfg, cfg.n_ctx, cfg.d_model)  # [n_ctx, d]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, tokens: Array, attention_mask: Array | None = None) -> Array:  # tokens [b, p] -> [b, p, d]
        n_batch, n_pos = tokens.shape
        W_pos = _as(self.W_pos, self.dtype)
        if attention_mask is None:
            return jnp.broadcast_to(W_pos[:n_pos], (n_batch, n_pos, W_pos.shape[1]))
        # with padding, as TransformerLens: positions count real tokens only (left padding shifts
        # them to start at 0), and padding tokens get no position embedding
        position = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)  # [b, p]
        return W_pos[position] * (attention_mask[..., None] > 0)


class Unembed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_U = _normal(rngs, cfg, cfg.d_model, cfg.d_vocab_out)  # [d, v_out]
        self.b_U = _zeros(cfg.d_vocab_out)  # [v_out]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # [b, p, d] -> logits [b, p, v_out], float32
        x = hook("hook_in", x)
        logits = jnp.einsum("bpd,dv->bpv", x, _as(self.W_U, self.dtype), preferred_element_type=jnp.float32)
        return hook("hook_out", logits + self.b_U)


class Transformer(nnx.Module):
    """The network: embeddings, n_layers blocks, the final LayerNorm and the unembedding."""

    def __init__(self, cfg: GPTConfig, *, seed: int | Array | None = None):
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"{type(self).__name__} expects a GPTConfig, got {type(cfg).__name__}")
        rngs = nnx.Rngs(params=cfg.seed if seed is None else seed)
        self.cfg = cfg
        self.embed = Embed(cfg, rngs)
        self.pos_embed = PosEmbed(cfg, rngs)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg) if cfg.normalization_type is not None else None
        self.unembed = Unembed(cfg, rngs)

    def forward(
        self,
        input: Array,
        hooks: Hooks | None = None,
        *,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        attention_mask: Array | None = None,
        output_positions: tuple[int, ...] | None = None,
    ) -> Array:
        """tokens [b, p] -> logits [b, p, v_out], running `hooks` (default: none) at every hook point.

        start_at_layer=l: the input is the residual stream [b, p, d] entering block l.
        stop_at_layer=l: return the residual stream entering block l instead of the logits.
        output_positions (a tuple of ints): logits at these positions only, [b, len, v_out]. The last
        block then attends from these positions only and runs its MLP, the final LayerNorm and the
        unembedding there, so a loss that reads one answer position skips the work nobody reads.
        """
        hooks = Hooks() if hooks is None else hooks
        layers = layer_range(self.cfg, start_at_layer, stop_at_layer)
        if output_positions is not None:
            output_positions = check_positions(output_positions, input.shape[1], stop_at_layer)
        if start_at_layer is None:
            embed = hooks("hook_embed", self.embed(input))  # [b, p, d]
            pos_embed = hooks("hook_pos_embed", self.pos_embed(input, attention_mask))  # [b, p, d]
            resid = embed + pos_embed  # [b, p, d]
        else:
            resid = input  # [b, p, d]
        for l in layers:
            at = output_positions if l == layers[-1] else None  # the last block computes them only
            resid = self.blocks[l](resid, hooks.scope(f"blocks.{l}"), attention_mask, at)
        if not layers:  # no block to compute them (start_at_layer = n_layers)
            resid = at_positions(resid, output_positions)
        if stop_at_layer is not None:
            return resid  # the residual stream entering block stop_at_layer
        if self.ln_final is not None:
            resid = self.ln_final(resid, hooks.scope("ln_final"))
        return self.unembed(resid, hooks.scope("unembed"))  # [b, p, v_out]
