"""The computational graph of a GPT, as circuit discovery sees it, and a forward pass over its edges.

ACDC (Conmy et al. 2023) and edge attribution patching (Syed et al. 2023) look at a transformer as
a graph. Its nodes write to the residual stream (senders) or read from it (receivers):

    senders     embed                   token plus position embeddings (hook_embed + hook_pos_embed)
                blocks.L.attn.headH     one head's write (hook_result[:, :, H], without b_O)
                blocks.L.mlp            the MLP's write (hook_mlp_out)
    receivers   blocks.L.attn.headH.q   the head's query input (hook_q_input[:, :, H], before ln1);
                blocks.L.attn.headH.k   .k and .v its key and value inputs
                blocks.L.attn.headH.v
                blocks.L.mlp            the MLP's input (hook_mlp_in, before ln2)
                logits                  the final residual stream (before ln_final and the unembedding)

An edge "sender -> receiver" joins every sender to every receiver that runs after it: a head
of block L reads the embeddings and what blocks before L wrote; block L's MLP also reads the
heads of block L; the logits read everything. A receiver's input is the sum of what its senders
wrote, plus the biases b_O, which belong to no node and are never ablated.

    g = Graph.of(model.cfg)
    g.edges[:3]          # ('embed -> blocks.0.attn.head0.q', 'embed -> blocks.0.attn.head0.k', ...)
    g.index("blocks.0.attn.head1 -> blocks.1.attn.head3.k")

Ablating an edge changes what one receiver reads from one sender, and nothing else: the receiver
reads the sender's *ablated* output (from a corrupted input, zero, or the mean) while every other
receiver still reads the sender's own output. `run_with_edges(model, tokens, keep, ablated)`
computes this for a whole mask at once: `keep` [n_edges] in [0, 1] (1 keeps an edge, 0 ablates
it, anything between interpolates), so that a mask is an array that `jax.vmap` sweeps and
`jax.grad` differentiates; EAP, EAP-IG and ACDC (minillm.discovery) are this one function under
different transformations, and edge patching its cheaper twin `edge_forward_into`, which starts at
the block the ablated edge leads into. It runs the model's own forward pass with hooks at
the nodes' hook points: every receiver's input becomes

    input_r  -  sum over senders s of (1 - keep[s -> r]) * (output_s - ablated_s)

where output_s is the sender's output in this same (partly ablated) pass.

Where this differs from TransformerLens' ACDC graph: embed and pos_embed are one node (an edge
from either is an edge from the residual stream's input), and a model with LayerNorm has ln1 run
on each head's own inputs, as with TransformerLens' use_split_qkv_input.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model import GPT, GPTConfig
from minillm.model.hooks import unknown_name_error
from minillm.model.inputs import check_tokens

Array = jax.Array
Ablation = Literal["corrupted", "zero", "mean"]
ABLATIONS = ("corrupted", "zero", "mean")


def node_order(node: str, n_layers: int) -> tuple[int, int]:
    """Where a node runs: embed first, a block's heads (together) before its MLP, logits last."""
    if node == "embed":
        return (-1, 0)
    if node == "logits":
        return (n_layers, 0)
    parts = node.split(".")  # blocks.L.attn.headH or blocks.L.mlp
    return (int(parts[1]), 0 if parts[2] == "attn" else 1)


def receiver_node(receiver: str) -> str:
    """The node a receiver belongs to: blocks.L.attn.headH.q -> blocks.L.attn.headH."""
    return receiver.rsplit(".", 1)[0] if receiver.endswith((".q", ".k", ".v")) else receiver


def edge_sort_key(edge: str, n_layers: int) -> tuple:
    """Forward order of an edge: by sender, then receiver (q, k, v of a head in that order)."""
    sender, receiver = edge.split(" -> ")
    node = receiver_node(receiver)

    def head(n: str) -> int:
        return int(n.rsplit(".head", 1)[1]) if ".attn.head" in n else 0

    part = {"q": 0, "k": 1, "v": 2}.get(receiver.rsplit(".", 1)[-1], 0) if node != receiver else 0
    return (node_order(sender, n_layers), head(sender), node_order(node, n_layers), head(node), part)


