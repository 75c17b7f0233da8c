"""Circuit discovery, minillm against TransformerLens 3.x: exact edge patching, EAP and EAP-IG on
lesson 1's induction model, timed on the same machine, in the same process, on the same weights.

    bench/.venv-tl/bin/python bench/discovery.py            # (bash bench/run.sh installs bench/.venv-tl once)
    bench/.venv-tl/bin/python bench/discovery.py --quick    # fewer repeats
    bench/.venv-tl/bin/python bench/discovery.py --json discovery.json   # also the rows as JSON

The model: lesson 1's checkpoint (2 layers, attention only, 4 heads, LayerNorm), whose graph
(minillm.graph) has 81 edges. The batch: 32 sequences of BOS + 20 random tokens + the same 20
(`minillm.detectors.repeated_random_tokens`, key 7); corrupted: the same with key 8. The metric: the
mean cross-entropy on the repeated half, `cross_entropy(logits[:, 21:-1], probe[:, 22:]).mean()`.
A score is metric(edge ablated, carrying its sender's output on the corrupted batch) - metric(full).

How each side runs:
- minillm: `minillm.discovery.edge_patching` (all 81 single-edge forwards in one compiled call),
  `eap` (one forward and one backward), `eap_ig(steps=16)`, each as a user calls it (the corrupted
  run that gives the ablated outputs included). Compilation is excluded from the medians and
  reported apart.
- TransformerLens, as an ARENA-style user writes it: a HookedTransformer with use_split_qkv_input
  and use_attn_result (bench/tl.py), under torch.no_grad(); one run_with_cache of the clean and one
  of the corrupted batch for the senders' outputs, then a Python loop of 81 forwards, each with one
  hook that subtracts (clean - corrupted) output of the edge's sender at the edge's receiver
  (hook_{q,k,v}_input[:, :, h], or the last hook_resid_post for the logits). Its scores must equal
  minillm's edge_patching scores (the max abs difference is printed).
- TransformerLens EAP: the corrupted run (cached), one clean forward with hooks that keep the
  senders' outputs and the receivers' inputs, and `torch.autograd.grad` of the metric with respect
  to the receivers' inputs; score = (corrupted - clean sender output) . gradient at the receiver,
  for all edges by one einsum. Its scores must equal minillm's eap.

The floor column is an estimate, not a bound: the median time of one plain compiled minillm forward
pass of the batch (no hooks, jax.jit; timed on its own, before the interleaved timings) times the
forward passes the method needs, counting a backward pass as two forwards: edge patching 81 edges
+ the full model + the corrupted run = 83; EAP the corrupted run + forward + backward = 4;
EAP-IG(16) the corrupted run + the full model + 16 x (forward + backward) = 50. Work batched across
edges (minillm's vmap) can beat it on a machine where one small forward does not fill the cores.

Run it on a quiet machine: with another process busy on the same cores, PyTorch's (OpenMP) threads
wait on each other and a TransformerLens forward can take 100 times as long (seen on 2 cores), which
would make the TL column meaningless. The header prints torch's thread count and the load average
is printed at the end.

GPT-2 small's graph, minillm alone (no PyTorch needed; any environment with minillm):

    .venv/bin/python bench/discovery.py --gpt2-shape          # [--quick] [--json gpt2_shape.json]

A random model with GPT-2 small's graph: 12 layers x 12 heads with MLPs, 32,491 edges, and a small
d_model (48; the graph does not depend on it), batch 4 x 16 tokens, corrupted: other random tokens,
the metric: mean_log_prob of the next token. It prints the graph's build time (Graph.of, not
cached), the Python and NumPy memory of the setup the methods share (tracemalloc peak over the
graph, ACDC's order and per-node table, reaching_logits and roc), EAP's and ACDC's first call (compile
included) and their median after it, ACDC's per-step cost (K steps minus one step, over K - 1), and
the process's peak RSS (ru_maxrss: JAX, XLA's compiler and everything above).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
import warnings

import jax
import numpy as np

warnings.filterwarnings("ignore", category=DeprecationWarning)  # HookedTransformer's 3.x notice

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from bench.common import cpu_model, fmt_time, median_time, median_times  # noqa: E402
from minillm import GPT, GPTConfig  # noqa: E402
from minillm import discovery as D  # noqa: E402
from minillm.detectors import repeated_random_tokens  # noqa: E402
from minillm.discovery import eap, eap_ig, edge_patching  # noqa: E402
from minillm.graph import Graph  # noqa: E402
from minillm.lessons import checkpoint  # noqa: E402
from minillm.model.losses import cross_entropy  # noqa: E402

COMMAND = "bench/.venv-tl/bin/python bench/discovery.py"
BATCH, HALF = 32, 20
IG_STEPS = 16
# forward passes each method needs (a backward counted as two forwards): the floor's multiplier
PASSES = {"edge patching (81 edges)": 81 + 2, "EAP": 1 + 1 + 2, f"EAP-IG ({IG_STEPS} steps)": 2 + 3 * IG_STEPS}


# --- TransformerLens: the graph's nodes as hook points ----------------------------------------------
def receiver_hook(receiver: str, n_layers: int) -> tuple[str, int | None]:
    """(hook name, head or None) where a receiver reads the residual stream (minillm.graph's docstring)."""
    if receiver == "logits":
        return f"blocks.{n_layers - 1}.hook_resid_post", None
    if receiver.endswith((".q", ".k", ".v")):  # blocks.L.attn.headH.x
        parts = receiver.split(".")
        return f"blocks.{parts[1]}.hook_{parts[4]}_input", int(parts[3][len("head") :])
    return f"blocks.{receiver.split('.')[1]}.hook_mlp_in", None


def sender_names(tl) -> list[str]:
    names = ["hook_embed", "hook_pos_embed"]
    for l in range(tl.cfg.n_layers):
        names.append(f"blocks.{l}.attn.hook_result")
        if not tl.cfg.attn_only:
            names.append(f"blocks.{l}.hook_mlp_out")
    return names


def tl_edge_patching(tl, graph: Graph, clean, corrupted, metric) -> np.ndarray:
    """Each edge ablated alone: one forward per edge, subtracting (clean - corrupted) sender output at
    the receiver's hook. Returns metric(edge ablated) - metric(full) [n_edges]."""
    import torch

    from bench.tl import sender_outputs

    with torch.no_grad():
        logits, clean_cache = tl.run_with_cache(clean, names_filter=sender_names(tl))
        _, corrupted_cache = tl.run_with_cache(corrupted, names_filter=sender_names(tl))
        clean_out, corrupted_out = sender_outputs(tl, clean_cache), sender_outputs(tl, corrupted_cache)
        base = metric(logits)
        scores = []
        for edge in graph.edges:
            sender, receiver = edge.split(" -> ")
            name, head = receiver_hook(receiver, tl.cfg.n_layers)
            delta = clean_out[sender] - corrupted_out[sender]

            def ablate(x, hook, head=head, delta=delta):
                if head is None:
                    return x - delta
                x[:, :, head] -= delta  # hook_k_input etc. are TransformerLens' own copies per head
                return x

            scores.append(metric(tl.run_with_hooks(clean, fwd_hooks=[(name, ablate)])) - base)
        return torch.stack(scores).numpy()


def tl_eap(tl, graph: Graph, clean, corrupted, metric) -> np.ndarray:
    """Edge attribution patching: (corrupted - clean sender output) . d metric / d receiver input, for
    every edge, from the corrupted run, one clean forward and one backward."""
    import torch

    from bench.tl import sender_outputs

    cfg = tl.cfg
    with torch.no_grad():
        _, corrupted_cache = tl.run_with_cache(corrupted, names_filter=sender_names(tl))
        corrupted_out = sender_outputs(tl, corrupted_cache)
    clean_cache: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}

    def keep_sender(x, hook):
        clean_cache[hook.name] = x.detach()

    def keep_input(x, hook):
        inputs[hook.name] = x

    receiver_hooks = [f"blocks.{l}.hook_{x}_input" for l in range(cfg.n_layers) for x in "qkv"]
    receiver_hooks += [f"blocks.{l}.hook_mlp_in" for l in range(cfg.n_layers) if not cfg.attn_only]
    receiver_hooks.append(f"blocks.{cfg.n_layers - 1}.hook_resid_post")
    hooks = [(n, keep_sender) for n in sender_names(tl)] + [(n, keep_input) for n in receiver_hooks]
    value = metric(tl.run_with_hooks(clean, fwd_hooks=hooks))
    grads = dict(zip(receiver_hooks, torch.autograd.grad(value, [inputs[n] for n in receiver_hooks])))
    with torch.no_grad():
        delta = sender_outputs(tl, clean_cache)
        delta = torch.stack([corrupted_out[s] - delta[s] for s in graph.senders])  # [s, b, p, d]
        per_receiver = []
        for r in graph.receivers:
            name, head = receiver_hook(r, cfg.n_layers)
            per_receiver.append(grads[name] if head is None else grads[name][:, :, head])
        table = torch.einsum("sbpd,rbpd->sr", delta, torch.stack(per_receiver))  # [senders, receivers]
        return table[
            torch.as_tensor(graph.sender_of, dtype=torch.long), torch.as_tensor(graph.receiver_of, dtype=torch.long)
        ].numpy()


