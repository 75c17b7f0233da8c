"""Circuit discovery: which edges of a model's graph matter, each method one compiled call.

Every method here asks the same question of the graph in minillm.graph: how far does a metric of
the logits move when an edge is ablated (made to carry a corrupted, zero or mean value instead of
what its sender wrote)? They differ in how they answer it:

    edge_patching   exact: one forward pass per edge, each edge ablated alone. An edge into block
                    l changes nothing before it, so its pass starts at block l from the clean run's
                    residual stream; the passes of each block's edges are one `jax.lax.map`,
                    vmapped in chunks, all inside one `jax.jit`; `edges=` patches a subset.
    eap             edge attribution patching (Syed et al. 2023): the first-order estimate of the
                    same numbers, (ablated - clean output of the sender) . d metric / d receiver
                    input, for every edge from one forward and one backward pass. Here it is
                    literally the gradient of the metric with respect to the edge mask at "keep
                    everything", with the sign flipped.
    eap_ig          EAP with the gradient integrated along the path from "keep every edge" to
                    "ablate every edge" (Hanna et al. 2024), `steps` gradients in one vmap.
    acdc            ACDC (Conmy et al. 2023): from the logits backwards, try ablating each edge and
                    keep it ablated when the metric (by default the KL divergence from the full
                    model) rises by less than `threshold`. One `jax.lax.scan` carrying the mask;
                    `acdc_sweep` runs many thresholds at once (a vmap over the scan).

Scores are "metric with the edge ablated minus metric of the full model" (EdgeScores); a circuit
is a set of edges (Circuit). To judge one: `faithfulness` runs the model with every edge outside
a circuit ablated; `roc` compares scores (or circuits from a sweep) with a ground-truth edge set,
as ACDC and auto-circuit (Miller et al. 2024) judge methods on Tracr's compiled programs
(minillm.tracr), and gives the ROC curve and its area.

    scores = eap(model, clean, metric, corrupted=corrupted)          # EdgeScores
    scores.top(5)                                                     # [(edge, score), ...]
    found = acdc(model, clean, 0.05, corrupted=corrupted)             # Circuit
    faithfulness(model, clean, found, metric, corrupted=corrupted)    # Faithfulness
    roc(scores, truth).auc

A metric is a JAX function of the logits [b, p, v] that returns a scalar; it is traced into the
method's compiled call. Helpers: kl_divergence(clean_logits), mse(clean_logits) (numerical
outputs), mean_log_prob(labels).

Compilation: each method is one jax.jit call, compiled the first time it meets a model config,
shapes and metric (3-5 s on a CPU for a lesson's model, 15 to 40 s for GPT-2 small's 12 x 12
graph), then cached. The metric is part of the cache key through its
function: calling a method again with the same metric object reuses the compiled call, while a
metric built anew at every call (a new lambda, or a closure defined inside your loop) is a new
function and compiles again each time. The helpers above avoid this: they return a
jax.tree_util.Partial of a function defined once, whose arrays (and positions) are arguments of
the compiled call, so kl_divergence(clean_logits) built again on new logits of the same shape
reuses it, and so does acdc's default metric (a new kl_divergence each call). Write your own
metric as Partial(fn, *arrays), with fn defined once at top level, to get the same.

Setup is linear in the number of edges (GPT-2 small's graph has 32,491): the graph, ACDC's order
and its per-node "is any edge out of this node still kept" count (carried through the scan,
[n_senders], not an [n_edges, n_edges] table), `reaching_logits` (per-receiver edge lists) and
`roc` (sorting, O(n log n)). What remains is a method's forward passes (and compiling them): at
GPT-2 small's shape, EAP and one ACDC step run in tens of milliseconds once compiled
(tests/test_discovery_gpt2_shape.py); a full ACDC run is one pass per edge whose node still reaches
the logits, and edge patching one per edge, so `edges=` patches a chosen subset.

Ablation and biases: a head's output, as a sender, is hook_result without b_O (b_O belongs to no
node and is never ablated), while an MLP's output, hook_mlp_out, includes b_out; ACDC's
TransformerLens graph makes the same choice. Zero ablation therefore removes b_V @ W_O with a
head's output but never b_O, and `fold_value_biases` (on by default in `GPT.from_pretrained`, off
in `from_pretrained_no_processing`), which moves b_V @ W_O into b_O, changes zero-ablation scores
although it leaves the model's outputs unchanged. Corrupted and mean ablation subtract two outputs
of the same head, in which the constant b_V @ W_O cancels: their scores do not depend on it.

Where these differ from other tools. EAP-IG here integrates along the edge mask itself (every edge
ablated together by the fraction alpha; scores then add up to the effect of ablating everything,
up to the quadrature error); Hanna et al.'s EAP-IG-inputs interpolates the input embeddings
instead. Edge patching with ablation="corrupted" patches one edge to the corrupted run's sender
output with every other edge clean (ACDC's convention), not the corrupted run with one edge clean.
Miller et al. 2024 warn that the answer depends on the ablation: try more than one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from minillm.graph import (
    ABLATIONS,
    Ablation,
    Graph,
    ablated_outputs,
    check_keep,
    edge_forward,
    edge_forward_into,
)
from minillm.model import GPT
from minillm.model.inputs import check_tokens

Array = jax.Array
Metric = Callable[[Array], Array]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
# Each helper returns a jax.tree_util.Partial of a function defined once here, holding its arrays
# (and its positions, as an index array) as pytree leaves: the methods pass a metric to their
# compiled call as an argument, so a helper built again on new data of the same shapes reuses the
# compiled call (module docstring).
def _at(x: Array, positions: Array | None) -> Array:
    return x if positions is None else x[:, positions]


def _positions(positions: Sequence[int] | None) -> Array | None:
    return None if positions is None else jnp.asarray(positions, jnp.int32)


def _kl_divergence(clean: Array, positions: Array | None, logits: Array) -> Array:
    log_p = jax.nn.log_softmax(_at(logits.astype(jnp.float32), positions), axis=-1)
    return (jnp.exp(clean) * (clean - log_p)).sum(-1).mean()


def _mse(clean: Array, positions: Array | None, logits: Array) -> Array:
    return ((_at(logits.astype(jnp.float32), positions) - clean) ** 2).mean()


def _mean_log_prob(labels: Array, positions: Array | None, logits: Array) -> Array:
    log_p = jax.nn.log_softmax(_at(logits.astype(jnp.float32), positions), axis=-1)
    return jnp.take_along_axis(log_p, labels[..., None], axis=-1).mean()


def kl_divergence(clean_logits: Array, positions: Sequence[int] | None = None) -> Metric:
    """KL(full model || this run) of the next-token distributions, averaged over the batch and
    `positions` (default all): ACDC's metric. 0 for the full model, and its gradient there is 0
    too, so EAP needs another metric."""
    positions = _positions(positions)
    clean = jax.nn.log_softmax(_at(jnp.asarray(clean_logits, jnp.float32), positions), axis=-1)
    return Partial(_kl_divergence, clean, positions)


def mse(clean_logits: Array, positions: Sequence[int] | None = None) -> Metric:
    """Mean squared difference from the full model's outputs (for numerical outputs, e.g. Tracr's
    frac_prevs, whose one output dimension is the answer)."""
    positions = _positions(positions)
    return Partial(_mse, _at(jnp.asarray(clean_logits, jnp.float32), positions), positions)


def mean_log_prob(labels: Array, positions: Sequence[int] | None = None) -> Metric:
    """The mean log-probability of `labels` [b, p] (or [b, len(positions)]) at `positions`."""
    return Partial(_mean_log_prob, jnp.asarray(labels), _positions(positions))


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class EdgeScores:
    """One score per edge of `graph`: the metric with that edge ablated minus `baseline`, the
    metric of the full model (exactly, for edge_patching; estimated, for eap and eap_ig)."""

    graph: Graph
    scores: np.ndarray
    baseline: float
    method: str

    def __getitem__(self, edge: str) -> float:
        return float(self.scores[self.graph.index(edge)])

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.graph.edges, self.scores.tolist()))

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The k edges of largest |score|, largest first."""
        order = np.argsort(-np.abs(self.scores), kind="stable")[:k]
        return [(self.graph.edges[i], float(self.scores[i])) for i in order]

    def circuit(self, *, top: int | None = None, threshold: float | None = None) -> Circuit:
        """The `top` edges by |score|, or those with |score| >= threshold."""
        if (top is None) == (threshold is None):
            raise ValueError("give one of top= or threshold=")
        if top is not None:
            keep = np.zeros(len(self.scores), bool)
            keep[np.argsort(-np.abs(self.scores), kind="stable")[:top]] = True
        else:
            keep = np.abs(self.scores) >= threshold
        return Circuit(self.graph, keep)

    def __repr__(self) -> str:
        return f"EdgeScores({self.method}, {len(self.scores)} edges, baseline {self.baseline:.4g}, top {self.top(3)})"


