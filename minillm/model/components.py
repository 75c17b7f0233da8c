"""The network's small parts: LayerNorm, the MLP, the embeddings and the unembedding, and the three
helpers every part uses to make and read its parameters. Attention has its own file
(attention.py); network.py puts the parts together into blocks and the `Transformer`.

As in TransformerLens (transformer_lens/components): the same classes, weight names and hook
points (docs/conventions.md). Shapes: b batch, p position, d d_model, m d_mlp, v vocab.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from minillm.model.config import GPTConfig
from minillm.model.hooks import HookScope

Array = jax.Array


# --- parameters: stored in float32, used in the compute dtype --------------------------------------
def normal(rngs: nnx.Rngs, cfg: GPTConfig, *shape: int) -> nnx.Param:
    """A weight drawn from N(0, cfg.init_range²)."""
    return nnx.Param(cfg.init_range * jax.random.normal(rngs.params(), shape, jnp.float32))


def zeros(*shape: int) -> nnx.Param:
    """A bias, 0 at initialisation."""
    return nnx.Param(jnp.zeros(shape, jnp.float32))


def as_dtype(w: Any, dtype: Any) -> Array:
    """A float32 parameter in the compute dtype (no cast at all in float32)."""
    w = w[...]
    return w if w.dtype == dtype else w.astype(dtype)


# --- the layers ----------------------------------------------------------------------------------
class LayerNorm(nnx.Module):
    """LayerNorm as TransformerLens computes it: hook_scale and hook_normalized come before w, b.

    Its kind is the config's normalization_type: "LN" learns w and b; "LNPre" (TransformerLens'
    LayerNormPre, for folded weights) has neither and stops at hook_normalized. The statistics are
    computed in float32 whatever the compute dtype."""

    def __init__(self, cfg: GPTConfig):
        self.kind = cfg.normalization_type  # "LN" or "LNPre" (None builds no LayerNorm at all)
        if self.kind == "LN":
            self.w = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))  # [d]
            self.b = zeros(cfg.d_model)  # [d]
        self.eps = cfg.eps
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d] (or [b, p, h, d])
        x = x.astype(jnp.float32)
        x = x - x.mean(axis=-1, keepdims=True)
        scale = hook("hook_scale", jnp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps))  # [..., 1]
        x = hook("hook_normalized", (x / scale).astype(self.dtype))  # [..., d]
        if self.kind == "LNPre":
            return x
        return x * as_dtype(self.w, self.dtype) + as_dtype(self.b, self.dtype)


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_in = normal(rngs, cfg, cfg.d_model, cfg.d_mlp)  # [d, m]
        self.b_in = zeros(cfg.d_mlp)  # [m]
        self.W_out = normal(rngs, cfg, cfg.d_mlp, cfg.d_model)  # [m, d]
        self.b_out = zeros(cfg.d_model)  # [d]
        self.act_fn = cfg.act_fn
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d] -> mlp_out [b, p, d] (before its hook)
        dt = self.dtype
        pre = jnp.einsum("bpd,dm->bpm", x, as_dtype(self.W_in, dt)) + as_dtype(self.b_in, dt)
        pre = hook("hook_pre", pre)  # [b, p, m]
        if self.act_fn == "relu":
            post = jax.nn.relu(pre)
        else:  # "gelu": the exact erf GELU; "gelu_new": GPT-2's tanh approximation (TransformerLens' names)
            post = jax.nn.gelu(pre, approximate=self.act_fn == "gelu_new")
        post = hook("hook_post", post)  # [b, p, m]
        return jnp.einsum("bpm,md->bpd", post, as_dtype(self.W_out, dt)) + as_dtype(self.b_out, dt)


class Embed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_E = normal(rngs, cfg, cfg.d_vocab, cfg.d_model)  # [v, d]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, tokens: Array) -> Array:  # tokens [b, p] -> [b, p, d]
        # Traced tokens cannot be range-checked (inputs.check_tokens), and JAX would clamp a bad id
        # to a real token: give NaN instead, which attention then spreads over the whole sequence.
        d_vocab = self.W_E.shape[0]
        in_range = (tokens >= 0) & (tokens < d_vocab)
        rows = as_dtype(self.W_E, self.dtype)[jnp.clip(tokens, 0, d_vocab - 1)]
        return jnp.where(in_range[..., None], rows, jnp.nan)


class PosEmbed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_pos = normal(rngs, cfg, cfg.n_ctx, cfg.d_model)  # [n_ctx, d]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, tokens: Array, attention_mask: Array | None = None) -> Array:  # tokens [b, p] -> [b, p, d]
        n_batch, n_pos = tokens.shape
        W_pos = as_dtype(self.W_pos, self.dtype)
        if attention_mask is None:
            return jnp.broadcast_to(W_pos[:n_pos], (n_batch, n_pos, W_pos.shape[1]))
        # with padding, as TransformerLens: positions count real tokens only (left padding shifts
        # them to start at 0), and padding tokens get no position embedding
        position = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)  # [b, p]
        return W_pos[position] * (attention_mask[..., None] > 0)


class Unembed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_U = normal(rngs, cfg, cfg.d_model, cfg.d_vocab_out)  # [d, v_out]
        self.b_U = zeros(cfg.d_vocab_out)  # [v_out]
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # [b, p, d] -> logits [b, p, v_out], float32
        x = hook("hook_in", x)
        logits = jnp.einsum("bpd,dv->bpv", x, as_dtype(self.W_U, self.dtype), preferred_element_type=jnp.float32)
        return hook("hook_out", logits + self.b_U)
