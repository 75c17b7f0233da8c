"""Residual-stream decompositions: the stream as a sum of the pieces that wrote to it.

The residual stream at any point is embed + pos_embed + the sum of every earlier attn_out and
mlp_out; attn_out is itself the sum of each head's result plus b_O, and mlp_out the sum of each
neuron's post-activation times its row of W_out plus b_out. These functions stack those pieces,
optionally put them through the LayerNorm that reads them (so they can be projected onto logit
directions), and project them: the logit lens and direct logit attribution (Elhage et al. 2021;
nostalgebraist 2020).

Names and arguments are TransformerLens' ActivationCache methods; as minillm's cache is a plain
pytree without a reference to the model, the model comes first:

    TransformerLens: cache.accumulated_resid(layer, apply_ln=True)
    minillm:         accumulated_resid(model, cache, layer, apply_ln=True)

Stacks are [component, batch, pos, d_model] ([component, batch, d_model] with an int pos_slice).
A layer, or a token of logit_attrs, may be given as an int or as a 1-element integer array, as in
TransformerLens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from minillm.model import GPT
from minillm.model.hooks import ActivationCache, act_name, as_int
from minillm.model.inputs import check_indices

PosSlice = None | int | slice | tuple | list | jax.Array  # a tuple: slice(*tuple), a list: indices (TransformerLens')
BatchSlice = PosSlice


def _pos(x: jax.Array, pos_slice: PosSlice, axis: int = -2, what: str = "pos_slice") -> jax.Array:
    """Apply a position slice to the position axis (an int removes the axis, as in TransformerLens).
    An int or integer array outside the positions is refused (JAX would clamp it). With `axis` and
    `what`, the same for another axis (batch_slice on the batch axis). A tuple is slice(*tuple), as
    TransformerLens' Slice reads it: (2, 5) is positions 2, 3, 4, never the two indices 2 and 5."""
    if pos_slice is None:
        return x
    if isinstance(pos_slice, tuple):
        pos_slice = slice(*pos_slice)
    check_indices(pos_slice, x.shape[axis], what)
    index = [slice(None)] * x.ndim
    index[axis] = pos_slice
    return x[tuple(index)]


def _stack(components: list, labels: list[str], return_labels: bool):
    stack = jnp.stack(components)
    return (stack, labels) if return_labels else stack


def _layer_or_final(model: GPT, layer: int | None) -> int:
    n = model.cfg.n_layers
    if layer is None:
        return n
    layer = as_int(layer, "layer")  # an int, or a 1-element array as TransformerLens takes it
    if layer == -1:
        return n
    if not 0 <= layer <= n:
        raise ValueError(f"layer must be in [0, n_layers={n}] or None/-1 (the final stream), got {layer}")
    return layer


def apply_ln_to_stack(
    model: GPT,
    cache: ActivationCache,
    residual_stack: jax.Array,
    layer: int | None = None,
    mlp_input: bool = False,
    pos_slice: PosSlice = None,
    batch_slice: BatchSlice = None,
    has_batch_dim: bool = True,
    recompute_ln: bool = False,
) -> jax.Array:
    """Put each component through the LayerNorm that reads the stream at `layer` (None: ln_final).

    Centred, then divided by the scale cached from the real run, so that the components still sum
    to the normalized stream (LayerNorm's w and b are not applied: fold them into the weights first,
    see minillm.weight_processing). recompute_ln=True instead applies ln_final in full to each
    component with its own statistics (TransformerLens' logit lens of a component on its own).
    A model without LayerNorm returns the stack unchanged (batch-sliced, if batch_slice is given).

    As in TransformerLens, `pos_slice` selects the positions of the cached scale (the stack is
    already sliced), and `batch_slice` the batch elements: of the scale, and of the stack's axis 1
    too when has_batch_dim=True. A stack with no batch axis, or already sliced to the batch
    elements it holds, takes has_batch_dim=False: then only the scale is sliced. After slicing, the
    stack's axes between the component axis and d_model must be the scale's; if not, a ValueError
    names both shapes.
    """
    return _apply_ln(
        model, cache, residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim, recompute_ln
    )


