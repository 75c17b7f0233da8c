"""The GPT: a decoder-only transformer in which every intermediate tensor has a name.

Read it top to bottom: LayerNorm, Attention, MLP, Block, then GPT. Each activation is passed
through `hook("name", tensor)` on the line that computes it; by default that call returns the
tensor unchanged, and `run_with_cache` / `run_with_hooks` decide, per call, what it records or
replaces (minillm/hooks.py). Weight names and shapes are TransformerLens' (../shared/CONVENTIONS.md).

Shape letters: b batch, p position (q query, k key), h head, d d_model, e d_head, m d_mlp,
v vocab.

References: Vaswani et al. 2017 (the transformer); Radford et al. 2019 (GPT-2, pre-LayerNorm);
Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits" (the residual-stream view
and the names); TransformerLens' HookedTransformer (hook names and numerics); nanoGPT (how short a
GPT can be).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minillm.config import GPTConfig
from minillm.hooks import ActivationCache, HookFn, Hooks, NameFilter, hook_names, resolve_names

Array = jax.Array


def _normal(rngs: nnx.Rngs, cfg: GPTConfig, *shape: int) -> nnx.Param:
    return nnx.Param(cfg.init_range * jax.random.normal(rngs.params(), shape, jnp.float32))


def _zeros(*shape: int) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


class LayerNorm(nnx.Module):
    """LayerNorm as TransformerLens computes it: hook_scale and hook_normalized come before w, b."""

    def __init__(self, cfg: GPTConfig):
        self.w = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))  # [d]
        self.b = _zeros(cfg.d_model)  # [d]
        self.eps = cfg.eps

    def __call__(self, x: Array, hook) -> Array:  # x [b, p, d]
        x = x - x.mean(axis=-1, keepdims=True)
        scale = hook("hook_scale", jnp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps))  # [b, p, 1]
        x = hook("hook_normalized", x / scale)  # [b, p, d]
        return x * self.w + self.b


class Attention(nnx.Module):
    """Causal multi-head attention, with the weights of each head kept apart: W_Q [h, d, e]."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q, self.W_K, self.W_V = (_normal(rngs, cfg, h, d, e) for _ in range(3))  # [h, d, e]
        self.b_Q, self.b_K, self.b_V = _zeros(h, e), _zeros(h, e), _zeros(h, e)  # [h, e]
        self.W_O = _normal(rngs, cfg, h, e, d)  # [h, e, d]
        self.b_O = _zeros(d)  # [d]

    def __call__(self, x: Array, hook) -> Array:  # x [b, p, d] -> attn_out [b, p, d] (before its hook)
        q = hook("hook_q", jnp.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)
        k = hook("hook_k", jnp.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)
        v = hook("hook_v", jnp.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        n_pos = x.shape[1]
        causal = jnp.tril(jnp.ones((n_pos, n_pos), bool))  # [q, k]: a query sees keys at or before it
        scores = hook("hook_attn_scores", jnp.where(causal, scores, -jnp.inf))  # [b, h, q, k]
        pattern = hook("hook_pattern", jax.nn.softmax(scores, axis=-1))  # [b, h, q, k]
        # pattern-weighted values, computed head-major then transposed: the same numbers as
        # einsum("bhqk,bkhe->bqhe"), but that form falls off XLA's fast path on CPU (3x slower)
        z = hook("hook_z", jnp.einsum("bhqk,bkhe->bhqe", pattern, v).transpose(0, 2, 1, 3))  # [b, q, h, e]
        attn_out = jnp.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O  # [b, q, d]
        if hook.wants("hook_result"):
            # Each head's write to the residual stream, made only when asked for (it is h times the
            # size of attn_out). When a hook may replace it, attn_out is rebuilt from it; that sum
            # equals the fused product above up to float rounding.
            result = hook("hook_result", jnp.einsum("bqhe,hed->bqhd", z, self.W_O))  # [b, q, h, d]
            if hook.replaces("hook_result"):
                attn_out = result.sum(axis=2) + self.b_O
        return attn_out


class MLP(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_in = _normal(rngs, cfg, cfg.d_model, cfg.d_mlp)  # [d, m]
        self.b_in = _zeros(cfg.d_mlp)  # [m]
        self.W_out = _normal(rngs, cfg, cfg.d_mlp, cfg.d_model)  # [m, d]
        self.b_out = _zeros(cfg.d_model)  # [d]
        self.act_fn = cfg.act_fn

    def __call__(self, x: Array, hook) -> Array:  # x [b, p, d] -> mlp_out [b, p, d] (before its hook)
        pre = hook("hook_pre", jnp.einsum("bpd,dm->bpm", x, self.W_in) + self.b_in)  # [b, p, m]
        if self.act_fn == "gelu":
            post = jax.nn.gelu(pre, approximate=False)  # exact erf GELU, as TransformerLens' "gelu"
        else:
            post = jax.nn.relu(pre)
        post = hook("hook_post", post)  # [b, p, m]
        return jnp.einsum("bpm,md->bpd", post, self.W_out) + self.b_out


class Block(nnx.Module):
    """One residual block: resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        use_ln = cfg.normalization_type == "LN"
        self.ln1 = LayerNorm(cfg) if use_ln else None
        self.attn = Attention(cfg, rngs)
        self.ln2 = LayerNorm(cfg) if use_ln and not cfg.attn_only else None
        self.mlp = None if cfg.attn_only else MLP(cfg, rngs)

    def __call__(self, resid_pre: Array, hook) -> Array:  # [b, p, d] -> [b, p, d]
        resid_pre = hook("hook_resid_pre", resid_pre)
        attn_in = self.ln1(resid_pre, hook.scope("ln1")) if self.ln1 is not None else resid_pre
        attn_out = hook("hook_attn_out", self.attn(attn_in, hook.scope("attn")))
        if self.mlp is None:  # attention-only: no resid_mid
            return hook("hook_resid_post", resid_pre + attn_out)
        resid_mid = hook("hook_resid_mid", resid_pre + attn_out)
        mlp_in = self.ln2(resid_mid, hook.scope("ln2")) if self.ln2 is not None else resid_mid
        mlp_out = hook("hook_mlp_out", self.mlp(mlp_in, hook.scope("mlp")))
        return hook("hook_resid_post", resid_mid + mlp_out)


class Embed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_E = _normal(rngs, cfg, cfg.d_vocab, cfg.d_model)  # [v, d]

    def __call__(self, tokens: Array) -> Array:  # tokens [b, p] -> [b, p, d]
        # Concrete tokens were range-checked in GPT.check_tokens. Traced ones cannot be, and JAX
        # would clamp an out-of-range index to a real token; give NaN instead, never a plausible row.
        # (Attention then spreads the NaN over that whole sequence, which keeps the failure loud.)
        d_vocab = self.W_E.shape[0]
        in_range = (tokens >= 0) & (tokens < d_vocab)
        rows = self.W_E[...][jnp.clip(tokens, 0, d_vocab - 1)]
        return jnp.where(in_range[..., None], rows, jnp.nan)


class PosEmbed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_pos = _normal(rngs, cfg, cfg.n_ctx, cfg.d_model)  # [n_ctx, d]

    def __call__(self, tokens: Array) -> Array:  # tokens [b, p] -> [b, p, d]
        n_batch, n_pos = tokens.shape
        return jnp.broadcast_to(self.W_pos[:n_pos], (n_batch, n_pos, self.W_pos.shape[1]))


class Unembed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_U = _normal(rngs, cfg, cfg.d_model, cfg.d_vocab_out)  # [d, v_out]
        self.b_U = _zeros(cfg.d_vocab_out)  # [v_out]

    def __call__(self, x: Array) -> Array:  # [b, p, d] -> logits [b, p, v_out]
        return jnp.einsum("bpd,dv->bpv", x, self.W_U) + self.b_U


class GPT(nnx.Module):
    """A GPT whose every activation can be cached or replaced by name.

    model = GPT(cfg)                       # weights drawn from cfg.seed (or seed=..., a key or int)
    logits = model(tokens)                 # int tokens [b, p] -> logits [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens, names_filter=None)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])

    Tokens must be a 2-D integer array [batch, pos]: a 1-D sequence is refused (write tokens[None]),
    so that shapes never change silently, e.g. inside jax.vmap.
    """

    def __init__(self, cfg: GPTConfig, *, seed: Union[int, Array, None] = None):
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(cfg).__name__}")
        rngs = nnx.Rngs(params=cfg.seed if seed is None else seed)
        self.cfg = cfg
        self.embed = Embed(cfg, rngs)
        self.pos_embed = PosEmbed(cfg, rngs)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg) if cfg.normalization_type == "LN" else None
        self.unembed = Unembed(cfg, rngs)

    # --- the forward pass -------------------------------------------------------------------
    def forward(self, tokens: Array, hooks: Hooks, *, start_at_layer: Optional[int] = None,
                stop_at_layer: Optional[int] = None) -> Array:
        """The forward pass with explicit hooks; the public calls below build `hooks` for you.

        start_at_layer=l: `tokens` is instead the residual stream [b, p, d] entering block l.
        stop_at_layer=l: return the residual stream entering block l instead of the logits.
        """
        start, stop = self._layer_range(start_at_layer, stop_at_layer)
        if start == 0 and start_at_layer is None:
            tokens = self.check_tokens(tokens)
            embed = hooks("hook_embed", self.embed(tokens))  # [b, p, d]
            pos_embed = hooks("hook_pos_embed", self.pos_embed(tokens))  # [b, p, d]
            resid = embed + pos_embed
        else:
            resid = self.check_resid(tokens)
        for l in range(start, stop):
            resid = self.blocks[l](resid, hooks.scope(f"blocks.{l}"))  # [b, p, d]
        if stop < self.cfg.n_layers or stop_at_layer is not None:
            return resid
        if self.ln_final is not None:
            resid = self.ln_final(resid, hooks.scope("ln_final"))
        return self.unembed(resid)  # [b, p, v_out]

    def __call__(self, tokens: Array, *, start_at_layer: Optional[int] = None,
                 stop_at_layer: Optional[int] = None) -> Array:
        return self.forward(tokens, Hooks(()), start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)

    def run_with_hooks(self, tokens: Array, fwd_hooks: Iterable[tuple[Any, HookFn]] = (), *,
                       start_at_layer: Optional[int] = None, stop_at_layer: Optional[int] = None) -> Array:
        """Logits of a forward pass in which each `fn(activation, hook)` runs at its hook point(s).

        A name in a pair may be a hook name, a list of names, or a predicate on names. `fn` returns a
        replacement of the same shape and dtype, or None to leave the activation as it is.
        """
        hooks = Hooks(self._reachable(start_at_layer, stop_at_layer), fwd_hooks)
        return self.forward(tokens, hooks, start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)

    def run_with_cache(self, tokens: Array, names_filter: NameFilter = None, *,
                       fwd_hooks: Iterable[tuple[Any, HookFn]] = (), start_at_layer: Optional[int] = None,
                       stop_at_layer: Optional[int] = None) -> tuple[Array, ActivationCache]:
        """Logits and the activations that `names_filter` selects (None: every hook point).

        With `fwd_hooks`, the cache holds the activations of the hooked run (after each hook).
        """
        reachable = self._reachable(start_at_layer, stop_at_layer)
        cache_names = resolve_names(names_filter, reachable, what="names_filter")
        hooks = Hooks(reachable, fwd_hooks, cache_names)
        logits = self.forward(tokens, hooks, start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)
        return logits, ActivationCache(hooks.cache, hook_names(self.cfg))

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        return hook_names(self.cfg)

    # --- sampling -----------------------------------------------------------------------------
    def generate(self, prompt: Array, max_new_tokens: int, *, key: Optional[Array] = None,
                 temperature: float = 1.0) -> Array:
        """Sample `max_new_tokens` after `prompt` [b, p]; temperature 0 is greedy. Returns [b, p + new].

        One compiled loop over a fixed [b, p + new] buffer: the model is causal, so the logits at a
        position never depend on the (not yet sampled) tokens after it.
        """
        prompt = self.check_tokens(prompt)
        n_batch, n_prompt = prompt.shape
        total = n_prompt + int(max_new_tokens)
        if max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
        if total > self.cfg.n_ctx:
            raise ValueError(f"generate: prompt length {n_prompt} + max_new_tokens {max_new_tokens} = {total} "
                             f"exceeds n_ctx={self.cfg.n_ctx}")
        if self.cfg.d_vocab_out > self.cfg.d_vocab:
            raise ValueError("generate: the model's outputs (d_vocab_out) are not all valid input tokens")
        if temperature < 0:
            raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
        if temperature > 0 and key is None:
            raise ValueError("generate: sampling with temperature > 0 needs a key=jax.random.key(...)")
        key = jax.random.key(0) if key is None else key
        return _generate(self, prompt, key, n_prompt, total, float(temperature))

    # --- weights ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """The weights, flat, under TransformerLens' names: {"blocks.0.attn.W_Q": [h, d, e], ...}."""
        flat = nnx.to_flat_state(nnx.state(self, nnx.Param))
        return {".".join(str(k) for k in path): var.get_value() for path, var in flat}

    def load_state_dict(self, weights: dict[str, Any]) -> None:
        """Replace the weights in place; names, shapes and dtypes must match exactly."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: weights do not match the config: missing {missing}, "
                             f"unexpected {unexpected}")
        wrong = [f"{name} has shape {tuple(value.shape)} and dtype {value.dtype}, the config needs "
                 f"{tuple(own[name].shape)} {own[name].dtype}"
                 for name, value in sorted(weights.items())
                 if tuple(value.shape) != tuple(own[name].shape) or value.dtype != own[name].dtype]
        if wrong:
            raise ValueError("load_state_dict: " + "; ".join(wrong))
        flat = nnx.to_flat_state(nnx.state(self, nnx.Param))
        for path, var in flat:
            var.set_value(jnp.asarray(weights[".".join(str(k) for k in path)]))

    @classmethod
    def from_state_dict(cls, cfg: GPTConfig, weights: dict[str, Any]) -> "GPT":
        """A model with these weights; no random weights are drawn (only their shapes are traced)."""
        model = nnx.eval_shape(lambda: cls(cfg))
        model.load_state_dict(weights)
        return model

    def save(self, path: str, metadata: Optional[dict[str, str]] = None) -> None:
        """Write weights and config to one safetensors file, atomically (see minillm/checkpoint.py)."""
        from minillm.checkpoint import save_model
        save_model(self, path, metadata)

    @classmethod
    def load(cls, path: str) -> "GPT":
        """Read a model written by `save`; a truncated, corrupt or mismatched file is refused."""
        from minillm.checkpoint import load_model
        return load_model(path)

    # --- checks at the boundary ----------------------------------------------------------------
    def check_tokens(self, tokens: Any) -> Array:
        """Refuse inputs that JAX would otherwise turn into plausible garbage."""
        if not hasattr(tokens, "dtype"):
            tokens = np.asarray(tokens)
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        if tokens.ndim != 2:
            hint = " (for one sequence, pass tokens[None])" if tokens.ndim == 1 else ""
            raise ValueError(f"tokens must have shape [batch, pos], got shape {tuple(tokens.shape)}{hint}")
        n_pos = tokens.shape[1]
        if n_pos == 0 or n_pos > self.cfg.n_ctx:
            raise ValueError(f"sequence length {n_pos} is outside [1, n_ctx={self.cfg.n_ctx}]")
        if not isinstance(tokens, jax.core.Tracer):
            values = np.asarray(tokens)
            bad = (values < 0) | (values >= self.cfg.d_vocab)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"token id {int(values[where])} at position {where} is outside "
                                 f"[0, d_vocab={self.cfg.d_vocab}) ({int(bad.sum())} bad ids in all)")
        return jnp.asarray(tokens, jnp.int32)

    def check_resid(self, resid: Array) -> Array:
        if resid.ndim != 3 or resid.shape[-1] != self.cfg.d_model or not 0 < resid.shape[1] <= self.cfg.n_ctx:
            raise ValueError(f"with start_at_layer, the input must be a residual stream [batch, pos, "
                             f"d_model={self.cfg.d_model}] with pos <= n_ctx, got shape {tuple(resid.shape)}")
        return resid

    def _layer_range(self, start_at_layer: Optional[int], stop_at_layer: Optional[int]) -> tuple[int, int]:
        n = self.cfg.n_layers
        start = 0 if start_at_layer is None else start_at_layer
        stop = n if stop_at_layer is None else stop_at_layer
        if not (0 <= start <= stop <= n):
            raise ValueError(f"need 0 <= start_at_layer ({start}) <= stop_at_layer ({stop}) <= n_layers ({n})")
        return start, stop

    def _reachable(self, start_at_layer: Optional[int], stop_at_layer: Optional[int]) -> list[str]:
        """The hook points a forward pass with these start/stop layers passes through."""
        names = hook_names(self.cfg)
        if start_at_layer is None and stop_at_layer is None:
            return names
        start, stop = self._layer_range(start_at_layer, stop_at_layer)

        def reached(name: str) -> bool:
            if name.startswith("blocks."):
                return start <= int(name.split(".")[1]) < stop
            if name.startswith("ln_final"):
                return stop_at_layer is None
            return start_at_layer is None  # hook_embed, hook_pos_embed

        return [n for n in names if reached(n)]


def _generate_impl(model: GPT, prompt: Array, key: Array, n_prompt: int, total: int,
                   temperature: float) -> Array:
    n_batch = prompt.shape[0]
    buffer = jnp.zeros((n_batch, total), jnp.int32).at[:, :n_prompt].set(prompt)

    def step(t, carry):
        buffer, key = carry
        logits = model(buffer)[:, t - 1]  # [b, v_out]: the prediction for position t
        key, sub = jax.random.split(key)
        if temperature == 0:
            new = jnp.argmax(logits, axis=-1)
        else:
            new = jax.random.categorical(sub, logits / temperature, axis=-1)
        return buffer.at[:, t].set(new.astype(jnp.int32)), key

    buffer, _ = jax.lax.fori_loop(n_prompt, total, step, (buffer, key))
    return buffer


_generate = jax.jit(_generate_impl, static_argnums=(3, 4, 5))
