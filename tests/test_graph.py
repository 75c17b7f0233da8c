"""minillm/graph.py: the graph's nodes and edges, and the forward pass over edges, checked against
the same edge patched by hand with the model's own hook points (hook_result, hook_{q,k,v}_input)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT
from minillm.graph import Graph, ablated_outputs, node_order, receiver_node, run_with_edges, sender_outputs

KINDS = ["mlp_ln_gelu", "attn_only_noln"]  # with and without LayerNorm and MLPs


def test_the_graph_of_a_config():
    cfg = CONFIGS["mlp_ln_gelu"]
    g = Graph.of(cfg)
    L, H = cfg.n_layers, cfg.n_heads
    assert len(g.senders) == 1 + L * (H + 1) and len(g.receivers) == L * (3 * H + 1) + 1
    # a head of block l reads embed and every head and MLP before block l; block l's MLP also
    # reads block l's heads; the logits read every sender
    expected = sum(3 * H * (1 + l * (H + 1)) + (1 + l * (H + 1) + H) for l in range(L)) + len(g.senders)
    assert len(g) == expected
    assert g.edges[0] == "embed -> blocks.0.attn.head0.q"
    assert f"blocks.{L - 1}.mlp -> logits" == g.edges[-1]
    assert "blocks.0.attn.head1 -> blocks.1.attn.head0.k" in g.edges
    assert "blocks.0.attn.head1 -> blocks.0.mlp" in g.edges
    assert "blocks.0.attn.head1 -> blocks.0.attn.head0.q" not in g.edges  # heads of a block run together
    assert Graph.of(cfg) is g  # one graph per config
    attn_only = Graph.of(CONFIGS["attn_only_ln"])
    assert not [n for n in attn_only.senders + attn_only.receivers if n.endswith("mlp")]


def test_edges_are_named_and_unknown_ones_refused():
    g = Graph.of(CONFIGS["mlp_ln_gelu"])
    e = "blocks.0.attn.head1 -> blocks.1.attn.head0.k"
    assert g.edges[g.index(e)] == e
    with pytest.raises(KeyError, match="runs before"):
        g.index("blocks.1.mlp -> blocks.0.attn.head0.q")
    with pytest.raises(KeyError, match="Did you mean"):
        g.index("blocks.0.attn.head1 -> blocks.1.attn.head0.key")
    with pytest.raises(KeyError, match="Unknown edge"):
        g.index("blocks.7.attn.head0 -> logits")
    with pytest.raises(TypeError):
        g.mask("embed -> logits")
    mask = g.mask([e, "embed -> logits"])
    assert mask.sum() == 2 and g.edges_of(mask) == tuple(sorted([e, "embed -> logits"], key=g.index))
    with pytest.raises(ValueError, match="shape"):
        g.edges_of(np.ones(3))


@pytest.mark.parametrize("kind", ["mlp_noln_relu", "attn_only_ln"])
def test_per_node_data_and_membership(kind):
    """node_of_receiver, edges_into and `in` say what the names say; Graph.of builds the edges of
    the definition (every sender with every receiver that runs after it, by sender then receiver)."""
    g = Graph.of(CONFIGS[kind])
    n = g.cfg.n_layers
    pairs = [
        (s, r)
        for s, sender in enumerate(g.senders)
        for r, receiver in enumerate(g.receivers)
        if node_order(sender, n) < node_order(receiver_node(receiver), n)
    ]
    assert g.edges == tuple(f"{g.senders[s]} -> {g.receivers[r]}" for s, r in pairs)
    assert g.sender_of.tolist() == [s for s, _ in pairs] and g.receiver_of.tolist() == [r for _, r in pairs]
    for r, receiver in enumerate(g.receivers):
        node = g.node_of_receiver[r]
        assert (node == -1) if receiver == "logits" else (g.senders[node] == receiver_node(receiver))
        into = g.edges_into[r]
        assert into.tolist() == [e for e in range(len(g)) if g.receiver_of[e] == r]
    assert sum(len(x) for x in g.edges_into) == len(g)
    assert "embed -> logits" in g and "blocks.1.attn.head0 -> blocks.0.attn.head0.q" not in g and 3 not in g


@pytest.fixture(scope="module", params=KINDS)
def setup(request):
    cfg = CONFIGS[request.param]
    model = GPT(cfg, seed=3)
    clean, corrupted = random_tokens(cfg, batch=3, seed=1), random_tokens(cfg, batch=3, seed=2)
    return model, clean, corrupted


@pytest.mark.slow
def test_keeping_every_edge_is_the_model_and_ablating_every_edge_is_the_corrupted_run(setup):
    model, clean, corrupted = setup
    g = Graph.of(model.cfg)
    ablated = ablated_outputs(model, clean, "corrupted", corrupted)
    np.testing.assert_allclose(run_with_edges(model, clean, np.ones(len(g)), ablated), model(clean), atol=2e-5)
    np.testing.assert_allclose(run_with_edges(model, clean, np.zeros(len(g)), ablated), model(corrupted), atol=2e-5)


def test_the_senders_add_up_to_the_residual_stream(setup):
    model, clean, _ = setup
    outputs = sender_outputs(model, clean)
    _, cache = model.run_with_cache(clean)
    biases = sum(block.attn.b_O[...] for block in model.blocks)
    final = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    np.testing.assert_allclose(outputs.sum(0) + biases, final, atol=2e-5)
    np.testing.assert_allclose(outputs[0], cache["hook_embed"] + cache["hook_pos_embed"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("edge_kind", ["head_to_k", "head_to_mlp", "embed_to_v", "to_logits"])
def test_one_ablated_edge_equals_the_same_patch_by_hand(setup, edge_kind):
    """The receiver alone reads the sender's corrupted output; every other reader its clean one."""
    model, clean, corrupted = setup
    cfg = model.cfg
    if edge_kind == "head_to_mlp" and cfg.attn_only:
        pytest.skip("no MLP")
    edge, sender, receiver_hook, head = {
        "head_to_k": ("blocks.0.attn.head1 -> blocks.1.attn.head0.k", ("result", 0, 1), "blocks.1.hook_k_input", 0),
        "head_to_mlp": ("blocks.0.attn.head0 -> blocks.0.mlp", ("result", 0, 0), "blocks.0.hook_mlp_in", None),
        "embed_to_v": ("embed -> blocks.1.attn.head1.v", ("embed",), "blocks.1.hook_v_input", 1),
        "to_logits": ("blocks.1.attn.head0 -> logits", ("result", 1, 0), "blocks.{last}.hook_resid_post", None),
    }[edge_kind]
    receiver_hook = receiver_hook.format(last=cfg.n_layers - 1)
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{l}.attn.hook_result" for l in range(cfg.n_layers)]
    _, clean_cache = model.run_with_cache(clean, names_filter=names)
    _, corrupt_cache = model.run_with_cache(corrupted, names_filter=names)

    def output(cache):
        if sender[0] == "embed":
            return cache["hook_embed"] + cache["hook_pos_embed"]
        return cache[f"blocks.{sender[1]}.attn.hook_result"][:, :, sender[2]]

    delta = output(clean_cache) - output(corrupt_cache)  # [b, p, d]; the clean run's other senders are unchanged

    def patch(act, hook):
        if head is None:
            return act - delta
        return act.at[:, :, head].add(-delta)

    by_hand = model.run_with_hooks(clean, [(receiver_hook, patch)])
    g = Graph.of(cfg)
    keep = np.ones(len(g))
    keep[g.index(edge)] = 0
    ablated = ablated_outputs(model, clean, "corrupted", corrupted)
    np.testing.assert_allclose(run_with_edges(model, clean, keep, ablated), by_hand, atol=2e-5)
    assert np.abs(by_hand - model(clean)).max() > 1e-4  # the edge did something


