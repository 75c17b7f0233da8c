"""Linear and logistic probes (minillm/probes.py): a planted feature is recovered, noise scores ~0 held
out, directions live in the activations' basis, the vmapped sweep equals fitting each probe alone,
the controls separate what the model computes from what its input gives, and bad inputs are refused."""

import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT
from minillm.probes import Probe, fit_probe, probe_sweep, residual_stream_names

RNG = np.random.default_rng(0)
ACTS = RNG.normal(size=(600, 24)).astype(np.float32) * RNG.uniform(0.1, 10, size=24).astype(np.float32)
TRUE_W = RNG.normal(size=24)


def test_a_planted_linear_feature_is_recovered_with_r2_near_one():
    labels = ACTS @ TRUE_W + 3.0 + 0.01 * RNG.normal(size=600)
    probe = fit_probe(ACTS, labels)
    assert isinstance(probe, Probe) and probe.kind == "linear"
    assert probe.score > 0.999 and probe.train_score > 0.999
    assert probe.directions.shape == (24,)
    np.testing.assert_allclose(probe.directions, TRUE_W, rtol=1e-2, atol=1e-3)  # the raw basis, not standardised
    np.testing.assert_allclose(probe.predict(ACTS), ACTS @ probe.directions + probe.bias[0], rtol=1e-5)
    np.testing.assert_allclose(probe.predict(ACTS), labels, atol=0.05)


def test_several_targets_give_one_direction_each():
    w2 = RNG.normal(size=(24, 3))
    probe = fit_probe(ACTS, ACTS @ w2)
    assert probe.directions.shape == (3, 24) and probe.predict(ACTS).shape == (600, 3)
    assert probe.score > 0.999


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels_score_near_zero_on_held_out_data(seed):
    probe = fit_probe(ACTS, np.random.default_rng(seed + 10).normal(size=600), seed=seed)
    assert -0.1 < probe.score < 0.05
    chance = fit_probe(ACTS, np.random.default_rng(seed).integers(0, 2, 600), "logistic", seed=seed)
    assert 0.35 < chance.score < 0.65


def test_a_logistic_probe_separates_planted_classes():
    classes = np.digitize(ACTS @ TRUE_W, np.quantile(ACTS @ TRUE_W, [1 / 3, 2 / 3]))  # 3 classes
    probe = fit_probe(ACTS, classes, "logistic")
    assert probe.directions.shape == (3, 24)
    assert probe.score > 0.9
    np.testing.assert_array_equal(probe.predict(ACTS), probe.logits(ACTS).argmax(-1))


