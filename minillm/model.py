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

from minillm import losses, params, sampling, transformer_lens
from minillm.config import GPTConfig
from minillm.hooks import ActivationCache, FwdHooks, Hooks, HookScope, NameFilter
from minillm.inputs import check_attention_mask, check_resid, check_tokens, layer_range
from minillm.weight_views import WeightViews

Array = jax.Array
Layer = int | None  # start_at_layer / stop_at_layer: None is the model's first / last


def _normal(rngs: nnx.Rngs, cfg: GPTConfig, *shape: int) -> nnx.Param:
    return nnx.Param(cfg.init_range * jax.random.normal(rngs.params(), shape, jnp.float32))


def _zeros(*shape: int) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32))


class LayerNorm(nnx.Module):
    """LayerNorm as TransformerLens computes it: hook_scale and hook_normalized come before w, b.
    normalization_type "LNPre" has no w and b (TransformerLens' LayerNormPre, for folded weights)."""

    def __init__(self, cfg: GPTConfig):
        if cfg.normalization_type == "LN":
            self.w = nnx.Param(jnp.ones((cfg.d_model,), jnp.float32))  # [d]
            self.b = _zeros(cfg.d_model)  # [d]
        self.eps = cfg.eps

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d]
        x = x - x.mean(axis=-1, keepdims=True)
        scale = hook("hook_scale", jnp.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps))  # [b, p, 1]
        x = hook("hook_normalized", x / scale)  # [b, p, d]
        return x * self.w + self.b if hasattr(self, "w") else x


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

    def __call__(self, x: Array, hook: HookScope, attention_mask: Array | None = None) -> Array:
        """x [b, p, d] -> attn_out [b, p, d] (before its hook); attention_mask [b, p], 0 at padding."""
        q = hook("hook_q", jnp.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)
        k = hook("hook_k", jnp.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)
        v = hook("hook_v", jnp.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        n_pos = x.shape[1]
        visible = jnp.ones((1, 1, n_pos, n_pos), bool)  # [b, h, q, k]: the keys each query may see
        if self.causal:
            visible = visible & jnp.tril(visible)  # a query sees keys at or before it
        if attention_mask is not None:
            visible = visible & (attention_mask[:, None, None, :] > 0)  # never a padding key
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

    def __call__(self, x: Array, hook: HookScope) -> Array:  # x [b, p, d] -> mlp_out [b, p, d] (before its hook)
        pre = hook("hook_pre", jnp.einsum("bpd,dm->bpm", x, self.W_in) + self.b_in)  # [b, p, m]
        if self.act_fn == "gelu":
            post = jax.nn.gelu(pre, approximate=False)  # exact erf GELU, as TransformerLens' "gelu"
        else:
            post = jax.nn.relu(pre)
        post = hook("hook_post", post)  # [b, p, m]
        return jnp.einsum("bpm,md->bpd", post, self.W_out) + self.b_out


class Block(nnx.Module):
    """resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid))."""

    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        use_ln = cfg.normalization_type is not None
        self.ln1 = LayerNorm(cfg) if use_ln else None
        self.attn = Attention(cfg, rngs)
        self.ln2 = LayerNorm(cfg) if use_ln and not cfg.attn_only else None
        self.mlp = None if cfg.attn_only else MLP(cfg, rngs)

    def __call__(self, resid_pre: Array, hook: HookScope, attention_mask: Array | None = None) -> Array:
        resid_pre = hook("hook_resid_pre", resid_pre)  # [b, p, d]
        attn_in = self.ln1(resid_pre, hook.scope("ln1")) if self.ln1 is not None else resid_pre
        attn_out = hook("hook_attn_out", self.attn(attn_in, hook.scope("attn"), attention_mask))
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
        # Traced tokens cannot be range-checked (inputs.check_tokens), and JAX would clamp a bad id
        # to a real token: give NaN instead, which attention then spreads over the whole sequence.
        d_vocab = self.W_E.shape[0]
        in_range = (tokens >= 0) & (tokens < d_vocab)
        rows = self.W_E[...][jnp.clip(tokens, 0, d_vocab - 1)]
        return jnp.where(in_range[..., None], rows, jnp.nan)


class PosEmbed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_pos = _normal(rngs, cfg, cfg.n_ctx, cfg.d_model)  # [n_ctx, d]

    def __call__(self, tokens: Array, attention_mask: Array | None = None) -> Array:  # tokens [b, p] -> [b, p, d]
        n_batch, n_pos = tokens.shape
        if attention_mask is None:
            return jnp.broadcast_to(self.W_pos[:n_pos], (n_batch, n_pos, self.W_pos.shape[1]))
        # with padding, as TransformerLens: positions count real tokens only (left padding shifts
        # them to start at 0), and padding tokens get no position embedding
        position = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)  # [b, p]
        return self.W_pos[...][position] * (attention_mask[..., None] > 0)


class Unembed(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        self.W_U = _normal(rngs, cfg, cfg.d_model, cfg.d_vocab_out)  # [d, v_out]
        self.b_U = _zeros(cfg.d_vocab_out)  # [v_out]

    def __call__(self, x: Array, hook: HookScope) -> Array:  # [b, p, d] -> logits [b, p, v_out]
        x = hook("hook_in", x)
        return hook("hook_out", jnp.einsum("bpd,dv->bpv", x, self.W_U) + self.b_U)


class GPT(WeightViews, nnx.Module):
    """A GPT whose every activation can be cached or replaced by name.

    model = GPT(cfg)                       # weights drawn from cfg.seed (or seed=..., a key or int)
    logits = model(tokens)                 # int tokens [b, p] (never 1-D) -> logits [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens, names_filter=None)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])

    model.W_Q, model.OV, ...: TransformerLens' stacked weight views (minillm/weight_views.py).
    Each call also takes start_at_layer=l (the input is then the residual stream [b, p, d] entering
    block l) and stop_at_layer=l (it returns the residual stream entering block l, not the logits).
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
    ) -> Array:
        """The forward pass with explicit hooks (the public calls below build them): tokens [b, p] -> logits."""
        layers = layer_range(self.cfg, start_at_layer, stop_at_layer)
        shape = np.shape(input)[:2]
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
            resid = self.blocks[l](resid, hooks.scope(f"blocks.{l}"), mask)  # [b, p, d]
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
        hooks = Hooks(fwd_hooks, cache=names_filter, n_layers=self.cfg.n_layers)
        layers = dict(start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)
        out = self.forward(input, hooks, attention_mask=attention_mask, **layers)
        hooks.check(self.hook_names)
        partial = start_at_layer is not None or stop_at_layer is not None
        cache = hooks.activation_cache(self.hook_names() if partial else None)
        if remove_batch_dim:
            cache = cache.remove_batch_dim()
        if stop_at_layer is not None:
            if return_type != "logits":
                raise ValueError(f"with stop_at_layer the output is the residual stream, not {return_type!r}")
            return out, cache
        targets = tokens if tokens is not None else (input if start_at_layer is None else None)
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
