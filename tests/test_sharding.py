"""Data parallelism (minillm/sharding.py): on 8 simulated CPU devices, sharded training, sharded
seeds and sharded patching sweeps give the single-device results (tests/sharded_check.py, run in a
fresh process: the device count is fixed when JAX starts). And the mesh helpers refuse what they
cannot do."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from minillm.sharding import check_mesh, local_mesh, shard_leading

CHECK = pathlib.Path(__file__).with_name("sharded_check.py")


@pytest.mark.slow
def test_sharded_runs_equal_single_device_runs_on_8_simulated_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == 11, done.stdout


def test_mesh_helpers_refuse_what_they_cannot_do():
    mesh = local_mesh()
    assert mesh.devices.size == jax.device_count() and mesh.axis_names == ("data",)
    with pytest.raises(ValueError, match="devices"):
        local_mesh(jax.device_count() + 1)
    with pytest.raises(TypeError, match="Mesh"):
        check_mesh("all")
    if jax.device_count() > 1:
        with pytest.raises(ValueError, match="evenly"):
            shard_leading(jax.numpy.zeros((jax.device_count() + 1, 2)), mesh)
