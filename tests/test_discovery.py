"""minillm/discovery.py: edge patching against one run per edge, EAP against a finite difference,
EAP-IG against exact patching and its completeness, ACDC's bookkeeping, the ROC, the errors; and
on Tracr's compiled frac_prevs, whose circuit nobody here wrote, the AUCs that must be 1.0.

Lesson 6 (run by tests/test_lessons.py) asserts the rest of the issue's checks on the real models:
AUC 1.0 for exact patching and ACDC on Tracr's reverse too, and the induction circuit of lesson 1's
model (L0H0 into the induction heads' keys, the loss within 10% with under 35% of the edges)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT
from minillm import discovery as D
from minillm.graph import Graph, ablated_outputs, edge_forward, run_with_edges
from minillm.tracr import PUBLISHED_CIRCUITS, load_fixture


def metric(logits):
    """A smooth metric with a non-zero gradient: the mean log-probability of token 0."""
    return jax.nn.log_softmax(logits, axis=-1)[..., 0].mean()


@pytest.fixture(scope="module")
def setup():
    cfg = CONFIGS["attn_only_ln"]  # the MLP edges are checked in tests/test_graph.py
    model = GPT(cfg, seed=5)
    clean, corrupted = random_tokens(cfg, batch=2, pos=6, seed=1), random_tokens(cfg, batch=2, pos=6, seed=2)
    return model, clean, corrupted


@pytest.mark.parametrize("kind", ["attn_only_ln", "mlp_noln_relu"])
def test_edge_patching_equals_one_run_per_edge(setup, kind):
    """Every edge; edge patching starts each pass at its receiver's block (3 layers and MLPs here)."""
    model, clean, corrupted = setup
    if kind != "attn_only_ln":
        model = GPT(CONFIGS[kind], seed=4)
        clean, corrupted = random_tokens(model.cfg, 2, 6, 1), random_tokens(model.cfg, 2, 6, 2)
    scores = D.edge_patching(model, clean, metric, corrupted=corrupted)
    g = Graph.of(model.cfg)
    ablated = ablated_outputs(model, clean, "corrupted", corrupted)
    assert scores.baseline == pytest.approx(float(metric(model(clean))), abs=1e-5)
    for e in range(len(g)):
        keep = np.ones(len(g))
        keep[e] = 0
        one = float(metric(run_with_edges(model, clean, keep, ablated))) - scores.baseline
        assert scores[g.edges[e]] == pytest.approx(one, abs=1e-5), g.edges[e]
    assert np.abs(scores.scores).max() > 1e-3
    assert scores.top(1)[0][1] == scores.scores[np.argmax(np.abs(scores.scores))]


def test_eap_is_the_first_order_change_of_edge_patching(setup):
    """EAP's score of an edge is d metric / d (ablating it): a central finite difference agrees."""
    model, clean, corrupted = setup
    scores = D.eap(model, clean, metric, corrupted=corrupted).scores
    ablated = ablated_outputs(model, clean, "corrupted", corrupted)
    n, eps = len(scores), 1e-2
    of = jax.jit(jax.vmap(lambda keep: metric(edge_forward(model, jnp.asarray(clean), keep, ablated)[0])))
    eye = np.eye(n, dtype=np.float32)
    fd = (np.asarray(of(1 - eps * eye)) - np.asarray(of(1 + eps * eye))) / (2 * eps)
    np.testing.assert_allclose(scores, fd, atol=2e-3 * np.abs(fd).max())
    exact = D.edge_patching(model, clean, metric, corrupted=corrupted).scores
    assert np.corrcoef(scores, exact)[0, 1] > 0.5  # a first-order estimate, not the same numbers
    assert not np.allclose(scores, exact, atol=1e-4)


def test_eap_ig_tends_to_exact_patching_along_one_edge(setup):
    model, clean, corrupted = setup
    exact = D.edge_patching(model, clean, metric, corrupted=corrupted)
    for edge, _ in exact.top(3):
        coarse = D.eap_ig(model, clean, metric, corrupted=corrupted, along=[edge], steps=1)
        fine = D.eap_ig(model, clean, metric, corrupted=corrupted, along=[edge], steps=32)
        assert fine[edge] == pytest.approx(exact[edge], rel=2e-3, abs=1e-5), edge
        assert abs(fine[edge] - exact[edge]) <= abs(coarse[edge] - exact[edge]) + 1e-6
        assert np.count_nonzero(fine.scores) == 1  # edges off the path score 0


def test_eap_ig_scores_add_up_to_ablating_every_edge(setup):
    model, clean, corrupted = setup
    f = D.faithfulness(model, clean, [], metric, corrupted=corrupted)
    total = f.empty - f.full
    ig = D.eap_ig(model, clean, metric, corrupted=corrupted, steps=32)
    eap = D.eap(model, clean, metric, corrupted=corrupted)
    assert ig.scores.sum() == pytest.approx(total, rel=1e-2)
    assert abs(ig.scores.sum() - total) < abs(eap.scores.sum() - total)


