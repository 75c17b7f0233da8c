"""Interventions as hook functions: ablations (zero, mean, resample) and steering.

Each function returns a `(name, hook_fn)` pair (or a list of them) for `run_with_hooks`, so an
intervention is data passed to one call and nothing is left on the model:

    logits = model.run_with_hooks(tokens, [ablate("blocks.1.attn.hook_z", heads=[2])])
    logits = model.run_with_hooks(tokens, ablate_heads(model, [(1, 2), (1, 3)], "mean", reference=cache))
    logits = model.run_with_hooks(tokens, [steer("blocks.0.hook_resid_post", vector, coeff=4.0)])
    logits = model.run_with_hooks(tokens, [add_noise("hook_embed", 0.3, key, positions=[4, 5])])

`heads`, `neurons` and `positions` select part of the activation (by the axes of its hook: heads
are axis 2 of q/k/v/z/result and axis 1 of patterns; neurons the last axis of mlp.hook_pre/post;
positions axis 1, or the query axis of patterns); the rest is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from minillm.model import GPT
from minillm.model.hooks import ActivationCache, act_name
from minillm.model.inputs import check_indices

KINDS = ("zero", "mean", "resample")


def _is_pattern(name: str) -> bool:
    return name.endswith("hook_pattern") or name.endswith("hook_attn_scores")


def selection_mask(name: str, shape: tuple, heads=None, neurons=None, positions=None) -> jax.Array:
    """Boolean mask over an activation of `shape` at hook `name` selecting heads/neurons/positions."""
    mask = jnp.ones(shape, bool)

    def restrict(mask, axis, index):
        check_indices(index, shape[axis], f"{name} axis {axis}")
        keep = jnp.zeros(shape[axis], bool).at[jnp.asarray(index)].set(True)
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return mask & keep.reshape(view)

    if heads is not None:
        if not (_is_pattern(name) or name.split(".")[-1] in ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result")):
            raise ValueError(f"heads= needs a per-head hook (q, k, v, z, result, pattern, attn_scores), got {name!r}")
        mask = restrict(mask, 1 if _is_pattern(name) else 2, heads)
    if neurons is not None:
        if name.split(".")[-1] not in ("hook_pre", "hook_post"):
            raise ValueError(f"neurons= needs mlp.hook_pre or mlp.hook_post, got {name!r}")
        mask = restrict(mask, len(shape) - 1, neurons)
    if positions is not None:
        mask = restrict(mask, 2 if _is_pattern(name) else 1, positions)
    return mask


def ablate(
    name: str, kind: str = "zero", *, reference: jax.Array | None = None, heads=None, neurons=None, positions=None
):
    """Replace (part of) the activation at `name` by zero, by the batch mean of `reference`
    ("mean": e.g. the activation on a reference dataset), or by `reference` itself ("resample": the
    same activation on other inputs, of the same shape)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "zero" and reference is None:
        raise ValueError(f"{kind} ablation needs reference= (activations at {name!r} on other inputs)")

    def hook(act, hook):
        if kind == "zero":
            replacement = jnp.zeros_like(act)
        elif kind == "mean":
            replacement = jnp.broadcast_to(reference.mean(axis=0, keepdims=True), act.shape).astype(act.dtype)
        else:
            if reference.shape != act.shape:
                raise ValueError(
                    f"resample ablation at {name!r}: reference has shape {reference.shape}, the activation {act.shape}"
                )
            replacement = reference.astype(act.dtype)
        mask = selection_mask(name, act.shape, heads, neurons, positions)
        return jnp.where(mask, replacement, act)

    return name, hook


def _group(pairs: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for layer, index in pairs:
        by_layer.setdefault(int(layer), []).append(int(index))
    return by_layer


def ablate_heads(
    model: GPT, heads: Sequence[tuple[int, int]], kind: str = "zero", reference: ActivationCache | None = None
) -> list:
    """Ablate attention heads given as (layer, head) pairs, at their output hook_z (so the head writes
    nothing, or its mean / resampled output). `reference` is a cache holding hook_z of those layers."""
    return [
        ablate(act_name("z", l), kind, heads=hs, reference=None if reference is None else reference["z", l])
        for l, hs in _group(heads).items()
    ]


def ablate_neurons(
    model: GPT, neurons: Sequence[tuple[int, int]], kind: str = "zero", reference: ActivationCache | None = None
) -> list:
    """Ablate MLP neurons given as (layer, neuron) pairs, at mlp.hook_post."""
    return [
        ablate(act_name("post", l), kind, neurons=ns, reference=None if reference is None else reference["post", l])
        for l, ns in _group(neurons).items()
    ]


def steer(name: str, vector: jax.Array, coeff: float = 1.0, positions=None):
    """Add coeff * vector to the activation at `name` (at every position, or at `positions`): an
    activation-addition steering vector (Turner et al. 2023). vector broadcasts against the
    activation's last axes, e.g. [d_model] for the residual stream."""

    def hook(act, hook):
        added = act + coeff * jnp.asarray(vector, act.dtype)
        if positions is None:
            return added
        return jnp.where(selection_mask(name, act.shape, positions=positions), added, act)

    return name, hook


def add_noise(name: str, std: float, key: jax.Array, positions=None):
    """Add Gaussian noise of standard deviation `std` to the activation at `name` (at every
    position, or at `positions`): the corruption of Meng et al. 2022's causal trace, who add noise of
    3x the embeddings' standard deviation to the subject's token embeddings. The noise is drawn from
    `key` for the activation's shape, so the same hook adds the same noise on every call."""
    if not std >= 0:
        raise ValueError(f"add_noise: std must be >= 0, got {std!r}")

    def hook(act, hook):
        noisy = act + std * jax.random.normal(key, act.shape, act.dtype)
        if positions is None:
            return noisy
        return jnp.where(selection_mask(name, act.shape, positions=positions), noisy, act)

    return name, hook
