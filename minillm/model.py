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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minillm import compiled, losses, params, sampling, transformer_lens
from minillm.config import GPTConfig
from minillm.hooks import ActivationCache, FwdHooks, Hooks, HookScope, NameFilter
from minillm.inputs import check_attention_mask, check_indices, check_resid, check_tokens, layer_range
from minillm.weight_views import WeightViews

Array = jax.Array
Layer = int | None  # start_at_layer / stop_at_layer: None is the model's first / last


def _normal(rngs: nnx.Rngs, cfg: GPTConfig, *shape: int) -> nnx.Param:
    return nnx.Param(cfg.init_range * jax.random.normal(rngs.params(), shape, jnp.float32))


def _zeros(*shape: int) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


def _as(w: Any, dtype: Any) -> Array:
    """A float32 parameter in the compute dtype (no cast at all in float32)."""
    w = w[...]
    return w if w.dtype == dtype else w.astype(dtype)


class LayerNorm(nnx.Module):
    """LayerNorm as TransformerLens computes it: hook_scale and hook_normalized come before w, b.
    normalization_type "LNPre" has no w and b (TransformerLens' LayerNormPre, for folded weights).
    The statistics are computed in float32 whatever the compute dtype."""

    def __init__(self, cfg: GPTConfig):
        if cfg.normalization_type == "LN":
            self.w = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))  # [d]
            self.b = _zeros(cfg.d_model)  # [d]
        self.eps = cfg.eps
        self.dtype = jnp.dtype(cfg.dtype)

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d]
        x = x.astype(jnp.float32)
        x = x - x.mean(axis=-1, keepdims=True)
        scale = hook("hook_scale", jnp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps))  # [b, p, 1]
        x = hook("hook_normalized", (x / scale).astype(self.dtype))  # [b, p, d]
        return x * _as(self.w, self.dtype) + _as(self.b, self.dtype) if hasattr(self, "w") else x


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
        x: Array,
        hook: HookScope,
        attention_mask: Array | None = None,
        query_positions: tuple[int, ...] | None = None,
    ) -> Array:
        """x [b, p, d] -> attn_out [b, q, d] (before its hook); attention_mask [b, p], 0 at padding.
        query_positions: attend from these positions only (q = len of it; default all p)."""
        dt = self.dtype
        x_q = x if query_positions is None else x[:, jnp.asarray(query_positions)]  # [b, q, d]
        q = hook("hook_q", jnp.einsum("bpd,hde->bphe", x_q, _as(self.W_Q, dt)) + _as(self.b_Q, dt))
        k = hook("hook_k", jnp.einsum("bpd,hde->bphe", x, _as(self.W_K, dt)) + _as(self.b_K, dt))
        v = hook("hook_v", jnp.einsum("bpd,hde->bphe", x, _as(self.W_V, dt)) + _as(self.b_V, dt))
        n_pos = x.shape[1]
        q_pos = jnp.arange(n_pos) if query_positions is None else jnp.asarray(query_positions)
        visible = jnp.ones((1, 1, len(q_pos), n_pos), bool)  # [b, h, q, k]: the keys each query may see
        if self.causal:
            visible = visible & (jnp.arange(n_pos) <= q_pos[:, None])  # a query sees keys at or before it
        if attention_mask is not None:
            visible = visible & (attention_mask[:, None, None, :] > 0)  # never a padding key
        if self._fused(hook, attention_mask):
            z = self._fused_attention(q, k, v, visible if query_positions is not None else None)
        else:
            # the scores and the softmax in float32 whatever the compute dtype
            scores = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
            scores = hook("hook_attn_scores", jnp.where(visible, scores, -jnp.inf))  # [b, h, q, k]
            pattern = jax.nn.softmax(scores, axis=-1)  # [b, h, q, k]
            if self.attention_rate != 1.0:  # mixed with uniform attention (Zhong et al. 2023's pizza models)
                uniform = visible / jnp.maximum(visible.sum(axis=-1, keepdims=True), 1)
                pattern = self.attention_rate * pattern + (1.0 - self.attention_rate) * uniform
            if attention_mask is not None:  # a padding query that sees no key attends to nothing (as TL)
                pattern = jnp.where(visible.any(axis=-1, keepdims=True), pattern, 0.0)
            pattern = hook("hook_pattern", pattern)  # [b, h, q, k]
            # pattern-weighted values, computed head-major then transposed: the same numbers as
            # einsum("bhqk,bkhe->bqhe"), but that form falls off XLA's fast path on CPU (3x slower)
            z = jnp.einsum("bhqk,bkhe->bhqe", pattern.astype(dt), v).transpose(0, 2, 1, 3)
        z = hook("hook_z", z)  # [b, q, h, e]
        attn_out = jnp.einsum("bqhe,hed->bqd", z, _as(self.W_O, dt)) + _as(self.b_O, dt)  # [b, q, d]
        if hook.wants("hook_result"):
            # Each head's write to the residual stream, made only when asked for (it is h times the
            # size of attn_out). When a hook may replace it, attn_out is rebuilt from it; that sum
            # equals the fused product above up to float rounding.
            result = hook("hook_result", jnp.einsum("bqhe,hed->bqhd", z, _as(self.W_O, dt)))  # [b, q, h, d]
            if hook.replaces("hook_result"):
                attn_out = result.sum(axis=2) + _as(self.b_O, dt)
        return attn_out

    def _fused(self, hook: HookScope, attention_mask: Array | None) -> bool:
        """Whether this call may skip the pattern: nothing hooks it, and it is plain softmax attention."""
        if self.implementation == "exact" or (self.implementation == "auto" and jax.default_backend() != "gpu"):
            return False
        plain = self.attention_rate == 1.0 and attention_mask is None
        return plain and not hook.wants("hook_attn_scores") and not hook.wants("hook_pattern")

    def _fused_attention(self, q: Array, k: Array, v: Array, visible: Array | None) -> Array:
        """z [b, q, h, e] by jax.nn.dot_product_attention: cuDNN's fused kernel where it applies."""
        e = q.shape[-1]
        cudnn = jax.default_backend() == "gpu" and self.dtype != jnp.float32 and e % 8 == 0 and e <= 128
        kind = "cudnn" if cudnn and visible is None else None
        if visible is None:
            return jax.nn.dot_product_attention(q, k, v, is_causal=self.causal, implementation=kind)
        return jax.nn.dot_product_attention(q, k, v, mask=visible, implementation=kind)


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
        if self.act_fn == "gelu":
            post = jax.nn.gelu(pre, approximate=False)  # exact erf GELU, as TransformerLens' "gelu"
        else:
            post = jax.nn.relu(pre)
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
        """resid_pre [b, p, d] -> resid_post [b, p, d], or [b, q, d] at query_positions only."""
        resid_pre = hook("hook_resid_pre", resid_pre)  # [b, p, d]
        attn_in = self.ln1(resid_pre, hook.scope("ln1")) if self.ln1 is not None else resid_pre
        attn_out = hook("hook_attn_out", self.attn(attn_in, hook.scope("attn"), attention_mask, query_positions))
        if query_positions is not None:  # from here on, only these positions
            resid_pre = resid_pre[:, jnp.asarray(query_positions)]
        if self.mlp is None:  # attention-only: no resid_mid
            return hook("hook_resid_post", resid_pre + attn_out)
        resid_mid = hook("hook_resid_mid", resid_pre + attn_out)
        mlp_in = self.ln2(resid_mid, hook.scope("ln2")) if self.ln2 is not None else resid_mid
        mlp_out = hook("hook_mlp_out", self.mlp(mlp_in, hook.scope("mlp")))
        return hook("hook_resid_post", resid_mid + mlp_out)


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


