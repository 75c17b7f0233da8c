"""Hook points: every intermediate tensor of the model, read and replaced by name.

The model calls `hook("hook_q", q)` on the line that computes `q`. What that call does is decided
per forward pass by a `Hooks` object built for that one call from its arguments (the names to cache
and the functions to run); nothing is registered on the model, so there is no global state to leak
when a hook raises, and a forward pass with hooks is a pure function that `jax.jit`, `jax.vmap` and
`jax.grad` can transform. Hook functions may close over traced values (a patch index inside vmap).

The list of names is not written down anywhere but in the model: a pass notes each name it
reaches, so the names a call asks for are checked against what that pass really reached (an
unknown or unreachable name raises, naming the nearest real ones), and `GPT.hook_names()` is
one abstract pass (`jax.eval_shape`) with a `Hooks` that asks for everything. The names and
shapes are TransformerLens' (docs/conventions.md).

This module imports nothing from minillm: the model imports it, never the other way round.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

NameFilter = None | str | Sequence[str] | Callable[[str], bool]
HookFn = Callable[[jax.Array, "HookPoint"], jax.Array | None]
FwdHooks = Iterable[tuple[Any, HookFn]]  # (name, list of names or predicate; function) pairs

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")

# Hook points that a pass reaches only when a call asks for them by name or by a predicate, never
# with "cache everything" (names_filter=None): the per-head inputs repeat the residual stream h
# times and make ln1 run once per input (TransformerLens has them only with use_attn_in,
# use_split_qkv_input and use_hook_mlp_in). Edge-level patching needs them (minillm.graph).
ON_REQUEST = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")


def on_request(name: str) -> bool:
    """Whether `name` is one of the ON_REQUEST hook points."""
    return name.rsplit(".", 1)[-1] in ON_REQUEST


@dataclass(frozen=True)
class HookPoint:
    """What a hook function is told about where it runs: `hook.name`, `hook.layer()`."""

    name: str

    def layer(self) -> int | None:
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None


# Short names, as TransformerLens' `utils.get_act_name` takes them.
_ATTN_NAMES = {"q", "k", "v", "z", "result", "pattern", "attn_scores"}
_MLP_NAMES = {"pre", "post"}
_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "query": "q",
    "key": "k",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_post": "post",
}
_LAYER_TYPES = {
    "a": "attn",
    "attn": "attn",
    "attention": "attn",
    "m": "mlp",
    "mlp": "mlp",
    "b": "",
    "block": "",
    "blocks": "",
    "ln1": "ln1",
    "ln2": "ln2",
    "": "",
}


def as_int(value: Any, what: str) -> int:
    """A Python int from an int, or from an integer array of one element (any shape): TransformerLens
    takes a 1-element tensor where it takes one token, layer or head (its `.item()`, or the tensor's
    `__index__`), so minillm does too. Anything else raises a TypeError naming `what`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    shape = getattr(value, "shape", None)
    if shape is not None and math.prod(shape) == 1:
        array = value if isinstance(value, jax.Array) else np.asarray(value)
        if jnp.issubdtype(array.dtype, jnp.integer):
            return int(array.reshape(()))
    got = f"an array of shape {tuple(shape)} and dtype {value.dtype}" if shape is not None else repr(value)
    raise TypeError(f"{what} must be an int (or an integer array of one element), got {got}")


def act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """Full hook name from a short one, as TransformerLens' `get_act_name`.

    act_name("pattern", 0) == "blocks.0.attn.hook_pattern"; act_name("resid_pre", 1) ==
    "blocks.1.hook_resid_pre"; act_name("scale", 0, "ln1") == "blocks.0.ln1.hook_scale";
    act_name("scale") == "ln_final.hook_scale"; act_name("embed") == "hook_embed". A full name is
    returned unchanged. "k6" and "scale4ln1" are read as ("k", 6) and ("scale", 4, "ln1"). `layer`
    may be a 1-element integer array (as_int); a negative one is kept here and resolved by the cache.
    """
    if layer is None and layer_type is None and ("." in name or name.startswith("hook_")):
        return name
    if layer is None:
        match = re.fullmatch(r"([a-z_]+?)(\d+)([a-z0-9]*)", name)
        if match:
            name, layer, layer_type = match.group(1), int(match.group(2)), match.group(3) or None
    name = _ALIASES.get(name, name)
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    elif layer_type is not None:
        if layer_type not in _LAYER_TYPES:
            raise ValueError(f"act_name: unknown layer_type {layer_type!r}")
        layer_type = _LAYER_TYPES[layer_type]
    parts = []
    if layer is not None:
        parts.append(f"blocks.{as_int(layer, 'act_name: layer')}")
    elif name in ("scale", "normalized"):
        parts.append("ln_final")
    if layer_type:
        parts.append(layer_type)
    parts.append(f"hook_{name}")
    return ".".join(parts)


