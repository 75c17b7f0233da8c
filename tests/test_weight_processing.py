"""Weight processing (minillm/weight_processing.py) leaves the log-probabilities unchanged, returns a
new model without touching the input, and leaves the weights in the form it promises (LN folded to 1
and 0, writers centred, unembedding centred, value biases moved into b_O)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS, DEFAULT, numpy_weights, random_tokens

from minillm import GPT, GPTConfig
from minillm import weight_processing as WP

TOL = 1e-5
# The representative four and the one model with LayerNorm and a ReLU MLP (bidirectional, too: the
# transforms hold for any attention whose rows sum to 1).
NAMES = (*DEFAULT, "mlp_ln_relu_bidirectional")
LN_CONFIGS = [name for name in NAMES if CONFIGS[name].normalization_type == "LN"]
NO_LN_CONFIGS = [name for name in NAMES if CONFIGS[name].normalization_type is None]
TRANSFORMS = {
    "fold_layer_norm": WP.fold_layer_norm,
    "center_writing_weights": WP.center_writing_weights,
    "center_unembed": WP.center_unembed,
    "fold_value_biases": WP.fold_value_biases,
    "process_weights": WP.process_weights,
}


def perturbed(cfg: GPTConfig) -> GPT:
    """A model whose LayerNorms are far from (1, 0), whose biases are nonzero, and (with LayerNorm,
    which removes it again) whose residual-stream writers carry a large mean over d_model, so that
    every transform has something to move. Without LayerNorm that mean would grow the logits to tens,
    where float32 rounding of the log-probs alone exceeds the tolerance."""
    model = GPT(cfg)
    rng = np.random.default_rng(cfg.seed)
    weights = {}
    for name, value in model.state_dict().items():
        value = np.asarray(value)
        leaf = name.split(".")[-1]
        if leaf == "w":  # LayerNorm scale
            value = value + 0.5 * rng.standard_normal(value.shape).astype(np.float32)
        elif leaf == "b" or leaf.startswith("b_"):  # LayerNorm shift and every bias
            value = value + 0.3 * rng.standard_normal(value.shape).astype(np.float32)
        if leaf in WRITERS and cfg.normalization_type == "LN":  # a mean over d_model per row
            value = value + 0.5 * rng.standard_normal(value.shape[:-1] + (1,)).astype(np.float32)
        weights[name] = jnp.asarray(value)
    model.load_state_dict(weights)
    return model


_models: dict[str, GPT] = {}
_log_probs: dict[str, np.ndarray] = {}


def model_for(name: str) -> GPT:
    if name not in _models:
        _models[name] = perturbed(CONFIGS[name])
    return _models[name]


def log_probs(model: GPT) -> np.ndarray:
    return np.asarray(jax.nn.log_softmax(model(random_tokens(model.cfg)), axis=-1))


def reference_log_probs(name: str) -> np.ndarray:
    if name not in _log_probs:
        _log_probs[name] = log_probs(model_for(name))
    return _log_probs[name]


def applies(transform: str, config: str) -> bool:
    return not (transform == "center_writing_weights" and CONFIGS[config].normalization_type is None)


CASES = [(t, c) for t in TRANSFORMS for c in NAMES if applies(t, c)]


@pytest.mark.parametrize("transform, config", CASES)
def test_transform_leaves_log_probs_unchanged(transform, config):
    processed = TRANSFORMS[transform](model_for(config))
    np.testing.assert_allclose(log_probs(processed), reference_log_probs(config), atol=TOL, rtol=0)


@pytest.mark.parametrize("transform, config", CASES)
def test_transform_returns_a_new_model_and_leaves_the_input_untouched(transform, config):
    model = model_for(config)
    before = numpy_weights(model)
    processed = TRANSFORMS[transform](model)
    assert processed is not model and type(processed) is type(model) and processed.cfg == model.cfg
    after = numpy_weights(processed)
    if not (transform == "fold_layer_norm" and CONFIGS[config].normalization_type is None):
        assert any(not np.array_equal(after[k], before[k]) for k in before), "the transform changed nothing"
    # Writing into the new model in place must not reach the old one either.
    processed.load_state_dict({k: jnp.zeros_like(v) for k, v in processed.state_dict().items()})
    for name, value in numpy_weights(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def layer_norms(cfg: GPTConfig) -> list[str]:
    names = [f"blocks.{l}.ln1" for l in range(cfg.n_layers)] + ["ln_final"]
    if not cfg.attn_only:
        names += [f"blocks.{l}.ln2" for l in range(cfg.n_layers)]
    return names


def reading_weights(cfg: GPTConfig) -> list[tuple[str, int]]:
    """(name, d_model axis) of every weight that reads a LayerNorm's output."""
    names = [(f"blocks.{l}.attn.W_{x}", 1) for l in range(cfg.n_layers) for x in "QKV"]
    if not cfg.attn_only:
        names += [(f"blocks.{l}.mlp.W_in", 0) for l in range(cfg.n_layers)]
    return names + [("unembed.W_U", 0)]


