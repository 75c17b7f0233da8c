"""Many devices: data parallelism with `jax.sharding`, nothing of our own.

    mesh = local_mesh()                                   # every device, on one axis named "data"
    train(cfg, task, tc, mesh=mesh)                       # one seed: each device takes a slice of the batch
    train(cfg, task, tc, seeds=range(8), mesh=mesh)       # several seeds: each device trains its seeds
    get_act_patch_resid_pre(model, tokens, cache, metric, mesh=mesh)   # each device runs its patches

What JAX does with it. The trainer puts the weights and optimizer state on every device
(replicated) and constrains each step's batch to be split along its first axis; XLA's SPMD
partitioner then runs the forward and backward pass on each device's rows and sums the gradients
across devices (an all-reduce) before the AdamW update, which every device applies identically.
With several seeds the stacked weights themselves are split: seed i lives on one device, and no
device talks to another. A patching sweep splits its list of patches (`jax.shard_map`): each device
runs its share against a replicated model, and the results are gathered.

The sharded run computes the same numbers as the single-device one up to the order in which a
sum is taken (the gradient is summed per device, then across devices): equal within float32
rounding, tested on 8 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).

Several hosts (a TPU pod slice, a multi-node GPU cluster): call `jax.distributed.initialize()` at
the top of the script on every host (on Cloud TPU and under SLURM it reads its settings from the
environment; elsewhere pass coordinator_address, num_processes and process_id), then build the
mesh from `jax.devices()`, which then lists every host's devices; every host runs the same
script. The README has the command.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def local_mesh(n_devices: int | None = None, axis: str = AXIS) -> Mesh:
    """A one-axis mesh over the first `n_devices` of `jax.devices()` (default: all of them)."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"local_mesh: asked for {n} devices, {len(devices)} are visible ({devices[0].platform})")
    return Mesh(np.array(devices[:n]), (axis,))


def check_mesh(mesh: Any) -> Mesh:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise TypeError(f"expected a one-axis jax.sharding.Mesh (minillm.sharding.local_mesh()), got {mesh!r}")
    return mesh


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def split_leading(mesh: Mesh) -> NamedSharding:
    """Each device holds a slice of the first axis."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of a pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def shard_leading(tree: Any, mesh: Mesh, what: str = "the leading axis") -> Any:
    """Split every array of a pytree along its first axis over the mesh (which must divide it)."""
    size = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % size:
            raise ValueError(f"cannot split {what} of size {leaf.shape[0]} over {size} devices evenly")
    return jax.device_put(tree, split_leading(mesh))


def constrain_leading(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: ask XLA to split every array's first axis over the mesh (uneven sizes are padded)."""
    return jax.lax.with_sharding_constraint(tree, split_leading(mesh))