def node_names(cfg: GPTConfig) -> tuple[list[str], list[str]]:
    """(senders, receivers) of a config, in forward order."""
    senders, receivers = ["embed"], []
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            senders.append(f"blocks.{l}.attn.head{h}")
            receivers += [f"blocks.{l}.attn.head{h}.{x}" for x in "qkv"]
        if not cfg.attn_only:
            senders.append(f"blocks.{l}.mlp")
            receivers.append(f"blocks.{l}.mlp")
    return senders, receivers + ["logits"]


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """The nodes and edges of a config (module docstring). `edges` is in forward order (by sender,
    then receiver); `sender_of` / `receiver_of` [n_edges] index `senders` / `receivers`."""

    cfg: GPTConfig
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    edges: tuple[str, ...]
    sender_of: np.ndarray
    receiver_of: np.ndarray

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def of(cfg: GPTConfig) -> Graph:
        """The graph of every model with this config. Built in time and memory linear in the edges
        (GPT-2 small's 32,491 in well under a second): the [senders, receivers] table of which
        receiver runs after which sender, then one name per edge."""
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"Graph.of expects a GPTConfig (model.cfg), got {type(cfg).__name__}")
        senders, receivers = node_names(cfg)
        s_order = np.array([node_order(s, cfg.n_layers) for s in senders])  # [S, 2]: (layer, part)
        r_order = np.array([node_order(receiver_node(r), cfg.n_layers) for r in receivers])  # [R, 2]
        s_code, r_code = 2 * s_order[:, 0] + s_order[:, 1], 2 * r_order[:, 0] + r_order[:, 1]  # one int each
        # np.nonzero walks the table row by row: by sender, then receiver (forward order)
        sender_of, receiver_of = np.nonzero(s_code[:, None] < r_code[None, :])
        return Graph(
            cfg=cfg,
            senders=tuple(senders),
            receivers=tuple(receivers),
            edges=tuple(f"{senders[s]} -> {receivers[r]}" for s, r in zip(sender_of.tolist(), receiver_of.tolist())),
            sender_of=sender_of.astype(np.int32),
            receiver_of=receiver_of.astype(np.int32),
        )

    def __len__(self) -> int:
        return len(self.edges)

    def __contains__(self, edge: object) -> bool:
        """Whether "sender -> receiver" is an edge of the graph (a dict look-up)."""
        return edge in self._index

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {e: i for i, e in enumerate(self.edges)}

    def index(self, edge: str) -> int:
        """The position of "sender -> receiver" in `edges` (a dict look-up); an edge the graph lacks
        raises."""
        if not isinstance(edge, str):
            raise TypeError(f"an edge is a string 'sender -> receiver', got {edge!r}")
        if edge not in self._index:
            sender, _, receiver = edge.partition(" -> ")
            if receiver and sender in self.senders and receiver in self.receivers:
                raise KeyError(f"no edge {edge!r}: {receiver!r} runs before {sender!r} writes")
            raise unknown_name_error(edge, self.edges, "edge")
        return self._index[edge]

    @functools.cached_property
    def node_of_receiver(self) -> np.ndarray:
        """[n_receivers] int32: the index in `senders` of the node each receiver belongs to
        (blocks.L.attn.headH.q -> blocks.L.attn.headH; blocks.L.mlp -> blocks.L.mlp), -1 for the
        logits, which send nothing. `node_of_receiver[receiver_of]` is, per edge, the node it feeds."""
        s_index = {s: i for i, s in enumerate(self.senders)}
        return np.array([s_index.get(receiver_node(r), -1) for r in self.receivers], np.int32)

    @functools.cached_property
    def edges_into(self) -> tuple[np.ndarray, ...]:
        """Per receiver, the indices of the edges into it (ascending): per-node lists, O(n_edges)."""
        order = np.argsort(self.receiver_of, kind="stable")
        counts = np.bincount(self.receiver_of, minlength=len(self.receivers))
        return tuple(np.split(order.astype(np.int32), np.cumsum(counts)[:-1]))

    def mask(self, edges: Sequence[str]) -> np.ndarray:
        """A bool mask [n_edges], True at the given edges (each checked by `index`)."""
        if isinstance(edges, str):
            raise TypeError("mask expects a list of edges, got one string")
        keep = np.zeros(len(self.edges), bool)
        keep[[self.index(e) for e in edges]] = True
        return keep

    def edges_of(self, mask: Array | np.ndarray) -> tuple[str, ...]:
        """The edges where a mask [n_edges] is true (non-zero), in forward order."""
        mask = np.asarray(mask)
        if mask.shape != (len(self.edges),):
            raise ValueError(f"an edge mask has shape ({len(self.edges)},), got {mask.shape}")
        return tuple(self.edges[i] for i in np.flatnonzero(mask).tolist())


