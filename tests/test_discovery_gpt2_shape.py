"""Circuit discovery at GPT-2 small's scale: a random model with GPT-2 small's graph (12 layers x 12
heads, with MLPs: 32,491 edges) and a small d_model, in a fresh process so that its peak memory is
its own. It builds the graph, runs edge patching on a subset of edges, EAP, and one step of ACDC,
each twice: the first call compiles, the second is the method's own work (setup included).

Bounds (2 shared CPU cores): the graph within 2 s; each second call within 5 s (measured: 20 to
50 ms); each first call within 150 s (15 to 40 s, nearly all of it XLA compiling the 12-layer edge
forward and its gradient); the process's peak RSS under 6 GiB (measured: 0.75 to 2.2 GiB alone,
4.3 GiB beside another test process, most of it JAX and XLA compiling, which varies with the load).
Before setup was linear in the edges, ACDC built an E x E Python list (about 3 minutes and 8 GB
here) on every call, and `roc` compared every true edge with every false one.

    python tests/test_discovery_gpt2_shape.py    # the measurements as JSON
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure() -> dict:
    """Run everything once and twice; the seconds of each call, the edges, the peak RSS."""
    import numpy as np

    from minillm import GPT, GPTConfig
    from minillm import discovery as D
    from minillm.graph import Graph

    cfg = GPTConfig(n_layers=12, n_heads=12, d_model=24, d_head=2, d_mlp=32, n_ctx=8, d_vocab=20, seed=0)
    out: dict = {}

    def timed(name, fn):
        for suffix in ("first", "again"):
            t0 = time.perf_counter()
            result = fn()
            out[f"{name}_{suffix}_s"] = time.perf_counter() - t0
        return result

    t0 = time.perf_counter()
    graph = Graph.of(cfg)
    out["graph_s"], out["edges"] = time.perf_counter() - t0, len(graph)
    model = GPT(cfg)
    rng = np.random.default_rng(0)
    clean, corrupted = (rng.integers(0, cfg.d_vocab, (2, 6)).astype(np.int32) for _ in range(2))
    metric = D.mean_log_prob(clean[:, 1:], positions=range(5))
    # a subset: 16 edges into the logits and 8 into the last MLP (two blocks of passes)
    subset = [e for e in graph.edges if e.endswith("-> logits")][:16]
    subset += [e for e in graph.edges if e.endswith("-> blocks.11.mlp")][:8]
    exact = timed("edge_patching", lambda: D.edge_patching(model, clean, metric, corrupted=corrupted, edges=subset))
    eap = timed("eap", lambda: D.eap(model, clean, metric, corrupted=corrupted))
    acdc = timed("acdc_step", lambda: D._acdc_sweep(model, clean, [0.01], None, corrupted, "corrupted", steps=1)[0])
    chosen = graph.mask(subset)
    out["patched"] = int(np.count_nonzero(exact.scores)), int(np.count_nonzero(exact.scores[~chosen]))
    out["eap_vs_exact_corr"] = float(np.corrcoef(eap.scores[chosen], exact.scores[chosen])[0, 1])
    out["acdc_step_kept"] = len(acdc)
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


@pytest.mark.slow  # a subprocess that compiles a 12-layer model three times: 45 s to 2 min
def test_discovery_runs_on_gpt2_small_shaped_graph():
    run = subprocess.run(
        [sys.executable, os.path.abspath(__file__)], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads(run.stdout.strip().splitlines()[-1])
    assert m["edges"] == 32_491
    assert m["graph_s"] < 2.0, m
    for name in ("edge_patching", "eap", "acdc_step"):
        assert m[f"{name}_again_s"] < 5.0, m
        assert m[f"{name}_first_s"] < 150.0, m
    assert m["maxrss_mib"] < 6144, m
    # the subset was patched, and nothing else; EAP estimates the same numbers
    assert m["patched"] == [24, 0], m
    assert m["eap_vs_exact_corr"] > 0.9, m
    # ACDC's first edge is blocks.11.mlp -> logits: kept, or dropped with the 156 edges into that MLP
    assert m["acdc_step_kept"] in (32_491, 32_491 - 157), m


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    print(json.dumps(measure()))
