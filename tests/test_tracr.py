"""minillm.tracr: Tracr's compiled models as GPTs, their codecs and their ground-truth circuits.

The first tests read the shipped fixtures only (no tracr needed): every fixture loads, reproduces
the outputs Tracr's own forward pass gave when it was written, has a codec that round-trips and
refuses bad input, and carries a ground-truth circuit that is well formed, equals what the weights
say, and contains the edges read by hand off the programs. The tests at the end compile with
Tracr and are skipped where it is not installed (`pip install tracr-pypi`): the GPT of a fresh
compile equals Tracr's forward pass at every layer, and the shipped fixtures are what Tracr
compiles today.
"""

import ast
import importlib.util
import itertools
import pathlib
import re

import numpy as np
import pytest
from flax import nnx

from minillm import GPT, GPTConfig
from minillm.graph import node_names
from minillm.model.checkpoint import CheckpointError
from minillm.tracr import (
    FIXTURE_DIR,
    PROGRAMS,
    PUBLISHED_CIRCUITS,
    TracrModel,
    derive_circuit,
    list_fixtures,
    load_fixture,
    main,
)

SHIPPED = sorted(n for n, p in PROGRAMS.items() if p.shipped)
HAS_TRACR = importlib.util.find_spec("tracr") is not None
needs_tracr = pytest.mark.skipif(not HAS_TRACR, reason="tracr is not installed (pip install tracr-pypi)")


def _zeros(cfg: GPTConfig) -> dict[str, np.ndarray]:
    """Zero weights of a config, without drawing random ones (slow on a busy CPU)."""
    return {k: np.zeros(v.shape, np.float32) for k, v in nnx.eval_shape(lambda: GPT(cfg)).state_dict().items()}


@pytest.fixture(scope="module")
def fixtures() -> dict[str, TracrModel]:
    return {name: load_fixture(name) for name in list_fixtures()}


# --- the fixtures load and reproduce Tracr --------------------------------------------------------


def test_every_shipped_program_has_a_fixture_and_they_are_small():
    assert list_fixtures() == SHIPPED
    total = sum((FIXTURE_DIR / f"{n}.safetensors").stat().st_size for n in SHIPPED)
    assert total < 500_000, f"the Tracr fixtures take {total} bytes"


@pytest.mark.parametrize("name", SHIPPED)
def test_fixture_loads_as_a_tracr_shaped_gpt(fixtures, name):
    tm = fixtures[name]
    cfg = tm.model.cfg
    assert isinstance(tm.model, GPT) and tm.program == name
    assert cfg.normalization_type is None and cfg.act_fn == "relu" and not cfg.attn_only
    assert cfg.attn_implementation == "exact"
    assert tm.causal == PROGRAMS[name].causal == (cfg.attention_dir == "causal")
    assert cfg.d_vocab == len(tm.input_vocab) and cfg.d_model == len(tm.residual_labels)
    assert cfg.n_ctx == PROGRAMS[name].max_seq_len + 1 == tm.max_seq_len + 1
    assert set(tm.input_space) == set(PROGRAMS[name].vocab)
    assert tm.bos in tm.input_vocab and tm.pad in tm.input_vocab
    assert cfg.d_vocab_out == (1 if tm.is_numerical else len(tm.output_space))
    assert len(set(tm.residual_labels)) == cfg.d_model and "one" in tm.residual_labels
    assert all(np.all(np.asarray(v) == 0) for k, v in tm.model.state_dict().items() if ".b_" in k)


@pytest.mark.parametrize("name", SHIPPED)
def test_fixture_reproduces_tracr_reference_outputs(fixtures, name):
    tm = fixtures[name]
    assert len(tm.references) == 20 and sum(r["raw"] is not None for r in tm.references) == 5
    for ref in tm.references:
        logits = np.asarray(tm.model(tm.encode(ref["input"])))[0]
        got, want = tm.decode(logits), ref["output"]
        assert got[0] == want[0] == tm.bos
        if tm.is_numerical:
            np.testing.assert_allclose(got[1:], want[1:], rtol=0, atol=1e-5)
        else:
            assert got == want, ref["input"]
        if ref["raw"] is not None:
            np.testing.assert_allclose(logits, np.asarray(ref["raw"], np.float32), rtol=1e-6, atol=1e-5)