def test_ablations_and_their_errors(setup):
    model, clean, corrupted = setup
    n = len(Graph.of(model.cfg).senders)
    zero = ablated_outputs(model, clean, "zero")
    assert zero.shape == (n, *clean.shape, model.cfg.d_model) and not np.any(zero)
    mean = ablated_outputs(model, clean, "mean")
    np.testing.assert_allclose(mean[:, 0], sender_outputs(model, clean).mean(axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        ablated_outputs(model, clean, "corrupted", corrupted[:, :-1])
    with pytest.raises(ValueError, match="pass corrupted"):
        ablated_outputs(model, clean, "corrupted")
    with pytest.raises(ValueError, match="pass corrupted"):
        ablated_outputs(model, clean, "zero", corrupted)
    with pytest.raises(ValueError, match="ablation must be"):
        ablated_outputs(model, clean, "resample")
    with pytest.raises(ValueError, match="out of range|token"):
        ablated_outputs(model, np.where(np.arange(clean.shape[1]) == 0, 10_000, clean), "zero")
    with pytest.raises(ValueError, match="one value per edge"):
        run_with_edges(model, clean, np.ones(3), zero)
    with pytest.raises(ValueError, match=r"\[senders, b, p, d\]"):
        run_with_edges(model, clean, np.ones(len(Graph.of(model.cfg))), zero[:, :1])
    with pytest.raises(KeyError):
        run_with_edges(model, clean, ["embed -> nowhere"], zero)
