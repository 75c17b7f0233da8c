"""Shared pieces of the benchmarks: a median timer and this machine's float32 matmul peak."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds, waiting for JAX's asynchronous results."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul throughput (FLOP/s) of the default JAX device: the ceiling that the
    floors below divide by."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / median_time(lambda: mm(a, b), repeats=repeats)


def machine() -> str:
    dev = jax.devices()[0]
    return f"{platform.processor() or platform.machine()}, {dev.platform} ({dev.device_kind}), jax {jax.__version__}"