def test_acdc_bookkeeping(setup):
    model, clean, corrupted = setup
    n = len(Graph.of(model.cfg))
    keep_all, drop_all, mid = D.acdc_sweep(model, clean, [-1e9, 1e9, 0.02], corrupted=corrupted)
    assert len(keep_all) == n and len(drop_all) == 0
    assert 0 < len(mid) < n and mid.threshold == pytest.approx(0.02)
    # the metric ACDC carried is the metric of the circuit it returns (default: KL from the full model)
    kl = D.kl_divergence(model(clean))
    assert D.faithfulness(model, clean, mid, kl, corrupted=corrupted).circuit == pytest.approx(mid.metric, abs=1e-5)
    # each removal raised the KL by less than the threshold, so the total stays below n * threshold
    assert mid.metric < n * 0.02
    assert D.acdc(model, clean, 0.02, corrupted=corrupted).edges == mid.edges
    # every kept edge's receiver reaches the logits
    assert all(e in Graph.of(model.cfg).edges for e in mid.edges)


def test_roc_of_scores_and_of_a_sweep():
    g = Graph.of(CONFIGS["attn_only_ln"])
    truth = [g.edges[0], g.edges[2]]
    scores = D.EdgeScores(g, np.zeros(len(g)), 0.0, "test")
    scores.scores[:4] = [3.0, 2.0, -1.0, 0.5]  # |score| ranks edges 0, 1, 2, 3, then the zeros
    roc = D.roc(scores, truth)
    n_false = len(g) - 2
    # edge 0 outranks every false edge; edge 2 (|-1|) all but edge 1
    assert roc.auc == pytest.approx((n_false + (n_false - 1)) / (2 * n_false))
    assert roc.fpr[0] == roc.tpr[0] == 0 and roc.tpr[-1] == 1 and roc.fpr[-1] == 1
    perfect = D.Circuit(g, g.mask(truth))
    assert D.roc([perfect], truth).auc == 1.0
    assert D.roc([D.Circuit(g, ~g.mask(truth))], truth).auc == 0.0
    with pytest.raises(ValueError, match="ground truth"):
        D.roc(scores, [])
    with pytest.raises(TypeError):
        D.roc([], truth)


def test_bad_input_is_refused_with_the_problem_named(setup):
    model, clean, corrupted = setup
    with pytest.raises(ValueError, match="scalar"):
        D.eap(model, clean, lambda logits: logits.mean(-1), corrupted=corrupted)
    with pytest.raises(ValueError, match="same shape"):
        D.edge_patching(model, clean, metric, corrupted=corrupted[:1])
    with pytest.raises(ValueError, match="needs corrupted"):
        D.eap(model, clean, metric)
    with pytest.raises(ValueError, match="only with"):
        D.eap(model, clean, metric, corrupted=corrupted, ablation="zero")
    with pytest.raises(ValueError, match="ablation must be"):
        D.eap(model, clean, metric, ablation="resample")
    with pytest.raises(ValueError, match="steps"):
        D.eap_ig(model, clean, metric, corrupted=corrupted, steps=0)
    with pytest.raises(KeyError, match="Unknown edge"):
        D.faithfulness(model, clean, ["embed -> blocks.9.mlp"], metric, corrupted=corrupted)
    with pytest.raises(ValueError, match="finite"):
        D.acdc_sweep(model, clean, [float("nan")], corrupted=corrupted)
    with pytest.raises(TypeError, match="function"):
        D.eap(model, clean, 3.0, corrupted=corrupted)


# --- Tracr: circuits nobody here wrote ------------------------------------------------------------
def tracr_setup(name: str, length: int, batch: int = 8):
    """Sequences one shorter than the longest (at full length a zeroed length head gives the right
    length by accident), the metric ACDC used (KL, or MSE for a numerical output), zero ablation."""
    tm = load_fixture(name)
    rng = np.random.default_rng(0)
    tokens = np.concatenate([tm.encode(list(rng.choice(tm.input_space, length))) for _ in range(batch)])
    clean = tm.model(tokens)
    positions = tuple(range(1, length + 1))
    kind = D.mse if tm.is_numerical else D.kl_divergence
    return tm, tokens, kind(clean, positions)


@pytest.mark.parametrize("name", ["frac_prevs"])  # and reverse, in lesson 6
def test_exact_patching_and_acdc_recover_tracr_circuits(name):
    tm, tokens, kl = tracr_setup(name, load_fixture(name).max_seq_len - 1)
    truth = PUBLISHED_CIRCUITS[name]["acdc"]  # ACDC's own ground truth (zero ablation)
    exact = D.edge_patching(tm.model, tokens, kl, ablation="zero")
    sweep = D.acdc_sweep(tm.model, tokens, np.geomspace(1e-6, 10, 12), kl, ablation="zero")
    assert D.roc(exact, truth).auc == 1.0
    assert D.roc(sweep, truth).auc == 1.0
    # the ground truth alone computes what the model computes
    assert D.faithfulness(tm.model, tokens, truth, kl, ablation="zero").circuit < 1e-6
    if name == "frac_prevs":  # here ACDC's truth is exactly the circuit read off the weights
        assert set(truth) == set(tm.circuit)
        assert D.roc(exact, tm.circuit).auc == 1.0
        assert D.acdc(tm.model, tokens, 1e-3, kl, ablation="zero").edges == tm.circuit