@dataclasses.dataclass(frozen=True, eq=False)
class Circuit:
    """A set of edges of `graph`: `keep` [n_edges] bool. `metric`: the metric with every other edge
    ablated, where the method that found it computed one (ACDC)."""

    graph: Graph
    keep: np.ndarray
    metric: float | None = None
    threshold: float | None = None

    @property
    def edges(self) -> tuple[str, ...]:
        return self.graph.edges_of(self.keep)

    def __len__(self) -> int:
        return int(np.sum(self.keep))

    def __contains__(self, edge: str) -> bool:
        return bool(self.keep[self.graph.index(edge)])

    def __iter__(self):
        return iter(self.edges)

    def __repr__(self) -> str:
        return f"Circuit({len(self)} of {len(self.keep)} edges: {list(self.edges)[:4]}{'...' if len(self) > 4 else ''})"


# ---------------------------------------------------------------------------------------------
# The boundary: one place that checks what every method is given
# ---------------------------------------------------------------------------------------------
def _setup(model: GPT, tokens, metric: Metric, corrupted, ablation: Ablation) -> tuple[Graph, Array, Array, Partial]:
    """(graph, tokens, ablated sender outputs, the metric as a pytree for the compiled call)."""
    if not isinstance(model, GPT):
        raise TypeError(f"expected a GPT, got {type(model).__name__}")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if corrupted is not None and ablation != "corrupted":
        raise ValueError(f'corrupted tokens are used only with ablation="corrupted", not {ablation!r}')
    if corrupted is None and ablation == "corrupted":
        raise ValueError('ablation="corrupted" needs corrupted=tokens (or choose ablation="zero" / "mean")')
    tokens = check_tokens(tokens, model.cfg)
    if corrupted is not None:
        corrupted = check_tokens(corrupted, model.cfg)
        if corrupted.shape != tokens.shape:
            raise ValueError(
                f"clean tokens {tuple(tokens.shape)} and corrupted tokens {tuple(corrupted.shape)} "
                "must have the same shape"
            )
    check_metric(model, tokens, metric)
    return Graph.of(model.cfg), tokens, ablated_outputs(model, tokens, ablation, corrupted), _as_pytree(metric)