def _apply_ln(
    model: GPT,
    cache: ActivationCache,
    residual_stack: jax.Array,
    layer: int | None,
    mlp_input: bool,
    pos_slice: PosSlice,
    batch_slice: BatchSlice,
    has_batch_dim: bool,
    recompute_ln: bool,
    caller: str = "apply_ln_to_stack",
) -> jax.Array:
    """apply_ln_to_stack; `caller` names the public call in its errors."""
    layer = _layer_or_final(model, layer)
    if batch_slice is not None and has_batch_dim:
        if residual_stack.ndim < 3:
            raise ValueError(
                f"{caller}: has_batch_dim=True, but the stack {tuple(residual_stack.shape)} has no batch axis "
                "(it needs [component, batch, ..., d_model]); pass has_batch_dim=False"
            )
        residual_stack = _pos(residual_stack, batch_slice, axis=1, what="batch_slice")
    if model.cfg.normalization_type is None:
        return residual_stack
    if recompute_ln and layer == model.cfg.n_layers:
        ln = model.ln_final
        x = residual_stack - residual_stack.mean(-1, keepdims=True)
        x = x / jnp.sqrt((x * x).mean(-1, keepdims=True) + ln.eps)
        return x if ln.kind == "LNPre" else x * ln.w + ln.b  # LNPre has no w, b
    if layer == model.cfg.n_layers:
        scale_name = "ln_final.hook_scale"
    else:
        scale_name = act_name("scale", layer, "ln2" if mlp_input else "ln1")
    full_scale = cache[scale_name]  # [b, p, 1], or [p, 1] in a cache without its batch axis
    scale = _pos(full_scale, pos_slice)  # [b, p', 1] or [b, 1]
    if batch_slice is not None:
        if full_scale.ndim < 3:
            raise ValueError(
                f"{caller}: batch_slice={batch_slice!r}, but the cache has no batch axis (remove_batch_dim)"
            )
        scale = _pos(scale, batch_slice, axis=0, what="batch_slice")
    if tuple(scale.shape[:-1]) != tuple(residual_stack.shape[1:-1]):  # JAX would broadcast them, or fail unnamed
        raise ValueError(
            f"{caller}: the stack {tuple(residual_stack.shape)} [component, ..., d_model] does not fit the cached "
            f"{scale_name} {tuple(full_scale.shape)}, which is {tuple(scale.shape)} after pos_slice={pos_slice!r} and "
            f"batch_slice={batch_slice!r}: the stack's axes between component and d_model must be "
            f"{tuple(scale.shape[:-1])}. A stack of some batch elements only: pass those elements as batch_slice with "
            "has_batch_dim=False (has_batch_dim=True slices the stack's batch axis too)"
        )
    centred = residual_stack - residual_stack.mean(-1, keepdims=True)
    return centred / scale


def accumulated_resid(
    model: GPT,
    cache: ActivationCache,
    layer: int | None = None,
    incl_mid: bool = False,
    apply_ln: bool = False,
    pos_slice: PosSlice = None,
    mlp_input: bool = False,
    return_labels: bool = False,
):
    """The residual stream entering each layer up to `layer` (None: up to and including the final
    stream): [component, b, p, d]; incl_mid adds resid_mid of each layer (models with MLPs). With
    apply_ln at the final layer, each is put through ln_final with its own statistics: project
    onto W_U for the logit lens."""
    layer = _layer_or_final(model, layer)
    if mlp_input and model.cfg.attn_only:
        raise ValueError("accumulated_resid: mlp_input=True, but an attention-only model has no MLP input")
    components, labels = [], []
    for l in range(layer + 1):
        if l == model.cfg.n_layers:
            components.append(cache["resid_post", l - 1])
            labels.append("final_post")
            continue
        components.append(cache["resid_pre", l])
        labels.append(f"{l}_pre")
        if ((incl_mid and l < layer) or (mlp_input and l == layer)) and not model.cfg.attn_only:
            components.append(cache["resid_mid", l])
            labels.append(f"{l}_mid")
    components = [_pos(c, pos_slice) for c in components]
    stack = jnp.stack(components)
    if apply_ln:
        stack = apply_ln_to_stack(
            model, cache, stack, layer, mlp_input, pos_slice, recompute_ln=layer == model.cfg.n_layers
        )
    return (stack, labels) if return_labels else stack


