"""Attribution graphs: for one prompt, which transcoder features, at which positions and layers,
pushed the model towards its answer (Ameisen et al. 2025, "Circuit Tracing"; Lindsey et al. 2025).

    tcs = train_transcoders(model, tokens, 256, k=16)           # minillm.transcoders, one per layer
    graph = attribute(model, tcs, prompt)                        # [p] tokens (or a string)
    graph.adjacency                                              # [n, n]: A[target, source]
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    graph.scores(pruned)                                         # {"replacement": ..., "completeness": ...}
    graph.save("graph.json")                                     # nodes, links, metadata (pruned)
    out = intervene(model, tcs, prompt, [(layer, pos, feature, value)], freeze="attention")

**The replacement model.** The model runs unmodified. Its *local replacement model* for this prompt
is its linearisation around this run with three changes: every attention pattern (`hook_pattern`)
and every LayerNorm scale (`hook_scale`) is frozen at its value in the run, and each MLP is frozen
too, its output (`hook_mlp_out`) kept at its real value while its Jacobian is replaced by its
transcoder's skip path W_skip (zero without one). What is left between the residual stream and the
targets is linear. Each MLP's real output splits exactly as

    mlp_out[L, p] = sum over active features f of a_f W_dec[f] + b_dec + x W_skip + error[L, p]

where x is the transcoder's input (minillm.transcoders.input_name) and the error is what the
transcoder misses, mlp_out minus the transcoder's own output.

**Nodes**, in this order in every array: the active features (layer, position, feature; a > 0), the
error nodes (one per layer and position), the embeddings (one per position: token plus position
embedding, the residual stream entering block 0) and the logits (at the last position, most likely
first: at most `max_logits`, as few as reach `logit_probability` of the probability). Errors and
embeddings are sources only; logits are targets only; features are both.

**Edges.** A target is a feature's encoder pre-activation without its bias (x . W_enc[:, f]) or a
demeaned logit (the logit minus the mean of all logits). The weight of source -> target is the
source's write into the residual stream (a_f W_dec[f] for a feature, the error vector, the
embedding) dotted with the gradient of the target with respect to that MLP output (or to the
embeddings), taken through the frozen linear model. With everything frozen, changing a feature's
activation from a to c a changes every target by exactly (c - 1) times its edge weight; the tests
check this on every model kind. The biases (b_dec, b_O, b_U, LayerNorm's b, ...) belong to no node:
a target's value is the sum of its edges plus what the biases contribute.

**How it is computed.** Two compiled calls. The first runs the model and records the patterns, the
scales, each MLP's input and output, the features' activations and the errors. The second is the
graph: one forward pass of the frozen model (the hooks above replace the patterns and scales by the
recorded ones and each MLP's output by `recorded + (x - recorded x) W_skip + delta`, so that its
value is the real one and its derivative the skip's), `jax.vjp` of it with respect to the deltas
(one [n_layers, p, d_model] array at the MLP outputs, one [p, d_model] at the embeddings), and that
VJP mapped over every target, `batch_size` targets at a time as one vmap (`lax.map`). Each target's
cotangent is its encoder column W_enc[:, f] at its own layer and position (a logit's: its one-hot
minus 1/d_vocab_out); each backward pass gives the target's row of the adjacency matrix at once
(features: gradient at the source's layer and position . a_f W_dec[f]; errors and embeddings: the
gradient . their vectors). The feature edges are one batched matrix product over the (layer,
position) slots, not a gather of the gradient per feature: before the call, the writes a_f W_dec[f]
are packed by slot into rows of 16 ([rows, 16, d_model], zeros where a slot's last row is not
full; a slot with more than 16 active features takes several rows, so the packing stays linear in
the features however they spread over the slots), and for each target the gradient at each row's
slot times its row ("rd,rkd->rk") gives every feature edge, read back in the features' order. The
cost is one backward pass per target (active features plus logits), each linear in the model's
size, and no Python loop runs over nodes. The adjacency is dense, n x n float32 for
n = features + n_layers * p + p + logits (10,000 nodes: 400 MB): fine for the toy models here; a
graph of a large model would need a cap on the features. The active-feature list is padded to a
multiple of 64 and the packed rows to a multiple of 4, so prompts of one length mostly share one
compiled program.

The graph is computed in float32 whatever the model's compute dtype (a bfloat16 model is copied
into float32 first), with full-precision float32 matrix products (no TF32 on a GPU). An
attention-only model has no MLP, hence no transcoders: its graph (with `transcoders=[]`) has
embeddings and logits only, and its edges are the frozen-attention model's direct attributions of
each demeaned logit to each position's embedding.

**Pruning** (`prune`): A is made non-negative and row-normalised (|A| over each row's sum), and a
node's influence is w (A + A^2 + A^3 + ...), w being the logits' probabilities: the share of the
output that reaches the node along paths of any length (the graph is acyclic, so the sum ends).
The features are ranked by influence and the fewest kept whose influence reaches
`node_threshold` of all features' (errors, embeddings and logits stay); on what is left, each
edge's influence is its normalised weight times its target's influence (plus the target's w), and
the fewest edges kept that carry `edge_threshold` of the total. Last, a node is dropped when none
of its kept edges leads to a kept node (the logits are always kept), and its edges with it.

**Scores** (`scores`): with the error nodes (and, for a pruned graph, the dropped nodes and edges)
as dead ends, the *replacement score* is the share of the logits' influence that reaches the
embeddings, and the *completeness score* the influence-weighted average, over the features and
logits kept, of the share of each node's input that comes from kept non-error nodes. Both are 1
when the transcoders are exact (no error) and nothing is pruned.

**Interventions** (`intervene`): set features' activations at chosen positions and rerun, with
`freeze="all"` (the replacement model itself: patterns, scales and MLPs frozen, so each target moves
by exactly its edge weights), `"attention"` (patterns frozen; LayerNorms and MLPs recompute, and an
MLP with a set feature outputs its real output plus (value - current activation) W_dec) or
`"none"` (the model as it is, with the features set).

`AttributionGraph.save` writes JSON (minillm's own format, described in `to_json`): the pruned
nodes with their kind, layer, position, feature or token, activation and influence, the links with
their weights, and metadata (prompt, config, transcoders, thresholds, scores).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model import GPT, GPTConfig
from minillm.model.checkpoint import write_atomic
from minillm.model.inputs import check_tokens
from minillm.transcoders import Transcoder, check_transcoders

Array = jax.Array
FREEZE = ("all", "attention", "none")
KINDS = ("feature", "error", "embedding", "logit")
FORMAT = "minillm.attribution_graph"
FORMAT_VERSION = 1
_PAD = 64  # the active features are padded to a multiple of this (fewer compiled programs)
_ROW = 16  # the feature sources are packed by (layer, position) slot into rows of this many
_ROW_PAD = 4  # and the rows padded to a multiple of this
# Matrix products in full float32 while tracing the calls below: on a GPU, XLA would otherwise take
# float32 products in TF32 (10 bits of mantissa), and an edge would no longer be its target's change.
_full_float32 = functools.partial(jax.default_matmul_precision, "highest")


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# The model, its clean run, and the frozen (or free) run
# ---------------------------------------------------------------------------------------------
class _Run(NamedTuple):
    """What the first compiled call records of the real run (batch axis dropped, float32)."""

    patterns: tuple  # per layer [1, h, p, p] (kept with their batch axis: hooks return them as they are)
    scales: dict  # hook_scale name -> [1, p, 1]
    inputs: Array  # [n_mlp, p, d] each transcoder's input (n_mlp = 0 in an attention-only model)
    mlp_out: Array  # [n_mlp, p, d]
    errors: Array  # [n_mlp, p, d] mlp_out - the transcoder's output
    activations: tuple  # per layer [p, d_transcoder]
    embed: Array  # [p, d] the residual stream entering block 0
    logits: Array  # [p, v]


def _prepare(model: GPT, transcoders, tokens, what: str) -> tuple[GPT, tuple, Array]:
    """The float32 model, the transcoders as a tuple (checked) and the prompt as [1, p] int32."""
    if not isinstance(model, GPT):
        raise TypeError(f"{what}: expects a GPT, got {type(model).__name__}")
    transcoders = [] if transcoders is None else list(transcoders)
    if model.cfg.attn_only:
        if transcoders:
            raise ValueError(
                f"{what}: an attention-only model has no MLP, so it takes no transcoders (pass []): its "
                "graph has only embeddings and logits"
            )
    else:
        check_transcoders(model, transcoders, what)
        if any(tc is None for tc in transcoders):
            raise ValueError(f"{what}: every layer needs a transcoder (the replacement model replaces every MLP)")
    if isinstance(tokens, str):
        tokens = model.to_tokens(tokens)
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"{what}: one prompt, as [p] or [1, p] tokens or a string; got shape {tokens.shape}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{what}: the prompt has {tokens.shape[1]} tokens, longer than n_ctx={model.cfg.n_ctx}")
    tokens = check_tokens(tokens, model.cfg)
    if model.cfg.dtype != "float32":
        model = GPT.from_state_dict(dataclasses.replace(model.cfg, dtype="float32"), model.state_dict())
    return model, tuple(transcoders), tokens


def _scale_names(cfg: GPTConfig) -> list[str]:
    if cfg.normalization_type is None:
        return []
    lns = ("ln1",) if cfg.attn_only else ("ln1", "ln2")
    return [f"blocks.{l}.{ln}.hook_scale" for l in range(cfg.n_layers) for ln in lns] + ["ln_final.hook_scale"]


def _pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


@jax.jit
def _clean_run(model: GPT, transcoders: tuple, tokens: Array) -> _Run:
    cfg = model.cfg
    L, p, d = len(transcoders), tokens.shape[1], cfg.d_model
    names = [_pattern_name(l) for l in range(cfg.n_layers)] + _scale_names(cfg) + ["blocks.0.hook_resid_pre"]
    names += [n for tc in transcoders for n in (tc.input_name, f"blocks.{tc.layer}.hook_mlp_out")]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    inputs = jnp.stack([cache[tc.input_name][0] for tc in transcoders]) if L else jnp.zeros((0, p, d))
    mlp_out = jnp.stack([cache[f"blocks.{tc.layer}.hook_mlp_out"][0] for tc in transcoders]) if L else inputs
    activations = tuple(tc.encode(x) for tc, x in zip(transcoders, inputs))
    recon = [tc.decode(f, x) for tc, f, x in zip(transcoders, activations, inputs)]
    errors = mlp_out - jnp.stack(recon) if L else inputs
    return _Run(
        patterns=tuple(cache[_pattern_name(l)] for l in range(cfg.n_layers)),
        scales={n: cache[n] for n in _scale_names(cfg)},
        inputs=inputs,
        mlp_out=mlp_out,
        errors=errors,
        activations=activations,
        embed=cache["blocks.0.hook_resid_pre"][0],
        logits=logits[0],
    )


class _Features(NamedTuple):
    """Features to set: [k] layer, position, feature id and value."""

    layer: Array
    pos: Array
    feature: Array
    value: Array


def _no_features() -> _Features:
    empty = jnp.zeros(0, jnp.int32)
    return _Features(empty, empty, empty, jnp.zeros(0, jnp.float32))


def _forward(model: GPT, transcoders: tuple, tokens: Array, clean: _Run, freeze: str, features: _Features,
             mlp_delta: Array, embed_delta: Array) -> tuple[Array, Array]:  # fmt: skip
    """(the transcoders' inputs [n_mlp, p, d], logits [p, v]) of a run with `features` set, mlp_delta
    [n_mlp, p, d] added to the MLP outputs and embed_delta [p, d] to the embeddings, and with
    freeze "all" (the replacement model), "attention" or "none" (module docstring)."""
    cfg = model.cfg
    seen: dict[int, Array] = {}
    hooks: list = [("blocks.0.hook_resid_pre", lambda r, hook: r + embed_delta[None].astype(r.dtype))]
    if freeze in ("all", "attention"):
        hooks += [(_pattern_name(l), lambda a, hook, l=l: clean.patterns[l]) for l in range(cfg.n_layers)]
    if freeze == "all":
        hooks += [(n, lambda s, hook, n=n: clean.scales[n]) for n in clean.scales]
    for l, tc in enumerate(transcoders):

        def read(x, hook, l=l):
            seen[l] = x[0]

        def write(out, hook, l=l, tc=tc):
            x = seen[l]
            if freeze == "all":  # the real output, with the skip's derivative (0 at the real input)
                base, acts = clean.mlp_out[l] + tc.skip(x - clean.inputs[l]), clean.activations[l]
            else:
                base, acts = out[0], tc.encode(x)
            at = features.layer == l
            f = jnp.clip(features.feature, 0, tc.d_transcoder - 1)
            change = jnp.where(at, features.value - acts[features.pos, f], 0.0)
            base = base.at[features.pos].add(change[:, None] * tc.W_dec[f])
            return (base + mlp_delta[l])[None].astype(out.dtype)

        hooks += [(tc.input_name, read), (f"blocks.{l}.hook_mlp_out", write)]
    logits = model.run_with_hooks(tokens, hooks)[0]
    inputs = jnp.stack([seen[l] for l in range(len(transcoders))]) if transcoders else clean.inputs
    return inputs, logits


# ---------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------
class _Sources(NamedTuple):
    """The active features' writes a W_dec[f], packed by (layer, position) slot (_pack_sources)."""

    slot: Array  # [r] each row's slot, layer * p + position
    packed: Array  # [r, _ROW, d] the writes of the features at that slot (zeros where none)
    flat: Array  # [s] each feature's place in packed.reshape(r * _ROW, d) (0 for the padding: dropped)


class _Targets(NamedTuple):
    layer: Array  # [t] a feature target's layer, position and encoder column (0 for logits)
    pos: Array
    column: Array  # [t, d]
    logit: Array  # [t] a logit target's output id
    is_logit: Array  # [t] bool


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _edges(model: GPT, transcoders: tuple, tokens: Array, clean: _Run, sources: _Sources, targets: _Targets,
           batch_size: int) -> Array:  # fmt: skip
    """[t, s + n_mlp * p + p]: each target's edges from the features, the errors, the embeddings."""
    L, p, d = len(transcoders), tokens.shape[1], model.cfg.d_model
    v = clean.logits.shape[-1]

    def frozen(deltas):
        inputs, logits = _forward(model, transcoders, tokens, clean, "all", _no_features(), *deltas)
        return inputs, logits[-1]

    _, vjp = jax.vjp(frozen, (jnp.zeros((L, p, d)), jnp.zeros((p, d))))

    def row(target: _Targets) -> Array:
        at_input = jnp.zeros((L, p, d))
        if L:
            at_input = at_input.at[target.layer, target.pos].set(jnp.where(target.is_logit, 0.0, target.column))
        at_logit = jnp.where(target.is_logit, jax.nn.one_hot(target.logit, v) - 1.0 / v, 0.0)
        ((g_mlp, g_embed),) = vjp((at_input, at_logit))  # d target / d (MLP outputs), d target / d embeddings
        parts = []
        if L:  # the feature edges: one matrix-vector product per row of packed writes
            g_rows = g_mlp.reshape(L * p, d)[sources.slot]  # [r, d] the gradient at each row's slot
            parts.append(jnp.einsum("rd,rkd->rk", g_rows, sources.packed).reshape(-1)[sources.flat])
            parts.append((g_mlp * clean.errors).sum(-1).reshape(-1))
        parts.append((g_embed * clean.embed).sum(-1))
        return jnp.concatenate(parts)

    return jax.lax.map(row, targets, batch_size=batch_size)


def _pack_sources(f_slot: np.ndarray, writes: np.ndarray, n_slots: int, n_pad: int) -> _Sources:
    """The feature sources for _edges: writes [n_f, d] of the features at slots f_slot [n_f], packed
    into rows of _ROW per slot (a slot with more features takes more rows), the rows padded to a
    multiple of _ROW_PAD and the features' places to n_pad. NumPy, linear in the features."""
    n_f, d = writes.shape
    counts = np.bincount(f_slot, minlength=n_slots)
    order = np.argsort(f_slot, kind="stable")
    rank = np.empty(n_f, np.int64)  # each feature's place among its slot's features
    rank[order] = np.arange(n_f) - (np.cumsum(counts) - counts)[f_slot[order]]
    n_rows = -(-counts // _ROW)  # rows per slot
    first_row = np.cumsum(n_rows) - n_rows
    row, col = first_row[f_slot] + rank // _ROW, rank % _ROW
    r = max(1, -(-int(n_rows.sum()) // _ROW_PAD)) * _ROW_PAD
    slot = np.zeros(r, np.int32)
    slot[: n_rows.sum()] = np.repeat(np.arange(n_slots), n_rows)
    packed = np.zeros((r, _ROW, d), np.float32)
    packed[row, col] = writes
    flat = np.zeros(n_pad, np.int32)
    flat[:n_f] = row * _ROW + col
    return _Sources(slot, packed, flat)


def _top_logits(logits: np.ndarray, max_logits: int, probability: float) -> tuple[np.ndarray, np.ndarray]:
    """The most likely outputs, most likely first: at most max_logits, the fewest whose probabilities
    add up to `probability` (float64 softmax)."""
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    n = int(np.searchsorted(np.cumsum(probs[order]), probability) + 1)
    order = order[: min(n, max_logits, len(order))]
    return order, probs[order]


def attribute(
    model: GPT,
    transcoders: Sequence[Transcoder] | None,
    prompt,
    *,
    max_logits: int = 10,
    logit_probability: float = 0.95,
    batch_size: int = 32,
) -> AttributionGraph:
    """The attribution graph of `prompt` ([p] or [1, p] tokens, or a string) at its last position.

    transcoders: one per layer, each trained on this model's layer (minillm.transcoders); [] for an
    attention-only model. max_logits / logit_probability: the logit targets (module docstring).
    batch_size: targets per vmapped backward pass. Two compiled calls; see the module docstring."""
    if isinstance(max_logits, bool) or not isinstance(max_logits, (int, np.integer)) or max_logits < 1:
        raise ValueError(f"attribute: max_logits must be a positive int, got {max_logits!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"attribute: batch_size must be a positive int, got {batch_size!r}")
    logit_probability = _check_fraction(logit_probability, "attribute: logit_probability")
    model32, transcoders, tokens = _prepare(model, transcoders, prompt, "attribute")
    cfg = model.cfg
    with _full_float32():
        clean = _clean_run(model32, transcoders, tokens)
    L, p, d = len(transcoders), tokens.shape[1], cfg.d_model

    # the nodes: active features (layer, position, feature), errors, embeddings, logits
    acts = [np.asarray(a) for a in clean.activations]
    found = [np.nonzero(a > 0) for a in acts]
    f_layer = np.concatenate([np.full(len(pos), l) for l, (pos, _) in enumerate(found)] + [np.zeros(0, int)])
    f_pos = np.concatenate([pos for pos, _ in found] + [np.zeros(0, int)])
    f_id = np.concatenate([feat for _, feat in found] + [np.zeros(0, int)])
    f_act = np.concatenate([a[pos, feat] for a, (pos, feat) in zip(acts, found)] + [np.zeros(0)])
    n_f = len(f_id)
    logit_ids, logit_probs = _top_logits(np.asarray(clean.logits[-1]), int(max_logits), logit_probability)
    n_l = len(logit_ids)

    # the padded sources and targets of the compiled call
    n_pad = -(-n_f // _PAD) * _PAD
    W_dec = [np.asarray(tc.W_dec) for tc in transcoders]
    W_enc = [np.asarray(tc.W_enc) for tc in transcoders]
    writes = np.zeros((n_f, d), np.float32)
    columns = np.zeros((n_pad + n_l, d), np.float32)
    for l in range(L):  # one gather per layer
        at = np.flatnonzero(f_layer == l)
        writes[at] = f_act[at, None] * W_dec[l][f_id[at]]
        columns[at] = W_enc[l][:, f_id[at]].T
    pad = lambda a, n: np.concatenate([a, np.zeros(n - len(a), a.dtype)])  # noqa: E731
    sources = _pack_sources(f_layer * p + f_pos, writes, L * p, n_pad)
    targets = _Targets(
        layer=pad(f_layer, n_pad + n_l),
        pos=pad(f_pos, n_pad + n_l),
        column=columns,
        logit=np.concatenate([np.zeros(n_pad, int), logit_ids]),
        is_logit=np.arange(n_pad + n_l) >= n_pad,
    )
    with _full_float32():
        rows = np.asarray(_edges(model32, transcoders, tokens, clean, sources, targets, int(batch_size)))

    # the adjacency: feature rows, then logit rows; the source columns are features, errors, embeddings
    n_e = L * p
    n_s = n_f + n_e + p
    n = n_s + n_l
    source_cols = np.r_[np.arange(n_f), n_pad + np.arange(n_e + p)]
    A = np.zeros((n, n), np.float32)
    A[:n_f, :n_s] = rows[:n_f][:, source_cols]
    A[n_s:, :n_s] = rows[n_pad : n_pad + n_l][:, source_cols]

    e_layer, e_pos = np.divmod(np.arange(n_e), p)
    errors, embed, inputs = np.asarray(clean.errors), np.asarray(clean.embed), np.asarray(clean.inputs)
    logits = np.asarray(clean.logits[-1], np.float64)
    f_pre = (inputs[f_layer, f_pos] * columns[:n_f]).sum(-1) if n_f else np.zeros(0)
    toks = np.asarray(tokens[0])
    return AttributionGraph(
        tokens=toks,
        adjacency=A,
        kind=np.array(["feature"] * n_f + ["error"] * n_e + ["embedding"] * p + ["logit"] * n_l),
        layer=np.r_[f_layer, e_layer, np.full(p, -1), np.full(n_l, cfg.n_layers)].astype(np.int32),
        position=np.r_[f_pos, e_pos, np.arange(p), np.full(n_l, p - 1)].astype(np.int32),
        index=np.r_[f_id, np.full(n_e, -1), toks, logit_ids].astype(np.int32),
        activation=np.r_[
            f_act, np.linalg.norm(errors.reshape(n_e, d), axis=-1), np.linalg.norm(embed, axis=-1), logit_probs
        ].astype(np.float32),
        target_value=np.r_[f_pre, np.zeros(n_e + p), logits[logit_ids] - logits.mean()].astype(np.float32),
        logit_weights=np.r_[np.zeros(n - n_l), logit_probs].astype(np.float64),
        cfg=cfg,
        transcoders=tuple(
            {
                "layer": tc.layer,
                "activation": tc.activation,
                "d_transcoder": tc.d_transcoder,
                "skip": tc.W_skip is not None,
            }
            for tc in transcoders
        ),
        settings={"max_logits": int(max_logits), "logit_probability": logit_probability},
        token_strings=_token_strings(model, toks),
    )


def _token_strings(model: GPT, tokens: np.ndarray) -> list[str] | None:
    if model.tokenizer is None:
        return None
    return [model.to_string(np.asarray([t])) for t in tokens]


# ---------------------------------------------------------------------------------------------
# Influence, pruning and scores, on any adjacency matrix A[target, source] of an acyclic graph
# ---------------------------------------------------------------------------------------------
def normalized_adjacency(A) -> np.ndarray:
    """|A| with each row divided by its sum (rows of zeros stay zero), float64."""
    A = np.abs(np.asarray(A, np.float64))
    sums = A.sum(1, keepdims=True)
    return np.divide(A, sums, out=np.zeros_like(A), where=sums > 0)


def influence(A, weights) -> np.ndarray:
    """w (N + N^2 + N^3 + ...) for N = normalized_adjacency(A) and w = weights [n] (the logits'
    probabilities, 0 elsewhere): how much of the output reaches each node along paths of any
    length. A vector times the matrix per step, one step per path length (the graph is acyclic)."""
    N = normalized_adjacency(A)
    x = np.asarray(weights, np.float64)
    total = np.zeros_like(x)
    for _ in range(len(x)):
        x = x @ N
        if not x.any():
            break
        total += x
    return total


class Pruned(NamedTuple):
    """What pruning keeps, and what it kept of each ranking."""

    nodes: np.ndarray  # [n] bool
    edges: np.ndarray  # [n, n] bool, like the adjacency: edges[target, source]
    node_fraction: float  # the kept features' share of all features' influence (>= node_threshold)
    edge_fraction: float  # the kept edges' share of all edges' influence, after node pruning (>= edge_threshold)


def _keep_top(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """The fewest highest scores whose sum reaches threshold of the total: (mask, kept share)."""
    order = np.argsort(-scores, kind="stable")
    carried = np.cumsum(scores[order])  # what the top 1, 2, ... carry
    total = carried[-1] if len(carried) else 0.0
    if total <= 0 or threshold >= 1:  # keep everything that carries something
        return scores > 0 if total > 0 else np.ones(scores.shape, bool), 1.0
    n = int(np.searchsorted(carried, threshold * total) + 1)  # the first n reach the threshold
    keep = np.zeros(scores.shape, bool)
    keep[order[:n]] = True
    return keep, float(carried[n - 1] / total)


def prune(A, weights, prunable, *, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Prune a graph (module docstring): rank the `prunable` nodes [n] bool (the features) by
    influence and keep the fewest carrying node_threshold of theirs; then rank the edges left by
    influence and keep the fewest carrying edge_threshold; then drop what no longer leads to a
    node with weight (a logit)."""
    node_threshold = _check_fraction(node_threshold, "prune: node_threshold")
    edge_threshold = _check_fraction(edge_threshold, "prune: edge_threshold")
    A = np.asarray(A, np.float64)
    w = np.asarray(weights, np.float64)
    prunable = np.asarray(prunable, bool)
    node_infl = influence(A, w)
    kept, node_fraction = _keep_top(np.where(prunable, node_infl, 0.0)[prunable], node_threshold)
    nodes = ~prunable
    nodes[np.flatnonzero(prunable)[kept]] = True
    A = A * nodes[:, None] * nodes[None, :]
    edge_infl = normalized_adjacency(A) * (influence(A, w) + w)[:, None]
    present = edge_infl > 0
    kept_edges, edge_fraction = _keep_top(edge_infl[present], edge_threshold)
    edges = np.zeros(A.shape, bool)
    edges[np.nonzero(present)[0][kept_edges], np.nonzero(present)[1][kept_edges]] = True
    # keep what leads to a logit through kept edges: the logits, then whatever feeds a kept node
    final = w > 0
    while True:
        grown = final | (edges & final[:, None]).any(0)
        if (grown == final).all():
            break
        final = grown
    return Pruned(final, edges & final[:, None] & final[None, :], node_fraction, edge_fraction)


def graph_scores(A, weights, is_error, is_embedding, pruned: Pruned | None = None) -> dict[str, float]:
    """The replacement and completeness scores (module docstring) of a graph, or of its pruned
    part: the error nodes, and the nodes and edges pruning dropped, are dead ends."""
    A = np.asarray(A, np.float64)
    w = np.asarray(weights, np.float64)
    is_error, is_embedding = np.asarray(is_error, bool), np.asarray(is_embedding, bool)
    N = normalized_adjacency(A)
    if pruned is not None:
        N = N * pruned.edges * pruned.nodes[:, None] * pruned.nodes[None, :]
    kept = np.ones(len(w), bool) if pruned is None else pruned.nodes
    live = N * ~is_error[None, :] * ~is_error[:, None]  # paths stop at an error node
    reach = np.zeros_like(w)
    x = w.copy()
    for _ in range(len(w)):
        x = x @ live
        if not x.any():
            break
        reach += x
    total_w = w.sum()
    replacement = float(reach[is_embedding].sum() / total_w) if total_w > 0 else float("nan")
    # completeness: each kept target's input share from kept non-error sources, weighted by influence
    has_input = np.abs(A).sum(1) > 0
    share = np.where(has_input, (N * ~is_error[None, :]).sum(1), 1.0)
    targets = kept & (has_input | (w > 0)) & ~is_error & ~is_embedding
    weight = (influence(A, w) + w) * targets
    completeness = float((weight * share).sum() / weight.sum()) if weight.sum() > 0 else float("nan")
    return {"replacement": replacement, "completeness": completeness}


# ---------------------------------------------------------------------------------------------
# The graph object and its file
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class AttributionGraph:
    """One prompt's attribution graph. Every per-node array has one entry per node, in the order
    features, errors, embeddings, logits (module docstring); `adjacency[target, source]`."""

    tokens: np.ndarray  # [p] the prompt
    adjacency: np.ndarray  # [n, n] float32: edge weights, rows targets, columns sources
    kind: np.ndarray  # [n] "feature", "error", "embedding" or "logit"
    layer: np.ndarray  # [n] a feature's or error's layer; -1 for embeddings, n_layers for logits
    position: np.ndarray  # [n] the position (a logit's: the last)
    index: np.ndarray  # [n] the feature id; -1 for errors; the token for embeddings; the output id for logits
    activation: (
        np.ndarray
    )  # [n] a feature's activation; the norm of an error or embedding vector; a logit's probability
    target_value: np.ndarray  # [n] a feature's pre-activation without bias, a logit's demeaned value; 0 for sources
    logit_weights: np.ndarray  # [n] the logits' probabilities, 0 elsewhere
    cfg: GPTConfig
    transcoders: tuple  # per layer: {"layer", "activation", "d_transcoder", "skip"}
    settings: dict  # max_logits, logit_probability
    token_strings: list[str] | None = None  # the prompt's tokens as text, when the model has a tokenizer

    @property
    def n_nodes(self) -> int:
        return len(self.kind)

    def nodes_of(self, kind: str) -> np.ndarray:
        """The indices of the nodes of one kind ("feature", "error", "embedding", "logit")."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return np.flatnonzero(self.kind == kind)

    def node_ids(self) -> list[str]:
        """A name per node: feature:L:P:F, error:L:P, embedding:P, logit:V."""
        names = []
        for kind, layer, pos, idx in zip(self.kind, self.layer, self.position, self.index):
            names.append({
                "feature": f"feature:{layer}:{pos}:{idx}",
                "error": f"error:{layer}:{pos}",
                "embedding": f"embedding:{pos}",
                "logit": f"logit:{idx}",
            }[kind])  # fmt: skip
        return names

    def influence(self) -> np.ndarray:
        """Each node's influence on the logits (module docstring); the logits' own is their weight."""
        return influence(self.adjacency, self.logit_weights) + self.logit_weights

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
        """The nodes and edges kept (module docstring); only features are pruned by influence."""
        return prune(self.adjacency, self.logit_weights, self.kind == "feature",
                     node_threshold=node_threshold, edge_threshold=edge_threshold)  # fmt: skip

    def scores(self, pruned: Pruned | None = None) -> dict[str, float]:
        """{"replacement": ..., "completeness": ...} of the whole graph, or of its pruned part."""
        return graph_scores(self.adjacency, self.logit_weights, self.kind == "error", self.kind == "embedding", pruned)

    def to_json(self, pruned: Pruned | None = None) -> dict:
        """The graph as a JSON-ready dict: {"metadata": {...}, "nodes": [...], "links": [...]}.

        nodes: the kept nodes (all without `pruned`), each {"id", "kind", "layer", "position",
        "index", "activation", "influence", "target_value"} (and "token" where the prompt or output
        has text); links: the kept edges, each {"source", "target", "weight"} (the raw edge weight);
        metadata: the format and its version, the prompt, the model's config, the transcoders, the
        logit settings, the pruning thresholds and what they kept, and the scores of the whole and the
        pruned graph."""
        keep = np.ones(self.n_nodes, bool) if pruned is None else pruned.nodes
        edges = self.adjacency != 0 if pruned is None else pruned.edges & (self.adjacency != 0)
        ids = self.node_ids()
        infl = self.influence()
        nodes = []
        for i in np.flatnonzero(keep):
            node = {"id": ids[i], "kind": str(self.kind[i]), "layer": int(self.layer[i]),
                    "position": int(self.position[i]), "index": int(self.index[i]),
                    "activation": float(self.activation[i]), "influence": float(infl[i]),
                    "target_value": float(self.target_value[i])}  # fmt: skip
            if self.token_strings is not None and self.kind[i] == "embedding":
                node["token"] = self.token_strings[int(self.position[i])]
            nodes.append(node)
        targets, sources = np.nonzero(edges)
        links = [{"source": ids[s], "target": ids[t], "weight": float(self.adjacency[t, s])}
                 for t, s in zip(targets, sources)]  # fmt: skip
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "prompt_tokens": [int(t) for t in self.tokens],
            "prompt_strings": self.token_strings,
            "model_config": self.cfg.to_dict(),
            "transcoders": list(self.transcoders),
            **self.settings,
            "n_nodes": self.n_nodes,
            "n_links": int((self.adjacency != 0).sum()),
            "scores": self.scores(),
        }
        if pruned is not None:
            metadata["pruned"] = {
                "node_fraction": pruned.node_fraction,
                "edge_fraction": pruned.edge_fraction,
                "n_nodes": int(keep.sum()),
                "n_links": len(links),
                "scores": self.scores(pruned),
            }
        return {"metadata": metadata, "nodes": nodes, "links": links}

    def save(self, path: str, node_threshold: float = 0.8, edge_threshold: float = 0.98, prune: bool = True) -> None:
        """Write the graph as JSON (to_json), atomically: pruned with these thresholds, or whole
        with prune=False."""
        pruned = self.prune(node_threshold, edge_threshold) if prune else None
        data = self.to_json(pruned)
        if pruned is not None:
            data["metadata"]["pruned"].update(node_threshold=node_threshold, edge_threshold=edge_threshold)
        write_atomic(path, json.dumps(data).encode())


# ---------------------------------------------------------------------------------------------
# Interventions
# ---------------------------------------------------------------------------------------------
class Intervention(NamedTuple):
    """What a run with features set gives, per layer for the features (numpy, float32)."""

    logits: np.ndarray  # [p, v]
    pre_activations: list  # per layer [p, d_transcoder]: x W_enc + b_enc of the run's MLP inputs
    activations: list  # per layer [p, d_transcoder], the set features at their values


def intervene(
    model: GPT,
    transcoders: Sequence[Transcoder] | None,
    prompt,
    features: Sequence[tuple[int, int, int, float]] = (),
    *,
    freeze: str = "all",
    mlp_out_delta=None,
    embed_delta=None,
) -> Intervention:
    """Run `prompt` with each (layer, position, feature, value) in `features` set to value.

    freeze="all": the local replacement model (patterns, LayerNorm scales and MLPs frozen at the real
    run; features keep their real activations but for those set): each target moves by exactly its
    edge weights times the change. "attention": the patterns frozen, the rest recomputed (a later
    feature's activation is its transcoder's on the new input). "none": nothing frozen.
    mlp_out_delta [n_layers, p, d_model] and embed_delta [p, d_model] are added to the MLP outputs
    and to the embeddings (e.g. a multiple of an error node's or an embedding's vector)."""
    if freeze not in FREEZE:
        raise ValueError(f"intervene: freeze must be one of {FREEZE}, got {freeze!r}")
    model32, transcoders, tokens = _prepare(model, transcoders, prompt, "intervene")
    L, p, d = len(transcoders), tokens.shape[1], model.cfg.d_model
    rows = [tuple(f) for f in features]
    for f in rows:
        if len(f) != 4:
            raise ValueError(f"intervene: each feature is (layer, position, feature, value), got {f!r}")
        layer, pos, feat = (int(x) for x in f[:3])
        if not 0 <= layer < L or not -p <= pos < p or not 0 <= feat < transcoders[layer].d_transcoder:
            raise IndexError(f"intervene: no feature {feat} at layer {layer}, position {pos} (n_layers with "
                             f"transcoders {L}, p={p})")  # fmt: skip
    keys = [(int(f[0]), int(f[1]) % p, int(f[2])) for f in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("intervene: a feature is set twice at the same position")
    feats = _Features(*(jnp.asarray([k[i] for k in keys], jnp.int32) for i in range(3)),
                      jnp.asarray([float(f[3]) for f in rows], jnp.float32))  # fmt: skip
    mlp_delta = jnp.zeros((L, p, d)) if mlp_out_delta is None else jnp.asarray(mlp_out_delta, jnp.float32)
    embed = jnp.zeros((p, d)) if embed_delta is None else jnp.asarray(embed_delta, jnp.float32)
    if mlp_delta.shape != (L, p, d) or embed.shape != (p, d):
        raise ValueError(f"intervene: mlp_out_delta must be [{L}, {p}, {d}] and embed_delta [{p}, {d}], got "
                         f"{mlp_delta.shape} and {embed.shape}")  # fmt: skip
    with _full_float32():
        clean = _clean_run(model32, transcoders, tokens)
        inputs, logits = _intervene(model32, transcoders, tokens, clean, freeze, feats, mlp_delta, embed)
    pre, acts = [], []
    for l, tc in enumerate(transcoders):
        pre_l = tc.pre_activations(inputs[l])
        act = clean.activations[l] if freeze == "all" else tc.activate(pre_l)
        at = feats.layer == l
        act = act.at[feats.pos[at], feats.feature[at]].set(feats.value[at])
        pre.append(np.asarray(pre_l))
        acts.append(np.asarray(act))
    return Intervention(np.asarray(logits), pre, acts)


@functools.partial(jax.jit, static_argnames=("freeze",))
def _intervene(model, transcoders, tokens, clean, freeze, feats, mlp_delta, embed_delta):
    return _forward(model, transcoders, tokens, clean, freeze, feats, mlp_delta, embed_delta)