def _as_pytree(metric: Metric) -> Partial:
    """The metric as an argument of a compiled call: a jax.tree_util.Partial as it is (its arrays
    are leaves, traced), any other callable wrapped in one with no leaves. jax.jit keys its cache on
    the pytree's structure, which holds the function itself: the same function (or a Partial of the
    same function with arrays of the same shapes) reuses the compiled call; a new one compiles."""
    return metric if isinstance(metric, Partial) else Partial(metric)


def check_metric(model: GPT, tokens: Array, metric: Metric) -> None:
    """A metric must be a function of the logits that returns a scalar."""
    if not callable(metric):
        raise TypeError(f"metric must be a function of the logits, got {type(metric).__name__}")
    logits = jax.ShapeDtypeStruct((*tokens.shape, model.cfg.d_vocab_out), jnp.float32)
    out = jax.eval_shape(_call, _as_pytree(metric), logits)  # traced once per metric, as the methods
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"metric must return a scalar (one number for the batch), got {shape}")


def _call(metric: Metric, logits: Array) -> Array:
    return metric(logits)


def _metric_of(model, tokens, ablated, metric):
    return lambda keep: metric(edge_forward(model, tokens, keep, ablated)[0]).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------
def edge_patching(
    model: GPT,
    tokens,
    metric: Metric,
    *,
    corrupted=None,
    ablation: Ablation = "corrupted",
    chunk_size: int | None = None,
    edges: Sequence[str] | np.ndarray | None = None,
) -> EdgeScores:
    """For every edge, metric(that edge alone ablated) - metric(full model): one compiled call.
    `edges` (a list of edge names or a mask [n_edges]; default all) patches only those, one pass
    each; the other edges score 0 (as eap_ig's edges off its path)."""
    graph, tokens, ablated, metric = _setup(model, tokens, metric, corrupted, ablation)
    chosen = np.ones(len(graph), bool) if edges is None else np.asarray(check_keep(graph, edges)) != 0
    # the chosen edges grouped by the block their receiver is in (ascending within a block)
    layer = _receiver_layer(graph)[graph.receiver_of]
    ids = np.flatnonzero(chosen)
    ids = ids[np.argsort(layer[ids], kind="stable")].astype(np.int32)
    counts = tuple(np.bincount(layer[ids], minlength=model.cfg.n_layers + 1).tolist())
    chunk = chunk_size or max(1, 128 // tokens.shape[0])
    base, patched = _edge_patching(model, tokens, ablated, jnp.asarray(ids), metric, chunk_size=chunk, counts=counts)
    scores = np.zeros(len(graph), np.float32)
    scores[ids] = np.asarray(patched - base)
    return EdgeScores(graph, scores, float(base), "edge_patching")


def _receiver_layer(graph: Graph) -> np.ndarray:
    """[n_receivers]: the block each receiver is in (n_layers for the logits)."""
    return np.array([graph.cfg.n_layers if r == "logits" else int(r.split(".")[1]) for r in graph.receivers])


@partial(jax.jit, static_argnames=("chunk_size", "counts"))
def _edge_patching(model, tokens, ablated, ids, metric, *, chunk_size, counts):
    """The edges `ids`, `counts[l]` of them into block l (the logits: l = n_layers), in that order:
    an edge into block l changes nothing before it, so its pass starts at block l from the clean
    run's residual stream (TransformerLens' start_at_layer), as patching.py's sweeps do."""
    graph, cfg = Graph.of(model.cfg), model.cfg
    ones = jnp.ones(len(graph), jnp.float32)
    logits, clean_outputs = edge_forward(model, tokens, ones, ablated)
    names = [f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)] + [f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    patched, start = [], 0
    for layer, count in enumerate(counts):
        if count == 0:
            continue
        resid = cache[names[layer]]

        def one(e, layer=layer, resid=resid):
            out = edge_forward_into(model, layer, resid, ones.at[e].set(0.0), ablated, clean_outputs)
            return metric(out).astype(jnp.float32)

        patched.append(jax.lax.map(one, ids[start : start + count], batch_size=chunk_size))
        start += count
    return metric(logits).astype(jnp.float32), jnp.concatenate(patched) if patched else jnp.zeros(0, jnp.float32)


def eap(model: GPT, tokens, metric: Metric, *, corrupted=None, ablation: Ablation = "corrupted") -> EdgeScores:
    """Edge attribution patching: the first-order estimate of edge_patching's scores, from one
    forward and one backward pass."""
    graph, tokens, ablated, metric = _setup(model, tokens, metric, corrupted, ablation)
    base, grad = _eap(model, tokens, ablated, metric)
    return EdgeScores(graph, -np.asarray(grad), float(base), "eap")


@jax.jit
def _eap(model, tokens, ablated, metric):
    of = _metric_of(model, tokens, ablated, metric)
    return jax.value_and_grad(of)(jnp.ones(len(Graph.of(model.cfg)), jnp.float32))


def eap_ig(
    model: GPT,
    tokens,
    metric: Metric,
    *,
    corrupted=None,
    ablation: Ablation = "corrupted",
    steps: int = 16,
    along: Sequence[str] | np.ndarray | None = None,
) -> EdgeScores:
    """EAP with integrated gradients: each edge's gradient averaged over `steps` points (midpoints)
    of the path on which the edges `along` (default: all) go together from kept to ablated. The
    scores of the edges on the path add up to metric(all of them ablated) - metric(full model) as
    steps grow; with one edge on the path, its score tends to edge_patching's. Edges off the path
    score 0."""
    graph, tokens, ablated, metric = _setup(model, tokens, metric, corrupted, ablation)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    path = np.ones(len(graph), np.float32) if along is None else np.asarray(check_keep(graph, along))
    base, grads = _eap_ig(model, tokens, ablated, jnp.asarray(path), metric, steps=steps)
    return EdgeScores(graph, -np.asarray(grads) * path, float(base), "eap_ig")


@partial(jax.jit, static_argnames=("steps",))
def _eap_ig(model, tokens, ablated, path, metric, *, steps):
    of = _metric_of(model, tokens, ablated, metric)
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
    grads = jax.lax.map(lambda a: jax.grad(of)(1.0 - a * path), alphas)
    return of(jnp.ones_like(path)), grads.mean(axis=0)


def _acdc_order(graph: Graph) -> np.ndarray:
    """ACDC's order: receivers from the logits backwards, each one's senders latest first."""
    return np.lexsort((-graph.sender_of.astype(np.int64), -graph.receiver_of.astype(np.int64))).astype(np.int32)


def acdc(
    model: GPT,
    tokens,
    threshold: float,
    metric: Metric | None = None,
    *,
    corrupted=None,
    ablation: Ablation = "corrupted",
) -> Circuit:
    """ACDC: every edge, in order from the logits backwards, is ablated for good if that raises the
    metric (default: KL divergence from the full model's outputs on `tokens`) by less than
    `threshold`. Edges that no longer reach the logits are dropped at the end. One compiled call."""
    return acdc_sweep(model, tokens, [threshold], metric, corrupted=corrupted, ablation=ablation)[0]


def acdc_sweep(
    model: GPT,
    tokens,
    thresholds: Sequence[float],
    metric: Metric | None = None,
    *,
    corrupted=None,
    ablation: Ablation = "corrupted",
) -> list[Circuit]:
    """`acdc` at each of `thresholds`, all in one compiled call (a vmap over the thresholds)."""
    return _acdc_sweep(model, tokens, thresholds, metric, corrupted, ablation)


def _acdc_sweep(model, tokens, thresholds, metric, corrupted, ablation, steps: int | None = None) -> list[Circuit]:
    """acdc_sweep; `steps` (tests, the benchmark) tries only the first `steps` edges of the order."""
    if metric is None:
        metric = kl_divergence(model(check_tokens(tokens, model.cfg)))
    graph, tokens, ablated, metric = _setup(model, tokens, metric, corrupted, ablation)
    thresholds = np.asarray(thresholds, np.float32).reshape(-1)
    if thresholds.size == 0 or not np.all(np.isfinite(thresholds)):
        raise ValueError(f"thresholds must be finite numbers, got {thresholds}")
    order = _acdc_order(graph)[:steps]
    feeds = graph.node_of_receiver[graph.receiver_of]  # per edge, the node it feeds (-1: the logits)
    keeps, values = _acdc(
        model, tokens, ablated, jnp.asarray(thresholds), jnp.asarray(order), jnp.asarray(feeds),
        jnp.asarray(graph.sender_of), metric,
    )  # fmt: skip
    out = []
    for keep, value, t in zip(np.asarray(keeps), np.asarray(values), thresholds):
        out.append(Circuit(graph, reaching_logits(graph, keep > 0.5), float(value), float(t)))
    return out


@jax.jit
def _acdc(model, tokens, ablated, thresholds, order, feeds, sender_of, metric):
    """The scan over `order`. Besides the mask it carries, per sender, how many of the edges that
    leave it are still kept [n_senders]: an edge is worth a forward pass only while the node it feeds
    (`feeds`, -1 for the logits) has one (per-node data; no [n_edges, n_edges] table)."""
    of = _metric_of(model, tokens, ablated, metric)
    graph = Graph.of(model.cfg)
    ones = jnp.ones(len(graph), jnp.float32)
    kept_out = jnp.zeros(len(graph.senders), jnp.int32).at[sender_of].add(1)

    def run(threshold):
        def step(carry, e):
            keep, current, kept_out = carry
            trial = keep.at[e].set(0.0)
            # An edge into a node that no longer reaches the logits changes nothing: drop it without
            # a forward pass (ACDC skips such nodes too). That node's outgoing edges came earlier in
            # the order, so they are settled. (Under acdc_sweep's vmap both branches run.)
            node = feeds[e]
            live = (node < 0) | (kept_out[jnp.maximum(node, 0)] > 0)
            value = jax.lax.cond(live, of, lambda _: current, trial)
            drop = value - current < threshold
            kept_out = kept_out.at[sender_of[e]].add(-drop.astype(jnp.int32))
            return (jnp.where(drop, trial, keep), jnp.where(drop, value, current), kept_out), None

        (keep, value, _), _ = jax.lax.scan(step, (ones, of(ones), kept_out), order)
        return keep, value

    if thresholds.shape[0] == 1:  # one threshold: no vmap, so the skipped passes are really skipped
        keep, value = run(thresholds[0])
        return keep[None], value[None]
    return jax.vmap(run)(thresholds)


def reaching_logits(graph: Graph, keep: np.ndarray) -> np.ndarray:
    """`keep` without the edges whose receiver's node no longer reaches the logits: one pass over
    the receivers from the logits backwards (a node's outgoing edges all lead to later receivers, so
    whether it reaches the logits is settled before its own receivers come), O(n_edges)."""
    keep = np.array(keep, bool)
    live = np.zeros(len(graph.senders) + 1, bool)
    live[-1] = True  # node_of_receiver is -1 for the logits
    for r in range(len(graph.receivers) - 1, -1, -1):
        into = graph.edges_into[r]
        if not live[graph.node_of_receiver[r]]:
            keep[into] = False
        else:
            live[graph.sender_of[into[keep[into]]]] = True
    return keep


# ---------------------------------------------------------------------------------------------
# Judging a circuit
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """The metric of the circuit (every other edge ablated), of the full model and of the empty
    circuit (every edge ablated); `recovered` = (circuit - empty) / (full - empty), 1 when the
    circuit does all the full model does, 0 when it does no better than nothing."""

    circuit: float
    full: float
    empty: float
    n_edges: int
    fraction_of_edges: float

    @property
    def recovered(self) -> float:
        return (self.circuit - self.empty) / (self.full - self.empty) if self.full != self.empty else float("nan")


def faithfulness(
    model: GPT,
    tokens,
    circuit: Circuit | Sequence[str],
    metric: Metric,
    *,
    corrupted=None,
    ablation: Ablation = "corrupted",
) -> Faithfulness:
    """The metric with every edge outside `circuit` ablated, beside the full and the empty circuit."""
    graph, tokens, ablated, metric = _setup(model, tokens, metric, corrupted, ablation)
    keep = check_keep(graph, circuit.keep if isinstance(circuit, Circuit) else circuit)
    masks = jnp.stack([keep, jnp.ones_like(keep), jnp.zeros_like(keep)])
    values = np.asarray(_metrics(model, tokens, ablated, masks, metric))
    n = int(np.asarray(keep).sum())
    return Faithfulness(float(values[0]), float(values[1]), float(values[2]), n, n / len(graph))


@jax.jit
def _metrics(model, tokens, ablated, masks, metric):
    return jax.lax.map(_metric_of(model, tokens, ablated, metric), masks)


@dataclasses.dataclass(frozen=True)
class Roc:
    """An ROC curve (false and true positive rates, from the strictest cut) and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc(found: EdgeScores | Sequence[Circuit], truth: Circuit | Sequence[str]) -> Roc:
    """How well edge scores (ranked by |score|) or circuits from a threshold sweep pick out the
    ground-truth edges `truth`. For scores, the AUC is the chance that a true edge outranks a
    false one (ties count a half); for circuits, the area under their (FPR, TPR) points joined
    by straight lines from (0, 0) to (1, 1), as ACDC computes it."""
    if isinstance(found, EdgeScores):
        graph = found.graph
    elif found and all(isinstance(c, Circuit) for c in found):
        graph = found[0].graph
    else:
        raise TypeError("roc expects EdgeScores or a list of Circuits (acdc_sweep)")
    true = truth.keep if isinstance(truth, Circuit) else graph.mask(truth)
    n_true, n_false = int(true.sum()), int((~true).sum())
    if n_true == 0 or n_false == 0:
        raise ValueError("the ground truth must hold some edges of the graph and leave some out")
    if isinstance(found, EdgeScores):
        return _roc_of_scores(np.abs(found.scores), true, n_true, n_false)
    points = {(0.0, 0.0), (1.0, 1.0)}
    for c in found:
        if c.graph is not graph:
            raise ValueError("the circuits come from different graphs")
        points.add(((c.keep & ~true).sum() / n_false, (c.keep & true).sum() / n_true))
    fpr, tpr = (np.array(v) for v in zip(*sorted(points)))
    return Roc(fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)))


def _roc_of_scores(score: np.ndarray, true: np.ndarray, n_true: int, n_false: int) -> Roc:
    """The ROC of scores (larger: more likely true) in O(n log n): one point per distinct score,
    from the largest (each counts the edges scoring at least it), and the AUC from ranks. A NaN
    score is one more cut (the first, as np.unique sorts it last) that no edge passes, and it
    outranks and ties nothing."""
    cuts, which = np.unique(score, return_inverse=True)  # ascending; score == cuts[which]
    valid = ~np.isnan(score)

    def rate(edges: np.ndarray, n: int) -> np.ndarray:  # per cut, largest first: the edges scoring >= it
        per_cut = np.bincount(which[edges & valid], minlength=len(cuts))[::-1]
        return np.concatenate([[0.0], np.cumsum(per_cut) / n])

    # for each true edge, the false edges scoring below it and those scoring the same
    false = np.sort(score[~true & valid])
    t = score[true & valid]
    below, not_above = np.searchsorted(false, t, "left"), np.searchsorted(false, t, "right")
    pairs = n_true * n_false
    greater, ties = int(below.sum()) / pairs, int((not_above - below).sum()) / pairs
    return Roc(rate(~true, n_false), rate(true, n_true), float(greater + 0.5 * ties))