@pytest.mark.parametrize(
    "acts, labels, kind, match",
    [
        (ACTS, np.zeros(599), "linear", "600 activations but 599 labels"),
        (ACTS[:4], np.arange(4.0), "linear", "too few"),
        (np.where(np.arange(24) == 3, np.nan, ACTS), np.arange(600.0), "linear", "NaN"),
        (ACTS, np.ones(600, int), "logistic", "two classes"),
        (ACTS, np.ones(600), "linear", "same for every example"),
        (ACTS, np.arange(600.0), "logistic", "class ids"),
        (ACTS[:, 0], np.arange(600.0), "linear", r"\[n, d\]"),
        (ACTS, np.arange(600.0), "ridge", "kind"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_error(acts, labels, kind, match):
    with pytest.raises(ValueError, match=match):
        fit_probe(acts, labels, kind)


CFG = CONFIGS["mlp_ln_gelu"]
TOKENS = RNG.integers(0, 5, (240, 8)).astype(np.int32)  # five of the token ids: plenty of 1s to count
COUNT = np.cumsum(TOKENS == 1, axis=1).astype(np.float32)  # how many 1s so far: a running count


@pytest.mark.slow
def test_the_sweep_equals_fitting_each_probe_alone():
    model = GPT(CFG, seed=1)
    names = residual_stream_names(model) + ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_z"]
    sweep = probe_sweep(model, TOKENS, COUNT, names)
    assert sweep.scores.shape == (len(names), 8) and sweep.names == names
    _, cache = model.run_with_cache(TOKENS)
    for i, name in enumerate(names):
        acts = np.asarray(cache[name]).reshape(240, 8, -1)
        for pos in (0, 3, 7):
            alone = fit_probe(acts[:, pos], COUNT[:, pos])
            np.testing.assert_allclose(sweep.scores[i, pos], alone.score, atol=2e-3, err_msg=f"{name} {pos}")
            # the same read-out (directions themselves can differ along near-null directions of the acts)
            same = [acts[:, pos] @ d for d in (sweep.directions[name][pos], alone.directions)]
            same = [v - v.mean() for v in same]  # the sweep keeps no biases
            np.testing.assert_allclose(*same, atol=0.02 * COUNT[:, pos].std() + 1e-6, err_msg=f"{name} {pos}")
    assert sweep.score(("resid_post", 1), 3) == sweep.scores[names.index("blocks.1.hook_resid_post"), 3]


@pytest.mark.slow
def test_the_controls_and_pooled_positions():
    model = GPT(CFG, seed=1)
    sweep = probe_sweep(model, TOKENS, COUNT)
    # shuffled labels score at chance or below (held out, 48 sequences: a train/test shift of the label
    # mean alone can push R^2 well below 0), never like the real labels
    assert np.nanmax(sweep.shuffled) < 0.1 and np.nanmin(sweep.scores[1:, 1:]) > 0.5
    np.testing.assert_allclose(sweep.selectivity, sweep.scores - sweep.untrained)
    same = probe_sweep(model, TOKENS, COUNT, control_model=model)
    np.testing.assert_allclose(same.selectivity, 0.0, atol=1e-6)
    pooled = probe_sweep(model, TOKENS, COUNT, positions="pooled")
    assert pooled.scores.shape == (len(sweep.names), 1) and pooled.positions is None
    one_per_sequence = probe_sweep(model, TOKENS, COUNT[:, -1], positions=[7])
    np.testing.assert_allclose(one_per_sequence.scores[:, 0], sweep.scores[:, 7], atol=1e-6)


@pytest.mark.slow
def test_a_position_whose_label_never_varies_scores_nan():
    labels = COUNT.copy()
    labels[:, 2] = 5.0
    sweep = probe_sweep(GPT(CFG), TOKENS, labels)
    assert np.isnan(sweep.scores[:, 2]).all() and np.isfinite(sweep.scores[:, 3]).all()


def test_a_logistic_sweep_reads_the_current_token():
    is_one = (TOKENS == 1).astype(np.int32)
    sweep = probe_sweep(GPT(CFG), TOKENS, is_one, ["hook_embed"], kind="logistic")
    assert sweep.scores.min() > 0.95 and sweep.directions["hook_embed"].shape == (8, 2, CFG.d_model)


def test_bad_sweeps_are_refused():
    model = GPT(CFG)
    with pytest.raises(ValueError, match="labels must be"):
        probe_sweep(model, TOKENS, COUNT[:, :5])
    with pytest.raises(ValueError, match="positions"):
        probe_sweep(model, TOKENS, COUNT, positions=[8])
    with pytest.raises(KeyError, match="hook_resid_pre"):
        probe_sweep(model, TOKENS, COUNT, ["blocks.0.hook_resid_pr"])
    with pytest.raises(ValueError, match="too few"):
        probe_sweep(model, TOKENS[:4], COUNT[:4])


def test_mass_mean_direction_is_the_mean_shift_per_unit_of_label():
    from minillm.probes import mass_mean_direction

    rng = np.random.default_rng(5)
    shift = rng.normal(size=8)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8)) + np.outer(y, shift)
    np.testing.assert_allclose(mass_mean_direction(x, y), x[y == 1].mean(0) - x[y == 0].mean(0), rtol=1e-5)
    depth = rng.integers(0, 5, 400).astype(float)
    group = rng.integers(0, 3, 400)
    x = rng.normal(size=(400, 8)) * 0.1 + np.outer(depth, shift) + np.outer(group, 10 * rng.normal(size=8))
    np.testing.assert_allclose(mass_mean_direction(x, depth, group), shift, atol=0.02)  # the group offset removed
    with pytest.raises(ValueError, match="never varies"):
        mass_mean_direction(x, np.ones(400))