WRITERS = ("W_E", "W_pos", "W_O", "b_O", "W_out", "b_out")  # the weights whose output is added to the residual stream


def writing_weights(cfg: GPTConfig) -> list[str]:
    """Every weight of the model named as a residual-stream writer (by its leaf name, among the weights
    the model actually has: an independent reading, not the library's list)."""
    return [name for name in GPT(cfg).state_dict() if name.split(".")[-1] in WRITERS]


def max_mean(x: np.ndarray, axis: int) -> float:
    return float(np.abs(x.mean(axis=axis)).max())


@pytest.mark.parametrize("config", LN_CONFIGS)
def test_fold_layer_norm_sets_every_layer_norm_to_one_and_zero_and_centres_its_readers(config):
    cfg, before = CONFIGS[config], numpy_weights(model_for(config))
    after = numpy_weights(WP.fold_layer_norm(model_for(config)))
    for ln in layer_norms(cfg):
        assert not np.allclose(before[f"{ln}.w"], 1) and not np.allclose(before[f"{ln}.b"], 0)
        np.testing.assert_array_equal(after[f"{ln}.w"], np.ones(cfg.d_model, np.float32))
        np.testing.assert_array_equal(after[f"{ln}.b"], np.zeros(cfg.d_model, np.float32))
    for name, axis in reading_weights(cfg):
        assert max_mean(after[name], axis) < 1e-6, name


@pytest.mark.parametrize("config", LN_CONFIGS)
def test_fold_layer_norm_without_centering_only_scales_the_readers(config):
    cfg, model = CONFIGS[config], model_for(config)
    before = numpy_weights(model)
    processed = WP.fold_layer_norm(model, center_weights=False)
    after = numpy_weights(processed)
    for l in range(cfg.n_layers):
        w = before[f"blocks.{l}.ln1.w"]
        np.testing.assert_allclose(
            after[f"blocks.{l}.attn.W_Q"], before[f"blocks.{l}.attn.W_Q"] * w[:, None], rtol=1e-6
        )
    np.testing.assert_allclose(log_probs(processed), reference_log_probs(config), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="fold_biases"):
        WP.fold_layer_norm(model, fold_biases=False)


@pytest.mark.parametrize("config", NO_LN_CONFIGS)
def test_fold_layer_norm_of_a_model_without_layer_norm_is_an_equal_copy(config):
    model = model_for(config)
    processed = WP.fold_layer_norm(model)
    assert processed is not model
    before, after = numpy_weights(model), numpy_weights(processed)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


@pytest.mark.parametrize("config", LN_CONFIGS)
def test_center_writing_weights_gives_zero_mean_over_d_model(config):
    cfg = CONFIGS[config]
    before = numpy_weights(model_for(config))
    centred = WP.center_writing_weights(model_for(config))
    after = numpy_weights(centred)
    for name in writing_weights(cfg):
        assert max_mean(before[name], -1) > 1e-2, name  # the input really had a mean to remove
        assert max_mean(after[name], -1) < 1e-6, name
        np.testing.assert_allclose(after[name], before[name] - before[name].mean(-1, keepdims=True), atol=1e-6)
    # and everything the forward pass writes into the residual stream has zero mean over d_model
    _, cache = centred.run_with_cache(
        random_tokens(cfg),
        names_filter=lambda n: n.endswith(("embed", "_out", "hook_result")) and not n.startswith("unembed."),
    )
    assert len(cache) == 2 + cfg.n_layers * (2 if cfg.attn_only else 3)
    for name, act in cache.items():
        assert max_mean(np.asarray(act), -1) < 1e-5, name


