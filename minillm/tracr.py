"""Tracr's compiled transformers as minillm GPTs, each with the circuit it was compiled from.

Tracr (Lindner et al. 2023, "Tracr: Compiled Transformers as a Laboratory for Interpretability";
google-deepmind/tracr) compiles a RASP program into transformer weights. Its models are the one
kind of transformer whose circuit nobody has to guess: it is in the program. That makes them the
check for circuit-finding methods (ACDC, Conmy et al. 2023; auto-circuit, Miller et al. 2024):
a method is run on the model and its answer compared with the circuit below.

    from minillm.tracr import load_fixture, list_fixtures
    tm = load_fixture("reverse")           # shipped with minillm: no tracr needed, no code run
    tm.model                                # a GPT (ReLU, no LayerNorm, bidirectional attention)
    tokens = tm.encode([1, 2, 3])           # int32 [1, 4]: BOS first
    tm.decode(tm.model(tokens))             # ["BOS", 3, 2, 1]: Tracr's own `.decoded`
    tm.circuit                              # ("embed -> blocks.0.attn.head0.q", ...): the ground truth

    tm = from_tracr(assembled)              # any compiled Tracr model (needs tracr installed)
    write_fixture(assembled, "name", path)  # python -m minillm.tracr write-fixtures DIR

The mapping. Every attn_out, resid_mid, mlp_out, resid_post, visible attention score and output
equals Tracr's own forward pass up to float32 rounding: at most 1.2e-7 over every input of reverse,
and bit for bit at some batch shapes (XLA picks its matmul kernels by shape). A Tracr layer
(attention, then MLP) is one block; ReLU, no LayerNorm, bidirectional attention unless compiled
causal; d_head = Tracr's key_size and d_mlp its MLP width. Tracr's query, key and value weights are
[d_model, heads * key] (head-major), so W_Q = w.reshape(d, h, e).transpose(1, 0, 2); the output
weight [heads * key, d] reshapes to W_O [h, e, d]. A layer Tracr left without attention or without
an MLP (and the heads a layer does not use) arrive as zeros. Token ids are the order of Tracr's
input basis, which holds the program's vocabulary, the BOS token and a padding token (BOS is not
always id 0). Each embedding row is the one-hot token plus a constant "one" direction; W_pos has
max_seq_len + 1 rows, row 0 (BOS's position) zero. Tracr has no unembedding parameter: its unembed
projects the residual stream onto the output space, so W_U [d_model, d_vocab_out] is that module
applied to the identity (one-hot columns; one column for a numerical output). Biases are all zero.
The config uses attn_implementation="exact" (the materialised softmax Tracr computes, on every
backend). Tracr never masks its padding token: run a batch of sequences of one length, never padded
ones.

The codec. `encode(values)` takes values of the program's input space (`input_space`, without
BOS) and returns int32 token ids [1, p] with BOS first (p = len(values) + 1 <= n_ctx);
`decode(logits)` of one sequence ([p, v] or [1, p, v]) returns a list of p values whose first is
the BOS token itself (position 0 holds BOS, whose output Tracr leaves undefined; Tracr's
`apply(...).decoded` puts BOS there too), then, per position, the output value of the largest
logit (categorical programs) or the single output number as a float (numerical programs).

Ground-truth circuit. Nodes: senders `embed` (token and position embeddings together),
`blocks.L.attn.headH` and `blocks.L.mlp`; receivers `blocks.L.attn.headH.q`, `.k`, `.v`, `blocks.L.mlp`
and `logits`. An edge "sender -> receiver" goes from an earlier node to a later one (embed first;
attention heads of a block before its MLP; heads of one block do not feed each other; logits last).
Tracr gives every quantity its own labelled residual directions (`tokens:a`, `indices:3`, `one`,
`reverse_1:b`, ...), so each node writes and reads a set of labels, read off the weights:

- embed writes the labels of the non-zero columns of W_E and W_pos (tokens, indices and "one");
- head (L, H) writes the non-zero columns of its W_OV = W_V W_O, its q reads the non-zero rows
  and its k the non-zero columns of W_QK = W_Q W_K^T, its v the non-zero rows of W_OV (so a label
  the head cannot use, e.g. a key value that no query value pairs with, is left out);
- an MLP writes the non-zero columns of W_out and reads the non-zero rows of W_in;
- logits read the non-zero rows of W_U (the output space).

An edge exists where the sender's written labels meet the receiver's read labels; then the nodes
that cannot reach the logits are dropped (none, in Tracr's programs). Zero-filled heads and MLPs
write and read nothing, so have no edges. `edge_labels` maps each edge to the labels it carries.

Convention: every read counts, the constant directions included. "one" (every position's
constant 1: Tracr's MLP biases and the constant part of a query) and the BOS token's direction
(every head's key reads it, since Tracr makes each query attend to BOS as the default when its
selector matches nothing; a SelectorWidth head's value reads nothing else, its output being the
share of attention left on BOS) are real reads of the embedding, and zeroing them changes the
output. So `circuit` is the complete structural circuit: a superset of any circuit found by
ablating edges, and of both published ground truths (PUBLISHED_CIRCUITS), which differ from it
and from each other:

- ACDC (Conmy et al. 2023; acdc/tracr_task/utils.py, `get_tracr_reverse_edges`,
  `get_tracr_proportion_edges`) took its ground truth from an ACDC run itself (zero ablation,
  threshold epsilon), with embed split into hook_embed and hook_pos_embed. It keeps edges carried
  by "one" and BOS alone (reverse's embed -> blocks.0.mlp, embed -> blocks.0.attn.head0.v), but drops
  the edges of reads that zeroing leaves without effect: reverse's length head reads the tokens in
  q and k, yet its selector (Select(tokens, tokens, TRUE)) gives every real key the same score, so
  zeroing its query changes nothing; and the flip head's query reads only "one" from the embedding
  (the BOS default, never needed: every query of reverse has its match). On reverse it has
  10 of our 13 edges (missing embed -> blocks.0.attn.head0.q / .k and embed -> blocks.3.attn.head0.q);
  on frac_prevs it is exactly our 5.
- auto-circuit (Miller et al. 2024; `tracr_reverse_true_edges`, `tracr_xproportion_official_edges`)
  lists the edges that must be kept under resample ablation between prompts of one length, where
  whatever depends only on length and position is constant: reverse is embed -> blocks.3.attn.head0.v
  -> logits (2 edges), frac_prevs embed -> blocks.0.mlp -> blocks.1.attn.head0.v -> logits (3).

Both used reverse on {1, 2, 3} and frac_prevs(tokens == "x") on {w, x, y, z}, max length 5, as the
fixtures here do, so the three are circuits of the same weights. `edge_labels` says what each edge
carries, so a stricter convention (e.g. dropping the edges that carry only "one") is a filter away.

Residual labels carry counters that depend on the order of compilation (`reverse_1`); a fixture
stores the labels of the compile that made it, never recomputes them.

A toolkit module: imports minillm.model and numpy; tracr (and haiku) only inside the functions that
compile or convert (`from_tracr`, `compile_program`, `write_fixture`, `write_fixtures`), so
minillm and the shipped fixtures work without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minillm.graph import edge_sort_key, node_order, receiver_node
from minillm.model import GPT, GPTConfig
from minillm.model.checkpoint import CheckpointError, load_tensors

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "data" / "tracr"
FORMAT_VERSION = "1"
META_KEY = "tracr"  # the metadata entry that marks a Tracr fixture (JSON: program, codec, compile settings)

Value = Any  # a value of a program's input or output space: str, int, float or bool


# --- the model and its codec ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TracrModel:
    """A compiled Tracr program as a GPT, with its codec and its ground-truth circuit.

    model: the GPT. program: its name. input_vocab: the value of each token id (the program's
    vocabulary, BOS and the padding token, in Tracr's order); output_vocab: the value of each
    output (logit) index, () for a numerical program. circuit: the ground-truth edges, in forward
    order; edge_labels: {edge: the residual labels it carries}. residual_labels: the label of each
    residual dimension. references: Tracr's own outputs on some inputs ({"input", "output", "raw"},
    raw: the output-space vectors [p, d_vocab_out], None past the first few), () when not stored.
    """

    model: GPT
    program: str
    input_vocab: tuple[Value, ...]
    output_vocab: tuple[Value, ...]
    bos: str
    pad: str | None
    is_numerical: bool
    residual_labels: tuple[str, ...]
    edge_labels: dict[str, tuple[str, ...]]
    references: tuple[dict[str, Any], ...] = ()
    compile_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def circuit(self) -> tuple[str, ...]:
        """The ground-truth edges "sender -> receiver", constant directions included (module doc)."""
        return tuple(self.edge_labels)

    @property
    def input_space(self) -> tuple[Value, ...]:
        """The values `encode` takes: the program's vocabulary, without BOS and padding."""
        return tuple(v for v in self.input_vocab if v not in (self.bos, self.pad))

    @property
    def output_space(self) -> tuple[Value, ...]:
        """The values `decode` returns (categorical programs); () for a numerical program."""
        return self.output_vocab

    @property
    def causal(self) -> bool:
        return self.model.cfg.attention_dir == "causal"

    @property
    def max_seq_len(self) -> int:
        """The longest input `encode` takes (the BOS position comes on top)."""
        return self.model.cfg.n_ctx - 1

    def encode(self, values: Sequence[Value]) -> np.ndarray:
        """Token ids [1, len(values) + 1] (int32) of input values, BOS first (added here)."""
        if isinstance(values, np.ndarray) and values.ndim == 1:
            values = values.tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{self.program}: encode takes a sequence of values, got {values!r}")
        ids = {v: i for i, v in enumerate(self.input_vocab) if v not in (self.bos, self.pad)}
        bools = any(isinstance(x, bool) for x in ids)  # else True / False would pass for 1 / 0
        for i, v in enumerate(values):
            if isinstance(v, str) and v == self.bos:
                raise ValueError(f"{self.program}: pass the values only; encode adds BOS ({self.bos!r}) itself")
            if not _hashable(v) or v not in ids or (isinstance(v, (bool, np.bool_)) and not bools):
                raise ValueError(f"{self.program}: value {v!r} at position {i} is not in the input space {list(ids)}")
        if len(values) > self.max_seq_len:
            raise ValueError(
                f"{self.program}: {len(values)} values, but the model takes at most {self.max_seq_len} "
                f"(n_ctx {self.model.cfg.n_ctx} with BOS)"
            )
        bos = self.input_vocab.index(self.bos)
        return np.asarray([[bos] + [ids[v] for v in values]], np.int32)

    def decode(self, logits: Any) -> list[Value]:
        """The output values of one sequence's logits ([p, v] or [1, p, v]): BOS, then one per position."""
        out = np.asarray(logits)
        if out.ndim == 3 and out.shape[0] == 1:
            out = out[0]
        if out.ndim != 2 or out.shape[-1] != self.model.cfg.d_vocab_out:
            raise ValueError(
                f"{self.program}: decode takes the logits of one sequence, [p, {self.model.cfg.d_vocab_out}] "
                f"or [1, p, {self.model.cfg.d_vocab_out}]; got shape {out.shape} (decode a batch row by row)"
            )
        if self.is_numerical:
            rest = [float(x) for x in out[1:, 0]]
        else:
            rest = [self.output_vocab[i] for i in np.argmax(out[1:], axis=-1)]
        return [self.bos, *rest]

    def run(self, values: Sequence[Value]) -> list[Value]:
        """decode(model(encode(values))): Tracr's `apply([BOS, *values]).decoded`."""
        return self.decode(self.model(self.encode(values)))


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