_NEGATIVE_LAYER_RE = re.compile(r"^blocks\.(-\d+)\.")
_ANY_LAYER_RE = re.compile(r"^blocks\.(-?\d+)\.")


def resolve_layer(name: str, n_layers: int) -> str:
    """ "blocks.-1.hook_resid_post" -> "blocks.{n_layers - 1}.hook_resid_post": negative layers count
    from the end, as in TransformerLens. A name out of range is returned as it is (and so is unknown)."""
    match = _NEGATIVE_LAYER_RE.match(name)
    if match is None or not -n_layers <= int(match.group(1)) < 0:
        return name
    return f"blocks.{n_layers + int(match.group(1))}." + name[match.end() :]


def _n_layers_of(names: Sequence[str]) -> int:
    layers = [int(m.group(1)) for n in names if (m := _LAYER_RE.match(n))]
    return max(layers) + 1 if layers else 0


def unknown_name_error(name: str, valid: Sequence[str], what: str = "hook point") -> KeyError:
    """A KeyError that names the nearest valid names."""
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return KeyError(f"Unknown {what} {name!r}.{hint} model.hook_names() lists all {len(valid)}.")


def _check_spec(spec: Any, what: str) -> None:
    if callable(spec) or isinstance(spec, str):
        return
    if isinstance(spec, (list, tuple)) and all(isinstance(n, str) for n in spec):
        return
    raise TypeError(f"{what}: expected a hook name, a list of names or a predicate, got {spec!r}")


def _resolve_spec(spec: Any, n_layers: int | None) -> Any:
    """Names in a spec with negative layers resolved (predicates are left as they are)."""
    if n_layers is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return resolve_layer(spec, n_layers)
    return [resolve_layer(n, n_layers) for n in spec]


def _selects(spec: NameFilter, name: str) -> bool:
    """Whether a name, list of names or predicate (None: everything) selects `name`."""
    if spec is None:
        return True
    if callable(spec):
        return bool(spec(name))
    return name == spec if isinstance(spec, str) else name in spec


def _named(spec: NameFilter) -> list[str]:
    """The names a spec lists explicitly (none for a predicate or None)."""
    if spec is None or spec is False or callable(spec):
        return []
    return [spec] if isinstance(spec, str) else list(spec)


def selected_names(names_filter: NameFilter | bool, all_names: Sequence[str], n_layers: int) -> tuple[str, ...] | bool:
    """The hook names a names_filter selects, in forward order (False: none, None: all). A listed
    name that is no hook point is refused here, before any pass (a Hooks pass refuses it after)."""
    if names_filter is False:
        return False
    if names_filter is None:
        return tuple(n for n in all_names if not on_request(n))
    _check_spec(names_filter, "names_filter")
    spec = _resolve_spec(names_filter, n_layers)
    for name in _named(spec):
        if name not in all_names:
            raise unknown_name_error(name, all_names)
    return tuple(n for n in all_names if _selects(spec, n))


# ---------------------------------------------------------------------------------------------
# What one forward pass does at its hook points
# ---------------------------------------------------------------------------------------------
class HookScope(Protocol):
    """The `hook` a module's `__call__` gets: `hook("hook_q", q)`, `hook.scope("attn")`, ..."""

    def __call__(self, name: str, x: jax.Array) -> jax.Array: ...

    def wants(self, name: str) -> bool: ...

    def replaces(self, name: str) -> bool: ...

    def scope(self, prefix: str) -> HookScope: ...