# ---------------------------------------------------------------------------------------------
# The forward pass over edges
# ---------------------------------------------------------------------------------------------
def _edge_hooks(graph: Graph, ablate: Array, ablated: Array | None, outputs: list[Array]) -> list:
    """Hooks that record the senders' outputs in `outputs` and subtract, at each receiver, the part
    of each sender's output that `ablate` [n_senders, n_receivers] (0: keep, 1: ablate) removes.

    `outputs` holds blocks [k, b, p, d] of consecutive senders in forward order (the embeddings,
    then a block's heads together, then its MLP), joined into one array [senders so far, b, p, d]
    whenever a receiver reads them: a constant number of operations per receiver group and per
    block, where one slice and one stack per sender made the traced program (and the compile time)
    grow with layers x senders."""
    cfg = graph.cfg
    r_index = {r: i for i, r in enumerate(graph.receivers)}
    hooks = []
    pending = {}  # the token embeddings, until pos_embed arrives

    def removed(rs: list[int]) -> Array:  # [len(rs), b, p, d]: what each receiver in rs loses
        if len(outputs) > 1:
            outputs[:] = [jnp.concatenate(outputs)]
        current = outputs[0]  # [s, b, p, d]: the senders so far
        n = current.shape[0]
        delta = current - (ablated[:n] if ablated is not None else 0.0)
        return jnp.einsum("sr,sbpd->rbpd", ablate[:n][:, jnp.asarray(rs)].astype(delta.dtype), delta)

    def record_embed(x, hook):
        pending["embed"] = x  # the node is complete once pos_embed arrives

    def record_pos_embed(x, hook):
        outputs.append((pending.pop("embed") + x)[None])

    hooks += [("hook_embed", record_embed), ("hook_pos_embed", record_pos_embed)]
    for l in range(cfg.n_layers):
        for x in "qkv":
            rs = [r_index[f"blocks.{l}.attn.head{h}.{x}"] for h in range(cfg.n_heads)]

            def receive_heads(act, hook, rs=rs):  # act [b, p, h, d]
                return act - jnp.moveaxis(removed(rs), 0, 2).astype(act.dtype)

            hooks.append((f"blocks.{l}.hook_{x}_input", receive_heads))

        def record_heads(act, hook):  # act [b, p, h, d]: senders blocks.l.attn.head0, head1, ...
            outputs.append(jnp.moveaxis(act, 2, 0))

        hooks.append((f"blocks.{l}.attn.hook_result", record_heads))
        if not cfg.attn_only:
            r = r_index[f"blocks.{l}.mlp"]

            def receive_mlp(act, hook, r=r):
                return act - removed([r])[0].astype(act.dtype)

            def record_mlp(act, hook):
                outputs.append(act[None])

            hooks += [(f"blocks.{l}.hook_mlp_in", receive_mlp), (f"blocks.{l}.hook_mlp_out", record_mlp)]

    def receive_logits(act, hook):
        return act - removed([r_index["logits"]])[0].astype(act.dtype)

    hooks.append((f"blocks.{cfg.n_layers - 1}.hook_resid_post", receive_logits))
    return hooks


def edge_forward(model: GPT, tokens: Array, keep: Array, ablated: Array | None) -> tuple[Array, Array]:
    """(logits [b, p, v], sender outputs [n_senders, b, p, d]) with each edge kept in proportion
    `keep` [n_edges] (1 kept, 0 ablated); `ablated` [n_senders, b, p, d] (None: zeros) is what an
    ablated edge carries. Trusts its inputs (run_with_edges checks them); works under jit, vmap, grad."""
    graph = Graph.of(model.cfg)
    ablate = jnp.zeros((len(graph.senders), len(graph.receivers)), jnp.float32)
    ablate = ablate.at[graph.sender_of, graph.receiver_of].set(1.0 - keep.astype(jnp.float32))
    outputs: list[Array] = []
    logits = model.run_with_hooks(tokens, _edge_hooks(graph, ablate, ablated, outputs))
    return logits, jnp.concatenate(outputs)