# --- the ground-truth circuit, read off the weights -----------------------------------------------


def derive_circuit(model: GPT, residual_labels: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """{edge: residual labels it carries} of a Tracr-style model (labelled residual directions).

    See the module docstring for the rule. The model must have no LayerNorm (it would mix every
    direction) and zero biases (a bias writes without reading), as Tracr's models have.
    """
    cfg = model.cfg
    if cfg.normalization_type is not None:
        raise ValueError("derive_circuit: the model has LayerNorm, which mixes every residual direction")
    labels = np.asarray(list(residual_labels), dtype=object)
    if len(labels) != cfg.d_model:
        raise ValueError(f"derive_circuit: {len(labels)} residual labels for d_model {cfg.d_model}")
    w = {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}
    biased = sorted(k for k, v in w.items() if k.split(".")[-1].startswith("b_") and np.any(v != 0))
    if biased:
        raise ValueError(f"derive_circuit: non-zero biases {biased}; Tracr's models have none")

    def rows(m: np.ndarray) -> frozenset[str]:  # labels of the non-zero rows of m [d, x]
        return frozenset(labels[np.any(m != 0, axis=1)])

    def cols(m: np.ndarray) -> frozenset[str]:  # labels of the non-zero columns of m [x, d]
        return frozenset(labels[np.any(m != 0, axis=0)])

    writers: list[tuple[str, frozenset[str]]] = [("embed", cols(w["embed.W_E"]) | cols(w["pos_embed.W_pos"]))]
    readers: list[tuple[str, frozenset[str]]] = []
    for l in range(cfg.n_layers):
        a = f"blocks.{l}.attn"
        for h in range(cfg.n_heads):
            qk = w[f"{a}.W_Q"][h] @ w[f"{a}.W_K"][h].T  # [d, d]
            ov = w[f"{a}.W_V"][h] @ w[f"{a}.W_O"][h]  # [d, d]
            head = f"{a}.head{h}"
            readers += [(f"{head}.q", rows(qk)), (f"{head}.k", cols(qk)), (f"{head}.v", rows(ov))]
            writers.append((head, cols(ov)))
        if not cfg.attn_only:
            readers.append((f"blocks.{l}.mlp", rows(w[f"blocks.{l}.mlp.W_in"])))
            writers.append((f"blocks.{l}.mlp", cols(w[f"blocks.{l}.mlp.W_out"])))
    readers.append(("logits", rows(w["unembed.W_U"])))

    edges: dict[str, tuple[str, ...]] = {}
    for sender, written in writers:
        for receiver, read in readers:
            shared = written & read
            if shared and node_order(sender, cfg.n_layers) < node_order(receiver_node(receiver), cfg.n_layers):
                edges[f"{sender} -> {receiver}"] = tuple(sorted(shared))
    # keep the nodes from which the logits can be reached (all of them, in Tracr's programs)
    live = {"logits"}
    for edge in sorted(edges, key=lambda e: edge_sort_key(e, cfg.n_layers), reverse=True):
        sender, receiver = edge.split(" -> ")
        if receiver_node(receiver) in live:
            live.add(sender)
    kept = [e for e in edges if e.split(" -> ")[0] in live and receiver_node(e.split(" -> ")[1]) in live]
    return {e: edges[e] for e in sorted(kept, key=lambda e: edge_sort_key(e, cfg.n_layers))}


# --- from a compiled Tracr model (needs tracr) ----------------------------------------------------


def _require_tracr() -> None:
    import importlib.util

    missing = [m for m in ("tracr", "haiku") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"minillm.tracr: compiling and converting Tracr models needs {' and '.join(missing)} (not installed): "
            "pip install tracr-pypi. The shipped fixtures (load_fixture) need neither."
        )


def tracr_weights(assembled: Any) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """The GPTConfig and flat weights of a compiled Tracr model (`compiling.compile_rasp_to_model`)."""
    _require_tracr()
    import haiku as hk
    import jax.numpy as jnp

    mc = assembled.model_config
    if mc.layer_norm:
        raise ValueError("from_tracr: the Tracr model uses LayerNorm; compiled Tracr models have none")
    p = {k: {n: np.asarray(v, np.float32) for n, v in d.items()} for k, d in assembled.params.items()}
    W_E, W_pos = p["token_embed"]["embeddings"], p["pos_embed"]["embeddings"]
    d, h, e = W_E.shape[1], mc.num_heads, mc.key_size

    @hk.without_apply_rng
    @hk.transform
    def unembed(x: Any) -> Any:  # Tracr's own unembedding (a projection onto the output space)
        return assembled.get_compiled_model().unembed(x, use_unembed_argmax=False)

    W_U = np.asarray(unembed.apply({}, jnp.eye(d, dtype=jnp.float32)), np.float32).reshape(d, -1)
    cfg = GPTConfig(
        n_layers=mc.num_layers,
        d_model=d,
        n_ctx=W_pos.shape[0],
        d_vocab=W_E.shape[0],
        n_heads=h,
        d_head=e,
        d_mlp=mc.mlp_hidden_size,
        d_vocab_out=W_U.shape[1],
        act_fn="relu",
        normalization_type=None,
        attention_dir="causal" if mc.causal else "bidirectional",
        attn_implementation="exact",
    )
    weights = {
        "embed.W_E": W_E,
        "pos_embed.W_pos": W_pos,
        "unembed.W_U": W_U,
        "unembed.b_U": np.zeros(W_U.shape[1], np.float32),
    }
    for l in range(mc.num_layers):
        layer, block = f"transformer/layer_{l}", f"blocks.{l}"
        for x, name in (("Q", "query"), ("K", "key"), ("V", "value")):
            weights[f"{block}.attn.W_{x}"] = p[f"{layer}/attn/{name}"]["w"].reshape(d, h, e).transpose(1, 0, 2)
            weights[f"{block}.attn.b_{x}"] = p[f"{layer}/attn/{name}"]["b"].reshape(h, e)
        weights[f"{block}.attn.W_O"] = p[f"{layer}/attn/linear"]["w"].reshape(h, e, d)
        weights[f"{block}.attn.b_O"] = p[f"{layer}/attn/linear"]["b"]
        weights[f"{block}.mlp.W_in"] = p[f"{layer}/mlp/linear_1"]["w"]
        weights[f"{block}.mlp.b_in"] = p[f"{layer}/mlp/linear_1"]["b"]
        weights[f"{block}.mlp.W_out"] = p[f"{layer}/mlp/linear_2"]["w"]
        weights[f"{block}.mlp.b_out"] = p[f"{layer}/mlp/linear_2"]["b"]
    return cfg, {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}


def from_tracr(assembled: Any, program: str = "tracr", compile_settings: dict[str, Any] | None = None) -> TracrModel:
    """A compiled Tracr model as a TracrModel: the GPT, its codec and its ground-truth circuit."""
    cfg, weights = tracr_weights(assembled)
    model = GPT.from_state_dict(cfg, weights)
    enc, out = assembled.input_encoder, assembled.output_encoder
    input_vocab = tuple(_plain(v) for v, _ in sorted(enc.encoding_map.items(), key=lambda kv: kv[1]))
    is_numerical = not hasattr(out, "encoding_map")
    output_vocab = (
        () if is_numerical else tuple(_plain(v) for v, _ in sorted(out.encoding_map.items(), key=lambda kv: kv[1]))
    )
    labels = tuple(assembled.residual_labels)
    return TracrModel(
        model=model,
        program=program,
        input_vocab=input_vocab,
        output_vocab=output_vocab,
        bos=enc.bos_token,
        pad=enc.pad_token,
        is_numerical=is_numerical,
        residual_labels=labels,
        edge_labels=derive_circuit(model, labels),
        compile_settings=dict(compile_settings or {}),
    )


def _plain(v: Any) -> Value:
    """A value as plain JSON-able Python (numpy scalars become int / float / bool)."""
    return v.item() if isinstance(v, np.generic) else v


# --- the programs the fixtures compile (needs tracr) ----------------------------------------------


def _reverse() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_reverse(rasp.tokens)


def _frac_prevs() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_frac_prevs(rasp.tokens == "x")


def _sort() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)


