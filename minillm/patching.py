"""Activation patching and attribution patching, each sweep compiled into one call per layer.

Activation patching runs the model on a corrupted input and copies in one piece of a clean run's
activations (a position of the residual stream, a head's output at a position, ...), then asks how
far a metric of the logits moves back towards the clean run. A sweep does this for every piece.

TransformerLens runs one forward pass per piece in a Python loop. Here a patch is a pure function of
its index, so for each layer the whole sweep is `jax.lax.map` over the indices (vmapped in chunks
that fit the cache) inside one `jax.jit`; and since nothing before layer l changes when layer l is
patched, each run starts at layer l from the corrupted run's cached `resid_pre` (TransformerLens'
`start_at_layer`). The function names, arguments and output shapes are TransformerLens':

    get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, patching_metric) -> [layer, pos]

`patching_metric(logits) -> scalar` must be a JAX function (it is traced). Define it once and reuse
it: a sweep is compiled once per (metric, activation, layer, shapes) and then cached.

The corrupted run is `corrupted_tokens` through the model, or, with `corruption_hooks`, any run
that hooks make: Meng et al.'s causal trace (2022, "Locating and Editing Factual Associations in
GPT") runs the clean prompt with Gaussian noise added to the subject's embeddings,

    noise = add_noise("hook_embed", std, key, positions=[5, 6])      # minillm.interventions
    trace = get_act_patch_resid_pre(model, tokens, clean_cache, metric, corruption_hooks=[noise])

and every patched run of the sweep is that corrupted run with one clean piece restored.

Path patching (Wang et al. 2022, "Interpretability in the Wild") asks what flows along one path:
`get_path_patch_head_to_heads(model, clean, corrupted, metric, receiver_heads=[(1, 0)],
receiver_input="k")` gives, for every sender head, the metric of the clean run in which the
receivers' keys are what they would be if only that head's output were corrupted: every other head
frozen to its clean output, the MLPs recomputed, so the sender reaches the receivers directly and
through the MLPs between them ([layer, head], one compiled call over every sender);
`get_path_patch_head_to_final_resid_post` does the same for the logits. Both are tested against
Wang et al.'s three steps written with hooks, on models with MLPs and LayerNorm. The `_frozen_mlps`
variants freeze the MLPs too, so that only the direct edge carries the change (minillm.graph's edge);
on an attention-only model the two agree.

Attribution patching (Nanda 2023, "Attribution patching: activation patching at industrial scale")
approximates every patch of a sweep at once to first order: metric(patched) - metric(corrupted) ~
sum over the patched entries of (clean - corrupted) * d metric / d activation, with the gradient
taken at the corrupted run. One forward and one backward pass give every activation's gradient
(`jax.grad` with respect to zero additive probes at the hook points). `get_attr_patch_*` return
that estimate with the same shapes as `get_act_patch_*`; it is exact where the metric is linear in
the patched activation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from minillm.graph import Graph, edge_forward, sender_outputs
from minillm.model import GPT
from minillm.model.hooks import ActivationCache, FwdHooks, act_name
from minillm.model.inputs import check_indices, check_tokens
from minillm.sharding import check_mesh

Metric = Callable[[jax.Array], jax.Array]
PatchSetter = Callable[[jax.Array, tuple, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------------
# Patch setters: (corrupted activation, index (without the layer), clean activation) -> patched
# ---------------------------------------------------------------------------------------------
def layer_pos_patch_setter(corrupted, index, clean):
    """[b, pos, ...] activations: copy position `pos`."""
    (pos,) = index
    return corrupted.at[:, pos].set(clean[:, pos])


def layer_pos_head_vector_patch_setter(corrupted, index, clean):
    """[b, pos, head, e] activations (q, k, v, z): copy one head at one position."""
    pos, head = index
    return corrupted.at[:, pos, head].set(clean[:, pos, head])


def layer_head_vector_patch_setter(corrupted, index, clean):
    """[b, pos, head, e] activations: copy one head at every position."""
    (head,) = index
    return corrupted.at[:, :, head].set(clean[:, :, head])


def layer_head_pattern_patch_setter(corrupted, index, clean):
    """[b, head, q, k] patterns: copy one head's whole pattern."""
    (head,) = index
    return corrupted.at[:, head].set(clean[:, head])