def test_known_outputs_by_hand(fixtures):
    assert fixtures["reverse"].run([1, 2, 3, 3]) == ["BOS", 3, 3, 2, 1]
    assert fixtures["sort"].run([3, 1, 2, 1]) == ["BOS", 1, 1, 2, 3]
    assert fixtures["hist"].run(["a", "b", "a"]) == ["BOS", 2, 1, 2]
    assert fixtures["length"].run(["c"] * 4) == ["BOS", 4, 4, 4, 4]
    np.testing.assert_allclose(
        fixtures["frac_prevs"].run(["x", "w", "x", "x"])[1:], [1, 1 / 2, 2 / 3, 3 / 4], atol=1e-5
    )
    np.testing.assert_allclose(fixtures["frac_prevs_causal"].run(["w", "x"])[1:], [0, 1 / 2], atol=1e-5)
    np.testing.assert_allclose(fixtures["pair_balance"].run(["(", "(", ")", "a"])[1:], [1, 1, 1 / 3, 1 / 4], atol=1e-5)


def test_causal_model_ignores_later_positions(fixtures):
    tm = fixtures["frac_prevs_causal"]
    short, long = tm.run(["x", "w"]), tm.run(["x", "w", "x", "x", "y"])
    assert long[:3] == short


def test_load_fixture_refuses_unknown_names_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Tracr fixture 'nope'"):
        load_fixture("nope")
    data = bytearray((FIXTURE_DIR / "hist.safetensors").read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_fixture(bad)
    plain = tmp_path / "plain.safetensors"
    cfg = GPTConfig(n_layers=1, d_model=8, n_ctx=4, d_vocab=5, n_heads=2)
    GPT.from_state_dict(cfg, _zeros(cfg)).save(str(plain))
    with pytest.raises(CheckpointError, match="not a Tracr fixture"):
        load_fixture(plain)


# --- the codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_codec_round_trips(fixtures, name):
    tm = fixtures[name]
    values = list(tm.input_space) + list(tm.input_space)
    values = values[: tm.max_seq_len]
    ids = tm.encode(values)
    assert ids.shape == (1, len(values) + 1) and ids.dtype == np.int32
    assert [tm.input_vocab[i] for i in ids[0]] == [tm.bos, *values]
    assert tm.encode([]).tolist() == [[tm.input_vocab.index(tm.bos)]]
    if tm.is_numerical:
        logits = np.array([[0.0], [0.25], [-1.5]], np.float32)
        assert tm.decode(logits) == [tm.bos, 0.25, -1.5]
    else:
        n = len(tm.output_space)
        logits = np.eye(n, dtype=np.float32)[[0, *range(n)]]  # position 0 (BOS) gets some row too
        assert tm.decode(logits[None]) == [tm.bos, *tm.output_space]


def test_codec_refuses_bad_input_clearly(fixtures):
    tm = fixtures["reverse"]  # input space {1, 2, 3}, at most 5 values
    assert tm.encode(np.array([3, 1])).tolist() == tm.encode((3, 1)).tolist()
    with pytest.raises(ValueError, match=r"value 4 at position 1 is not in the input space \[1, 2, 3\]"):
        tm.encode([1, 4])
    with pytest.raises(ValueError, match="encode adds BOS"):
        tm.encode(["BOS", 1])
    with pytest.raises(ValueError, match="'compiler_pad' at position 0 is not in the input space"):
        tm.encode(["compiler_pad"])
    with pytest.raises(ValueError, match="True at position 0 is not in the input space"):
        tm.encode([True])
    with pytest.raises(ValueError, match=r"6 values, but the model takes at most 5 \(n_ctx 6 with BOS\)"):
        tm.encode([1] * 6)
    with pytest.raises(TypeError, match="sequence of values"):
        fixtures["hist"].encode("abc")
    with pytest.raises(ValueError, match=r"decode takes the logits of one sequence, \[p, 3\]"):
        tm.decode(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="decode takes the logits of one sequence"):
        fixtures["frac_prevs"].decode(np.zeros((4, 3)))


# --- the ground-truth circuit ---------------------------------------------------------------------


def _order(node: str, n_layers: int) -> tuple[int, int]:
    if node == "embed":
        return (-1, 0)
    if node == "logits":
        return (n_layers, 0)
    m = re.fullmatch(r"blocks\.(\d+)\.(attn\.head\d+|mlp)(\.[qkv])?", node)
    return (int(m.group(1)), 0 if m.group(2).startswith("attn") else 1)


def _absent(model: GPT, node: str) -> bool:
    """A head or MLP whose weights are all zero (Tracr's filling)."""
    sd = {k: np.asarray(v) for k, v in model.state_dict().items()}
    m = re.fullmatch(r"blocks\.(\d+)\.attn\.head(\d+)", node)
    if m:
        l, h = int(m.group(1)), int(m.group(2))
        return all(not np.any(sd[f"blocks.{l}.attn.W_{x}"][h]) for x in "QKVO")
    m = re.fullmatch(r"blocks\.(\d+)\.mlp", node)
    if m:
        return not np.any(sd[f"{node}.W_in"]) and not np.any(sd[f"{node}.W_out"])
    return False


@pytest.mark.parametrize("name", SHIPPED)
def test_circuit_is_well_formed(fixtures, name):
    tm = fixtures[name]
    cfg = tm.model.cfg
    senders, receivers = node_names(cfg)
    assert tm.circuit and len(set(tm.circuit)) == len(tm.circuit)
    reached = {"logits"}
    for edge in reversed(tm.circuit):  # forward order, so walking back finds every live node
        sender, receiver = edge.split(" -> ")
        node = re.sub(r"\.[qkv]$", "", receiver)
        assert sender in senders and receiver in receivers, edge
        assert _order(sender, cfg.n_layers) < _order(receiver, cfg.n_layers), edge
        assert not _absent(tm.model, sender) and not _absent(tm.model, node), edge
        labels = tm.edge_labels[edge]
        assert labels and set(labels) <= set(tm.residual_labels), edge
        assert node in reached, f"{edge}: {node} does not reach the logits"
        reached.add(sender)
    assert "embed" in reached and any(e.endswith("-> logits") for e in tm.circuit)
    # what is stored is what the weights say
    assert derive_circuit(tm.model, tm.residual_labels) == tm.edge_labels
    assert list(derive_circuit(tm.model, tm.residual_labels)) == list(tm.circuit)


def test_reverse_circuit_by_hand(fixtures):
    """reverse = Aggregate(Select(indices, opp_idx - 1, EQ), tokens), opp_idx = length - indices.
    Layer 0: the length head (SelectorWidth) and its MLP; MLPs 1 and 2 compute opp_idx and opp_idx-1;
    layer 3's head (the flip) has keys = indices, queries = opp_idx - 1, values = tokens."""
    tm = fixtures["reverse"]
    circuit = set(tm.circuit)
    for edge in [
        "embed -> blocks.3.attn.head0.k",  # the flip head's key is the position
        "blocks.2.mlp -> blocks.3.attn.head0.q",  # its query is opp_idx - 1, from length and position
        "embed -> blocks.3.attn.head0.v",  # it moves the token
        "blocks.3.attn.head0 -> logits",
        "blocks.0.attn.head0 -> blocks.0.mlp",  # SelectorWidth: the head's BOS share, read by its MLP
        "blocks.0.mlp -> blocks.1.mlp",  # length -> opp_idx
        "embed -> blocks.1.mlp",  # position -> opp_idx
        "blocks.1.mlp -> blocks.2.mlp",
    ]:
        assert edge in circuit, edge
    assert any(lab.startswith("indices:") for lab in tm.edge_labels["embed -> blocks.3.attn.head0.k"])
    assert all(lab.startswith("tokens:") for lab in tm.edge_labels["embed -> blocks.3.attn.head0.v"])
    for edge in [
        "blocks.0.mlp -> blocks.3.attn.head0.q",  # length reaches the flip only through opp_idx
        "blocks.1.mlp -> blocks.3.attn.head0.q",
        "embed -> logits",
        "blocks.2.mlp -> blocks.3.attn.head0.k",
    ]:
        assert edge not in circuit, edge
    # layers 1 and 2 have no attention and layer 3 no MLP: no edge touches them
    assert not [e for e in circuit if re.search(r"blocks\.[12]\.attn|blocks\.3\.mlp", e)]
    assert len(circuit) == 13


def test_pair_balance_has_two_heads_with_separate_values(fixtures):
    tm = fixtures["pair_balance"]
    assert tm.model.cfg.n_heads == 2
    circuit = set(tm.circuit)
    assert {"blocks.0.mlp -> blocks.1.attn.head0.v", "blocks.0.mlp -> blocks.1.attn.head1.v"} <= circuit
    assert {
        "blocks.1.attn.head0 -> blocks.1.mlp",
        "blocks.1.attn.head1 -> blocks.1.mlp",
        "blocks.1.mlp -> logits",
    } <= circuit
    h0, h1 = (
        tm.edge_labels["blocks.0.mlp -> blocks.1.attn.head0.v"],
        tm.edge_labels["blocks.0.mlp -> blocks.1.attn.head1.v"],
    )
    assert not set(h0) & set(h1)  # one head averages "(", the other ")"
    assert not [e for e in circuit if "-> logits" in e and "attn" in e]


def test_published_circuits_are_subsets_with_the_documented_differences(fixtures):
    for name, published in PUBLISHED_CIRCUITS.items():
        ours = set(fixtures[name].circuit)
        for source, edges in published.items():
            assert set(edges) <= ours, (name, source, sorted(set(edges) - ours))
    assert set(fixtures["reverse"].circuit) - set(PUBLISHED_CIRCUITS["reverse"]["acdc"]) == {
        "embed -> blocks.0.attn.head0.q",
        "embed -> blocks.0.attn.head0.k",
        "embed -> blocks.3.attn.head0.q",
    }
    assert set(fixtures["frac_prevs"].circuit) == set(PUBLISHED_CIRCUITS["frac_prevs"]["acdc"])
    assert fixtures["frac_prevs_causal"].circuit == fixtures["frac_prevs"].circuit


def test_circuit_follows_the_weights(fixtures):
    """Cut what MLP 2 reads and the derivation drops the whole length chain upstream of it."""
    tm = fixtures["reverse"]
    weights = dict(tm.model.state_dict())
    weights["blocks.2.mlp.W_in"] = np.zeros_like(weights["blocks.2.mlp.W_in"])
    cut = derive_circuit(GPT.from_state_dict(tm.model.cfg, weights), tm.residual_labels)
    assert set(cut) == {
        "embed -> blocks.3.attn.head0.q",
        "embed -> blocks.3.attn.head0.k",
        "embed -> blocks.3.attn.head0.v",
        "blocks.2.mlp -> blocks.3.attn.head0.q",
        "blocks.3.attn.head0 -> logits",
    }


def test_derive_circuit_on_a_hand_built_model():
    """Residual directions [a, b, c, out, one]: the token embedding writes a and b; head 0 scores
    with a (query) against b (key) and moves a into c; head 1 is zero; the MLP reads c, writes out."""
    cfg = GPTConfig(
        n_layers=1, d_model=5, n_ctx=3, d_vocab=2, n_heads=2, d_head=2, d_mlp=3, d_vocab_out=1, normalization_type=None
    )
    w = _zeros(cfg)
    a, b, c, out, one = range(5)
    w["embed.W_E"][0, a] = w["embed.W_E"][1, b] = w["embed.W_E"][:, one] = 1
    w["blocks.0.attn.W_Q"][0, a, 0] = 1
    w["blocks.0.attn.W_K"][0, b, 0] = w["blocks.0.attn.W_K"][0, c, 1] = 1  # c: no query pairs with it
    w["blocks.0.attn.W_V"][0, a, 0] = w["blocks.0.attn.W_O"][0, 0, c] = 1
    w["blocks.0.mlp.W_in"][c, 0] = w["blocks.0.mlp.W_in"][one, 1] = w["blocks.0.mlp.W_out"][0, out] = 1
    w["unembed.W_U"][out, 0] = 1
    model = GPT.from_state_dict(cfg, w)
    assert derive_circuit(model, ["a", "b", "c", "out", "one"]) == {
        "embed -> blocks.0.attn.head0.q": ("a",),
        "embed -> blocks.0.attn.head0.k": ("b",),
        "embed -> blocks.0.attn.head0.v": ("a",),
        "embed -> blocks.0.mlp": ("one",),
        "blocks.0.attn.head0 -> blocks.0.mlp": ("c",),
        "blocks.0.mlp -> logits": ("out",),
    }
    w["unembed.W_U"][out, 0] = 0
    w["unembed.W_U"][b, 0] = 1  # the logits now read the embedding only: the rest is dead
    assert list(derive_circuit(GPT.from_state_dict(cfg, w), "a b c out one".split())) == ["embed -> logits"]
    with pytest.raises(ValueError, match="4 residual labels for d_model 5"):
        derive_circuit(model, "abcd")
    ln_cfg = GPTConfig(n_layers=1, d_model=4, n_ctx=3, d_vocab=2, n_heads=1)
    with pytest.raises(ValueError, match="LayerNorm"):
        derive_circuit(GPT.from_state_dict(ln_cfg, _zeros(ln_cfg)), "abcd")
    w["blocks.0.mlp.b_in"][0] = 1
    with pytest.raises(ValueError, match=r"non-zero biases \['blocks.0.mlp.b_in'\]"):
        derive_circuit(GPT.from_state_dict(cfg, w), "a b c out one".split())


def test_module_imports_tracr_only_inside_functions():
    tree = ast.parse(pathlib.Path(importlib.util.find_spec("minillm.tracr").origin).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("tracr", "haiku")]


def test_cli_refuses_unknown_programs(capsys):
    with pytest.raises(SystemExit):
        main(["write-fixtures", "/nonexistent", "nope"])
    assert "unknown programs ['nope']" in capsys.readouterr().err


@pytest.mark.skipif(HAS_TRACR, reason="tracr is installed")
def test_compiling_without_tracr_says_what_to_install():
    from minillm.tracr import compile_program

    with pytest.raises(ImportError, match="pip install tracr-pypi"):
        compile_program("hist")


# --- with Tracr installed -------------------------------------------------------------------------

_compiled: dict = {}


def _compile(name: str):
    from minillm.tracr import compile_program

    if name not in _compiled:
        _compiled[name] = compile_program(name)
    return _compiled[name]


def _all_inputs(tm: TracrModel, length: int) -> np.ndarray:
    return np.concatenate([tm.encode(list(v)) for v in itertools.product(tm.input_space, repeat=length)])


@needs_tracr
@pytest.mark.parametrize(
    ("name", "lengths"), [("reverse", (1, 2, 3, 4, 5)), ("pair_balance", (1, 5)), ("frac_prevs_causal", (1, 5))]
)
def test_from_tracr_equals_tracr_at_every_layer(name, lengths):
    """Every input of these lengths, one batch per length (Tracr never masks padding). Float32
    rounding apart (XLA picks its kernels by shape), the numbers are Tracr's."""
    import jax.numpy as jnp

    from minillm.tracr import from_tracr

    assembled = _compile(name)
    tm = from_tracr(assembled, name)
    W_U = np.asarray(tm.model.unembed.W_U[...])
    worst = 0.0
    for length in lengths:
        tokens = _all_inputs(tm, length)
        theirs = assembled.forward(assembled.params, jnp.asarray(tokens)).transformer_output
        logits, cache = tm.model.run_with_cache(tokens)
        for l in range(tm.model.cfg.n_layers):
            pairs = [
                (cache[f"blocks.{l}.hook_attn_out"], theirs.layer_outputs[2 * l]),
                (cache[f"blocks.{l}.hook_resid_mid"], theirs.residuals[2 * l]),
                (cache[f"blocks.{l}.hook_mlp_out"], theirs.layer_outputs[2 * l + 1]),
                (cache[f"blocks.{l}.hook_resid_post"], theirs.residuals[2 * l + 1]),
            ]
            scores = np.asarray(cache[f"blocks.{l}.attn.hook_attn_scores"])
            visible = np.isfinite(scores)
            assert visible.all() != tm.causal or length == 1
            pairs.append((scores[visible], np.asarray(theirs.attn_logits[l])[visible]))
            for ours, want in pairs:
                np.testing.assert_allclose(np.asarray(ours), np.asarray(want), rtol=1e-6, atol=1e-5)
                worst = max(worst, float(np.max(np.abs(np.asarray(ours) - np.asarray(want)))))
        np.testing.assert_allclose(np.asarray(logits), np.asarray(theirs.output) @ W_U, rtol=1e-6, atol=1e-5)
    for values in [list(tm.input_space)[: tm.max_seq_len], list(tm.input_space)[:1]]:
        got, want = tm.run(values), assembled.apply([tm.bos, *values]).decoded
        if tm.is_numerical:
            assert got[0] == want[0] and np.allclose(got[1:], want[1:], atol=1e-5)
        else:
            assert got == want
    print(f"{name}: largest difference from Tracr over every layer and input: {worst}")


def _canonical(label: str) -> str:
    """A residual label without the compile-order counter: length_5:3 -> length:3."""
    return re.sub(r"_\d+(?=:|_selector_width|$)", "", label)


@needs_tracr
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_fixture_is_what_tracr_compiles(fixtures, name):
    from minillm.tracr import from_tracr

    assembled = _compile(name)
    fresh, shipped = from_tracr(assembled, name), fixtures[name]
    assert fresh.model.cfg == shipped.model.cfg
    assert fresh.circuit == shipped.circuit
    assert (fresh.input_vocab, fresh.output_vocab, fresh.is_numerical) == (
        shipped.input_vocab,
        shipped.output_vocab,
        shipped.is_numerical,
    )
    # the same weights, up to the order of the residual directions (labels carry counters)
    fresh_labels, shipped_labels = (
        [_canonical(x) for x in fresh.residual_labels],
        [_canonical(x) for x in shipped.residual_labels],
    )
    assert sorted(fresh_labels) == sorted(shipped_labels) and len(set(fresh_labels)) == len(fresh_labels)
    perm = [fresh_labels.index(x) for x in shipped_labels]  # shipped dim i is fresh dim perm[i]
    axis = {"W_E": 1, "W_pos": 1, "W_U": 0, "W_Q": 1, "W_K": 1, "W_V": 1, "W_O": 2, "W_in": 0, "W_out": 1}
    axis.update(b_O=0, b_out=0)
    ours = fresh.model.state_dict()
    for key, value in shipped.model.state_dict().items():
        got = np.asarray(ours[key])
        kind = key.rsplit(".", 1)[1]
        if kind in axis:
            got = np.take(got, perm, axis=axis[kind])
        np.testing.assert_array_equal(got, np.asarray(value), err_msg=key)
    for ref in shipped.references:
        want = assembled.apply([shipped.bos, *ref["input"]]).decoded
        if shipped.is_numerical:
            assert want[0] == ref["output"][0] and np.allclose(want[1:], ref["output"][1:], rtol=0, atol=1e-6)
        else:
            assert want == ref["output"]


@needs_tracr
def test_write_fixture_round_trip(tmp_path):
    from minillm.tracr import check_references, write_fixture

    assembled = _compile("hist")
    written = write_fixture(assembled, "hist", tmp_path / "h.safetensors", description="hist", n_references=6, n_raw=2)
    loaded = load_fixture(tmp_path / "h.safetensors")
    assert loaded.circuit == written.circuit and loaded.edge_labels == written.edge_labels
    assert loaded.references == written.references and len(loaded.references) == 6
    assert (loaded.input_vocab, loaded.output_vocab, loaded.residual_labels) == (
        written.input_vocab,
        written.output_vocab,
        written.residual_labels,
    )
    check_references(loaded)