class Hooks:
    """The hook functions and cache of ONE forward pass. Built per call, discarded after it.

    `hooks(name, x)` runs the functions hooked at `name` in order (each may return a replacement
    of the same shape and dtype, or None to keep x), records the result if `cache` selects `name`,
    and returns it. `hooks.scope("blocks.0")` gives the same hooks seen from inside a submodule,
    so a module writes `hook("hook_q", q)` and the full name is "blocks.0.attn.hook_q".
    `fwd_hooks` pairs take a name, a list of names or a predicate on names; so does `cache`, where
    None means every hook point and False (the default) none. After the pass, `hooks.check()`
    refuses a name that the pass never reached.
    """

    def __init__(self, fwd_hooks: FwdHooks = (), cache: NameFilter | bool = False, n_layers: int | None = None):
        self.fwd_hooks: list[tuple[NameFilter, HookFn]] = []
        for i, pair in enumerate(fwd_hooks):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
                raise TypeError(f"fwd_hooks[{i}] must be a (name or predicate, function) pair, got {pair!r}")
            _check_spec(pair[0], f"fwd_hooks[{i}]")
            self.fwd_hooks.append((_resolve_spec(pair[0], n_layers), pair[1]))
        if cache is not None and cache is not False:
            _check_spec(cache, "names_filter")
            cache = _resolve_spec(cache, n_layers)
        self.cache_spec = cache
        self.reached: list[str] = []  # every name this pass went through, in order
        self.cache: dict[str, jax.Array] = {}
        self._fns: dict[str, list[HookFn]] = {}

    def _fns_at(self, name: str) -> list[HookFn]:
        if name not in self._fns:
            self._fns[name] = [fn for spec, fn in self.fwd_hooks if _selects(spec, name)]
        return self._fns[name]

    def _caches(self, name: str) -> bool:
        if self.cache_spec is None:  # everything but the on-request hook points
            return not on_request(name)
        return self.cache_spec is not False and _selects(self.cache_spec, name)

    def wants(self, name: str) -> bool:
        """Whether anything reads or replaces `name` in this pass (lets the model skip optional work)."""
        return bool(self._fns_at(name)) or self._caches(name)

    def replaces(self, name: str) -> bool:
        """Whether a hook function runs at `name` in this pass (and so may replace it)."""
        return bool(self._fns_at(name))

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        self.reached.append(name)
        for fn in self._fns_at(name):
            out = fn(x, HookPoint(name))
            if out is not None:
                x = _checked_replacement(name, x, out)
        if self._caches(name):
            self.cache[name] = x
        return x

    def scope(self, prefix: str) -> ScopedHooks:
        return ScopedHooks(self, prefix)

    def check(self, all_names: Callable[[], Sequence[str]] = lambda: ()) -> None:
        """Refuse names that are no hook point of the model, and predicates that select none.
        `all_names()` lists every hook point of the model: a valid name that this pass did not
        reach (it lies outside start_at_layer..stop_at_layer) is accepted, as TransformerLens
        does; its hook just does not run, and it is not cached."""
        reached = set(self.reached)
        for i, (spec, _) in enumerate(self.fwd_hooks):
            if callable(spec) and not any(spec(n) for n in self.reached):
                if not any(spec(n) for n in all_names()):
                    raise ValueError(f"fwd_hooks[{i}]: the predicate {spec!r} matches no hook point of the model")
        asked = [n for spec, _ in self.fwd_hooks for n in _named(spec)] + _named(self.cache_spec)
        for name in asked:
            if name not in reached:
                valid = all_names()
                if name not in valid:
                    raise unknown_name_error(name, valid or self.reached)

    def activation_cache(self, all_names: Sequence[str] | None = None) -> ActivationCache:
        """The cached activations; `all_names` (default: the names this pass reached) lets the cache
        tell a hook point that was not cached from an unknown name."""
        return ActivationCache(self.cache, self.reached if all_names is None else all_names)


