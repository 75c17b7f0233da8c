"""Probe benchmark: one compiled probe sweep against fitting the same probes one at a time.

    python bench/probes.py

Lesson 3's model (2 layers, d_model 64, d_mlp 256) on its 1,024 test strings of 25 tokens: the
depth at every position, probed at the five residual-stream hooks (5 x 25 = 125 probes) and at the
five plus both MLP layers' neurons (7 x 25), each for the model, the untrained control and shuffled
labels: 375 and 525 ridge fits with the penalty chosen by generalised cross-validation. Printed for each: the
time of `probe_sweep` (activations included), of a Python loop of `fit_probe` calls over the same
cached activations (each call compiled once per shape, then reused: the loop is not charged for
compilation), their ratio, and the floor: the matmul FLOPs of the fits over this machine's measured
float32 matmul peak. The loop is what a user writes without the sweep; it is also what probing
libraries built on scikit-learn do.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine, matmul_peak_flops, median_time  # noqa: E402
from minillm import GPT, act_name  # noqa: E402
from minillm.probes import ALPHAS, fit_probe, probe_sweep, residual_stream_names  # noqa: E402
from minillm.tasks import make_task  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fit_flops(n_train: int, n_test: int, d: int, decompose: bool = True) -> float:
    """Matmul FLOPs of one ridge fit (minillm.probes._ridge_gram and _ridge_finish); the shuffled
    control reuses its activations' eigendecomposition (decompose=False)."""
    gram_and_eigh = 2 * n_train * d * d + 9 * d**3 if decompose else 0.0  # an eigendecomposition ~9 d^3
    targets = 2 * n_train * d + 2 * d * d  # q = v^T z^T y
    penalties = 4 * len(ALPHAS) * d  # residuals and degrees of freedom for every penalty
    score = 2 * (n_train + n_test) * d
    return gram_and_eigh + targets + penalties + score


def main() -> None:
    task = make_task("bracket_depth", n_brackets=24)
    model = GPT.load(os.path.join(ROOT, "lessons/checkpoints/bracket_depth/model.safetensors"))
    control = GPT(model.cfg)
    _, test = task.split(0)
    tokens = np.asarray(test.tokens)
    depth = task.depth(tokens).astype(np.float32)
    n, n_pos = tokens.shape
    shuffled = depth[np.random.default_rng(1).permutation(n)]
    peak = matmul_peak_flops()
    print(f"machine: {machine()}; float32 matmul peak {peak / 1e9:.0f} GFLOP/s\n")

    resid = residual_stream_names(model)
    for names in (resid, resid + [act_name("post", 0), act_name("post", 1)]):
        sweep_time = median_time(lambda names=names: probe_sweep(model, tokens, depth, names).scores, repeats=5)

        _, cache = model.run_with_cache(tokens, names_filter=names)
        _, control_cache = control.run_with_cache(tokens, names_filter=names)
        jobs = []
        for name in names:
            for acts_cache, labels in ((cache, depth), (control_cache, depth), (cache, shuffled)):
                acts = np.asarray(acts_cache[name]).reshape(n, n_pos, -1)
                jobs += [(acts[:, p], labels[:, p]) for p in range(n_pos) if np.ptp(labels[:, p]) > 0]

        def loop(jobs=jobs):
            return [fit_probe(a, y).score for a, y in jobs]

        loop()  # compile each shape once
        t0 = time.perf_counter()
        loop()
        loop_time = time.perf_counter() - t0
        widths = [np.asarray(cache[name]).reshape(n, n_pos, -1).shape[-1] for name in names]
        n_test = int(round(0.2 * n))
        flops = sum(
            n_pos * (2 * fit_flops(n - n_test, n_test, w) + fit_flops(n - n_test, n_test, w, False)) for w in widths
        )
        print(
            f"{len(names)} hooks x {n_pos} positions x 3 (model, untrained, shuffled) = {3 * len(names) * n_pos} fits "
            f"({len(jobs)} with a label that varies):\n"
            f"  probe_sweep   {sweep_time * 1e3:8.1f} ms  (one compiled call, activations included)\n"
            f"  fit_probe loop {loop_time * 1e3:7.1f} ms  ({loop_time / len(jobs) * 1e3:.2f} ms a probe)\n"
            f"  ratio {loop_time / sweep_time:.1f}x; floor {flops / peak * 1e3:.1f} ms "
            f"({flops / 1e9:.2f} GFLOP at peak; the sweep runs at {flops / sweep_time / peak:.0%} of it)\n"
        )


if __name__ == "__main__":
    main()
