"""Attribution graphs (minillm/attribution.py): the property that defines them (in the replacement
model, with attention, LayerNorm scales and every MLP frozen, scaling one source changes every target
by exactly its edge weight) on every model kind the tests build; complete graphs when the
transcoders are exact; attention-only models; pruning against a matrix worked by hand; the scores;
interventions with frozen and free attention; the JSON file; and bad input."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT
from minillm.attribution import (
    AttributionGraph,
    attribute,
    graph_scores,
    influence,
    intervene,
    normalized_adjacency,
    prune,
)
from minillm.transcoders import Transcoder, gather_mlp_io

MLP_CONFIGS = [name for name, cfg in CONFIGS.items() if not cfg.attn_only]
ATTN_ONLY = [name for name, cfg in CONFIGS.items() if cfg.attn_only]
QUICK = ("mlp_ln_gelu",)  # the quick run's one; `pytest -m slow` runs the rest


def random_transcoders(model, d_transcoder=16, seed=0, fire=0.15):
    """Untrained transcoders, one per layer, whose features fire on about `fire` of the inputs (the
    edges are exact whatever the transcoders' quality): ReLU with a skip path in layer 0, TopK
    without one in layer 1, JumpReLU with a skip in layer 2."""
    rng = np.random.default_rng(seed)
    d = model.cfg.d_model
    data = gather_mlp_io(model, random_tokens(model.cfg, 8, model.cfg.n_ctx, seed=seed + 1))
    out = []
    for layer, (x, y) in enumerate(data):
        W_enc = (rng.normal(size=(d, d_transcoder)) / np.sqrt((x**2).sum(1).mean())).astype(np.float32)
        b_enc = -np.quantile(x @ W_enc, 1 - fire, axis=0)
        W_dec = (rng.normal(size=(d_transcoder, d)) * y.std()).astype(np.float32)
        W_skip = (rng.normal(size=(d, d)) * 0.2 * y.std() / x.std()).astype(np.float32)
        kind = ("relu", "topk", "jumprelu")[layer % 3]
        extra = {"topk": dict(k=4), "jumprelu": dict(threshold=np.full(d_transcoder, 0.05, np.float32))}.get(kind, {})
        skip = W_skip if kind != "topk" else None
        out.append(Transcoder.for_model(model, layer, W_enc, b_enc, W_dec, y.mean(0), skip, activation=kind, **extra))
    return out


def prompt_of(cfg, seed=0):
    return random_tokens(cfg, 1, cfg.n_ctx - 2, seed=seed)[0]


def demeaned(logits):
    return logits[-1] - logits[-1].mean()


def target_changes(graph, base, out):
    """The change of every target of the graph between two interventions: [n] (0 at sources)."""
    change = np.zeros(graph.n_nodes)
    for i in graph.nodes_of("feature"):
        l, q, f = graph.layer[i], graph.position[i], graph.index[i]
        change[i] = out.pre_activations[l][q, f] - base.pre_activations[l][q, f]
    logits = graph.nodes_of("logit")
    change[logits] = (demeaned(out.logits) - demeaned(base.logits))[graph.index[logits]]
    return change


def spread(indices, n):
    """Up to n entries of indices, spread over it (first and last included)."""
    return indices[np.unique(np.linspace(0, len(indices) - 1, min(n, len(indices))).astype(int))]


# ---------------------------------------------------------------------------------------------
# The defining property
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in MLP_CONFIGS])
def test_each_edge_is_the_change_of_its_target_in_the_replacement_model(name):
    """Scaling a feature's activation by 2 (adding the error vector, the embedding again) in the
    frozen model changes each feature's pre-activation and each demeaned logit by exactly the edge
    weight: float error only. bfloat16 models are attributed in float32."""
    model = GPT(CONFIGS[name])
    tcs = random_transcoders(model)
    prompt = prompt_of(model.cfg)
    graph = attribute(model, tcs, prompt)
    features = graph.nodes_of("feature")
    assert len(features) > 10 and len(set(graph.layer[features])) == model.cfg.n_layers
    A = graph.adjacency
    tol = 2e-5 * max(1.0, np.abs(A).max())
    base = intervene(model, tcs, prompt)
    for i in spread(features, 5):
        l, q, f = int(graph.layer[i]), int(graph.position[i]), int(graph.index[i])
        out = intervene(model, tcs, prompt, [(l, q, f, 2 * graph.activation[i])])
        np.testing.assert_allclose(target_changes(graph, base, out), A[:, i], atol=tol, err_msg=f"feature {l, q, f}")
    L, p, d = model.cfg.n_layers, len(prompt), model.cfg.d_model
    _, clean = _clean(model, tcs, prompt)
    for i in spread(graph.nodes_of("error"), 3):
        delta = np.zeros((L, p, d), np.float32)
        delta[graph.layer[i], graph.position[i]] = clean.errors[graph.layer[i], graph.position[i]]
        out = intervene(model, tcs, prompt, mlp_out_delta=delta)
        np.testing.assert_allclose(target_changes(graph, base, out), A[:, i], atol=tol)
    for i in spread(graph.nodes_of("embedding"), 3):
        delta = np.zeros((p, d), np.float32)
        delta[graph.position[i]] = clean.embed[graph.position[i]]
        out = intervene(model, tcs, prompt, embed_delta=delta)
        np.testing.assert_allclose(target_changes(graph, base, out), A[:, i], atol=tol)
    # the graph's shape: features feed later layers only, errors and embeddings are sources only
    later = graph.layer[:, None] > graph.layer[None, :]
    assert not A[:, features][~later[:, features]].any()
    assert not A[graph.kind != "feature"][:, graph.kind != "logit"][: -len(graph.nodes_of("logit"))].any()
    assert not A[:, graph.kind == "logit"].any()


def test_feature_edges_are_exact_when_a_slot_has_more_features_than_a_packed_row():
    """The feature sources are packed by (layer, position) into rows of 16 (module docstring): with
    about 38 of 64 ReLU features active at a slot, a slot takes several rows, and the features in
    the later rows (rank 16 and up at their slot) still have their exact edges."""
    model = GPT(CONFIGS["mlp_ln_gelu"])
    tcs = random_transcoders(model, d_transcoder=64, fire=0.6)
    prompt = prompt_of(model.cfg)
    graph = attribute(model, tcs, prompt)
    features = graph.nodes_of("feature")
    slot = graph.layer[features] * len(prompt) + graph.position[features]
    rank = np.array([(slot[:j] == slot[j]).sum() for j in range(len(slot))])
    assert np.bincount(slot).max() > 32  # three rows at some slot
    A = graph.adjacency
    tol = 2e-5 * max(1.0, np.abs(A).max())
    base = intervene(model, tcs, prompt)
    later = features[(rank >= 16) & (graph.layer[features] < model.cfg.n_layers - 1)]
    assert len(later) > 0
    for i in spread(later, 4):
        l, q, f = int(graph.layer[i]), int(graph.position[i]), int(graph.index[i])
        out = intervene(model, tcs, prompt, [(l, q, f, 2 * graph.activation[i])])
        assert np.abs(A[:, i]).max() > 0
        np.testing.assert_allclose(target_changes(graph, base, out), A[:, i], atol=tol, err_msg=f"feature {l, q, f}")


def test_the_packing_of_the_feature_sources():
    """_pack_sources on slots out of order, an empty slot and a slot of 40 features: each feature's
    write is at its place, in a row of its slot; the rest is zeros; the padding points at place 0."""
    from minillm.attribution import _ROW, _ROW_PAD, _pack_sources

    rng = np.random.default_rng(0)
    f_slot = rng.permutation(np.r_[np.zeros(40, int), np.full(3, 2), np.full(17, 3)])
    writes = rng.normal(size=(len(f_slot), 5)).astype(np.float32)
    s = _pack_sources(f_slot, writes, 5, 64)
    n_rows = 3 + 1 + 2  # slot 0: 40 in rows of 16; slot 1: none; slot 2: 3; slot 3: 17; slot 4: none
    assert s.packed.shape == (-(-n_rows // _ROW_PAD) * _ROW_PAD, _ROW, 5) and s.flat.shape == (64,)
    flat = s.packed.reshape(-1, 5)
    np.testing.assert_array_equal(flat[s.flat[: len(f_slot)]], writes)
    np.testing.assert_array_equal(s.slot[s.flat[: len(f_slot)] // _ROW], f_slot)
    assert len(set(s.flat[: len(f_slot)])) == len(f_slot) and not s.flat[len(f_slot) :].any()
    others = np.ones(len(flat), bool)
    others[s.flat[: len(f_slot)]] = False
    assert not flat[others].any()


def _clean(model, tcs, prompt):
    from minillm.attribution import _clean_run, _prepare

    model32, tcs, tokens = _prepare(model, tcs, prompt, "test")
    clean = _clean_run(model32, tcs, tokens)
    return model32, type(clean)(*(np.asarray(v) if hasattr(v, "shape") else v for v in clean))


@pytest.mark.parametrize(
    "name", [n if n == "attn_only_ln" else pytest.param(n, marks=pytest.mark.slow) for n in ATTN_ONLY]
)
def test_an_attention_only_graph_is_embeddings_to_logits(name):
    """No MLP, no transcoders: the graph is each position's embedding -> each top logit through the
    frozen attention. The biases are 0 at initialisation, so each logit's edges add up to it."""
    model = GPT(CONFIGS[name])
    prompt = prompt_of(model.cfg)
    graph = attribute(model, [], prompt)
    assert set(graph.kind) == {"embedding", "logit"}
    logits = graph.nodes_of("logit")
    np.testing.assert_allclose(graph.adjacency[logits].sum(1), graph.target_value[logits], atol=1e-5)
    real = np.asarray(model(prompt[None]))[0]
    np.testing.assert_allclose(graph.target_value[logits], demeaned(real)[graph.index[logits]], atol=1e-5)
    assert graph.scores() == pytest.approx({"replacement": 1.0, "completeness": 1.0})
    base = intervene(model, [], prompt)
    delta = np.zeros((len(prompt), model.cfg.d_model), np.float32)
    _, clean = _clean(model, [], prompt)
    delta[3] = clean.embed[3]
    out = intervene(model, [], prompt, embed_delta=delta)
    np.testing.assert_allclose(target_changes(graph, base, out), graph.adjacency[:, graph.nodes_of("embedding")[3]],
                               atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="attention-only model has no MLP"):
        attribute(model, [None, None], prompt)


# ---------------------------------------------------------------------------------------------
# Exact transcoders: a complete graph
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["mlp_noln_relu"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in ("mlp_ln_relu_bidirectional", "mlp_lnpre_relu")],
)
def test_with_exact_transcoders_the_graph_is_complete(name):
    """A ReLU MLP is its own transcoder (Transcoder.from_mlp): no error, so both scores are 1, and
    with the biases 0 (as initialised) the edges into each target add up to its value."""
    model = GPT(CONFIGS[name])
    tcs = [Transcoder.from_mlp(model, layer) for layer in range(model.cfg.n_layers)]
    graph = attribute(model, tcs, prompt_of(model.cfg, seed=1))
    assert np.abs(graph.activation[graph.kind == "error"]).max() < 1e-5
    assert graph.scores() == pytest.approx({"replacement": 1.0, "completeness": 1.0}, abs=1e-5)
    targets = np.flatnonzero(np.isin(graph.kind, ["feature", "logit"]))
    np.testing.assert_allclose(graph.adjacency[targets].sum(1), graph.target_value[targets], atol=2e-5)
    noisy = attribute(model, random_transcoders(model), prompt_of(model.cfg, seed=1)).scores()
    assert noisy["replacement"] < 0.95 and noisy["completeness"] < 0.95  # what 1 is measured against