def record_hook_shapes(forward: Callable[..., Any], model: Any, tokens: Any) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every hook point that `forward(model, tokens, hooks)` reaches, in order.

    Two abstract passes (`jax.eval_shape`): no arithmetic is done, and `model` may hold only shapes.
    The second reaches the ON_REQUEST points, listed after the name they read (a block's
    hook_resid_pre, or its hook_resid_mid for hook_mlp_in).
    """
    hooks, asked = Hooks(cache=None), Hooks(cache=on_request)
    for h in (hooks, asked):
        jax.eval_shape(lambda m, t: forward(m, t, h), model, tokens)  # noqa: B023 (called at once)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, x in hooks.cache.items():
        shapes[name] = tuple(x.shape)
        reads = "hook_resid_mid" if name.endswith(".hook_resid_mid") else "hook_resid_pre"
        if name.endswith(f".{reads}"):
            block = name[: -len(reads)]
            for extra, y in asked.cache.items():
                if extra.startswith(block) and (extra.endswith("hook_mlp_in") == (reads == "hook_resid_mid")):
                    shapes[extra] = tuple(y.shape)
    return shapes


class ScopedHooks:
    """A view of `Hooks` from inside a submodule: names are relative to `prefix`."""

    def __init__(self, hooks: Hooks, prefix: str):
        self.hooks, self.prefix = hooks, prefix

    def wants(self, name: str) -> bool:
        return self.hooks.wants(f"{self.prefix}.{name}")

    def replaces(self, name: str) -> bool:
        return self.hooks.replaces(f"{self.prefix}.{name}")

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        return self.hooks(f"{self.prefix}.{name}", x)

    def scope(self, prefix: str) -> ScopedHooks:
        return ScopedHooks(self.hooks, f"{self.prefix}.{prefix}")


def _checked_replacement(name: str, x: jax.Array, out: Any) -> jax.Array:
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(f"Hook at {name!r} returned {type(out).__name__}; expected an array or None")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"Hook at {name!r} returned shape {tuple(out.shape)}, but the activation has shape "
            f"{tuple(x.shape)}; a hook must return an array of the same shape (or None)"
        )
    if out.dtype != x.dtype:
        raise TypeError(
            f"Hook at {name!r} returned dtype {out.dtype}, but the activation has dtype {x.dtype}; "
            f"cast it, e.g. `return new.astype(act.dtype)`"
        )
    return jnp.asarray(out)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
class ActivationCache:
    """The activations of one forward pass, by hook name. A pytree, so it can leave `jax.jit`.

    `cache["blocks.0.attn.hook_pattern"]`, or the shorthand `cache["pattern", 0]`
    (`cache["scale", 0, "ln1"]`, `cache["embed"]`), as in TransformerLens. A negative layer counts
    from the end of the model's layers (`all_names`, every hook of the model, gives their number);
    one out of range raises a KeyError that says so.
    """

    def __init__(self, activations: dict[str, jax.Array], all_names: Sequence[str] = ()):
        self._acts = dict(activations)
        self._all_names = tuple(all_names)  # every hook of the model, for error messages

    def _full_name(self, key: Any) -> str:
        """The full hook name of a key, its layer resolved: negative counts from the end of the
        model's n_layers (cache["resid_post", -1], cache["blocks.-1.hook_resid_post"]), as in
        TransformerLens; a layer outside [-n_layers, n_layers) raises a KeyError saying so."""
        if isinstance(key, tuple):
            name = act_name(*key)
        else:
            name = act_name(key) if isinstance(key, str) else key
        match = _ANY_LAYER_RE.match(name) if isinstance(name, str) else None
        if match is None:
            return name
        # the model's n_layers, read from its hook names (a cache built without them: from its keys)
        n_layers = _n_layers_of(self._all_names or list(self._acts))
        layer = int(match.group(1))
        if not -n_layers <= layer < n_layers:
            model = "the model has" if self._all_names else "this cache (built without all_names) holds"
            valid = f"0 to {n_layers - 1}, or -{n_layers} to -1 counting from the end" if n_layers else "no layer"
            raise KeyError(f"layer {layer} in {key!r} is out of range: {model} n_layers={n_layers} ({valid})")
        return resolve_layer(name, n_layers)

    def __getitem__(self, key: Any) -> jax.Array:
        name = self._full_name(key)
        if name in self._acts:
            return self._acts[name]
        if name in self._all_names:
            raise KeyError(
                f"{name!r} is a hook point of this model but was not cached: widen names_filter in "
                "run_with_cache (or the pass did not reach it: start_at_layer / stop_at_layer)"
            )
        raise unknown_name_error(name, self._all_names or list(self._acts))

    def __contains__(self, key: Any) -> bool:
        try:
            return self._full_name(key) in self._acts
        except KeyError:  # a layer out of range is not in the cache
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def keys(self):
        return self._acts.keys()

    def values(self):
        return self._acts.values()

    def items(self):
        return self._acts.items()

    def to_dict(self) -> dict[str, jax.Array]:
        return dict(self._acts)

    def remove_batch_dim(self) -> ActivationCache:
        """The cache of a batch of one without its batch axis (TransformerLens' remove_batch_dim)."""
        sizes = {x.shape[0] for x in self._acts.values()}
        if sizes - {1}:
            raise ValueError(f"remove_batch_dim needs a batch of one, got batch size {sorted(sizes)}")
        return ActivationCache({k: x[0] for k, x in self._acts.items()}, self._all_names)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self._acts)} activations: {list(self._acts)[:4]}{'...' if len(self) > 4 else ''})"

    # pytree protocol
    def tree_flatten(self):
        keys = tuple(self._acts)
        return tuple(self._acts[k] for k in keys), (keys, self._all_names)

    @classmethod
    def tree_unflatten(cls, aux, children):
        keys, all_names = aux
        return cls(dict(zip(keys, children)), all_names)
