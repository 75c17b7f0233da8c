"""Eager calls, compiled: `model(tokens)` and `run_with_cache` run as one cached XLA program.

Called eagerly, a forward pass would dispatch its few hundred small operations one at a time, and
for the models of the lessons that dispatch, not the arithmetic, is the cost (an eager forward was
slower than TransformerLens'). So a call from plain Python is split in two:

1. the checks at the boundary, eagerly, on the concrete values (token ids in range, a 0/1
   attention mask, known hook names, layers in range): `GPT.run_with_cache` makes them once,
   before it chooses this path or the op-by-op one;
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

from minillm.model import losses
from minillm.model.hooks import ActivationCache, Hooks

if TYPE_CHECKING:
    from minillm.model.network import Transformer


def _is_traced(x: Any) -> bool:
    return isinstance(x, (jax.core.Tracer, jax.ShapeDtypeStruct))


def split_if_concrete(model: Transformer, *inputs: Any) -> tuple[Any, Any] | None:
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


def run(
    split: tuple[Any, Any],
    input: jax.Array,
    attention_mask: jax.Array | None,
    names: tuple[str, ...] | bool,
    all_names: list[str],
    *,
    start_at_layer: int | None,
    stop_at_layer: int | None,
    return_type: str | None,
    loss_per_token: bool,
    targets: jax.Array | None,
) -> tuple[Any, ActivationCache]:
    """A checked call without hooks (GPT.run_with_cache has made the checks), run compiled: the
    output and the cache of `names` (hooks.selected_names; False: none). `split` is
    split_if_concrete's (graphdef, state); `targets` the tokens the loss predicts, or None."""
    graphdef, state = split
    options = (start_at_layer, stop_at_layer, return_type, bool(loss_per_token))
    out, acts = _run(graphdef, state, input, attention_mask, targets, names=names, options=options)
    # jit returns a dict sorted by key: put the activations back in forward order
    return out, ActivationCache({n: acts[n] for n in all_names if n in acts}, all_names)