def edge_forward_into(
    model: GPT, layer: int, resid: Array, keep: Array, ablated: Array | None, clean_outputs: Array
) -> Array:
    """The logits when only edges into block `layer`'s receivers (or, for layer == n_layers, into
    the logits) may be ablated, computed from there on: `resid` [b, p, d] is the clean run's
    residual stream entering the block (the final one, for the logits), and the senders before it
    wrote what they wrote in the clean run, `clean_outputs` [n_senders, b, p, d]. Every edge into
    another receiver counts as kept (whatever `keep` says). The same numbers as edge_forward with
    such a mask, without the work that mask cannot change: the blocks before `layer`, and the
    per-head inputs of the blocks after it. Edge patching runs one of these per edge."""
    graph = Graph.of(model.cfg)
    ablate = jnp.zeros((len(graph.senders), len(graph.receivers)), jnp.float32)
    ablate = ablate.at[graph.sender_of, graph.receiver_of].set(1.0 - keep.astype(jnp.float32))
    n_before = 1 + layer * (model.cfg.n_heads + (0 if model.cfg.attn_only else 1))  # embed, then blocks < layer
    outputs = [clean_outputs[:n_before]]
    hooks = dict(_edge_hooks(graph, ablate, ablated, outputs))
    if layer == model.cfg.n_layers:  # the logits read the final residual stream
        receive_logits = hooks[f"blocks.{layer - 1}.hook_resid_post"]
        return model.run_with_hooks(receive_logits(resid, None), [], start_at_layer=layer)
    # block `layer`'s receivers, and its heads' outputs, which its MLP reads
    names = [f"blocks.{layer}.hook_{x}_input" for x in "qkv"]
    if not model.cfg.attn_only:
        names += [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_mlp_in"]
    return model.run_with_hooks(resid, [(name, hooks[name]) for name in names], start_at_layer=layer)


def sender_outputs(model: GPT, tokens: Array) -> Array:
    """Every sender's output [n_senders, b, p, d] in the unablated run on `tokens`."""
    tokens = check_tokens(tokens, model.cfg)
    return _sender_outputs(model, tokens)


@jax.jit
def _sender_outputs(model: GPT, tokens: Array) -> Array:
    return edge_forward(model, tokens, jnp.ones(len(Graph.of(model.cfg)), jnp.float32), None)[1]


def ablated_outputs(
    model: GPT, tokens: Array, ablation: Ablation = "corrupted", corrupted: Array | None = None
) -> Array:
    """What an ablated edge carries, [n_senders, b, p, d] for a batch of `tokens` [b, p]:
    "corrupted": each sender's output on `corrupted` (tokens of the same shape); "zero": zeros;
    "mean": each sender's output on `tokens`, averaged over the batch (per position)."""
    tokens = check_tokens(tokens, model.cfg)
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    if (ablation == "corrupted") != (corrupted is not None):
        raise ValueError('pass corrupted tokens with ablation="corrupted" (and only then)')
    n = len(Graph.of(model.cfg).senders)
    if ablation == "zero":
        return jnp.zeros((n, *tokens.shape, model.cfg.d_model), jnp.dtype(model.cfg.dtype))
    if ablation == "mean":
        clean = _sender_outputs(model, tokens)
        return jnp.broadcast_to(clean.mean(axis=1, keepdims=True), clean.shape)
    corrupted = check_tokens(corrupted, model.cfg)
    if corrupted.shape != tokens.shape:
        raise ValueError(f"corrupted tokens {corrupted.shape} and clean tokens {tokens.shape} must have the same shape")
    return _sender_outputs(model, corrupted)


def run_with_edges(model: GPT, tokens: Array, keep: Array | Sequence[str], ablated: Array) -> Array:
    """The logits [b, p, v] with each edge kept in proportion `keep` (a mask [n_edges] in [0, 1], or
    the list of edges to keep; every other edge is ablated) and ablated edges carrying `ablated`
    [n_senders, b, p, d] (ablated_outputs)."""
    graph = Graph.of(model.cfg)
    tokens = check_tokens(tokens, model.cfg)
    keep = check_keep(graph, keep)
    ablated = check_ablated(model, tokens, ablated)
    return _logits_with_edges(model, tokens, keep, ablated)


@jax.jit
def _logits_with_edges(model: GPT, tokens: Array, keep: Array, ablated: Array) -> Array:
    return edge_forward(model, tokens, keep, ablated)[0]


def check_keep(graph: Graph, keep: Array | Sequence[str]) -> Array:
    """An edge mask as float32 [n_edges]; a list of edge names becomes the mask that keeps them."""
    if isinstance(keep, (list, tuple)) and all(isinstance(e, str) for e in keep):
        keep = graph.mask(keep)
    keep = jnp.asarray(keep)
    if keep.shape != (len(graph.edges),):
        raise ValueError(f"an edge mask has shape ({len(graph.edges)},) (one value per edge), got {keep.shape}")
    return keep.astype(jnp.float32)


def check_ablated(model: GPT, tokens: Array, ablated: Array) -> Array:
    n = len(Graph.of(model.cfg).senders)
    want = (n, *tokens.shape, model.cfg.d_model)
    ablated = jnp.asarray(ablated)
    if ablated.shape != want:
        raise ValueError(f"ablated sender outputs must have shape {want} [senders, b, p, d], got {ablated.shape}")
    return ablated