def _hist() -> Any:
    from tracr.compiler import lib

    return lib.make_hist()


def _length() -> Any:
    from tracr.compiler import lib

    return lib.make_length()


def _pair_balance() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_pair_balance(rasp.tokens, "(", ")")


def _shuffle_dyck2() -> Any:
    from tracr.compiler import lib

    return lib.make_shuffle_dyck2()


@dataclass(frozen=True)
class Program:
    build: Callable[[], Any]  # returns the RASP program (imports tracr)
    vocab: tuple[Value, ...]
    max_seq_len: int
    description: str
    causal: bool = False
    shipped: bool = True  # written by `write-fixtures DIR` without names, and shipped in minillm/data/tracr


PROGRAMS: dict[str, Program] = {
    "reverse": Program(_reverse, (1, 2, 3), 5, "lib.make_reverse(tokens): the input reversed (as ACDC's reverse)"),
    "frac_prevs": Program(
        _frac_prevs,
        ("w", "x", "y", "z"),
        5,
        'lib.make_frac_prevs(tokens == "x"): the fraction of "x" so far, numerical (ACDC\'s proportion)',
    ),
    "frac_prevs_causal": Program(
        _frac_prevs,
        ("w", "x", "y", "z"),
        5,
        'lib.make_frac_prevs(tokens == "x") compiled causal: the fraction of "x" so far',
        causal=True,
    ),
    "sort": Program(_sort, (1, 2, 3), 5, "lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1): sorted input"),
    "hist": Program(_hist, ("a", "b", "c"), 5, "lib.make_hist(): how often each position's token occurs"),
    "length": Program(_length, ("a", "b", "c"), 5, "lib.make_length(): the input's length at every position"),
    "pair_balance": Program(
        _pair_balance,
        ("(", ")", "a"),
        5,
        'lib.make_pair_balance(tokens, "(", ")"): fraction of "(" minus fraction of ")" so far, numerical; '
        "two heads in one layer",
    ),
    # 8 layers, 4 heads, d_model 55, d_mlp 212: a 980 KB fixture, so not shipped; write it on demand
    "shuffle_dyck2": Program(
        _shuffle_dyck2,
        ("(", ")", "{", "}"),
        5,
        'lib.make_shuffle_dyck2(): 1 where "()" and "{}" are both balanced (RASP paper); four heads in one layer',
        shipped=False,
    ),
}