@pytest.mark.parametrize("config", NO_LN_CONFIGS)
def test_center_writing_weights_refuses_a_model_without_layer_norm(config):
    with pytest.raises(ValueError, match="LayerNorm"):
        WP.center_writing_weights(model_for(config))


@pytest.mark.parametrize("config", ["mlp_ln_gelu", "attn_only_noln"])
def test_center_unembed_gives_zero_mean_over_the_vocabulary(config):
    before = numpy_weights(model_for(config))
    after = numpy_weights(WP.center_unembed(model_for(config)))
    assert max_mean(before["unembed.W_U"], -1) > 1e-2
    assert max_mean(after["unembed.W_U"], -1) < 1e-6
    assert abs(after["unembed.b_U"].mean()) < 1e-6
    np.testing.assert_allclose(after["unembed.b_U"], before["unembed.b_U"] - before["unembed.b_U"].mean(), atol=1e-6)


@pytest.mark.parametrize("config", ["mlp_ln_relu_bidirectional", "attn_only_noln"])
def test_fold_value_biases_moves_b_V_through_W_O_into_b_O(config):
    cfg = CONFIGS[config]
    before = numpy_weights(model_for(config))
    after = numpy_weights(WP.fold_value_biases(model_for(config)))
    for l in range(cfg.n_layers):
        attn = f"blocks.{l}.attn"
        assert np.abs(before[f"{attn}.b_V"]).max() > 0
        np.testing.assert_array_equal(after[f"{attn}.b_V"], 0)
        expected = before[f"{attn}.b_O"] + np.einsum("he,hed->d", before[f"{attn}.b_V"], before[f"{attn}.W_O"])
        np.testing.assert_allclose(after[f"{attn}.b_O"], expected, atol=1e-5)


@pytest.mark.parametrize("config", NAMES)
def test_process_weights_composes_the_transforms_in_transformer_lens_order(config):
    cfg, model = CONFIGS[config], model_for(config)
    expected = model
    if cfg.normalization_type == "LN":
        expected = WP.center_writing_weights(WP.fold_layer_norm(expected))
    expected = WP.fold_value_biases(WP.center_unembed(expected))
    want, got = numpy_weights(expected), numpy_weights(WP.process_weights(model))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    skipped = numpy_weights(
        WP.process_weights(
            model, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
        )
    )
    for name, value in numpy_weights(model).items():
        np.testing.assert_array_equal(skipped[name], value)


def may_change(transform: str, cfg: GPTConfig) -> set[str]:
    """The weights each transform is allowed to rewrite."""
    if transform == "fold_layer_norm":
        names = {f"{ln}.{x}" for ln in layer_norms(cfg) for x in "wb"} | {"unembed.W_U", "unembed.b_U"}
        for l in range(cfg.n_layers):
            names |= {f"blocks.{l}.attn.{p}_{x}" for p in "Wb" for x in "QKV"}
            names |= {f"blocks.{l}.mlp.W_in", f"blocks.{l}.mlp.b_in"}
        return names
    if transform == "center_writing_weights":
        return set(writing_weights(cfg))
    if transform == "center_unembed":
        return {"unembed.W_U", "unembed.b_U"}
    if transform == "fold_value_biases":
        return {f"blocks.{l}.attn.{x}" for l in range(cfg.n_layers) for x in ("b_V", "b_O")}
    raise KeyError(transform)


@pytest.mark.parametrize("transform, config", [(t, c) for t, c in CASES if t != "process_weights"])
def test_transform_rewrites_only_the_weights_it_is_about(transform, config):
    cfg, model = CONFIGS[config], model_for(config)
    before, after = numpy_weights(model), numpy_weights(TRANSFORMS[transform](model))
    changed = {name for name in before if not np.array_equal(after[name], before[name])}
    assert changed <= may_change(transform, cfg), sorted(changed - may_change(transform, cfg))
