"""Weight processing: rewrite a model's weights into an equivalent, easier-to-read form.

Each function takes a GPT and returns a NEW GPT (the input is never changed) whose log-probabilities
are the same up to float rounding; only where things are written down moves:

- `fold_layer_norm`: a LayerNorm's w and b are folded into the weights that read its output
  (ln1 -> W_Q, W_K, W_V and b_Q, b_K, b_V; ln2 -> W_in, b_in; ln_final -> W_U, b_U), after which
  every LN has w = 1, b = 0 and only centres and scales. The reading weights are then centred
  over d_model (their input, a normalized vector, has zero mean, so that mean was never used).
- `center_writing_weights`: subtract the mean over d_model from everything that writes to the
  residual stream (W_E, W_pos, W_O, b_O, W_out, b_out). Every reader starts with a LayerNorm,
  which removes that mean anyway; models without LayerNorm are refused.
- `center_unembed`: subtract the mean over the output vocabulary from W_U and b_U; softmax is
  unchanged by adding the same number to every logit.
- `fold_value_biases`: b_V moves into b_O (b_O += sum over heads of b_V @ W_O): each row of an
  attention pattern sums to 1, so a head always adds exactly b_V @ W_O.
- `process_weights`: all four in TransformerLens' order, skipping what the config has no use for.

After processing, the weight-side circuits (minillm.circuits) describe what a head does to a
normalized input instead of ignoring the LayerNorm, and the direct-logit contributions of
components are free of constant offsets. Definitions and order follow TransformerLens'
`ProcessWeights` (weight_processing.py) and `HookedTransformer.process_weights_`; minillm keeps the
LayerNorm modules (with w = 1, b = 0) where TransformerLens switches the config to "LNPre".
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from minillm.model import GPT
from minillm.model.config import GPTConfig

Array = jax.Array
Weights = dict[str, Array]

_einsum = partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)


def _centered(x: Array, axis: int) -> Array:
    return x - x.mean(axis=axis, keepdims=True)


def _fold_ln_into(
    ln_w: Array, ln_b: Array, W: Array, b: Array, d_axis: int, fold_biases: bool, center_weights: bool
) -> tuple[Array, Array]:
    """(x * ln_w + ln_b) @ W + b == x @ W' + b' for a weight W with its d_model axis at d_axis."""
    shape = [1] * W.ndim
    shape[d_axis] = -1
    if fold_biases:
        b = b + jnp.tensordot(ln_b, W, axes=([0], [d_axis]), precision=jax.lax.Precision.HIGHEST)
    W = W * ln_w.reshape(shape)
    if center_weights:  # x is a normalized (zero-mean) vector: W's mean over d_model never mattered
        W = _centered(W, d_axis)
    return W, b


def _fold_layer_norm(w: Weights, cfg: GPTConfig, fold_biases: bool, center_weights: bool) -> Weights:
    w = dict(w)
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
        w[f"{ln}.w"] = jnp.ones_like(ln_w)
        if fold_biases:
            w[f"{ln}.b"] = jnp.zeros_like(ln_b)
    return w


def _writing_weights(cfg: GPTConfig) -> list[str]:
    """Every weight and bias that is added into the residual stream (d_model is the last axis)."""
    names = ["embed.W_E", "pos_embed.W_pos"]
    for l in range(cfg.n_layers):
        names += [f"blocks.{l}.attn.W_O", f"blocks.{l}.attn.b_O"]
        if not cfg.attn_only:
            names += [f"blocks.{l}.mlp.W_out", f"blocks.{l}.mlp.b_out"]
    return names


def _center_writing_weights(w: Weights, cfg: GPTConfig) -> Weights:
    w = dict(w)
    for name in _writing_weights(cfg):
        w[name] = _centered(w[name], -1)
    return w


def _center_unembed(w: Weights) -> Weights:
    w = dict(w)
    w["unembed.W_U"] = _centered(w["unembed.W_U"], -1)  # [d, v_out]: mean over the output vocab
    w["unembed.b_U"] = _centered(w["unembed.b_U"], -1)
    return w


def _fold_value_biases(w: Weights, cfg: GPTConfig) -> Weights:
    w = dict(w)
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        b_V, W_O = w[f"{attn}.b_V"], w[f"{attn}.W_O"]  # [h, e], [h, e, d]
        w[f"{attn}.b_O"] = w[f"{attn}.b_O"] + _einsum("he,hed->d", b_V, W_O)
        w[f"{attn}.b_V"] = jnp.zeros_like(b_V)
    return w


def _new_model(model: GPT, weights: Weights) -> GPT:
    """A fresh GPT with these weights, each cast back to the dtype it had in `model`."""
    own = model.state_dict()
    return type(model).from_state_dict(model.cfg, {k: jnp.asarray(v, own[k].dtype) for k, v in weights.items()})


def _require_ln(cfg: GPTConfig, what: str) -> None:
    if cfg.normalization_type != "LN":
        raise ValueError(
            f"{what}: this model has no LayerNorm (normalization_type={cfg.normalization_type!r}), so the "
            "residual stream is read as it is, mean included; centering the weights that write to it "
            "would change the model's outputs"
        )


# --- the public transforms ---------------------------------------------------------------------
def fold_layer_norm(model: GPT, *, fold_biases: bool = True, center_weights: bool = True) -> GPT:
    """A new GPT with every LayerNorm's w, b folded into the weights that read it; LN w = 1, b = 0.

    center_weights also centres the reading weights (W_Q, W_K, W_V, W_in, W_U) over d_model, which
    is exact only once the LN bias is folded too (it needs fold_biases). A model without LayerNorm
    has nothing to fold: the copy has the same weights.
    """
    if center_weights and not fold_biases:
        raise ValueError(
            "fold_layer_norm: center_weights=True needs fold_biases=True (a LayerNorm bias left "
            "in place has a nonzero mean, which the centred weights would no longer read)"
        )
    return _new_model(model, _fold_layer_norm(model.state_dict(), model.cfg, fold_biases, center_weights))


def center_writing_weights(model: GPT) -> GPT:
    """A new GPT whose residual-stream writers (W_E, W_pos, W_O, b_O, W_out, b_out) have zero mean
    over d_model. Exact because every reader of the residual stream starts with a LayerNorm, which
    subtracts the mean; refused for models without LayerNorm."""
    _require_ln(model.cfg, "center_writing_weights")
    return _new_model(model, _center_writing_weights(model.state_dict(), model.cfg))


def center_unembed(model: GPT) -> GPT:
    """A new GPT with W_U and b_U centred over the output vocabulary: the logits each lose their
    mean over the vocabulary, the log-probabilities are unchanged."""
    return _new_model(model, _center_unembed(model.state_dict()))


def fold_value_biases(model: GPT) -> GPT:
    """A new GPT with b_V = 0 and b_O += sum over heads of b_V @ W_O (attention rows sum to 1, so
    b_V always contributes exactly b_V @ W_O). Per-head outputs (hook_result, hook_v) change; the
    sum over heads, hook_attn_out, and everything downstream do not."""
    return _new_model(model, _fold_value_biases(model.state_dict(), model.cfg))


def process_weights(
    model: GPT,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> GPT:
    """A new GPT with the chosen transforms applied in TransformerLens' order: fold_layer_norm,
    center_writing_weights, center_unembed, fold_value_biases. The first two apply only to models
    with LayerNorm and are skipped otherwise, as in TransformerLens' `process_weights`."""
    cfg = model.cfg
    has_ln = cfg.normalization_type == "LN"
    w = model.state_dict()
    if fold_ln and has_ln:
        w = _fold_layer_norm(w, cfg, fold_biases=True, center_weights=True)
    if center_writing_weights and has_ln:
        w = _center_writing_weights(w, cfg)
    if center_unembed:
        w = _center_unembed(w)
    if fold_value_biases:
        w = _fold_value_biases(w, cfg)
        if center_writing_weights and has_ln:  # b_V @ W_O is already centred if W_O is; remove the rounding
            for l in range(cfg.n_layers):
                w[f"blocks.{l}.attn.b_O"] = _centered(w[f"blocks.{l}.attn.b_O"], -1)
    return _new_model(model, w)