# --- the benchmark ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (for development)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--gpt2-shape", action="store_true", help="GPT-2 small's graph, minillm only (no TL)")
    args = ap.parse_args()
    if args.gpt2_shape:
        return gpt2_shape(args)
    import torch
    import torch.nn.functional as F

    from bench.tl import hooked_transformer

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"JAX devices: {jax.devices()}; TransformerLens on torch device 'cpu' with {torch.get_num_threads()} "
        f"threads; {cpu_model()}, {os.cpu_count()} cores",
        flush=True,
    )

    model = GPT.load(checkpoint("induction/model.safetensors"))
    graph = Graph.of(model.cfg)
    probe = repeated_random_tokens(jax.random.key(7), BATCH, HALF, model.cfg.d_vocab)
    corrupted = repeated_random_tokens(jax.random.key(8), BATCH, HALF, model.cfg.d_vocab)
    q0 = HALF + 1  # the first repeated token: predictions from here on can copy

    def metric(logits):  # JAX, traced inside minillm's methods
        return cross_entropy(logits[:, q0:-1], probe[:, q0 + 1 :]).mean()

    targets = torch.tensor(np.asarray(probe[:, q0 + 1 :]), dtype=torch.long)

    def tl_metric(logits):  # the same in PyTorch
        return F.cross_entropy(logits[:, q0:-1].flatten(0, 1), targets.flatten())

    tl = hooked_transformer(model, use_split_qkv_input=True, use_attn_result=True)
    tl_clean = torch.tensor(np.asarray(probe), dtype=torch.long)
    tl_corrupted = torch.tensor(np.asarray(corrupted), dtype=torch.long)

    forward = jax.jit(lambda m, t: m(t))
    ml = {
        "edge patching (81 edges)": lambda: edge_patching(model, probe, metric, corrupted=corrupted).scores,
        "EAP": lambda: eap(model, probe, metric, corrupted=corrupted).scores,
        f"EAP-IG ({IG_STEPS} steps)": lambda: eap_ig(model, probe, metric, corrupted=corrupted, steps=IG_STEPS).scores,
    }
    tl_fns = {
        "edge patching (81 edges)": lambda: tl_edge_patching(tl, graph, tl_clean, tl_corrupted, tl_metric),
        "EAP": lambda: tl_eap(tl, graph, tl_clean, tl_corrupted, tl_metric),
    }
    compile_s = {}
    for name, fn in [("plain forward", lambda: forward(model, probe))] + list(ml.items()):
        t1 = time.perf_counter()
        jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - t1

    # the two libraries agree before anything is timed
    with torch.no_grad():
        agree = float(np.abs(np.asarray(forward(model, probe)) - tl(tl_clean).numpy()).max())
    exact, tl_exact = ml["edge patching (81 edges)"](), tl_fns["edge patching (81 edges)"]()
    est, tl_est = ml["EAP"](), tl_fns["EAP"]()
    diffs = {
        "edge patching (81 edges)": float(np.abs(exact - tl_exact).max()),
        "EAP": float(np.abs(est - tl_est).max()),
    }
    print(
        f"same weights: logits max abs diff {agree:.1e}; scores max abs diff (of max |score| "
        f"{np.abs(exact).max():.3f}): edge patching {diffs['edge patching (81 edges)']:.1e}, EAP {diffs['EAP']:.1e}",
        flush=True,
    )
    baseline = float(metric(forward(model, probe)))
    print(
        f"metric: full model {baseline:.4f}, corrupted run {float(metric(forward(model, corrupted))):.4f}", flush=True
    )
    ok = all(d <= 1e-4 * max(1.0, float(np.abs(exact).max())) for d in diffs.values())
    if not ok:
        sys.exit("the two libraries' scores differ: the timings would compare different work")

    # the floor's forward, timed on its own: interleaved with PyTorch it would share the cores with
    # torch's threads, which spin for a while after each call
    fwd = median_time(lambda: forward(model, probe), repeats=11 if args.quick else 31)
    fns = {f"ml {k}": v for k, v in ml.items()}
    fns.update({f"tl {k}": v for k, v in tl_fns.items()})
    times = median_times(
        fns,
        budget_s=3.0 if args.quick else 15.0,
        min_repeats=3 if args.quick else 7,
        max_repeats=5 if args.quick else 21,
    )
    rows = []
    for name in ml:
        tl_s = times.get(f"tl {name}")
        ml_s = times[f"ml {name}"]
        rows.append(
            {
                "method": name,
                "minillm": ml_s,
                "tl": tl_s,
                "ratio": None if tl_s is None else tl_s / ml_s,
                "passes": PASSES[name],
                "floor": PASSES[name] * fwd,
                "compile": compile_s[name],
                "max_abs_diff": diffs.get(name),
            }
        )
    head = [
        "method",
        "minillm",
        "TransformerLens",
        "TL / minillm",
        "passes",
        "floor",
        "minillm / floor",
        "scores vs TL",
    ]
    cells = [head] + [
        [
            r["method"],
            fmt_time(r["minillm"]),
            fmt_time(r["tl"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.1f}x",
            str(r["passes"]),
            fmt_time(r["floor"]),
            f"{r['minillm'] / r['floor']:.2f}x",
            "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    print()
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print(
        f"\nfloor = passes x one plain compiled minillm forward of the {BATCH} x {2 * HALF + 1} batch "
        f"({fmt_time(fwd)}); a backward counts as two forwards"
    )
    print("compile (first call, minillm): " + ", ".join(f"{k} {fmt_time(v)}" for k, v in compile_s.items()))
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{time.perf_counter() - t0:.0f} s in all; {'--quick' if args.quick else 'full'} run",
        flush=True,
    )
    if args.json:
        versions = {"python": platform.python_version()}
        for pkg in ("jax", "jaxlib", "flax", "torch", "transformer-lens"):
            try:
                versions[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                versions[pkg] = "?"
        out = {
            "command": COMMAND + (" --quick" if args.quick else ""),
            "machine": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "jax_device": str(jax.devices()[0]),
            "versions": versions,
            "forward_s": fwd,
            "baseline_metric": baseline,
            "logits_max_abs_diff": agree,
            "rows": rows,
            "load_average": [load_before[0], load_after[0]],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")


# --- GPT-2 small's graph ------------------------------------------------------------------------------
GPT2_SHAPE = GPTConfig(n_layers=12, n_heads=12, d_model=48, d_head=4, d_mlp=192, n_ctx=16, d_vocab=64, seed=0)


def gpt2_shape(args) -> None:
    """EAP and ACDC on a random model with GPT-2 small's graph (module docstring)."""
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    print(f"JAX devices: {jax.devices()}; {cpu_model()}, {os.cpu_count()} cores", flush=True)
    cfg = GPT2_SHAPE
    repeats = 3 if args.quick else 7
    Graph.of.cache_clear()
    t1 = time.perf_counter()
    graph = Graph.of(cfg)
    graph_first = time.perf_counter() - t1

    def build():
        Graph.of.cache_clear()
        return Graph.of(cfg)

    graph_s = median_time(build, repeats=repeats, warmup=0)
    rng = np.random.default_rng(0)
    tracemalloc.start()  # the setup the methods share, in Python and NumPy
    graph = build()
    D._acdc_order(graph)
    graph.node_of_receiver[graph.receiver_of]  # per edge, the node it feeds (ACDC's per-node table)
    keep = rng.uniform(size=len(graph)) < 0.5
    D.reaching_logits(graph, keep)
    D.roc(D.EdgeScores(graph, np.round(rng.normal(size=len(graph)), 1), 0.0, "bench"), D.Circuit(graph, keep))
    setup_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    setup_s = median_time(
        lambda: (
            D._acdc_order(graph),
            D.reaching_logits(graph, keep),
            D.roc(D.EdgeScores(graph, rng.normal(size=len(graph)), 0.0, "bench"), D.Circuit(graph, keep)),
        ),
        repeats=repeats,
    )
    print(
        f"graph: {len(graph):,} edges ({len(graph.senders)} senders, {len(graph.receivers)} receivers); "
        f"Graph.of {fmt_time(graph_s)} (first {fmt_time(graph_first)}); ACDC's order + reaching_logits + roc "
        f"{fmt_time(setup_s)}; setup's tracemalloc peak {setup_peak / 2**20:.1f} MiB",
        flush=True,
    )

    model = GPT(cfg)
    clean = rng.integers(0, cfg.d_vocab, (4, 16)).astype(np.int32)
    corrupted = rng.integers(0, cfg.d_vocab, (4, 16)).astype(np.int32)
    metric = D.mean_log_prob(clean[:, 1:], positions=range(15))
    steps = 16 if args.quick else 64
    fns = {
        "EAP (every edge)": lambda: eap(model, clean, metric, corrupted=corrupted).scores,
        "ACDC, 1 step": lambda: D._acdc_sweep(model, clean, [0.01], metric, corrupted, "corrupted", steps=1)[0].keep,
        f"ACDC, {steps} steps": lambda: (
            D._acdc_sweep(model, clean, [0.01], metric, corrupted, "corrupted", steps=steps)[0].keep
        ),
    }
    first = {}
    for name, fn in fns.items():
        t1 = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - t1
    times = median_times(fns, budget_s=3.0 if args.quick else 10.0, min_repeats=repeats, max_repeats=3 * repeats)
    per_step = (times[f"ACDC, {steps} steps"] - times["ACDC, 1 step"]) / (steps - 1)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print()
    for name in fns:
        print(f"{name:<18} first call {fmt_time(first[name]):>8}   then {fmt_time(times[name]):>8}")
    print(
        f"ACDC per step (a forward pass over the edges): {fmt_time(per_step)}; a full run tries all "
        f"{len(graph):,} edges, a pass each while the node it feeds reaches the logits"
    )
    print(f"peak RSS of this process: {maxrss:.0f} MiB")
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{time.perf_counter() - t0:.0f} s in all; {'--quick' if args.quick else 'full'} run",
        flush=True,
    )
    if args.json:
        out = {
            "command": "bench/discovery.py --gpt2-shape" + (" --quick" if args.quick else ""),
            "machine": cpu_model(),
            "jax_device": str(jax.devices()[0]),
            "config": {k: getattr(cfg, k) for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp")},
            "edges": len(graph),
            "graph_s": graph_s,
            "setup_s": setup_s,
            "setup_tracemalloc_peak_mib": setup_peak / 2**20,
            "first_call_s": first,
            "median_s": times,
            "acdc_per_step_s": per_step,
            "maxrss_mib": maxrss,
            "load_average": [load_before[0], load_after[0]],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