def linear_mlp_model():
    """mlp_noln_relu with every MLP linear (b_in 10 larger: no ReLU cuts on these prompts), and its exact transcoders:
    the skip path W_in W_out, b_dec = b_in W_out + b_out, and features that never fire."""
    model = GPT(CONFIGS["mlp_noln_relu"])
    weights = {k: np.array(v) for k, v in model.state_dict().items()}
    for layer in range(model.cfg.n_layers):  # b_out takes the shift back out: the same linear map
        weights[f"blocks.{layer}.mlp.b_out"] -= 10.0 * weights[f"blocks.{layer}.mlp.W_out"].sum(0)
        weights[f"blocks.{layer}.mlp.b_in"] += 10.0
    model = GPT.from_state_dict(model.cfg, weights)
    tcs = []
    for layer in range(model.cfg.n_layers):
        W_in, b_in = weights[f"blocks.{layer}.mlp.W_in"], weights[f"blocks.{layer}.mlp.b_in"]
        W_out, b_out = weights[f"blocks.{layer}.mlp.W_out"], weights[f"blocks.{layer}.mlp.b_out"]
        d = W_in.shape[0]
        tcs.append(Transcoder.for_model(model, layer, np.zeros((d, 4)), -np.ones(4), np.eye(4, d), b_in @ W_out + b_out,
                                        W_in @ W_out))  # fmt: skip
    return model, tcs


