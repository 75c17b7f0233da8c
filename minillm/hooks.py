"""Hook points: every intermediate tensor of the model, read and replaced by name.

The model calls `hook("hook_q", q)` on the line that computes `q`. What that call does is decided
per forward pass by a `Hooks` object built for that one call from its arguments (the names to cache
and the functions to run); nothing is registered on the model, so there is no global state to leak
when a hook raises, and a forward pass with hooks is a pure function that `jax.jit`, `jax.vmap` and
`jax.grad` can transform. Hook functions may close over traced values (a patch index inside vmap).

The names and shapes are those of TransformerLens (see ../shared/CONVENTIONS.md); `hook_names(cfg)`
lists them for a config, in the order the forward pass reaches them. That list is data: the tests
check that the forward pass reaches exactly these names with exactly these shapes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from minillm.config import GPTConfig

NameFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
HookFn = Callable[[jax.Array, "HookPoint"], Optional[jax.Array]]


# ---------------------------------------------------------------------------------------------
# The catalogue of names
# ---------------------------------------------------------------------------------------------
def hook_names(cfg: GPTConfig) -> list[str]:
    """Every hook point of a model with this config, in forward order."""
    ln = cfg.normalization_type is not None
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        names.append(f"{b}.hook_resid_pre")
        if ln:
            names += [f"{b}.ln1.hook_scale", f"{b}.ln1.hook_normalized"]
        names += [f"{b}.attn.hook_{n}" for n in ("q", "k", "v", "attn_scores", "pattern", "z")]
        names += [f"{b}.attn.hook_result", f"{b}.hook_attn_out"]
        if not cfg.attn_only:
            names.append(f"{b}.hook_resid_mid")
            if ln:
                names += [f"{b}.ln2.hook_scale", f"{b}.ln2.hook_normalized"]
            names += [f"{b}.mlp.hook_pre", f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
        names.append(f"{b}.hook_resid_post")
    if ln:
        names += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    return names


def hook_shape(cfg: GPTConfig, name: str, batch: int, pos: int) -> tuple[int, ...]:
    """The documented shape of a hook point's activation for an input of [batch, pos] tokens."""
    b, p, d, h, e = batch, pos, cfg.d_model, cfg.n_heads, cfg.d_head
    last = name.rsplit(".", 1)[-1]
    shapes = {
        "hook_scale": (b, p, 1),
        "hook_q": (b, p, h, e), "hook_k": (b, p, h, e), "hook_v": (b, p, h, e), "hook_z": (b, p, h, e),
        "hook_attn_scores": (b, h, p, p), "hook_pattern": (b, h, p, p),
        "hook_result": (b, p, h, d),
        "hook_pre": (b, p, cfg.d_mlp), "hook_post": (b, p, cfg.d_mlp),
    }
    return shapes.get(last, (b, p, d))


_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class HookPoint:
    """What a hook function is told about where it runs: `hook.name`, `hook.layer()`."""

    name: str

    def layer(self) -> Optional[int]:
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None


# Short names, as TransformerLens' `utils.get_act_name` takes them.
_ATTN_NAMES = {"q", "k", "v", "z", "result", "pattern", "attn_scores"}
_MLP_NAMES = {"pre", "post"}
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "query": "q", "key": "k",
            "value": "v", "mlp_pre": "pre", "mlp_post": "post"}
_LAYER_TYPES = {"a": "attn", "attn": "attn", "attention": "attn", "m": "mlp", "mlp": "mlp",
                "b": "", "block": "", "blocks": "", "ln1": "ln1", "ln2": "ln2", "": ""}