def _check_positions(positions: Any, n_pos: int) -> tuple[int, ...]:
    """A non-empty tuple of positions in [-n_pos, n_pos), made non-negative."""
    if not isinstance(positions, (tuple, list)) or not positions:
        raise TypeError(f"output_positions must be a non-empty tuple of ints, got {positions!r}")
    check_indices(np.asarray(positions), n_pos, "output_positions")
    return tuple(int(i) % n_pos for i in positions)


class GPT(WeightViews, nnx.Module):
    """A GPT whose every activation can be cached or replaced by name.

    model = GPT(cfg)                       # weights drawn from cfg.seed (or seed=..., a key or int)
    logits = model(tokens)                 # int tokens [b, p] (never 1-D) -> logits [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens, names_filter=None)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])

    model.W_Q, model.OV, ...: TransformerLens' stacked weight views (minillm/weight_views.py).
    Each call also takes start_at_layer=l (the input is then the residual stream [b, p, d] entering
    block l) and stop_at_layer=l (it returns the residual stream entering block l, not the logits).

    Precision (cfg.dtype): the weights are float32; with "bfloat16" or "float16" every activation
    is in that dtype except hook_scale (LayerNorm statistics), hook_attn_scores and hook_pattern
    (the softmax) and the logits (unembed.hook_out), which are float32, as is every loss.
    """

    def __init__(self, cfg: GPTConfig, *, seed: int | Array | None = None):
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(cfg).__name__}")
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
        hooks: Hooks,
        *,
        start_at_layer: Layer = None,
        stop_at_layer: Layer = None,
        attention_mask: Array | None = None,
        output_positions: tuple[int, ...] | None = None,
    ) -> Array:
        """The forward pass with explicit hooks (the public calls below build them): tokens [b, p] -> logits.

        output_positions (a tuple of ints): logits at these positions only, [b, len, v_out]. The
        last block then attends from these positions only and runs its MLP, the final LayerNorm and
        the unembedding there: the trainer's loss on a task that reads one answer position
        (modular addition reads 1 of 3) skips the work on logits nobody reads. Hook points after
        the last block's keys and values then hold those positions only.
        """
        layers = layer_range(self.cfg, start_at_layer, stop_at_layer)
        shape = np.shape(input)[:2]
        if output_positions is not None:
            if stop_at_layer is not None:
                raise ValueError("output_positions gives logits; with stop_at_layer there are none")
            output_positions = _check_positions(output_positions, shape[1])
        mask = None if attention_mask is None else check_attention_mask(attention_mask, shape)
        if mask is not None and self.cfg.attention_dir == "bidirectional":
            raise ValueError(
                "attention_mask with bidirectional attention: TransformerLens then masks no key (it only shifts "
                "the position embeddings), minillm would; refused rather than give other numbers. Mask padding "
                "keys with a hook on hook_attn_scores instead."
            )
        if start_at_layer is None:
            tokens = check_tokens(input, self.cfg)
            embed = hooks("hook_embed", self.embed(tokens))  # [b, p, d]
            pos_embed = hooks("hook_pos_embed", self.pos_embed(tokens, mask))  # [b, p, d]
            resid = embed + pos_embed
        else:
            resid = check_resid(input, self.cfg)
        for l in layers:
            last = output_positions is not None and l == layers[-1]
            resid = self.blocks[l](resid, hooks.scope(f"blocks.{l}"), mask, output_positions if last else None)
        if output_positions is not None and not layers:
            resid = resid[:, jnp.asarray(output_positions)]
        if stop_at_layer is not None:
            return resid  # the residual stream entering block stop_at_layer
        if self.ln_final is not None:
            resid = self.ln_final(resid, hooks.scope("ln_final"))
        return self.unembed(resid, hooks.scope("unembed"))  # [b, p, v_out]

    def __call__(self, input: Array, return_type: str | None = "logits", **kwargs: Any) -> Any:
        """Logits [b, p, v_out] of tokens [b, p]; return_type="loss" / "both" / None and the other
        keywords as in run_with_cache."""
        return self.run_with_hooks(input, (), return_type=return_type, **kwargs)

    def run_with_hooks(self, input: Array, fwd_hooks: FwdHooks = (), **kwargs: Any) -> Any:
        """Logits of a forward pass in which each `fn(activation, hook)` runs at its hook point(s).

        A name in a pair may be a hook name, a list of names, or a predicate on names. `fn` returns a
        replacement of the same shape and dtype, or None to leave the activation as it is. The
        keywords are run_with_cache's.
        """
        return self.run_with_cache(input, names_filter=False, fwd_hooks=fwd_hooks, **kwargs)[0]

    def run_with_cache(
        self,
        input: Array,
        names_filter: NameFilter = None,
        *,
        fwd_hooks: FwdHooks = (),
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        remove_batch_dim: bool = False,
        start_at_layer: Layer = None,
        stop_at_layer: Layer = None,
        tokens: Array | None = None,
        attention_mask: Array | None = None,
    ) -> tuple[Any, ActivationCache]:
        """Logits and the activations that `names_filter` selects (None: every hook point, False: none).

        With `fwd_hooks`, the cache holds the activations of the hooked run (after each hook). As in
        TransformerLens: return_type "logits", "loss" (next-token loss, [b, p - 1] with
        loss_per_token), "both" (logits, loss) or None; remove_batch_dim (batch 1 only);
        start_at_layer / stop_at_layer (negative counts from the end; with start_at_layer the input
        is the residual stream, and `tokens` gives the loss its targets); attention_mask [b, p]
        (0 at padding: no query attends to a padding key).
        """
        if return_type not in losses.RETURN_TYPES:
            raise ValueError(f"return_type must be one of {losses.RETURN_TYPES}, got {return_type!r}")
        if stop_at_layer is not None and return_type != "logits":
            raise ValueError(f"with stop_at_layer the output is the residual stream, not {return_type!r}")
        wants_loss = stop_at_layer is None and return_type in ("loss", "both")
        targets = tokens if tokens is not None else (input if start_at_layer is None else None)
        targets = targets if wants_loss else None
        layers = dict(start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)
        split = None if fwd_hooks else compiled.split_if_concrete(self, input, tokens, attention_mask)
        if split is not None:  # called from plain Python, no hooks: one cached compiled program
            return compiled.run_with_cache(
                self,
                split,
                input,
                names_filter,
                return_type=return_type,
                loss_per_token=loss_per_token,
                remove_batch_dim=remove_batch_dim,
                targets=targets,
                attention_mask=attention_mask,
                **layers,
            )
        hooks = Hooks(fwd_hooks, cache=names_filter, n_layers=self.cfg.n_layers)
        out = self.forward(input, hooks, attention_mask=attention_mask, **layers)
        hooks.check(self.hook_names)
        cache = hooks.activation_cache(self.hook_names())
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        if stop_at_layer is not None:
            return out, cache
        return losses.model_output(out, targets, return_type, loss_per_token, attention_mask), cache

    def loss_fn(
        self, logits: Array, tokens: Array, attention_mask: Array | None = None, per_token: bool = False
    ) -> Array:
        """TransformerLens' next-token cross-entropy (minillm.losses.next_token_loss)."""
        return losses.next_token_loss(logits, jnp.asarray(tokens), attention_mask, per_token)

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order: what one abstract pass reaches."""
        from minillm.hook_points import hook_names  # it reads the names off this class

        return hook_names(self.cfg)

    def generate(
        self, prompt: Array, max_new_tokens: int, *, key: Array | None = None, temperature: float = 1.0
    ) -> Array:
        """Sample after `prompt` [b, p]; temperature 0 is greedy. See minillm/sampling.py."""
        return sampling.generate(self, prompt, max_new_tokens, key=key, temperature=temperature)

    # --- weights (minillm/params.py) -----------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """The weights, flat, under TransformerLens' names: {"blocks.0.attn.W_Q": [h, d, e], ...}."""
        return params.state_dict(self)

    def load_state_dict(self, weights: dict[str, Any]) -> None:
        """Replace the weights in place; names, shapes and dtypes must match exactly."""
        params.load_state_dict(self, weights)

    @classmethod
    def from_state_dict(cls, cfg: GPTConfig, weights: dict[str, Any]) -> GPT:
        """A model with these weights; no random weights are drawn (only their shapes are traced)."""
        model = nnx.eval_shape(lambda: cls(cfg))
        params.load_state_dict(model, weights)
        return model

    def save(self, path: str, metadata: dict[str, str] | None = None) -> None:
        """Write weights and config to one safetensors file, atomically (minillm/checkpoint.py)."""
        params.save_model(self, path, metadata)

    @classmethod
    def load(cls, path: str) -> GPT:
        """Read a model written by `save`; a truncated, corrupt or mismatched file is refused."""
        return params.load_model(cls, path)

    @classmethod
    def load_seeds(cls, directory: str) -> dict[int, GPT]:
        """{seed: model} from a multi-seed run (`python -m train ... --seeds N`), in order of seed."""
        return params.load_seeds(cls, directory)

    # --- TransformerLens (minillm/transformer_lens.py) -----------------------------------------
    @classmethod
    def from_transformer_lens(cls, state_dict: Any, tl_cfg: Any) -> GPT:
        """A HookedTransformer's weights (its state dict, or a .safetensors file) and config."""
        cfg = transformer_lens.config_from_transformer_lens(tl_cfg)
        return cls.from_state_dict(cfg, transformer_lens.weights_from_transformer_lens(state_dict))

    def to_transformer_lens(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state dict of NumPy arrays, HookedTransformerConfig kwargs) that build this model there."""
        cfg = transformer_lens.config_to_transformer_lens(self.cfg)
        return {k: np.asarray(v) for k, v in self.state_dict().items()}, cfg