def decompose_resid(
    model: GPT,
    cache: ActivationCache,
    layer: int | None = None,
    mlp_input: bool = False,
    mode: str = "all",
    apply_ln: bool = False,
    pos_slice: PosSlice = None,
    incl_embeds: bool = True,
    return_labels: bool = False,
):
    """The stream entering `layer` as its parts: embed, pos_embed, then each earlier attn_out and
    mlp_out (mode "attn" or "mlp" keeps only those); they sum to resid_pre of `layer`."""
    if mode not in ("all", "attn", "mlp"):
        raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
    layer = _layer_or_final(model, layer)
    components, labels = [], []
    if incl_embeds:
        components += [cache["hook_embed"], cache["hook_pos_embed"]]
        labels += ["embed", "pos_embed"]
    for l in range(layer):
        if mode in ("all", "attn"):
            components.append(cache["attn_out", l])
            labels.append(f"{l}_attn_out")
        if mode in ("all", "mlp") and not model.cfg.attn_only:
            components.append(cache["mlp_out", l])
            labels.append(f"{l}_mlp_out")
    if mlp_input and mode in ("all", "attn") and layer < model.cfg.n_layers:
        components.append(cache["attn_out", layer])
        labels.append(f"{layer}_attn_out")
    stack = jnp.stack([_pos(c, pos_slice) for c in components])
    if apply_ln:
        stack = apply_ln_to_stack(model, cache, stack, layer, mlp_input, pos_slice)
    return (stack, labels) if return_labels else stack


def _head_results(model: GPT, cache: ActivationCache, l: int) -> jax.Array:
    """[b, p, h, d] each head's write in layer l: the cached hook_result, or z @ W_O."""
    if ("result", l) in cache:
        return cache["result", l]
    return jnp.einsum("bphe,hed->bphd", cache["z", l], model.blocks[l].attn.W_O)


def stack_head_results(
    model: GPT,
    cache: ActivationCache,
    layer: int = -1,
    return_labels: bool = False,
    incl_remainder: bool = False,
    pos_slice: PosSlice = None,
    apply_ln: bool = False,
):
    """Each head's write to the residual stream in the layers before `layer` (-1: all layers):
    [layer * head, b, p, d], labels "L{l}H{h}". incl_remainder adds everything else in the stream
    (embeddings, biases, MLPs), so the stack sums to the stream."""
    layer = _layer_or_final(model, layer)
    components, labels = [], []
    for l in range(layer):
        results = _head_results(model, cache, l)
        for h in range(model.cfg.n_heads):
            components.append(results[:, :, h])
            labels.append(f"L{l}H{h}")
    # layer 0 has no heads before it: an empty stack [0, b, p, d], as in TransformerLens
    stack = jnp.stack(components) if components else jnp.zeros((0, *cache["hook_embed"].shape))
    if incl_remainder:
        total = cache["resid_pre", layer] if layer < model.cfg.n_layers else cache["resid_post", layer - 1]
        stack = jnp.concatenate([stack, (total - stack.sum(0))[None]])
        labels.append("remainder")
    stack = _pos(stack, pos_slice)
    if apply_ln:
        stack = apply_ln_to_stack(model, cache, stack, layer, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack


def stack_neuron_results(
    model: GPT,
    cache: ActivationCache,
    layer: int,
    pos_slice: PosSlice = None,
    neuron_slice: None | slice | jax.Array = None,
    return_labels: bool = False,
    incl_remainder: bool = False,
    apply_ln: bool = False,
):
    """Each MLP neuron's write (post-activation times its row of W_out) in the layers before
    `layer`: [layer * neuron, b, p, d], labels "L{l}N{n}". Large: slice neurons or positions."""
    if model.cfg.attn_only:
        raise ValueError("an attention-only model has no neurons")
    layer = _layer_or_final(model, layer)
    check_indices(neuron_slice, model.cfg.d_mlp, "neuron_slice")
    neurons = jnp.arange(model.cfg.d_mlp)[neuron_slice if neuron_slice is not None else slice(None)]
    components, labels = [], []
    for l in range(layer):
        post = _pos(cache["post", l], pos_slice)[..., neurons]  # [b, (p), n]
        w_out = model.blocks[l].mlp.W_out[...][neurons]  # [n, d]
        components.append(jnp.moveaxis(post[..., None] * w_out, -2, 0))  # [n, b, (p), d]
        labels += [f"L{l}N{int(n)}" for n in neurons]
    empty = jnp.zeros((0, *_pos(cache["hook_embed"], pos_slice).shape))  # layer 0: no neurons before it (as TL)
    stack = jnp.concatenate(components) if components else empty
    if incl_remainder:
        total = cache["resid_pre", layer] if layer < model.cfg.n_layers else cache["resid_post", layer - 1]
        stack = jnp.concatenate([stack, (_pos(total, pos_slice) - stack.sum(0))[None]])
        labels.append("remainder")
    if apply_ln:
        stack = apply_ln_to_stack(model, cache, stack, layer, pos_slice=pos_slice)
    return (stack, labels) if return_labels else stack


def logit_directions(model: GPT, tokens: jax.Array, incorrect_tokens: jax.Array | None = None) -> jax.Array:
    """The residual-stream direction of each output token's logit (its column of W_U), or of a
    logit difference: [*tokens.shape, d_model]."""
    W_U = model.unembed.W_U[...]  # [d, v_out]
    directions = W_U[:, tokens]
    if incorrect_tokens is not None:
        directions = directions - W_U[:, incorrect_tokens]
    return jnp.moveaxis(directions, 0, -1)


def _token_ids(ids: jax.Array | int, what: str) -> jax.Array:
    """Output token ids as an integer array; one element of any shape is one token (a scalar), as
    TransformerLens' tokens_to_residual_directions takes a 1-element tensor."""
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"logit_attrs: {what} must be integer token ids, got dtype {ids.dtype}")
    return ids.reshape(()) if ids.size == 1 else ids


