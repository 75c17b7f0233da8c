"""Eager calls, compiled: `model(tokens)` and `run_with_cache` run as one cached XLA program.

Called eagerly, a forward pass would dispatch its few hundred small operations one at a time, and
for the models of the lessons that dispatch, not the arithmetic, is the cost (an eager forward was
slower than TransformerLens'). So a call from plain Python is split in two:

1. the checks at the boundary, eagerly, on the concrete values (token ids in range, a 0/1
   attention mask, known hook names, layers in range), exactly as the uncompiled call makes them;
2. one `jax.jit`-compiled function of (weights, inputs), cached by JAX per model structure, input
   shapes and dtypes, the names to cache and the call's options, and reused by every later call.
   The weights are an argument, not a constant: training or `load_state_dict` never makes a call
   stale.

What stays eager: a call with `fwd_hooks` (a hook function is arbitrary Python: it may print,
append to a list or read a NumPy array, none of which survives tracing; `jax.jit` a function of
your own that calls `run_with_hooks` to compile hooks you know are pure), and any call made while
tracing (inside `jax.jit`, `jax.vmap`, `jax.grad`: the caller's transform compiles it). Under
`jax.disable_jit()` every call runs op by op again, for debugging.

The compiled numbers are XLA's: a fused program may round differently from the op-by-op one in
the last bit of float32 (a difference of ~1e-7 relative; tests compare with a tolerance).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
from flax import nnx

from minillm import losses
from minillm.hooks import ActivationCache, Hooks, selected_names
from minillm.inputs import check_attention_mask, check_resid, check_tokens, layer_range

if TYPE_CHECKING:
    from minillm.model import GPT


def _is_traced(x: Any) -> bool:
    return isinstance(x, (jax.core.Tracer, jax.ShapeDtypeStruct))


def split_if_concrete(model: GPT, *inputs: Any) -> tuple[Any, Any] | None:
    """(graphdef, state) of a model whose weights and inputs are all concrete; None while tracing."""
    if any(_is_traced(x) for x in jax.tree.leaves(inputs)):
        return None
    graphdef, state = nnx.split(model)
    if any(_is_traced(x) for x in jax.tree.leaves(state)):
        return None
    return graphdef, state


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "options"))
def _run(graphdef, state, input, attention_mask, targets, *, names, options):
    start_at_layer, stop_at_layer, return_type, loss_per_token = options
    model = nnx.merge(graphdef, state)
    hooks = Hooks(cache=names)
    out = model.forward(
        input, hooks, start_at_layer=start_at_layer, stop_at_layer=stop_at_layer, attention_mask=attention_mask
    )
    if stop_at_layer is None:
        out = losses.model_output(out, targets, return_type, loss_per_token, attention_mask)
    return out, hooks.cache


def run_with_cache(
    model: GPT,
    split: tuple[Any, Any],
    input: Any,
    names_filter: Any,
    *,
    return_type: str | None,
    loss_per_token: bool,
    remove_batch_dim: bool,
    start_at_layer: int | None,
    stop_at_layer: int | None,
    targets: Any,
    attention_mask: Any,
) -> tuple[Any, ActivationCache]:
    """GPT.run_with_cache without hooks, checked eagerly and run compiled (see the module docstring).
    `targets`: the tokens the loss predicts, or None when the call returns no loss."""
    cfg = model.cfg
    layer_range(cfg, start_at_layer, stop_at_layer)  # refuses bad layers before compiling anything
    input = check_tokens(input, cfg) if start_at_layer is None else check_resid(input, cfg)
    if attention_mask is not None:
        attention_mask = check_attention_mask(attention_mask, input.shape[:2])
    if targets is not None:
        targets = jax.numpy.asarray(targets)
        losses.check_next_tokens(targets, cfg.d_vocab_out)
    all_names = model.hook_names()
    names = selected_names(names_filter, all_names, cfg.n_layers)
    graphdef, state = split
    options = (start_at_layer, stop_at_layer, return_type, bool(loss_per_token))
    out, acts = _run(graphdef, state, input, attention_mask, targets, names=names, options=options)
    # jit returns a dict sorted by key: put the activations back in forward order
    cache = ActivationCache({n: acts[n] for n in all_names if n in acts}, all_names)
    if remove_batch_dim:
        cache = cache.remove_batch_dim()
    return out, cache
