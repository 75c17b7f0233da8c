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

import jax
import jax.numpy as jnp

from minillm.model import GPT, processing
from minillm.model.config import GPTConfig

Array = jax.Array


def _new_model(model: GPT, weights: dict[str, Array]) -> GPT:
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
    return _new_model(model, processing.fold_ln(model.state_dict(), model.cfg, fold_biases, center_weights))


def center_writing_weights(model: GPT) -> GPT:
    """A new GPT whose residual-stream writers (W_E, W_pos, W_O, b_O, W_out, b_out) have zero mean
    over d_model. Exact because every reader of the residual stream starts with a LayerNorm, which
    subtracts the mean; refused for models without LayerNorm."""
    _require_ln(model.cfg, "center_writing_weights")
    return _new_model(model, processing.center_writers(model.state_dict(), model.cfg))


def center_unembed(model: GPT) -> GPT:
    """A new GPT with W_U and b_U centred over the output vocabulary: the logits each lose their
    mean over the vocabulary, the log-probabilities are unchanged."""
    return _new_model(model, processing.center_unembed(model.state_dict()))


def fold_value_biases(model: GPT) -> GPT:
    """A new GPT with b_V = 0 and b_O += sum over heads of b_V @ W_O (attention rows sum to 1, so
    b_V always contributes exactly b_V @ W_O). Per-head outputs (hook_result, hook_v) change; the
    sum over heads, hook_attn_out, and everything downstream do not."""
    return _new_model(model, processing.fold_value_biases(model.state_dict(), model.cfg))


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
    w = processing.process(
        model.state_dict(),
        model.cfg,
        fold_layer_norm=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembedding=center_unembed,
        fold_biases_of_values=fold_value_biases,
    )
    return _new_model(model, w)