def test_a_skip_path_that_is_the_mlp_gives_a_complete_graph_and_exact_edges_with_attention_frozen():
    """With linear MLPs, exact skip-only transcoders and no LayerNorm, the only nonlinearity is
    attention: no feature and no error, scores 1, and freezing the attention alone
    (freeze="attention") moves each target by exactly its edge weight, as the replacement model does."""
    model, tcs = linear_mlp_model()
    prompt = prompt_of(model.cfg, seed=2)
    _, cache = model.run_with_cache(prompt[None])
    assert all(cache["pre", layer].min() > 0 for layer in range(model.cfg.n_layers))  # linear indeed
    graph = attribute(model, tcs, prompt)
    assert not (graph.kind == "feature").any()
    assert graph.activation[graph.kind == "error"].max() < 1e-4
    assert graph.scores() == pytest.approx({"replacement": 1.0, "completeness": 1.0}, abs=1e-4)
    _, clean = _clean(model, tcs, prompt)
    for freeze in ("all", "attention"):
        base = intervene(model, tcs, prompt, freeze=freeze)
        for i in graph.nodes_of("embedding")[[0, 4, -1]]:
            delta = np.zeros((len(prompt), model.cfg.d_model), np.float32)
            delta[graph.position[i]] = clean.embed[graph.position[i]]
            out = intervene(model, tcs, prompt, freeze=freeze, embed_delta=delta)
            np.testing.assert_allclose(target_changes(graph, base, out), graph.adjacency[:, i], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Pruning and scores
# ---------------------------------------------------------------------------------------------
# A graph small enough to work by hand. Nodes: 0, 1 features (0 in layer 0, 1 in layer 1), 2 an error,
# 3, 4 embeddings, 5 the one logit. A[target, source]:
#   logit 5 <- feature 1: 3, error 2: -1          normalised: 3/4, 1/4
#   feature 1 <- feature 0: 2, embedding 4: 2     normalised: 1/2, 1/2
#   feature 0 <- embedding 3: -4, embedding 4: 1  normalised: 4/5, 1/5
HAND = np.zeros((6, 6))
HAND[5, 1], HAND[5, 2] = 3, -1
HAND[1, 0], HAND[1, 4] = 2, 2
HAND[0, 3], HAND[0, 4] = -4, 1
HAND_W = np.array([0, 0, 0, 0, 0, 1.0])
HAND_KIND = np.array(["feature", "feature", "error", "embedding", "embedding", "logit"])


def test_influence_pruning_and_scores_on_a_graph_worked_by_hand():
    N = normalized_adjacency(HAND)
    np.testing.assert_allclose(N[5], [0, 3 / 4, 1 / 4, 0, 0, 0])
    # influence = w N + w N^2 + w N^3: feature 1 gets 3/4; feature 0 3/4 * 1/2 = 3/8; error 1/4;
    # embedding 3: 3/8 * 4/5 = 3/10; embedding 4: 3/4 * 1/2 + 3/8 * 1/5 = 9/20
    want = [3 / 8, 3 / 4, 1 / 4, 3 / 10, 9 / 20, 0]
    np.testing.assert_allclose(influence(HAND, HAND_W), want)
    # the features' influence is 3/4 and 3/8 (total 9/8): 3/4 alone is 2/3 of it
    pruned = prune(HAND, HAND_W, HAND_KIND == "feature", node_threshold=0.6, edge_threshold=1.0)
    assert pruned.node_fraction == pytest.approx(2 / 3)
    # feature 0 is gone; feature 1's input is then embedding 4 alone; every remaining edge is kept;
    # embedding 3 only fed feature 0, so it is dropped too
    np.testing.assert_array_equal(pruned.nodes, [False, True, True, False, True, True])
    assert pruned.edges.sum() == 3 and pruned.edges[5, 1] and pruned.edges[5, 2] and pruned.edges[1, 4]
    both = prune(HAND, HAND_W, HAND_KIND == "feature", node_threshold=0.7, edge_threshold=1.0)
    assert both.node_fraction == 1.0 and both.nodes.all()
    # edge influence (node threshold 1): normalised weight x (the target's influence + its weight):
    # 5<-1: 3/4, 5<-2: 1/4, 1<-0: 3/8, 1<-4: 3/8, 0<-3: 3/10, 0<-4: 3/40; total 2.125
    # the top four carry 3/4 + 3/8 + 3/8 + 3/10 = 1.8 (0.847), five 2.05 (0.965), all six 1
    for threshold, n_edges, fraction in [(0.8, 4, 1.8 / 2.125), (0.9, 5, 2.05 / 2.125), (0.98, 6, 1.0)]:
        p = prune(HAND, HAND_W, HAND_KIND == "feature", node_threshold=1.0, edge_threshold=threshold)
        assert p.edges.sum() == n_edges and p.edge_fraction == pytest.approx(fraction)
        assert p.edge_fraction >= threshold
    four = prune(HAND, HAND_W, HAND_KIND == "feature", node_threshold=1.0, edge_threshold=0.8)
    assert not four.edges[5, 2] and not four.edges[0, 4] and not four.nodes[2]  # the error lost its edge
    # scores: 1/4 of the logit's input is the error; the rest reaches the embeddings
    scores = graph_scores(HAND, HAND_W, HAND_KIND == "error", HAND_KIND == "embedding")
    # replacement: the influence reaching embeddings, 3/10 + 9/20 = 3/4
    # completeness: weights (infl + w) 3/8, 3/4, 1 for features 0, 1 and the logit; shares 1, 1, 3/4
    assert scores["replacement"] == pytest.approx(3 / 4)
    assert scores["completeness"] == pytest.approx((3 / 8 + 3 / 4 + 3 / 4) / (3 / 8 + 3 / 4 + 1))
    # pruned (node threshold 0.6): feature 0 and its edges are dead ends; reach: 3/4 * 1/2 at embedding 4
    scores = graph_scores(HAND, HAND_W, HAND_KIND == "error", HAND_KIND == "embedding", pruned)
    assert scores["replacement"] == pytest.approx(3 / 8)
    assert scores["completeness"] == pytest.approx((3 / 4 * 1 / 2 + 3 / 4) / (3 / 4 + 1))


def test_pruning_keeps_what_its_thresholds_promise_on_real_graphs():
    model = GPT(CONFIGS["mlp_noln_relu"])
    graph = attribute(model, random_transcoders(model), prompt_of(model.cfg))
    infl = graph.influence()
    features = graph.kind == "feature"
    for node_threshold, edge_threshold in [(0.8, 0.98), (0.5, 0.9), (1.0, 1.0), (0.3, 0.5)]:
        pruned = graph.prune(node_threshold, edge_threshold)
        assert pruned.node_fraction >= node_threshold and pruned.edge_fraction >= edge_threshold
        assert pruned.nodes[graph.kind == "logit"].all()
        # every kept node but the logits feeds a kept node through a kept edge
        feeds = pruned.edges.any(0)
        assert feeds[pruned.nodes & (graph.kind != "logit")].all()
        assert not pruned.edges[~pruned.nodes].any() and not pruned.edges[:, ~pruned.nodes].any()
        # the features kept by influence are the most influential ones
        kept = pruned.nodes & features
        if kept.any() and (features & ~kept).any():
            assert infl[kept].min() >= infl[features & ~kept].max() or node_threshold < 1.0
    # thresholds of 1 keep every node with a path to a logit (not, e.g., the last layer's features
    # before the last position): exactly those of positive influence
    full = graph.prune(1.0, 1.0)
    np.testing.assert_array_equal(full.nodes, infl > 0)
    assert (full.edges == ((graph.adjacency != 0) & (infl > 0)[:, None] & (infl > 0)[None, :])).all()
    with pytest.raises(ValueError, match="node_threshold"):
        graph.prune(0.0)


# ---------------------------------------------------------------------------------------------
# Interventions, logits, the file, bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_interventions_with_frozen_and_free_attention():
    model = GPT(CONFIGS["mlp_ln_gelu"])
    tcs = random_transcoders(model)
    prompt = prompt_of(model.cfg)
    real = np.asarray(model(prompt[None]))[0]
    graph = attribute(model, tcs, prompt)
    i = graph.nodes_of("feature")[0]  # layer 0, an early position: its change reaches later positions
    l, q, f, a = int(graph.layer[i]), int(graph.position[i]), int(graph.index[i]), float(graph.activation[i])
    outs = {}
    for freeze in ("all", "attention", "none"):
        np.testing.assert_allclose(intervene(model, tcs, prompt, freeze=freeze).logits, real, atol=1e-5)
        same = intervene(model, tcs, prompt, [(l, q, f, a)], freeze=freeze)
        np.testing.assert_allclose(same.logits, real, atol=1e-5)  # setting a feature to its own value
        outs[freeze] = intervene(model, tcs, prompt, [(l, q, f, 5 * a)], freeze=freeze)
        assert outs[freeze].activations[l][q, f] == pytest.approx(5 * a)
        assert not np.allclose(outs[freeze].logits, real, atol=1e-3)
    # the three differ: LayerNorm and the MLPs recompute, then the attention patterns
    assert not np.allclose(outs["all"].logits, outs["attention"].logits, atol=1e-4)
    assert not np.allclose(outs["attention"].logits, outs["none"].logits, atol=1e-5)
    # positions before the intervention never change (causal attention)
    for freeze in outs:
        np.testing.assert_allclose(outs[freeze].logits[:q], real[:q], atol=1e-5)


@pytest.mark.slow
def test_the_logit_targets():
    """The most likely outputs, most likely first: the fewest reaching logit_probability, at most max_logits."""
    model = GPT(CONFIGS["mlp_noln_relu"])
    tcs = random_transcoders(model)
    prompt = prompt_of(model.cfg)
    real = np.asarray(model(prompt[None]))[0, -1].astype(np.float64)
    probs = np.exp(real - real.max()) / np.exp(real - real.max()).sum()
    order = np.argsort(-probs)
    for max_logits, mass in [(10, 0.95), (3, 0.95), (23, 0.5), (23, 1.0), (1, 0.01)]:
        graph = attribute(model, tcs, prompt, max_logits=max_logits, logit_probability=mass)
        logits = graph.nodes_of("logit")
        n = min(max_logits, int(np.searchsorted(np.cumsum(probs[order]), mass) + 1), len(probs))
        np.testing.assert_array_equal(graph.index[logits], order[:n])
        np.testing.assert_allclose(graph.logit_weights[logits], probs[order[:n]], rtol=1e-5)


def test_the_graph_file(tmp_path):
    model = GPT(CONFIGS["mlp_ln_gelu"])
    graph = attribute(model, random_transcoders(model), prompt_of(model.cfg))
    path = tmp_path / "graph.json"
    graph.save(str(path))
    data = json.loads(path.read_text())
    meta = data["metadata"]
    assert meta["format"] == "minillm.attribution_graph" and meta["format_version"] == 1
    assert meta["prompt_tokens"] == [int(t) for t in graph.tokens]
    assert meta["model_config"] == model.cfg.to_dict() and len(meta["transcoders"]) == model.cfg.n_layers
    assert meta["pruned"]["node_fraction"] >= 0.8 and meta["pruned"]["edge_fraction"] >= 0.98
    pruned = graph.prune()
    ids = [node["id"] for node in data["nodes"]]
    assert len(set(ids)) == len(ids) == pruned.nodes.sum() == meta["pruned"]["n_nodes"]
    index = {name: i for i, name in enumerate(graph.node_ids())}
    assert len(data["links"]) == pruned.edges.sum()
    for link in data["links"]:
        assert link["source"] in ids and link["target"] in ids
        assert link["weight"] == pytest.approx(float(graph.adjacency[index[link["target"]], index[link["source"]]]))
    assert {node["kind"] for node in data["nodes"]} <= {"feature", "error", "embedding", "logit"}
    graph.save(str(path), prune=False)
    whole = json.loads(path.read_text())
    assert len(whole["nodes"]) == graph.n_nodes and len(whole["links"]) == (graph.adjacency != 0).sum()
    assert "pruned" not in whole["metadata"] and whole["metadata"]["scores"] == pytest.approx(graph.scores())


def test_bad_input_is_refused_with_a_clear_error():
    model = GPT(CONFIGS["mlp_ln_gelu"])
    tcs = random_transcoders(model)
    prompt = prompt_of(model.cfg)
    other_weights = GPT(model.cfg, seed=99)  # the same config, other weights
    with pytest.raises(ValueError, match="trained on another model"):
        attribute(other_weights, tcs, prompt)
    other_config = GPT(dataclasses.replace(model.cfg, d_mlp=24))
    with pytest.raises(ValueError, match="another config.*d_mlp"):
        attribute(other_config, tcs, prompt)
    with pytest.raises(ValueError, match="layer 1 was given for layer 0"):
        attribute(model, tcs[::-1], prompt)
    with pytest.raises(ValueError, match="one transcoder per layer"):
        attribute(model, tcs[:1], prompt)
    with pytest.raises(ValueError, match="every layer needs a transcoder"):
        attribute(model, [tcs[0], None], prompt)
    with pytest.raises(ValueError, match="longer than n_ctx=12"):
        attribute(model, tcs, np.zeros(13, np.int32))
    with pytest.raises(ValueError, match="one prompt"):
        attribute(model, tcs, np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError, match="outside"):
        attribute(model, tcs, np.full(5, 99, np.int32))
    for bad in (0, 0.0, -0.5, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="logit_probability must be a number in \\(0, 1\\]"):
            attribute(model, tcs, prompt, logit_probability=bad)
    graph = attribute(model, tcs, prompt)
    for bad in (0.0, 1.01):
        with pytest.raises(ValueError, match="node_threshold must be"):
            graph.prune(node_threshold=bad)
        with pytest.raises(ValueError, match="edge_threshold must be"):
            graph.prune(edge_threshold=bad)
    with pytest.raises(ValueError, match="max_logits"):
        attribute(model, tcs, prompt, max_logits=0)
    with pytest.raises(ValueError, match="freeze must be one of"):
        intervene(model, tcs, prompt, freeze="mlp")
    with pytest.raises(IndexError, match="no feature 16 at layer 0"):
        intervene(model, tcs, prompt, [(0, 0, 16, 1.0)])
    with pytest.raises(ValueError, match="set twice"):
        intervene(model, tcs, prompt, [(0, 1, 2, 1.0), (0, 1 - len(prompt), 2, 0.0)])
    assert isinstance(graph, AttributionGraph)