def layer_head_pos_pattern_patch_setter(corrupted, index, clean):
    """[b, head, q, k] patterns: copy one head's row for one destination position."""
    head, dest = index
    return corrupted.at[:, head, dest].set(clean[:, head, dest])


def layer_head_dest_src_pos_pattern_patch_setter(corrupted, index, clean):
    """[b, head, q, k] patterns: copy one entry."""
    head, dest, src = index
    return corrupted.at[:, head, dest, src].set(clean[:, head, dest, src])


# Which axis of the activation each index axis names (for attribution patching's sums).
_AXIS_OF = {"pos": 1, "head": 2, "head_index": 1, "dest_pos": 2, "src_pos": 3}


def _axis_sizes(model: GPT, n_pos: int) -> dict[str, int]:
    return {
        "layer": model.cfg.n_layers,
        "pos": n_pos,
        "head": model.cfg.n_heads,
        "head_index": model.cfg.n_heads,
        "dest_pos": n_pos,
        "src_pos": n_pos,
    }


def _index_grid(sizes: Sequence[int]) -> jax.Array:
    """Every index tuple, row-major: [n_indices, n_axes] int32."""
    return jnp.asarray(list(itertools.product(*[range(s) for s in sizes])), jnp.int32).reshape(-1, len(sizes))


def default_chunk_size(batch: int) -> int:
    """Patches evaluated together: about 128 sequences a chunk, where a CPU forward pass of a small
    model is cheapest per sequence (larger batches spill the attention tensors out of cache)."""
    return max(1, 128 // batch)


# ---------------------------------------------------------------------------------------------
# Activation patching
# ---------------------------------------------------------------------------------------------
Corruption = tuple[tuple[str, Callable], ...]


def _corruption(corruption_hooks: FwdHooks | None) -> Corruption:
    """The corruption hooks as a hashable tuple of (full hook name, function) pairs."""
    pairs = []
    for i, pair in enumerate(corruption_hooks or ()):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"corruption_hooks[{i}] must be a (hook name, function) pair, got {pair!r}")
        pairs.append((act_name(pair[0]), pair[1]))
    return tuple(pairs)


@partial(
    jax.jit, static_argnames=("name", "layer", "patch_setter", "patching_metric", "chunk_size", "corruption", "mesh")
)
def _patch_one_layer(
    model: GPT,
    start_resid,
    clean_act,
    indices,
    *,
    name,
    layer,
    patch_setter,
    patching_metric,
    chunk_size,
    corruption: Corruption = (),
    mesh: Mesh | None = None,
):
    """metric of each patch at hook `name` of `layer`: [n_indices], one compiled sweep."""
    # corruption hooks before `layer` do not run (a pass that starts there does not reach them):
    # their effect is already in the corrupted resid_pre it starts from

    def sweep(model, start_resid, clean_act, indices):
        def one_patch(index):
            setter = lambda act, hook: patch_setter(act, tuple(index), clean_act)
            logits = model.run_with_hooks(start_resid, [*corruption, (name, setter)], start_at_layer=layer)
            return patching_metric(logits)

        return jax.lax.map(one_patch, indices, batch_size=chunk_size)

    if mesh is None:
        return sweep(model, start_resid, clean_act, indices)
    # each device sweeps its share of the patches against a replicated model (minillm/sharding.py);
    # the list is padded with copies of the first patch to a multiple of the devices, then cut
    n, axis = len(indices), mesh.axis_names[0]
    padded = jnp.concatenate([indices, jnp.repeat(indices[:1], -n % mesh.devices.size, axis=0)])
    per_device = jax.shard_map(sweep, mesh=mesh, in_specs=(P(), P(), P(), P(axis)), out_specs=P(axis))
    return per_device(model, start_resid, clean_act, padded)[:n]


@partial(jax.jit, static_argnames=("corruption",))
def _resid_pre_of_every_layer(model: GPT, tokens, corruption: Corruption = ()) -> list:
    """The corrupted run's residual stream entering each block: where each layer's sweep starts."""
    names = [act_name("resid_pre", l) for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names, fwd_hooks=list(corruption))
    return [cache[name] for name in names]


