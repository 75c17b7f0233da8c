"""The network: a decoder-only transformer in which every intermediate tensor has a name.

Three files, read in this order. This one: `Block` (one layer: attention, then the MLP, each
adding to the residual stream) and `Transformer`, which holds `__init__` and `forward` and nothing
else. attention.py: `Attention`, one small method per step. components.py: `LayerNorm`, `MLP`, the
embeddings and the unembedding. Each activation passes through `hook("name", tensor)` on the line
that computes it; by default that call returns the tensor unchanged, and the call that built the
`Hooks` (minillm/model/hooks.py) decides what it records or replaces. The weight and hook names and
shapes are TransformerLens' (docs/conventions.md).

These files are only the network. The calls a user makes (`model(tokens)`, `run_with_cache`,
`model.W_Q`, `GPT.load`, ...) live on `GPT` (minillm/model/gpt.py), which checks inputs first
(minillm/model/inputs.py): `forward` trusts them.

Shapes: b batch, p position (q query, k key), h head, d d_model, e d_head, m d_mlp, v vocab.

References: Vaswani et al. 2017; Radford et al. 2019 (GPT-2, pre-LayerNorm); Elhage et al. 2021
(the residual-stream view and the names); TransformerLens (hook names, numerics); nanoGPT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from minillm.model.attention import Attention, at_positions
from minillm.model.components import MLP, Embed, LayerNorm, PosEmbed, Unembed
from minillm.model.config import GPTConfig
from minillm.model.hooks import Hooks, HookScope
from minillm.model.inputs import check_positions, layer_range

Array = jax.Array


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