def logit_attrs(
    model: GPT,
    cache: ActivationCache,
    residual_stack: jax.Array,
    tokens: jax.Array | int,
    incorrect_tokens: jax.Array | int | None = None,
    pos_slice: PosSlice = None,
    batch_slice: BatchSlice = None,
    has_batch_dim: bool = True,
) -> jax.Array:
    """Direct logit attribution, as TransformerLens' `cache.logit_attrs`: each component's
    contribution to the logit of `tokens` (or to the logit difference tokens - incorrect_tokens).

    residual_stack [component, ..., d] is the raw stack (decompose_resid, stack_head_results, ...
    without apply_ln): it is put through the final LayerNorm's scaling here (apply_ln_to_stack, the
    cached ln_final scale; `pos_slice` selects its positions) and dotted with the directions ->
    [component, ...]. Fold LayerNorm into the weights first for the contributions to add up to the
    logits minus b_U. tokens and incorrect_tokens must have the same shape; a 1-element array is
    one token, as an int is.

    batch_slice selects batch elements, as in TransformerLens: of the cached scale, and of the
    stack's axis 1 too when has_batch_dim=True (the stack then holds the whole batch). For a stack
    without a batch axis, or one already sliced to the elements it holds, pass has_batch_dim=False:
    logit_attrs(model, cache, stack[:, 2], t, batch_slice=2, has_batch_dim=False). The tokens are
    not batch-sliced: give those of the elements the stack ends up with. A stack that does not fit
    the scale raises a ValueError naming both shapes."""
    tokens = _token_ids(tokens, "tokens")
    if incorrect_tokens is not None:
        incorrect_tokens = _token_ids(incorrect_tokens, "incorrect_tokens")
        if incorrect_tokens.shape != tokens.shape:
            raise ValueError(
                f"logit_attrs: tokens {tokens.shape} and incorrect_tokens {incorrect_tokens.shape} "
                "must have the same shape (one element counts as a single token, shape ())"
            )
    for name, ids in (("tokens", tokens), ("incorrect_tokens", incorrect_tokens)):
        if ids is not None and not isinstance(ids, jax.core.Tracer) and ids.size:
            if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab_out:
                raise ValueError(f"logit_attrs: {name} must be output ids in [0, {model.cfg.d_vocab_out})")
    scaled = _apply_ln(
        model, cache, residual_stack, None, False, pos_slice, batch_slice, has_batch_dim, False, caller="logit_attrs"
    )
    directions = logit_directions(model, tokens, incorrect_tokens)
    if pos_slice is not None and jnp.ndim(tokens) == 2 and tokens.shape[1] != residual_stack.shape[-2]:
        # tokens [b, p] for every position: slice them as the stack was. Tokens that fit the sliced
        # stack already (as TransformerLens expects them) are taken as they are, never sliced twice.
        directions = _pos(directions, pos_slice)
    if directions.shape[:-1] != scaled.shape[1:-1] and directions.ndim > 1:
        raise ValueError(
            f"logit_attrs: the stack's components are {scaled.shape[1:-1]} (after pos_slice), the tokens "
            f"give directions for {directions.shape[:-1]}"
        )
    return (scaled * directions).sum(-1)