def generic_activation_patch(
    model: GPT,
    corrupted_tokens,
    clean_cache: ActivationCache,
    patching_metric: Metric,
    patch_setter: PatchSetter,
    activation_name: str,
    index_axis_names: Sequence[str],
    *,
    chunk_size: int | None = None,
    corruption_hooks: FwdHooks | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Patch `activation_name` at every index of `index_axis_names` (the first is always "layer").

    Returns the metric for each patch, shaped by `index_axis_names`, e.g. [layer, pos, head].
    `corruption_hooks`: (hook name, function) pairs that make the corrupted run together with
    `corrupted_tokens` (e.g. noise on the subject's embeddings); each patched run keeps them.
    Reuse the same hook functions to reuse the compiled sweep. `mesh` (minillm.sharding.local_mesh())
    splits each layer's patches over its devices.
    """
    if index_axis_names[0] != "layer":
        raise ValueError(f"the first index axis must be 'layer', got {index_axis_names}")
    corrupted_tokens = check_tokens(corrupted_tokens, model.cfg)
    n_batch, n_pos = corrupted_tokens.shape
    sizes = _axis_sizes(model, n_pos)
    unknown = [a for a in index_axis_names if a not in sizes]
    if unknown:
        raise ValueError(f"unknown index axes {unknown}; known: {sorted(sizes)}")
    inner_sizes = [sizes[a] for a in index_axis_names[1:]]
    indices = _index_grid(inner_sizes)
    chunk_size = chunk_size or default_chunk_size(n_batch)
    corruption = _corruption(corruption_hooks)
    corrupted_resid = _resid_pre_of_every_layer(model, corrupted_tokens, corruption)
    results = []
    for layer in range(model.cfg.n_layers):  # one compiled sweep per layer (each starts at its layer)
        name = act_name(activation_name, layer)
        values = _patch_one_layer(
            model,
            corrupted_resid[layer],
            clean_cache[name],
            indices,
            name=name,
            layer=layer,
            patch_setter=patch_setter,
            patching_metric=patching_metric,
            chunk_size=chunk_size,
            corruption=corruption,
            mesh=None if mesh is None else check_mesh(mesh),
        )
        results.append(values.reshape(inner_sizes))
    return jnp.stack(results)


def _sweep(activation_name, index_axis_names, patch_setter, doc):
    def sweep(
        model: GPT, corrupted_tokens, clean_cache, patching_metric, *, chunk_size=None, corruption_hooks=None, mesh=None
    ):
        return generic_activation_patch(
            model,
            corrupted_tokens,
            clean_cache,
            patching_metric,
            patch_setter,
            activation_name,
            index_axis_names,
            chunk_size=chunk_size,
            corruption_hooks=corruption_hooks,
            mesh=mesh,
        )

    sweep.__doc__ = doc
    return sweep


get_act_patch_resid_pre = _sweep(
    "resid_pre",
    ("layer", "pos"),
    layer_pos_patch_setter,
    "Patch the residual stream entering each block, by position: [layer, pos].",
)
get_act_patch_resid_mid = _sweep(
    "resid_mid",
    ("layer", "pos"),
    layer_pos_patch_setter,
    "Patch the residual stream between attention and MLP, by position: [layer, pos].",
)
get_act_patch_attn_out = _sweep(
    "attn_out",
    ("layer", "pos"),
    layer_pos_patch_setter,
    "Patch each attention layer's output, by position: [layer, pos].",
)
get_act_patch_mlp_out = _sweep(
    "mlp_out", ("layer", "pos"), layer_pos_patch_setter, "Patch each MLP layer's output, by position: [layer, pos]."
)
get_act_patch_attn_head_out_by_pos = _sweep(
    "z",
    ("layer", "pos", "head"),
    layer_pos_head_vector_patch_setter,
    "Patch each head's output (hook_z) at each position: [layer, pos, head].",
)
get_act_patch_attn_head_q_by_pos = _sweep(
    "q",
    ("layer", "pos", "head"),
    layer_pos_head_vector_patch_setter,
    "Patch each head's query at each position: [layer, pos, head].",
)
get_act_patch_attn_head_k_by_pos = _sweep(
    "k",
    ("layer", "pos", "head"),
    layer_pos_head_vector_patch_setter,
    "Patch each head's key at each position: [layer, pos, head].",
)
get_act_patch_attn_head_v_by_pos = _sweep(
    "v",
    ("layer", "pos", "head"),
    layer_pos_head_vector_patch_setter,
    "Patch each head's value at each position: [layer, pos, head].",
)
get_act_patch_attn_head_pattern_by_pos = _sweep(
    "pattern",
    ("layer", "head_index", "dest_pos"),
    layer_head_pos_pattern_patch_setter,
    "Patch each head's attention row at each destination position: [layer, head, dest_pos].",
)
get_act_patch_attn_head_pattern_dest_src_pos = _sweep(
    "pattern",
    ("layer", "head_index", "dest_pos", "src_pos"),
    layer_head_dest_src_pos_pattern_patch_setter,
    "Patch each entry of each head's attention pattern: [layer, head, dest_pos, src_pos].",
)
get_act_patch_attn_head_out_all_pos = _sweep(
    "z",
    ("layer", "head"),
    layer_head_vector_patch_setter,
    "Patch each head's output at every position at once: [layer, head].",
)
get_act_patch_attn_head_q_all_pos = _sweep(
    "q",
    ("layer", "head"),
    layer_head_vector_patch_setter,
    "Patch each head's queries at every position: [layer, head].",
)
get_act_patch_attn_head_k_all_pos = _sweep(
    "k", ("layer", "head"), layer_head_vector_patch_setter, "Patch each head's keys at every position: [layer, head]."
)
get_act_patch_attn_head_v_all_pos = _sweep(
    "v", ("layer", "head"), layer_head_vector_patch_setter, "Patch each head's values at every position: [layer, head]."
)
get_act_patch_attn_head_pattern_all_pos = _sweep(
    "pattern",
    ("layer", "head_index"),
    layer_head_pattern_patch_setter,
    "Patch each head's whole attention pattern: [layer, head].",
)


def get_act_patch_block_every(
    model: GPT, corrupted_tokens, clean_cache, patching_metric, *, chunk_size=None, corruption_hooks=None, mesh=None
):
    """resid_pre, attn_out and mlp_out by position, stacked: [3, layer, pos]."""
    sweeps = [get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out]
    kw = dict(chunk_size=chunk_size, corruption_hooks=corruption_hooks, mesh=mesh)
    return jnp.stack([s(model, corrupted_tokens, clean_cache, patching_metric, **kw) for s in sweeps])


def get_act_patch_attn_head_all_pos_every(
    model: GPT, corrupted_tokens, clean_cache, patching_metric, *, chunk_size=None, corruption_hooks=None, mesh=None
):
    """Head output, query, key, value and pattern, all positions, stacked: [5, layer, head]."""
    sweeps = [
        get_act_patch_attn_head_out_all_pos,
        get_act_patch_attn_head_q_all_pos,
        get_act_patch_attn_head_k_all_pos,
        get_act_patch_attn_head_v_all_pos,
        get_act_patch_attn_head_pattern_all_pos,
    ]
    kw = dict(chunk_size=chunk_size, corruption_hooks=corruption_hooks, mesh=mesh)
    return jnp.stack([s(model, corrupted_tokens, clean_cache, patching_metric, **kw) for s in sweeps])


def get_act_patch_attn_head_by_pos_every(
    model: GPT, corrupted_tokens, clean_cache, patching_metric, *, chunk_size=None, corruption_hooks=None, mesh=None
):
    """Head output, query, key, value and pattern (by destination), by position: [5, layer, pos, head]."""
    sweeps = [
        get_act_patch_attn_head_out_by_pos,
        get_act_patch_attn_head_q_by_pos,
        get_act_patch_attn_head_k_by_pos,
        get_act_patch_attn_head_v_by_pos,
    ]
    kw = dict(chunk_size=chunk_size, corruption_hooks=corruption_hooks, mesh=mesh)
    out = [s(model, corrupted_tokens, clean_cache, patching_metric, **kw) for s in sweeps]
    pattern = get_act_patch_attn_head_pattern_by_pos(model, corrupted_tokens, clean_cache, patching_metric, **kw)
    return jnp.stack(out + [pattern.transpose(0, 2, 1)])


# ---------------------------------------------------------------------------------------------
# Path patching
# ---------------------------------------------------------------------------------------------
RECEIVER_INPUTS = ("q", "k", "v")
Receivers = tuple[tuple[int, int, str], ...]  # (layer, head, "q" | "k" | "v"); () for the logits


def _check_path_tokens(model: GPT, clean_tokens, corrupted_tokens) -> tuple[jax.Array, jax.Array]:
    clean_tokens = check_tokens(clean_tokens, model.cfg)
    corrupted_tokens = check_tokens(corrupted_tokens, model.cfg)
    if corrupted_tokens.shape != clean_tokens.shape:
        raise ValueError(
            f"corrupted tokens {corrupted_tokens.shape} and clean tokens {clean_tokens.shape} must have the same shape"
        )
    return clean_tokens, corrupted_tokens


def _position_mask(sender_positions, n_pos: int) -> np.ndarray:
    """[p] float32: 1 where the sender carries its corrupted output (every position for None)."""
    if sender_positions is None:
        return np.ones(n_pos, np.float32)
    positions = np.atleast_1d(np.asarray(sender_positions))
    check_indices(positions, n_pos, "sender_positions")
    at = np.zeros(n_pos, np.float32)
    at[positions] = 1.0
    return at


def _check_receivers(model: GPT, receiver_heads, receiver_input) -> Receivers:
    inputs = (receiver_input,) if isinstance(receiver_input, str) else tuple(receiver_input)
    bad = [x for x in inputs if x not in RECEIVER_INPUTS]
    if bad or not inputs:
        raise ValueError(f"receiver_input must be among {RECEIVER_INPUTS}, got {receiver_input!r}")
    cfg = model.cfg
    receivers = []
    for pair in receiver_heads:
        if np.size(pair) != 2:
            raise ValueError(f"receiver_heads holds (layer, head) pairs, got {pair!r}")
        layer, head = (int(i) for i in np.asarray(pair).reshape(-1))
        check_indices(layer, cfg.n_layers, "receiver layer")
        check_indices(head, cfg.n_heads, "receiver head")
        receivers += [(layer % cfg.n_layers, head % cfg.n_heads, x) for x in inputs]
    if not receivers:
        raise ValueError("receiver_heads is empty: name at least one (layer, head)")
    return tuple(sorted(set(receivers)))


def _per_head(values: jax.Array, cfg, receivers: Receivers) -> jax.Array:
    """A sweep's values as [layer, head], NaN for the heads with no path to a receiver."""
    values = values.reshape(cfg.n_layers, cfg.n_heads)
    return jnp.where(jnp.asarray(_has_path(cfg, receivers)), values, jnp.nan)


def _has_path(cfg, receivers: Receivers) -> np.ndarray:
    """[layer, head] bool: whether a head runs before some receiver (always, for the logits)."""
    last = max((rl for rl, _, _ in receivers), default=cfg.n_layers)
    return np.broadcast_to(np.arange(cfg.n_layers)[:, None] < last, (cfg.n_layers, cfg.n_heads))


@partial(jax.jit, static_argnames=("receivers", "patching_metric", "batch_size"))
def _wang_sweep(model: GPT, clean_tokens, corrupted_tokens, at, receivers: Receivers, patching_metric, batch_size):
    """Wang et al.'s steps 2 and 3 for every sender head, in one compiled call."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    first = min((rl for rl, _, _ in receivers), default=L)
    last = max((rl for rl, _, _ in receivers), default=L - 1)
    z_names = [act_name("z", l) for l in range(L)]
    # step 1: the clean and corrupted runs' head outputs (hook_z), and the clean residual stream
    # entering the first receiver's block, where step 3 starts
    _, clean_cache = model.run_with_cache(
        clean_tokens, names_filter=z_names + [act_name("resid_pre", min(first, L - 1))]
    )
    _, corrupted_cache = model.run_with_cache(corrupted_tokens, names_filter=z_names)
    clean_z = jnp.stack([clean_cache[n] for n in z_names])  # [layer, b, p, head, e]
    change = jnp.stack([corrupted_cache[n] for n in z_names]) - clean_z
    change = change * at.astype(change.dtype)[None, None, :, None, None]
    by_name: dict[str, list[int]] = {}  # the receivers' hook points and their heads
    for rl, rh, x in receivers:
        by_name.setdefault(act_name(x, rl), []).append(rh)

    def one(s):  # s: the sender's index in [layer, head] order
        is_sender = (jnp.arange(L * H) == s).reshape(L, H).astype(change.dtype)

        def freeze(z, hook, l):  # step 2: every head's output clean, but the sender's corrupted one
            return (clean_z[l] + is_sender[l][None, None, :, None] * change[l]).astype(z.dtype)

        frozen = [(z_names[l], partial(freeze, l=l)) for l in range(L)]
        if not receivers:  # into the logits: step 2's final residual stream is what step 3 patches in
            return patching_metric(model.run_with_hooks(clean_tokens, frozen))
        # step 2, up to the last receiver's block: the MLPs recompute; record the receivers' inputs
        _, step2 = model.run_with_cache(
            clean_tokens, names_filter=list(by_name), fwd_hooks=frozen, stop_at_layer=last + 1
        )

        def patch(act, hook, heads):  # step 3: only the receivers' inputs change; the rest runs free
            idx = jnp.asarray(heads)
            return act.at[:, :, idx].set(step2[hook.name][:, :, idx])

        hooks = [(name, partial(patch, heads=heads)) for name, heads in by_name.items()]
        return patching_metric(
            model.run_with_hooks(clean_cache[act_name("resid_pre", first)], hooks, start_at_layer=first)
        )

    return jax.lax.map(one, jnp.arange(L * H), batch_size=batch_size)


def _path_patch(model, clean_tokens, corrupted_tokens, patching_metric, receivers, sender_positions, batch_size):
    clean_tokens, corrupted_tokens = _check_path_tokens(model, clean_tokens, corrupted_tokens)
    at = jnp.asarray(_position_mask(sender_positions, clean_tokens.shape[1]))
    values = _wang_sweep(model, clean_tokens, corrupted_tokens, at, receivers, patching_metric, batch_size)
    return _per_head(values, model.cfg, receivers)


def get_path_patch_head_to_heads(
    model: GPT,
    clean_tokens,
    corrupted_tokens,
    patching_metric: Metric,
    receiver_heads: Sequence[tuple[int, int]],
    receiver_input: str | Sequence[str] = "v",
    *,
    sender_positions=None,
    batch_size: int = 8,
) -> jax.Array:
    """Path patching (Wang et al. 2022, "Interpretability in the Wild", Appendix B; ARENA's solution):
    for every sender head, the metric of the clean run in which the receivers' `receiver_input`
    ("q", "k", "v", or several) is what it would be if only the sender's output had been corrupted.
    [layer, head]; NaN for a head with no path to any receiver (at or after the receivers' layers).

    Wang et al.'s three steps, for each sender:
      1. run the clean and the corrupted tokens and keep every head's output (hook_z);
      2. run the clean tokens with every head's output frozen to the clean run's, except the
         sender's, which takes its corrupted one; the MLPs and LayerNorms recompute, so the
         sender's change reaches the receivers directly *and through the MLPs between them*;
         record the receivers' inputs (hook_q / hook_k / hook_v);
      3. run the clean tokens with only the receivers' inputs replaced by step 2's; everything
         downstream of them runs free. Return the metric.
    A receiver never sees another receiver's change (the heads are frozen in step 2).
    `sender_positions` restricts the sender's change to those positions (e.g. the second subject).
    All senders run in one compiled call (`jax.lax.map` over the senders, `batch_size` at a time).
    The direction is Wang et al.'s: corrupted into clean, so an important path moves the metric
    away from its clean value (activation patching above goes the other way).

    On an attention-only model this is also the single edge sender -> receiver of minillm.graph;
    on a model with MLPs it is not: `get_path_patch_head_to_heads_frozen_mlps` freezes the MLPs too
    and so measures that edge alone (the direct path, what an ACDC edge ablation removes)."""
    receivers = _check_receivers(model, receiver_heads, receiver_input)
    return _path_patch(model, clean_tokens, corrupted_tokens, patching_metric, receivers, sender_positions, batch_size)


def get_path_patch_head_to_final_resid_post(
    model: GPT,
    clean_tokens,
    corrupted_tokens,
    patching_metric: Metric,
    *,
    sender_positions=None,
    batch_size: int = 8,
) -> jax.Array:
    """Path patching into the logits (Wang et al.; ARENA's `get_path_patch_head_to_final_resid_post`):
    for every head, the metric of the clean run in which that head alone takes its corrupted output
    and every other head is frozen to its clean output, while the MLPs and LayerNorms recompute:
    the head's direct path to the logits plus its paths through MLPs. [layer, head], one compiled
    call. `get_path_patch_head_to_final_resid_post_frozen_mlps` measures the direct path alone. See
    get_path_patch_head_to_heads for the rest."""
    return _path_patch(model, clean_tokens, corrupted_tokens, patching_metric, (), sender_positions, batch_size)


# --- the direct path only: every MLP frozen too (one edge of minillm.graph) ----------------------
def _edge_setup(graph: Graph, receivers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the edge mask with every edge into the receivers off, each head sender's index in
    graph.senders), heads in [layer, head] order. Linear in the number of edges."""
    into = set(receivers)
    keep = np.array([edge.split(" -> ")[1] not in into for edge in graph.edges], np.float32)
    s_index = {s: i for i, s in enumerate(graph.senders)}
    heads = [f"blocks.{l}.attn.head{h}" for l in range(graph.cfg.n_layers) for h in range(graph.cfg.n_heads)]
    return keep, np.array([s_index[s] for s in heads])


@partial(jax.jit, static_argnames=("patching_metric", "batch_size"))
def _edge_path_sweep(model: GPT, tokens, keep, clean_out, change, senders, patching_metric, batch_size):
    def one(s):  # every edge into a receiver carries its sender's clean output, but sender s's corrupted one
        ablated = clean_out.at[s].add(change[s])
        return patching_metric(edge_forward(model, tokens, keep, ablated)[0])

    return jax.lax.map(one, senders, batch_size=batch_size)


def _frozen_mlps_path_patch(
    model, clean_tokens, corrupted_tokens, patching_metric, receivers, sender_positions, batch_size
):
    clean_tokens, corrupted_tokens = _check_path_tokens(model, clean_tokens, corrupted_tokens)
    at = _position_mask(sender_positions, clean_tokens.shape[1])
    clean_out, corrupted_out = sender_outputs(model, clean_tokens), sender_outputs(model, corrupted_tokens)
    change = (corrupted_out - clean_out) * jnp.asarray(at, clean_out.dtype)[None, None, :, None]
    names = [f"blocks.{rl}.attn.head{rh}.{x}" for rl, rh, x in receivers] or ["logits"]
    keep, senders = _edge_setup(Graph.of(model.cfg), names)
    values = _edge_path_sweep(
        model, clean_tokens, jnp.asarray(keep), clean_out, change, jnp.asarray(senders), patching_metric, batch_size
    )
    return _per_head(values, model.cfg, receivers)


def get_path_patch_head_to_heads_frozen_mlps(
    model: GPT,
    clean_tokens,
    corrupted_tokens,
    patching_metric: Metric,
    receiver_heads: Sequence[tuple[int, int]],
    receiver_input: str | Sequence[str] = "v",
    *,
    sender_positions=None,
    batch_size: int = 8,
) -> jax.Array:
    """NOT Wang et al.'s path patching on a model with MLPs (that is get_path_patch_head_to_heads):
    the same steps with every MLP's output frozen to the clean run as well, so that only the
    sender's *direct* edge into the receivers' inputs carries its corrupted output. In
    minillm.graph's terms: every edge into a receiver is ablated to its sender's clean output,
    except the sender's, which carries its corrupted one. Equal to get_path_patch_head_to_heads on
    an attention-only model. [layer, head], one compiled call; the arguments are the same."""
    receivers = _check_receivers(model, receiver_heads, receiver_input)
    return _frozen_mlps_path_patch(
        model, clean_tokens, corrupted_tokens, patching_metric, receivers, sender_positions, batch_size
    )


def get_path_patch_head_to_final_resid_post_frozen_mlps(
    model: GPT,
    clean_tokens,
    corrupted_tokens,
    patching_metric: Metric,
    *,
    sender_positions=None,
    batch_size: int = 8,
) -> jax.Array:
    """NOT Wang et al.'s path patching on a model with MLPs: each head's direct edge to the logits
    alone carries its corrupted output (what later heads and MLPs read of it stays clean).
    [layer, head], one compiled call."""
    return _frozen_mlps_path_patch(
        model, clean_tokens, corrupted_tokens, patching_metric, (), sender_positions, batch_size
    )


# ---------------------------------------------------------------------------------------------
# Attribution patching
# ---------------------------------------------------------------------------------------------
def activation_gradients(model: GPT, tokens, patching_metric: Metric, names: Sequence[str]):
    """(metric, {name: d metric / d activation}, {name: activation}) from one forward and one
    backward pass over `tokens`, compiled."""
    tokens = check_tokens(tokens, model.cfg)
    _, shapes = jax.eval_shape(lambda m, t: m.run_with_cache(t, names_filter=list(names)), model, tokens)
    probes = {name: jnp.zeros(shapes[name].shape, shapes[name].dtype) for name in names}
    return _value_grads_acts(model, tokens, probes, patching_metric=patching_metric)


@partial(jax.jit, static_argnames=("patching_metric",))
def _value_grads_acts(model: GPT, tokens, probes, *, patching_metric):
    """Gradients with respect to zero additive probes at the hook points; the activations come out
    of the same forward pass (recorded before the zero probe is added)."""

    def metric_of(probes):
        acts = {}

        def hook(act, hook):
            acts[hook.name] = act
            return act + probes[hook.name]

        logits = model.run_with_hooks(tokens, [(name, hook) for name in probes])
        return patching_metric(logits), acts

    (value, acts), grads = jax.value_and_grad(metric_of, has_aux=True)(probes)
    return value, grads, acts


@partial(jax.jit, static_argnames=("patching_metric", "keep"))
def _attribution(model: GPT, tokens, clean_acts: dict, *, patching_metric, keep: tuple):
    """[layer, *index axes]: for each layer's activation, sum over the entries each index selects of
    (clean - corrupted) * gradient. One compiled forward and backward pass."""
    probes = {name: jnp.zeros_like(act) for name, act in clean_acts.items()}
    _, grads, corrupted = _value_grads_acts(model, tokens, probes, patching_metric=patching_metric)
    out = []
    for name in clean_acts:  # layers in order
        effect = (clean_acts[name] - corrupted[name]) * grads[name]
        kept_first = jnp.moveaxis(effect, keep, list(range(len(keep))))  # index axes first, in order
        out.append(kept_first.reshape(*kept_first.shape[: len(keep)], -1).sum(-1))
    return jnp.stack(out)


def generic_attribution_patch(
    model: GPT,
    corrupted_tokens,
    clean_cache: ActivationCache,
    patching_metric: Metric,
    activation_name: str,
    index_axis_names: Sequence[str],
) -> jax.Array:
    """First-order estimate of `generic_activation_patch` for a sweep that copies the slice of the
    clean activation selected by each index: sum over that slice of (clean - corrupted) * gradient."""
    corrupted_tokens = check_tokens(corrupted_tokens, model.cfg)
    names = [act_name(activation_name, l) for l in range(model.cfg.n_layers)]
    clean_acts = {name: clean_cache[name] for name in names}
    keep = tuple(_AXIS_OF[a] for a in index_axis_names[1:])
    return _attribution(model, corrupted_tokens, clean_acts, patching_metric=patching_metric, keep=keep)


def _attr_sweep(activation_name, index_axis_names, doc):
    def sweep(model: GPT, corrupted_tokens, clean_cache, patching_metric):
        return generic_attribution_patch(
            model, corrupted_tokens, clean_cache, patching_metric, activation_name, index_axis_names
        )

    sweep.__doc__ = doc + " First-order estimate from one forward and one backward pass."
    return sweep


get_attr_patch_resid_pre = _attr_sweep(
    "resid_pre", ("layer", "pos"), "Attribution for get_act_patch_resid_pre: [layer, pos]."
)
get_attr_patch_resid_mid = _attr_sweep(
    "resid_mid", ("layer", "pos"), "Attribution for get_act_patch_resid_mid: [layer, pos]."
)
get_attr_patch_attn_out = _attr_sweep(
    "attn_out", ("layer", "pos"), "Attribution for get_act_patch_attn_out: [layer, pos]."
)
get_attr_patch_mlp_out = _attr_sweep(
    "mlp_out", ("layer", "pos"), "Attribution for get_act_patch_mlp_out: [layer, pos]."
)
get_attr_patch_attn_head_out_by_pos = _attr_sweep(
    "z", ("layer", "pos", "head"), "Attribution for get_act_patch_attn_head_out_by_pos: [layer, pos, head]."
)
get_attr_patch_attn_head_out_all_pos = _attr_sweep(
    "z", ("layer", "head"), "Attribution for get_act_patch_attn_head_out_all_pos: [layer, head]."
)
get_attr_patch_attn_head_pattern_all_pos = _attr_sweep(
    "pattern", ("layer", "head_index"), "Attribution for get_act_patch_attn_head_pattern_all_pos: [layer, head]."
)
get_attr_patch_attn_head_pattern_by_pos = _attr_sweep(
    "pattern",
    ("layer", "head_index", "dest_pos"),
    "Attribution for get_act_patch_attn_head_pattern_by_pos: [layer, head, dest_pos].",
)