# The published ground truths of the same two programs (module docstring), in this module's edge
# vocabulary: ACDC's hook_embed and hook_pos_embed are both `embed`, auto-circuit's "Resid Start"
# is `embed`, "Resid End" `logits`, "A3.0.V" `blocks.3.attn.head0.v`, "MLP 0" `blocks.0.mlp`.
PUBLISHED_CIRCUITS: dict[str, dict[str, tuple[str, ...]]] = {
    "reverse": {
        "acdc": (
            "embed -> blocks.0.attn.head0.v",
            "embed -> blocks.0.mlp",
            "embed -> blocks.1.mlp",
            "embed -> blocks.3.attn.head0.k",
            "embed -> blocks.3.attn.head0.v",
            "blocks.0.attn.head0 -> blocks.0.mlp",
            "blocks.0.mlp -> blocks.1.mlp",
            "blocks.1.mlp -> blocks.2.mlp",
            "blocks.2.mlp -> blocks.3.attn.head0.q",
            "blocks.3.attn.head0 -> logits",
        ),
        "auto_circuit": ("embed -> blocks.3.attn.head0.v", "blocks.3.attn.head0 -> logits"),
    },
    "frac_prevs": {
        "acdc": (
            "embed -> blocks.0.mlp",
            "embed -> blocks.1.attn.head0.q",
            "embed -> blocks.1.attn.head0.k",
            "blocks.0.mlp -> blocks.1.attn.head0.v",
            "blocks.1.attn.head0 -> logits",
        ),
        "auto_circuit": (
            "embed -> blocks.0.mlp",
            "blocks.0.mlp -> blocks.1.attn.head0.v",
            "blocks.1.attn.head0 -> logits",
        ),
    },
}


