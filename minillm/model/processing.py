"""Weight processing on a state dict: the arithmetic behind minillm.weight_processing and
`GPT.from_pretrained(path, fold_ln=True, ...)`.

Each function takes TransformerLens-named weights (`{"blocks.0.attn.W_Q": [h, d, e], ...}`) and the
config, replaces the entries it rewrites in that same dict (the arrays themselves are never
modified), and returns it: an old array is freed as soon as its new one is in, so a loader holds
one copy of the model and one tensor more, never two models. The log-probabilities are unchanged up
to float rounding; minillm/weight_processing.py says what each transform does and why it is exact,
and gives the calls on a GPT. This module sits below the facade so that a checkpoint can be
processed while it loads, before any model exists.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model.config import GPTConfig

Array = jax.Array
Weights = dict[str, Any]

_HIGHEST = jax.lax.Precision.HIGHEST


def _xp(x: Any) -> Any:
    """NumPy for NumPy arrays (a loader processes weights before they become JAX arrays: NumPy
    returns freed memory to the system at once), jax.numpy otherwise."""
    return np if isinstance(x, np.ndarray) else jnp


def _einsum(spec: str, a: Any, b: Any) -> Any:
    return np.einsum(spec, a, b) if isinstance(b, np.ndarray) else jnp.einsum(spec, a, b, precision=_HIGHEST)


def centered(x: Array, axis: int) -> Array:
    return x - x.mean(axis=axis, keepdims=True)


def _fold_ln_into(
    ln_w: Array, ln_b: Array, W: Array, b: Array, d_axis: int, fold_biases: bool, center_weights: bool
) -> tuple[Array, Array]:
    """(x * ln_w + ln_b) @ W + b == x @ W' + b' for a weight W with its d_model axis at d_axis."""
    shape = [1] * W.ndim
    shape[d_axis] = -1
    if fold_biases:
        axes = ([0], [d_axis])
        b = b + (
            np.tensordot(ln_b, W, axes)
            if isinstance(W, np.ndarray)
            else jnp.tensordot(ln_b, W, axes, precision=_HIGHEST)
        )
    W = W * ln_w.reshape(shape)
    if center_weights:  # x is a normalized (zero-mean) vector: W's mean over d_model never mattered
        W = centered(W, d_axis)
    return W, b


def fold_ln(w: Weights, cfg: GPTConfig, fold_biases: bool = True, center_weights: bool = True) -> Weights:
    """Every LayerNorm's w (and b) folded into the weights that read it; then LN w = 1 (b = 0)."""
    if cfg.normalization_type != "LN":
        return w
    readers = []  # (LN name, [(weight name, bias name, d_model axis of the weight)])
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        readers.append((f"blocks.{l}.ln1", [(f"{attn}.W_{x}", f"{attn}.b_{x}", 1) for x in "QKV"]))  # [h, d, e]
        if not cfg.attn_only:
            readers.append((f"blocks.{l}.ln2", [(f"blocks.{l}.mlp.W_in", f"blocks.{l}.mlp.b_in", 0)]))  # [d, m]
    readers.append(("ln_final", [("unembed.W_U", "unembed.b_U", 0)]))  # [d, v_out]
    for ln, weights in readers:
        ln_w, ln_b = w[f"{ln}.w"], w[f"{ln}.b"]
        for W_name, b_name, d_axis in weights:
            w[W_name], w[b_name] = _fold_ln_into(ln_w, ln_b, w[W_name], w[b_name], d_axis, fold_biases, center_weights)
        w[f"{ln}.w"] = _xp(ln_w).ones_like(ln_w)
        if fold_biases:
            w[f"{ln}.b"] = _xp(ln_b).zeros_like(ln_b)
    return w


def writing_weights(cfg: GPTConfig) -> list[str]:
    """Every weight and bias that is added into the residual stream (d_model is the last axis)."""
    names = ["embed.W_E", "pos_embed.W_pos"]
    for l in range(cfg.n_layers):
        names += [f"blocks.{l}.attn.W_O", f"blocks.{l}.attn.b_O"]
        if not cfg.attn_only:
            names += [f"blocks.{l}.mlp.W_out", f"blocks.{l}.mlp.b_out"]
    return names


def center_writers(w: Weights, cfg: GPTConfig) -> Weights:
    """The residual stream's writers with zero mean over d_model (exact only behind a LayerNorm)."""
    for name in writing_weights(cfg):
        w[name] = centered(w[name], -1)
    return w


def center_unembed(w: Weights) -> Weights:
    """W_U and b_U with zero mean over the output vocabulary."""
    w["unembed.W_U"] = centered(w["unembed.W_U"], -1)  # [d, v_out]: mean over the output vocab
    w["unembed.b_U"] = centered(w["unembed.b_U"], -1)
    return w


def fold_value_biases(w: Weights, cfg: GPTConfig) -> Weights:
    """b_V = 0 and b_O += sum over heads of b_V @ W_O."""
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        b_V, W_O = w[f"{attn}.b_V"], w[f"{attn}.W_O"]  # [h, e], [h, e, d]
        w[f"{attn}.b_O"] = w[f"{attn}.b_O"] + _einsum("he,hed->d", b_V, W_O)
        w[f"{attn}.b_V"] = _xp(b_V).zeros_like(b_V)
    return w


def process(
    w: Weights,
    cfg: GPTConfig,
    *,
    fold_layer_norm: bool = True,
    center_writing_weights: bool = True,
    center_unembedding: bool = True,
    fold_biases_of_values: bool = True,
) -> Weights:
    """The chosen transforms in TransformerLens' order: fold the LayerNorms, centre the writing
    weights, centre the unembedding, fold the value biases. The first two apply only to models with
    LayerNorm and are skipped otherwise, as in TransformerLens' `process_weights`."""
    has_ln = cfg.normalization_type == "LN"
    if fold_layer_norm and has_ln:
        w = fold_ln(w, cfg)
    if center_writing_weights and has_ln:
        w = center_writers(w, cfg)
    if center_unembedding:
        w = center_unembed(w)
    if fold_biases_of_values:
        w = fold_value_biases(w, cfg)
        if center_writing_weights and has_ln:  # b_V @ W_O is already centred if W_O is; remove the rounding
            for l in range(cfg.n_layers):
                w[f"blocks.{l}.attn.b_O"] = centered(w[f"blocks.{l}.attn.b_O"], -1)
    return w
