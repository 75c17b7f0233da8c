"""Shared pieces of the benchmarks: median timers and this machine's float32 matmul peak."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

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


def median_times(
    fns: dict[str, Callable[[], object]],
    *,
    budget_s: float = 6.0,
    min_repeats: int = 3,
    max_repeats: int = 15,
    warmup: int = 1,
) -> dict[str, float]:
    """Median wall time (seconds) of each fn(), the calls interleaved round-robin (a, b, a, b, ...) so
    that a change of background load on a shared machine hits every contender alike.

    Each fn is warmed up `warmup` times first (compilation, allocator, caches). The number of rounds
    fills about `budget_s` seconds, within [min_repeats, max_repeats]. JAX results are waited for;
    PyTorch on the CPU is synchronous already.
    """
    first = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            jax.block_until_ready(fn())
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - t0
    rounds = int(budget_s / max(sum(first.values()), 1e-9))
    rounds = max(min_repeats, min(max_repeats, rounds))
    times = {name: [t] for name, t in first.items()}
    for _ in range(rounds - 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_peak_flops(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 10) -> float:
    """Measured float32 matmul throughput (FLOP/s) of the default JAX device: the ceiling that the
    floors divide by. A peak is a best case, so this is the fastest of `repeats` square matmuls of
    each size (a median would count the moments when another process held a core)."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        mm = jax.jit(lambda a, b: a @ b)
        jax.block_until_ready(mm(a, b))
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(mm(a, b))
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def machine() -> str:
    dev = jax.devices()[0]
    return f"{platform.processor() or platform.machine()}, {dev.platform} ({dev.device_kind}), jax {jax.__version__}"


def cpu_model() -> str:
    """The CPU's model name (Linux), or the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.0f} us"