def compile_program(name: str) -> Any:
    """Compile a program of PROGRAMS with Tracr (compiler_bos="BOS", mlp_exactness=100)."""
    _require_tracr()
    from tracr.compiler import compiling

    if name not in PROGRAMS:
        raise KeyError(f"no Tracr program {name!r}; known: {sorted(PROGRAMS)}")
    prog = PROGRAMS[name]
    return compiling.compile_rasp_to_model(
        prog.build(),
        vocab=set(prog.vocab),
        max_seq_len=prog.max_seq_len,
        causal=prog.causal,
        compiler_bos="BOS",
        mlp_exactness=100,
    )


# --- fixtures -------------------------------------------------------------------------------------


def reference_inputs(input_space: Sequence[Value], max_seq_len: int, n: int, seed: int = 0) -> list[list[Value]]:
    """n inputs, lengths cycling 1..max_seq_len, values drawn uniformly (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    space = list(input_space)
    return [[space[i] for i in rng.integers(0, len(space), 1 + k % max_seq_len)] for k in range(n)]


def tracr_references(assembled: Any, inputs: Sequence[Sequence[Value]], n_raw: int) -> list[dict[str, Any]]:
    """Tracr's own forward pass on each input: decoded output, and for the first n_raw inputs the
    raw output-space vectors [p, d_vocab_out] (the residual stream read through the unembedding)."""
    _, weights = tracr_weights(assembled)
    W_U = weights["unembed.W_U"]
    bos = assembled.input_encoder.bos_token
    refs = []
    for i, values in enumerate(inputs):
        out = assembled.apply([bos, *values])
        raw = np.asarray(out.transformer_output, np.float32)[0] @ W_U  # one-hot columns: exact
        refs.append(
            {
                "input": [_plain(v) for v in values],
                "output": [_plain(v) for v in out.decoded],
                "raw": raw.tolist() if i < n_raw else None,
            }
        )
    return refs


def write_fixture(
    assembled: Any,
    name: str,
    path: str | os.PathLike,
    *,
    description: str = "",
    compile_settings: dict[str, Any] | None = None,
    n_references: int = 20,
    n_raw: int = 5,
    seed: int = 0,
) -> TracrModel:
    """Write a compiled Tracr model as one safetensors file: the GPT's weights and config, and in
    the metadata (JSON strings) the codec, residual labels, ground-truth edges and Tracr's outputs
    on n_references inputs. Refuses to write a model that does not reproduce those outputs."""
    tm = from_tracr(assembled, name, compile_settings)
    inputs = reference_inputs(tm.input_space, tm.max_seq_len, n_references, seed)
    refs = tracr_references(assembled, inputs, n_raw)
    tm = dataclasses.replace(tm, references=tuple(refs))
    check_references(tm)
    info = {
        "format_version": FORMAT_VERSION,
        "program": name,
        "description": description,
        "bos": tm.bos,
        "pad": tm.pad,
        "is_numerical": tm.is_numerical,
        "input_vocab": list(tm.input_vocab),
        "output_vocab": list(tm.output_vocab),
        "compile": dict(compile_settings or {}),
    }
    metadata = {
        META_KEY: json.dumps(info),
        "tracr.residual_labels": json.dumps(list(tm.residual_labels)),
        "tracr.circuit": json.dumps({e: list(labels) for e, labels in tm.edge_labels.items()}),
        "tracr.references": json.dumps(refs),
    }
    tm.model.save(os.fspath(path), metadata=metadata)
    return tm


def check_references(tm: TracrModel, atol: float = 1e-5) -> None:
    """Raise unless the GPT reproduces the stored Tracr outputs: decoded values equal (numbers to
    atol), raw output vectors to atol."""
    for ref in tm.references:
        logits = np.asarray(tm.model(tm.encode(ref["input"])))[0]
        got = tm.decode(logits)
        want = ref["output"]
        if tm.is_numerical:
            same = got[0] == want[0] and np.allclose(got[1:], want[1:], rtol=0, atol=atol)
        else:
            same = got == want
        if not same:
            raise AssertionError(f"{tm.program}: input {ref['input']} gives {got}, Tracr gave {want}")
        if ref.get("raw") is not None:
            raw = np.asarray(ref["raw"], np.float32)
            if raw.shape != logits.shape or not np.allclose(logits, raw, rtol=0, atol=atol):
                err = np.max(np.abs(logits - raw)) if raw.shape == logits.shape else raw.shape
                raise AssertionError(f"{tm.program}: input {ref['input']}: output vectors differ from Tracr's ({err})")


def list_fixtures() -> list[str]:
    """The names of the shipped fixtures (minillm/data/tracr/*.safetensors)."""
    return sorted(p.stem for p in FIXTURE_DIR.glob("*.safetensors"))


def load_fixture(name: str | os.PathLike) -> TracrModel:
    """A shipped fixture by name (list_fixtures()), or a fixture file by path. Runs no code and
    needs no tracr; a corrupt file is refused (CheckpointError)."""
    path = pathlib.Path(name)
    if path.suffix != ".safetensors":
        if os.sep in str(name) or str(name) not in list_fixtures():
            raise FileNotFoundError(f"no Tracr fixture {name!r}; shipped: {list_fixtures()}")
        path = FIXTURE_DIR / f"{name}.safetensors"
    tensors, metadata = load_tensors(os.fspath(path))
    try:
        info = json.loads(metadata[META_KEY])
        labels = json.loads(metadata["tracr.residual_labels"])
        circuit = json.loads(metadata["tracr.circuit"])
        refs = json.loads(metadata["tracr.references"])
        cfg = GPTConfig.from_json(metadata["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a Tracr fixture (minillm.tracr.write_fixture): {e}") from e
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: Tracr fixture format {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        model = GPT.from_state_dict(cfg, tensors)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} does not match its config: {e}") from e
    return TracrModel(
        model=model,
        program=info["program"],
        input_vocab=tuple(info["input_vocab"]),
        output_vocab=tuple(info["output_vocab"]),
        bos=info["bos"],
        pad=info["pad"],
        is_numerical=info["is_numerical"],
        residual_labels=tuple(labels),
        edge_labels={e: tuple(v) for e, v in circuit.items()},
        references=tuple(refs),
        compile_settings=info["compile"],
    )


def write_fixtures(directory: str | os.PathLike, names: Sequence[str] | None = None) -> list[TracrModel]:
    """Compile programs of PROGRAMS (`names`, or the shipped ones) and write DIR/<name>.safetensors."""
    out = []
    for name in names or [n for n, p in PROGRAMS.items() if p.shipped]:
        prog = PROGRAMS[name]
        settings = {
            "vocab": list(prog.vocab),
            "max_seq_len": prog.max_seq_len,
            "causal": prog.causal,
            "compiler_bos": "BOS",
            "mlp_exactness": 100,
        }
        path = pathlib.Path(directory) / f"{name}.safetensors"
        tm = write_fixture(compile_program(name), name, path, description=prog.description, compile_settings=settings)
        cfg = tm.model.cfg
        print(
            f"{name}: {cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, "
            f"{len(tm.circuit)} edges, "
            f"{path.stat().st_size / 1024:.0f} KB -> {path}"
        )
        out.append(tm)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minillm.tracr", description="Tracr fixtures (needs tracr).")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write-fixtures", help="compile the programs and write DIR/<name>.safetensors")
    write.add_argument("directory")
    shipped = ", ".join(n for n, p in PROGRAMS.items() if p.shipped)
    write.add_argument("names", nargs="*", help=f"programs to write (default the shipped ones: {shipped})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(PROGRAMS))
    if unknown:
        parser.error(f"unknown programs {unknown}; known: {sorted(PROGRAMS)}")
    write_fixtures(args.directory, args.names or None)


if __name__ == "__main__":
    main()