def act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """Full hook name from a short one, as TransformerLens' `get_act_name`.

    act_name("pattern", 0) == "blocks.0.attn.hook_pattern"; act_name("resid_pre", 1) ==
    "blocks.1.hook_resid_pre"; act_name("scale", 0, "ln1") == "blocks.0.ln1.hook_scale";
    act_name("scale") == "ln_final.hook_scale"; act_name("embed") == "hook_embed". A full name is
    returned unchanged. "k6" and "scale4ln1" are read as ("k", 6) and ("scale", 4, "ln1").
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
        parts.append(f"blocks.{int(layer)}")
    elif name in ("scale", "normalized"):
        parts.append("ln_final")
    if layer_type:
        parts.append(layer_type)
    parts.append(f"hook_{name}")
    return ".".join(parts)


def unknown_name_error(name: str, valid: Sequence[str], what: str = "hook point") -> KeyError:
    """A KeyError that names the nearest valid names."""
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return KeyError(f"Unknown {what} {name!r}.{hint} minillm.hook_names(cfg) lists all {len(valid)}.")


def resolve_names(spec: NameFilter, valid: Sequence[str], *, what: str) -> list[str]:
    """The hook names that a name, list of names or predicate selects (None: all of them)."""
    if spec is None:
        return list(valid)
    if callable(spec):
        return [n for n in valid if spec(n)]
    names = [spec] if isinstance(spec, str) else list(spec)
    valid_set = set(valid)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{what}: expected a hook name, a list of names or a predicate, got {n!r}")
        if n not in valid_set:
            raise unknown_name_error(n, valid)
    return names


# ---------------------------------------------------------------------------------------------
# What one forward pass does at its hook points
# ---------------------------------------------------------------------------------------------
class Hooks:
    """The hook functions and cache of ONE forward pass. Built per call, discarded after it.

    `hooks(name, x)` runs the functions hooked at `name` in order (each may return a replacement
    of the same shape and dtype, or None to keep x), records the result if `name` is cached, and
    returns it. `hooks.scope("blocks.0")` gives the same hooks seen from inside a submodule, so a
    module writes `hook("hook_q", q)` and the full name is "blocks.0.attn.hook_q".
    """

    def __init__(self, valid_names: Sequence[str], fwd_hooks: Iterable[tuple[Any, HookFn]] = (),
                 cache_names: Iterable[str] = ()):
        self.fns: dict[str, list[HookFn]] = {}
        for i, pair in enumerate(fwd_hooks):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
                raise TypeError(f"fwd_hooks[{i}] must be a (name or predicate, function) pair, got {pair!r}")
            spec, fn = pair
            names = resolve_names(spec, valid_names, what="fwd_hooks")
            if not names:
                raise ValueError(f"fwd_hooks[{i}]: the predicate {spec!r} matches no hook point of this model")
            for n in names:
                self.fns.setdefault(n, []).append(fn)
        self.cache_names = frozenset(cache_names)
        self.cache: dict[str, jax.Array] = {}

    def wants(self, name: str) -> bool:
        """Whether anything reads or replaces `name` in this pass (lets the model skip optional work)."""
        return name in self.fns or name in self.cache_names

    def replaces(self, name: str) -> bool:
        """Whether a hook function runs at `name` in this pass (and so may replace it)."""
        return name in self.fns

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        for fn in self.fns.get(name, ()):
            out = fn(x, HookPoint(name))
            if out is not None:
                x = _checked_replacement(name, x, out)
        if name in self.cache_names:
            self.cache[name] = x
        return x

    def scope(self, prefix: str) -> "ScopedHooks":
        return ScopedHooks(self, prefix)


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

    def scope(self, prefix: str) -> "ScopedHooks":
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
    (`cache["scale", 0, "ln1"]`, `cache["embed"]`), as in TransformerLens.
    """

    def __init__(self, activations: dict[str, jax.Array], all_names: Sequence[str] = ()):
        self._acts = dict(activations)
        self._all_names = tuple(all_names)  # every hook of the model, for error messages

    def _full_name(self, key: Any) -> str:
        if isinstance(key, tuple):
            return act_name(*key)
        return act_name(key) if isinstance(key, str) else key

    def __getitem__(self, key: Any) -> jax.Array:
        name = self._full_name(key)
        if name in self._acts:
            return self._acts[name]
        if name in self._all_names:
            raise KeyError(f"{name!r} is a hook point of this model but was not cached: "
                           "widen names_filter in run_with_cache")
        raise unknown_name_error(name, self._all_names or list(self._acts))

    def __contains__(self, key: Any) -> bool:
        return self._full_name(key) in self._acts

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
