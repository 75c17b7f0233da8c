"""minillm against TransformerLens 3.x, side by side, on the same machine, in the same process.

    bash bench/run.sh            # installs bench/.venv-tl, runs this, writes bench/RESULTS.md
    bash bench/run.sh --quick    # fewer repeats, prints the table only (for development)
    bash bench/run_gpu.sh        # on a GPU machine: --device cuda, writes bench/RESULTS_GPU.md
    bash bench/run.sh --check-only   # the equivalence checks only (bench/device_check.sh: --json, --out)

Both libraries get the same configs and the same weights (minillm's own export,
`model.to_transformer_lens()`, loaded into a `HookedTransformer`: bench/tl.py), and the script first checks
that they then agree on the logits and on every activation both cache, so that what is timed is the
same work. Then, for each benchmark, the median time of each library (the calls interleaved, so that
background load hits both alike), their ratio, and the floor: the work's matmul FLOPs (counted
below, formulas in `forward_flops`) over this machine's measured float32 matmul peak.

How each side runs, and why:
- minillm as its users run it for speed: the training step is minillm's own compiled chunk of steps
  (`minillm.training.step.make_train_chunk`, what `train()` calls) with optax AdamW; forward and
  `run_with_cache` under `jax.jit` (eager calls are shown too, as a notebook makes them); patching
  with `minillm.patching`. Compilation is excluded from the medians and reported apart.
- TransformerLens as its users run it: eager PyTorch, `torch.optim.AdamW` with the same
  hyperparameters, a Python loop of steps; forward, cache and patching under `torch.no_grad()` (its
  best case: no autograd graph), `transformer_lens.patching` with its progress bar silenced.
- Training steps use one fixed batch (the grokking config's full batch; for the induction config
  one batch of 64 drawn from minillm's `repeated_tokens` task), so both sides do identical work;
  the same masked cross-entropy; no schedule (constant lr); gradient clipping at 1.0 for the
  induction config, none for grokking (as the recipes).
- One row does less work than TransformerLens on purpose: for the grokking config, minillm's trainer
  as `train()` runs it, whose loss computes the logits only at the position it reads (the "=" token,
  `loss_fn(..., positions=task.loss_positions)`); its floor counts its own FLOPs
  (`train_step_flops(..., out_positions=1)`), and its ratio is the library's trainer against TL's step.
- `--device cuda` runs TransformerLens on the GPU (torch.cuda.synchronize() before each timer read)
  and JAX on its default backend (the GPU with jax[cuda12]); float32 stays IEEE float32 on both sides
  (no TF32), and the peak is measured on the GPU with larger matmuls.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", category=DeprecationWarning)  # HookedTransformer's 3.x notice
import transformer_lens.patching as tlp  # noqa: E402
from transformer_lens import HookedTransformer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from bench.common import cpu_model, fmt_time, matmul_peak_flops, median_times  # noqa: E402
from bench.tl import hooked_transformer, rel_diff  # noqa: E402
from minillm import GPT, GPTConfig  # noqa: E402
from minillm import patching as P  # noqa: E402
from minillm.model.losses import loss_fn  # noqa: E402
from minillm.tasks import Batch, make_task  # noqa: E402
from minillm.training.optim import TrainConfig, make_optimizer  # noqa: E402
from minillm.training.step import init_train_state, make_train_chunk  # noqa: E402
from minillm.utils import to_numpy  # noqa: E402

COMMAND = "bash bench/run.sh"
# The torch device TransformerLens runs on (--device); JAX uses its default backend.
DEVICE = "cpu"

# --- the two configs ---------------------------------------------------------------------------
# Grokking (Nanda et al. 2023): 1 layer, d_model 128, 4 heads of 32, d_mlp 512, relu, no LayerNorm,
# inputs "a b =", full batch of 30% of the 113^2 pairs, loss at the last position.
GROK = GPTConfig(
    n_layers=1,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    act_fn="relu",
    normalization_type=None,
    n_ctx=3,
    d_vocab=114,
    d_vocab_out=113,
    seed=0,
)
GROK_TC = TrainConfig(lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), grad_clip=None, batch_size=None)
# Induction: 2 layers, attention only, d_model 64, 4 heads of 16, LayerNorm, vocab 64, context 64,
# batch 64, loss on every position that has a next token.
INDUCTION = GPTConfig(
    n_layers=2, d_model=64, n_heads=4, d_head=16, n_ctx=64, d_vocab=64, attn_only=True, normalization_type="LN", seed=0
)
INDUCTION_TC = TrainConfig(lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), grad_clip=1.0, batch_size=None)
INDUCTION_CHECKPOINT = os.path.join(ROOT, "lessons", "checkpoints", "induction", "model.safetensors")
STEPS_PER_CALL = 20
PEAK_SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}  # square matmuls that measure the peak
PATCH_BATCH = 8
N_SEEDS = 8


# --- FLOPs ---------------------------------------------------------------------------------------
def forward_flops(
    cfg: GPTConfig, batch: int, n_pos: int, from_layer: int = 0, out_positions: int | None = None
) -> float:
    """Matmul FLOPs of one forward pass on [batch, n_pos] tokens, from block `from_layer` to the
    logits. A multiply-add is 2 FLOPs; elementwise work (LayerNorm, softmax, relu, adds) and the
    embedding lookup are not counted: the floor is what the matmuls alone need at peak.

    Per block, B = batch, P = n_pos, Q = the positions its queries run at (P), d = d_model,
    h = n_heads, e = d_head, m = d_mlp:
      W_Q                2 * B * Q * d * h * e
      W_K, W_V           2 * 2 * B * P * d * h * e
      scores q . k       2 * B * h * Q * P * e   (the full Q x P rectangle: both libraries compute it
      pattern @ v        2 * B * h * Q * P * e    and then mask; causality would halve these two)
      W_O                2 * B * Q * h * e * d   (hook_result, when cached, is this same product
                                                  kept per head, so caching adds no matmul)
      W_in, W_out        2 * 2 * B * Q * d * m   (not attn_only)
    then the unembed,   2 * B * Q * d * d_vocab_out.

    out_positions: the logits at that many positions only (minillm's `output_positions`, which its
    trainer sets to a task's loss positions): the last block runs its queries, scores, W_O and MLP
    at those Q = out_positions positions (its keys and values still at all P), and so does the
    unembed; every earlier block runs at all P. None: Q = P everywhere.
    """
    B, P, d, h, e = batch, n_pos, cfg.d_model, cfg.n_heads, cfg.d_head

    def block(Q: int) -> float:
        flops = 2 * B * Q * d * h * e + 2 * 2 * B * P * d * h * e + 2 * (2 * B * h * Q * P * e) + 2 * B * Q * h * e * d
        if not cfg.attn_only:
            flops += 2 * 2 * B * Q * d * cfg.d_mlp
        return flops

    Q = P if out_positions is None else out_positions
    n_blocks = cfg.n_layers - from_layer
    blocks = max(n_blocks - 1, 0) * block(P) + (block(Q) if n_blocks > 0 else 0)
    return blocks + 2 * B * Q * d * cfg.d_vocab_out


def train_step_flops(cfg: GPTConfig, batch: int, n_pos: int, out_positions: int | None = None) -> float:
    """Forward + backward: the backward pass of each matmul is two matmuls of the same size (the
    gradient with respect to its input and to its weight), so a step is 3x the forward FLOPs. The
    AdamW update is elementwise (not counted). out_positions: as in `forward_flops` (the loss's
    logits at that many positions only)."""
    return 3 * forward_flops(cfg, batch, n_pos, out_positions=out_positions)


def sweep_flops(cfg: GPTConfig, batch: int, n_pos: int, patches_per_layer: int, hook: str) -> float:
    """An exact patching sweep that re-runs, for each patch, only what the patch changes: from the
    patched activation of layer l to the logits (nothing before it changes), at every position.
    For `resid_pre` that is blocks l..L-1 and the unembed; for `z` the W_O product of layer l, then
    blocks l+1..L-1 and the unembed. (minillm's sweeps start at layer l from the corrupted run's
    cached residual stream; TransformerLens re-runs the whole model for each patch.)"""
    B, P, d, h, e = batch, n_pos, cfg.d_model, cfg.n_heads, cfg.d_head
    total = 0.0
    for l in range(cfg.n_layers):
        if hook == "resid_pre":
            work = forward_flops(cfg, batch, n_pos, from_layer=l)
        elif hook == "z":
            work = 2 * B * P * h * e * d + forward_flops(cfg, batch, n_pos, from_layer=l + 1)
            if not cfg.attn_only:
                work += 2 * 2 * B * P * d * cfg.d_mlp
        else:
            raise ValueError(hook)
        total += patches_per_layer * work
    return total


def attribution_flops(cfg: GPTConfig, batch: int, n_pos: int) -> float:
    """Attribution patching: one forward pass and one backward pass with respect to the activations
    only (no weight gradients: one matmul per forward matmul), so 2x the forward FLOPs."""
    return 2 * forward_flops(cfg, batch, n_pos)


# --- torch on DEVICE (bench/tl.py builds the same model in TransformerLens) ------------------------
def torch_tokens(tokens) -> torch.Tensor:
    return torch.from_numpy(np.array(tokens, dtype=np.int64)).to(DEVICE)


def synced(fn: Callable) -> Callable:
    """fn, then (on a GPU) wait for the kernels torch queued: what a timer may read after it."""
    if DEVICE == "cpu":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def torch_matmul_peak(sizes: tuple[int, ...], dtype: torch.dtype = torch.float32, repeats: int = 10) -> float:
    """As bench.common.matmul_peak_flops, for PyTorch on DEVICE: the fastest of `repeats` square
    matmuls of each size (FLOP/s)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=DEVICE, dtype=dtype)
        c = torch.randn(n, n, device=DEVICE, dtype=dtype)
        mm = synced(lambda a=a, c=c: torch.mm(a, c))
        mm()
        for _ in range(repeats):
            t0 = time.perf_counter()
            mm()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


@dataclass
class Comparison:
    name: str
    rel_diff: float  # max |minillm - TL| / max |TL| over the finite entries
    ok: bool


def compare_arrays(name: str, ours, theirs, rtol: float, scale: float = 0.0) -> Comparison:
    """max |ours - theirs| / max(max |theirs|, scale) over the finite entries (bench.tl.rel_diff)."""
    rel, why = rel_diff(ours, theirs, scale)
    return Comparison(name if why is None else f"{name} ({why})", rel, rel <= rtol)


def check_equivalence(model: GPT, tokens: np.ndarray, rtol: float = 1e-4) -> dict:
    """Logits and every activation both libraries cache, on the same weights and tokens."""
    logits, cache = model.run_with_cache(jnp.asarray(tokens))
    # use_attn_result: TransformerLens computes hook_result only then
    tl = hooked_transformer(model, device=DEVICE, use_attn_result=True)
    with torch.no_grad():
        tl_logits, tl_cache = tl.run_with_cache(torch_tokens(tokens))
    tl_names = set(tl_cache.keys())
    common = [n for n in cache.keys() if n in tl_names]
    results = [compare_arrays("logits", logits, tl_logits, rtol)]
    results += [compare_arrays(n, cache[n], tl_cache[n], rtol) for n in common]
    return {
        "results": results,
        "only_minillm": [n for n in cache.keys() if n not in tl_names],
        "only_tl": sorted(tl_names - set(cache.keys())),
        "ok": all(r.ok for r in results),
    }


def check_gradients(cfg: GPTConfig, batch: Batch, rtol: float = 1e-4) -> dict:
    """The training loss and the gradient of every weight, minillm (its loss_fn, jax.grad) against
    TransformerLens (the masked cross-entropy of TLTrainer, loss.backward()), on the same weights."""
    model = GPT(cfg)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, jax.tree.map(jnp.asarray, batch))
    trainer = TLTrainer(hooked_transformer(model, device=DEVICE), batch, TrainConfig())
    tl_loss = trainer.loss()
    tl_loss.backward()
    results = [compare_arrays("loss", loss, tl_loss, rtol)]
    named = dict(trainer.tl.named_parameters())
    # relative to the largest gradient entry of any weight: b_K's gradient is zero in exact arithmetic
    # (a key bias shifts every score of a query alike, which softmax ignores), so both are rounding noise
    scale = max(float(p.grad.abs().max()) for p in named.values())
    results += [
        compare_arrays(f"grad {name}", g, named[name].grad, rtol, scale) for name, g in grads.state_dict().items()
    ]
    return {"results": results, "ok": all(r.ok for r in results)}


# --- training --------------------------------------------------------------------------------------
def _fixed_batch(data, data_key, step):
    """Every step trains on the same batch, passed as the chunk's data: identical work on both sides."""
    return data


class MinillmTrainer:
    """minillm's compiled chunk of steps (what train() runs): call(n) runs n steps in one lax.scan."""

    def __init__(
        self,
        cfg: GPTConfig,
        weights,
        batch: Batch,
        tc: TrainConfig,
        seeds: list[int] | None = None,
        loss_positions: tuple[int, ...] | None = None,
    ):
        """loss_positions: the loss as train() computes it, logits at these positions only
        (`loss_fn(..., positions=task.loss_positions)`); None: at every position, as TL does."""
        optimizer = make_optimizer(tc)
        self.run_chunk = make_train_chunk(
            optimizer,
            _fixed_batch,
            n_seeds=None if seeds is None else len(seeds),
            loss=partial(loss_fn, positions=loss_positions),
        )
        if seeds is None:
            # copies: the chunk function donates (frees) the model's buffers on each call
            self.model = GPT.from_state_dict(cfg, {k: jnp.array(v) for k, v in weights.items()})
            self.opt_state = optimizer.init(self.model)
            self.key = jax.random.key(0)
        else:
            self.model, self.opt_state, self.key = init_train_state(cfg, optimizer, seeds=seeds)
        self.batch = jax.tree.map(jnp.asarray, batch)
        self.step = 0

    def __call__(self, n: int):
        self.model, self.opt_state, losses = self.run_chunk(
            self.model, self.opt_state, self.key, self.batch, self.step, n
        )
        self.step += n
        return losses


class TLTrainer:
    """A TransformerLens training loop: forward, masked cross-entropy, backward, (clip), AdamW."""

    def __init__(self, tl: HookedTransformer, batch: Batch, tc: TrainConfig):
        self.tl = tl.train()
        self.params = [p for p in tl.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay, eps=1e-8)
        self.clip = tc.grad_clip
        self.tokens = torch_tokens(batch.tokens)
        self.targets = torch_tokens(batch.targets).flatten()
        self.mask = torch.from_numpy(np.array(batch.mask, np.float32)).flatten().to(DEVICE)

    def loss(self) -> torch.Tensor:
        logits = self.tl(self.tokens)  # [b, p, v_out]
        nll = F.cross_entropy(logits.flatten(0, 1), self.targets, reduction="none")
        return (nll * self.mask).sum() / self.mask.sum()

    def step(self) -> torch.Tensor:
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        return loss.detach()

    def __call__(self, n: int):
        for _ in range(n):
            loss = self.step()
        return loss


# --- rows of the table ----------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    name: str
    tl: float | None  # seconds (per the row's unit)
    ml: float
    flops: float | None  # the work's matmul FLOPs (per the row's unit)
    unit: str = ""
    target: str = ""
    verdict: str = ""  # "met" / "MISSED" / ""
    note: str = ""
    ratio: float | None = field(default=None)  # TL / minillm unless given
    tl_same_work: bool = True  # False: the row's FLOPs are not TL's work, so no "TL % of floor"

    def __post_init__(self):
        if self.ratio is None and self.tl is not None:
            self.ratio = self.tl / self.ml


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class Bench:
    def __init__(self, quick: bool, peak: float):
        self.quick = quick
        self.peak = peak
        self.budget = 2.0 if quick else 8.0
        self.rows: list[Row] = []
        self.compile: list[tuple[str, float]] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {msg}", flush=True)

    def times(self, fns: dict[str, Callable], budget: float | None = None, **kw) -> dict[str, float]:
        return median_times(
            {name: synced(fn) for name, fn in fns.items()},
            budget_s=budget or self.budget,
            min_repeats=3 if self.quick else 7,
            max_repeats=5 if self.quick else 15,
            **kw,
        )

    def floor(self, flops: float | None) -> float | None:
        return None if flops is None else flops / self.peak

    def first_call(self, label: str, fn: Callable) -> None:
        """Time a first call (compilation included) for the compile-time table."""
        t0 = time.perf_counter()
        jax.block_until_ready(synced(fn)())
        self.compile.append((label, time.perf_counter() - t0))


def faults_per_call(fn: Callable, calls: int = 2) -> float:
    """Minor page faults per call of fn (first touches of freshly mapped memory: a buffer that the
    allocator got from the kernel anew on this call)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(synced(fn)())
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


# --- 1. training steps ------------------------------------------------------------------------------
def bench_training(
    b: Bench,
    label: str,
    cfg: GPTConfig,
    tc: TrainConfig,
    batch: Batch,
    target_ratio: float,
    peak_frac: float | None,
    loss_positions: tuple[int, ...] | None = None,
) -> None:
    """Rows of the same work on both sides (the loss's logits at every position), and with
    `loss_positions` one more: minillm's trainer as train() runs it (logits at those positions only),
    timed in the same interleaved rounds as the several-steps rows."""
    weights = {k: np.asarray(v) for k, v in GPT(cfg).state_dict().items()}
    n_batch, n_pos = batch.tokens.shape
    flops = train_step_flops(cfg, n_batch, n_pos)
    ml = MinillmTrainer(cfg, weights, batch, tc)
    tl = TLTrainer(
        hooked_transformer(GPT.from_state_dict(cfg, {k: jnp.asarray(v) for k, v in weights.items()}), device=DEVICE),
        batch,
        tc,
    )
    b.first_call(f"{label}: chunk of 1 step", lambda: ml(1))
    b.first_call(f"{label}: chunk of {STEPS_PER_CALL} steps", lambda: ml(STEPS_PER_CALL))
    ml_pos = None
    if loss_positions is not None:
        ml_pos = MinillmTrainer(cfg, weights, batch, tc, loss_positions=loss_positions)
        model, jbatch = GPT.from_state_dict(cfg, {k: jnp.asarray(v) for k, v in weights.items()}), ml.batch
        full, at_pos = float(loss_fn(model, jbatch)[0]), float(loss_fn(model, jbatch, positions=loss_positions)[0])
        same_loss = f"its loss equals the all-positions loss (rel diff {abs(at_pos - full) / abs(full):.0e})"
        b.first_call(
            f"{label}: chunk of {STEPS_PER_CALL} steps, loss positions {loss_positions}", lambda: ml_pos(STEPS_PER_CALL)
        )
    for n in (1, STEPS_PER_CALL):
        b.log(f"training step, {label}, {n} step(s) per call")
        fns = {"tl": lambda: tl(n), "ml": lambda: ml(n)}
        if ml_pos is not None and n > 1:
            fns["ml_pos"] = lambda: ml_pos(n)
        t = b.times(fns, budget=b.budget * (2 if n > 1 else 1))
        t_tl, t_ml = t["tl"] / n, t["ml"] / n
        floor = b.floor(flops)
        target = f">= {target_ratio:g}x TL"
        missed = [] if t_tl / t_ml >= target_ratio else ["ratio"]
        if peak_frac is not None:
            target += f", >= {peak_frac:.0%} of peak"
            missed += [] if floor / t_ml >= peak_frac else ["% of peak"]
        how = "one compiled call per step" if n == 1 else f"{n} steps per lax.scan call; TL a Python loop"
        faults = faults_per_call(lambda: ml(n)), faults_per_call(lambda: tl(n))
        how += f"; page faults per call: minillm {faults[0]:,.0f}, TL {faults[1]:,.0f}"
        b.rows.append(
            Row(
                "training step",
                f"{label}, {'1 step' if n == 1 else f'{n} steps'}/call",
                t_tl,
                t_ml,
                flops,
                "per step",
                target,
                "met" if not missed else f"MISSED ({', '.join(missed)})",
                how,
            )
        )
        if "ml_pos" in t:
            t_pos = t["ml_pos"] / n
            at = ", ".join(map(str, loss_positions))
            b.rows.append(
                Row(
                    "training step",
                    f"{label}, {n} steps/call, minillm's trainer (logits at position {at} only)",
                    t_tl,
                    t_pos,
                    train_step_flops(cfg, n_batch, n_pos, out_positions=len(loss_positions)),
                    "per step",
                    note=f"NOT the same work: minillm's trainer as train() runs it, loss_fn(positions=({at},)): "
                    f"the last block's queries, W_O, MLP and the unembed at {len(loss_positions)} of {n_pos} "
                    f"positions; TL's step computes the logits at all {n_pos}, so this ratio counts the "
                    "library's trainer, not equal work; its floor counts its own (smaller) FLOPs; "
                    f"{same_loss}; {n} steps per lax.scan call",
                    tl_same_work=False,
                )
            )


# --- 2. forward and run_with_cache --------------------------------------------------------------------
def bench_forward(b: Bench, label: str, cfg: GPTConfig, tokens: np.ndarray) -> None:
    model = GPT(cfg)
    tl = hooked_transformer(model, device=DEVICE)
    tl_cache_model = hooked_transformer(model, device=DEVICE, use_attn_result=True)  # caches hook_result, like minillm
    tt, jt = torch_tokens(tokens), jnp.asarray(tokens)
    fwd = jax.jit(lambda m, t: m(t))
    cached = jax.jit(lambda m, t: m.run_with_cache(t))
    flops = forward_flops(cfg, *tokens.shape)
    b.first_call(f"{label}: forward", lambda: fwd(model, jt))
    b.first_call(f"{label}: run_with_cache", lambda: cached(model, jt))

    def tl_fwd():
        with torch.no_grad():
            return tl(tt)

    def tl_cached():
        with torch.no_grad():
            return tl_cache_model.run_with_cache(tt)

    b.log(f"forward and run_with_cache, {label}")
    t = b.times(
        {
            "tl": tl_fwd,
            "ml": lambda: fwd(model, jt),
            "ml_eager": lambda: model(jt),
            "tl_c": tl_cached,
            "ml_c": lambda: cached(model, jt),
            "ml_c_eager": lambda: model.run_with_cache(jt),
        }
    )
    shape = f"batch {tokens.shape[0]} x {tokens.shape[1]}"
    b.rows.append(
        Row("forward", f"{label} forward, {shape}", t["tl"], t["ml"], flops, "per call", note="minillm jitted")
    )
    b.rows.append(
        Row(
            "forward",
            f"{label} forward, minillm eager",
            t["tl"],
            t["ml_eager"],
            flops,
            "per call",
            note="minillm called without jit, as in a notebook",
        )
    )
    b.rows.append(
        Row(
            "forward",
            f"{label} run_with_cache (all hooks)",
            t["tl_c"],
            t["ml_c"],
            flops,
            "per call",
            note="minillm jitted; TL use_attn_result=True",
        )
    )
    b.rows.append(
        Row(
            "forward",
            f"{label} run_with_cache, minillm eager",
            t["tl_c"],
            t["ml_c_eager"],
            flops,
            "per call",
            note="minillm called without jit",
        )
    )


# --- 3 and 4. patching ------------------------------------------------------------------------------------
def induction_model() -> tuple[GPT, str]:
    if os.path.exists(INDUCTION_CHECKPOINT):
        model = GPT.load(INDUCTION_CHECKPOINT)
        ignore = {"seed": 0, "init_range": 0.0}
        if model.cfg.to_dict() | ignore == INDUCTION.to_dict() | ignore:
            return model, "the trained induction model (lessons/checkpoints/induction)"
    return GPT(INDUCTION), "a randomly initialised model (the induction checkpoint was not found)"


def patching_tokens(seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Clean: BOS, 31 random tokens, the same 31 again, one random token (64 positions).
    Corrupted: the first 31 replaced by other random tokens, so the copy is no longer predictable.
    The metric's positions: the copy's tokens 32..61, each predicting the next one by induction."""
    rng = np.random.default_rng(seed)
    half = 31
    seg = rng.integers(1, INDUCTION.d_vocab, (PATCH_BATCH, half))
    other = rng.integers(1, INDUCTION.d_vocab, (PATCH_BATCH, half))
    last = rng.integers(1, INDUCTION.d_vocab, (PATCH_BATCH, 1))
    bos = np.zeros((PATCH_BATCH, 1), np.int64)
    clean = np.concatenate([bos, seg, seg, last], axis=1).astype(np.int32)
    corrupted = np.concatenate([bos, other, seg, last], axis=1).astype(np.int32)
    return clean, corrupted, half + 1, 2 * half  # metric over query positions [32, 62)


def bench_patching(b: Bench) -> None:
    model, about = induction_model()
    b.notes.append(
        f"Patching rows use {about}, batch {PATCH_BATCH}, 64 positions; metric: mean log-prob of "
        "the next token over the repeated half (positions 32..61), clean = BOS + 31 random tokens + "
        "the same 31 + 1, corrupted = the first 31 replaced."
    )
    clean, corrupted, q0, q1 = patching_tokens()
    targets = clean[:, q0 + 1 : q1 + 1]
    jtargets, ttargets = jnp.asarray(targets), torch_tokens(targets)

    def metric(logits):  # JAX, traced inside minillm's sweeps
        logp = jax.nn.log_softmax(logits[:, q0:q1], axis=-1)
        return jnp.take_along_axis(logp, jtargets[..., None], axis=-1).mean()

    def tl_metric(logits):  # the same in PyTorch
        logp = logits[:, q0:q1].log_softmax(-1)
        return logp.gather(-1, ttargets[..., None]).mean()

    tl = hooked_transformer(model, device=DEVICE)
    tl_clean, tl_corrupted = torch_tokens(clean), torch_tokens(corrupted)
    with torch.no_grad():
        _, tl_clean_cache = tl.run_with_cache(tl_clean)
        clean_metric_tl = float(tl_metric(tl(tl_clean)))
        corrupted_metric_tl = float(tl_metric(tl(tl_corrupted)))
    _, clean_cache = model.run_with_cache(jnp.asarray(clean))
    corrupted_metric = float(metric(model(jnp.asarray(corrupted))))
    b.notes.append(
        f"Patching metric: clean {float(metric(model(jnp.asarray(clean)))):.3f}, corrupted "
        f"{corrupted_metric:.3f} (TransformerLens: {clean_metric_tl:.3f}, {corrupted_metric_tl:.3f})."
    )
    tlp.tqdm = lambda it, *a, **k: it  # silence TransformerLens' progress bar (and its cost)

    n_pos = clean.shape[1]
    for label, hook, n_per_layer, ml_sweep, ml_attr, tl_sweep in [
        (
            f"head out by pos, hook_z ({INDUCTION.n_layers * n_pos * INDUCTION.n_heads} patches)",
            "z",
            n_pos * INDUCTION.n_heads,
            P.get_act_patch_attn_head_out_by_pos,
            P.get_attr_patch_attn_head_out_by_pos,
            tlp.get_act_patch_attn_head_out_by_pos,
        ),
        (
            f"resid_pre by pos ({INDUCTION.n_layers * n_pos} patches)",
            "resid_pre",
            n_pos,
            P.get_act_patch_resid_pre,
            P.get_attr_patch_resid_pre,
            tlp.get_act_patch_resid_pre,
        ),
    ]:
        b.log(f"patching sweep: {label}")
        jc = jnp.asarray(corrupted)
        run_ml = lambda: ml_sweep(model, jc, clean_cache, metric)
        run_attr = lambda: ml_attr(model, jc, clean_cache, metric)
        # the same function under one jax.jit, as a caller can wrap it (the library calls it eagerly)
        attr_jit = jax.jit(lambda m, t, c: ml_attr(m, t, c, metric))
        run_attr_jit = lambda: attr_jit(model, jc, clean_cache)

        def run_tl():
            with torch.no_grad():
                return tl_sweep(tl, tl_corrupted, tl_clean_cache, tl_metric)

        b.first_call(f"patching {label}", run_ml)
        b.first_call(f"attribution {label}", run_attr)
        b.first_call(f"attribution {label}, under jax.jit", run_attr_jit)
        t = b.times({"tl": run_tl, "ml": run_ml, "attr": run_attr, "attr_jit": run_attr_jit}, budget=b.budget * 2)
        exact, ours_tl = np.asarray(run_ml()), to_numpy(run_tl())
        estimate = np.asarray(run_attr())
        assert np.allclose(estimate, np.asarray(run_attr_jit()), atol=1e-5)
        effect = exact - corrupted_metric
        corr = float(np.corrcoef(estimate.ravel(), effect.ravel())[0, 1])
        maxdiff = float(np.abs(estimate - effect).max())
        agree = float(np.abs(exact - ours_tl).max())
        flops = sweep_flops(INDUCTION, PATCH_BATCH, n_pos, n_per_layer, hook)
        b.rows.append(
            Row(
                "patching",
                label,
                t["tl"],
                t["ml"],
                flops,
                "per sweep",
                ">= 2.5x TL",
                verdict(t["tl"] / t["ml"] >= 2.5),
                f"max |minillm - TL| {agree:.1e}; range of effects {np.ptp(effect):.2f}",
            )
        )
        b.rows.append(
            Row(
                "attribution",
                label,
                t["tl"],
                t["attr"],
                attribution_flops(INDUCTION, PATCH_BATCH, n_pos),
                "per sweep",
                ">= 100x TL exact",
                verdict(t["tl"] / t["attr"] >= 100),
                f"vs exact: corr {corr:.3f}, max |diff| {maxdiff:.3f}; TL column: its exact sweep",
            )
        )
        b.rows.append(
            Row(
                "attribution",
                label + ", wrapped in jax.jit by the caller",
                t["tl"],
                t["attr_jit"],
                attribution_flops(INDUCTION, PATCH_BATCH, n_pos),
                "per sweep",
                ">= 100x TL exact",
                verdict(t["tl"] / t["attr_jit"] >= 100),
                "jax.jit(lambda m, t, c: get_attr_patch_...(m, t, c, metric)); same values",
            )
        )


# --- 5. seeds ----------------------------------------------------------------------------------------------
def bench_seeds(b: Bench, batch: Batch) -> None:
    n = STEPS_PER_CALL
    flops = train_step_flops(INDUCTION, *batch.tokens.shape)
    seeds = list(range(N_SEEDS))
    one = MinillmTrainer(INDUCTION, GPT(INDUCTION).state_dict(), batch, INDUCTION_TC)
    in_turn = [MinillmTrainer(INDUCTION, GPT(INDUCTION, seed=s).state_dict(), batch, INDUCTION_TC) for s in seeds]
    together = MinillmTrainer(INDUCTION, None, batch, INDUCTION_TC, seeds=seeds)
    tl_one = TLTrainer(hooked_transformer(GPT(INDUCTION), device=DEVICE), batch, INDUCTION_TC)
    tl_turn = [TLTrainer(hooked_transformer(GPT(INDUCTION, seed=s), device=DEVICE), batch, INDUCTION_TC) for s in seeds]
    b.first_call(f"{N_SEEDS} seeds vmapped, chunk of {n} steps", lambda: together(n))

    def ml_turn():
        return [tr(n) for tr in in_turn]

    def tl_in_turn():
        return [tr(n) for tr in tl_turn]

    b.log(f"{N_SEEDS} seeds: together, in turn, one")
    t = b.times(
        {
            "ml_one": lambda: one(n),
            "ml_turn": ml_turn,
            "ml_together": lambda: together(n),
            "tl_one": lambda: tl_one(n),
            "tl_turn": tl_in_turn,
        },
        budget=b.budget * 4,
    )
    per = lambda s, k: s / (n * k)  # seconds per seed-step
    base = per(t["ml_turn"], N_SEEDS)
    b.rows.append(
        Row(
            "seeds",
            "induction, 1 seed",
            per(t["tl_one"], 1),
            per(t["ml_one"], 1),
            flops,
            "per seed-step",
            note=f"{n} steps per call",
        )
    )
    b.rows.append(
        Row(
            "seeds",
            f"induction, {N_SEEDS} seeds in turn",
            per(t["tl_turn"], N_SEEDS),
            base,
            flops,
            "per seed-step",
            note=f"{N_SEEDS} models one after another, {n} steps per call each",
        )
    )
    together_s = per(t["ml_together"], N_SEEDS)
    faults_turn = faults_per_call(ml_turn, 1) / N_SEEDS
    faults_together = faults_per_call(lambda: together(n), 1)
    b.rows.append(
        Row(
            "seeds",
            f"induction, {N_SEEDS} seeds together (vmap)",
            per(t["tl_turn"], N_SEEDS),
            together_s,
            flops,
            "per seed-step",
            f"throughput >= {N_SEEDS} in turn",
            verdict(together_s <= base),
            f"{base / together_s:.2f}x the throughput of {N_SEEDS} in turn; TL column: {N_SEEDS} in turn; "
            f"page faults per call of {n} steps: {faults_together:,.0f} together, {faults_turn:,.0f} per seed "
            "in turn",
        )
    )


# --- output ---------------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "minillm", "torch", "transformer-lens"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def table(rows: list[Row], peak: float) -> list[list[str]]:
    head = [
        "benchmark",
        "TransformerLens",
        "minillm",
        "TL / minillm",
        "floor",
        "minillm % of floor",
        "TL % of floor",
        "target",
        "",
        "notes",
    ]
    out = [head]
    for r in rows:
        floor = None if r.flops is None else r.flops / peak
        out.append(
            [
                f"{r.section}: {r.name} ({r.unit})",
                fmt_time(r.tl),
                fmt_time(r.ml),
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                fmt_time(floor),
                "-" if floor is None else f"{100 * floor / r.ml:.0f}%",
                "-" if floor is None or r.tl is None or not r.tl_same_work else f"{100 * floor / r.tl:.0f}%",
                r.target,
                r.verdict,
                r.note,
            ]
        )
    return out


def targets_summary(rows: list[Row], peak: float) -> list[str]:
    out = []
    for r in rows:
        if not r.target:
            continue
        where = f"{r.ratio:.2f}x TL" if r.ratio is not None else ""
        if r.flops is not None:
            where += f", {100 * r.flops / peak / r.ml:.0f}% of peak"
        out.append(f"{r.verdict:<8} {r.section}: {r.name}: {where} (target {r.target})")
    return out


def print_table(cells: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    for k, row in enumerate(cells):
        print(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            + "  "
            + row[-1]
        )
        if k == 0:
            print("-" * (sum(widths) + 2 * len(widths) + 10))


def markdown_table(cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats; print only (unless --out is given)")
    ap.add_argument(
        "--out", default=None, help="where to write the results (default bench/RESULTS.md; none with --quick)"
    )
    ap.add_argument("--json", default=None, help="also write the rows as JSON here, rewritten after each section")
    ap.add_argument(
        "--check-only", action="store_true", help="only the equivalence checks (same weights, same numbers): no timings"
    )
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="the torch device TransformerLens runs on (JAX uses its default backend: a GPU when jax[cuda13] or "
        "jax[cuda12] is installed); bash bench/run_gpu.sh and bench/device_check.sh run --device cuda",
    )
    args = ap.parse_args()
    if args.out is None and not args.quick and not args.check_only:
        args.out = os.path.join(HERE, "RESULTS.md")
    global DEVICE, COMMAND
    DEVICE = args.device
    jax_device = jax.devices()[0]
    print(f"JAX devices: {jax.devices()}; TransformerLens on torch device {DEVICE!r}", flush=True)
    if DEVICE == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device (is the CUDA build of torch installed?)")
        if jax_device.platform != "gpu":
            msg = f"--device cuda: JAX runs on {jax_device.platform}, not a GPU (install jax[cuda13] or jax[cuda12])"
            if not args.quick:
                sys.exit(msg)
            print("warning: " + msg, flush=True)
        # float32 as IEEE float32 on both sides, as on the CPU: XLA would use TF32 for float32 matmuls on
        # a GPU by default (PyTorch does not), which is neither the same work nor equal within 1e-4
        jax.config.update("jax_default_matmul_precision", "highest")
        COMMAND = "bash bench/run_gpu.sh"
    load_before = os.getloadavg()
    started = datetime.datetime.now().astimezone()

    sizes = PEAK_SIZES[DEVICE]
    jax_peak = torch_peak = 0.0
    torch_bf16_peak = None
    if not args.check_only:
        jax_peak = matmul_peak_flops(sizes)
        torch_peak = torch_matmul_peak(sizes)  # as matmul_peak_flops: the fastest of several
        torch_bf16_peak = torch_matmul_peak(sizes, torch.bfloat16) if DEVICE == "cuda" else None
    peak = max(jax_peak, torch_peak)
    b = Bench(args.quick, peak)
    if not args.check_only:
        b.log(
            f"float32 matmul peak (best of {' and '.join(f'{n}^3' for n in sizes)}): jax {jax_peak / 1e9:.1f}, "
            f"torch {torch_peak / 1e9:.1f} GFLOP/s; the floors use the larger"
            + (
                ""
                if torch_bf16_peak is None
                else f" (torch bfloat16, for reference: {torch_bf16_peak / 1e9:.1f} GFLOP/s)"
            )
        )

    # equivalence: same weights, same logits and activations
    b.log("equivalence check: minillm weights in a HookedTransformer")
    rng = np.random.default_rng(1)
    checks = {}
    induction, _ = induction_model()
    for label, model, tokens in [
        ("grokking (random weights)", GPT(GROK), make_task("modular_arithmetic", p=113).split(0)[0].tokens[:256]),
        ("induction (random weights)", GPT(INDUCTION), rng.integers(0, 64, (4, 64)).astype(np.int32)),
        ("induction (trained checkpoint)", induction, patching_tokens()[0]),
    ]:
        checks[label] = check_equivalence(model, np.asarray(tokens))
        worst = max(checks[label]["results"], key=lambda r: r.rel_diff)
        b.log(
            f"  {label}: {'OK' if checks[label]['ok'] else 'FAILED'}: logits and "
            f"{len(checks[label]['results']) - 1} activations, worst {worst.name} rel diff {worst.rel_diff:.1e}"
        )
    grok_task = make_task("modular_arithmetic", p=113, op="add", frac_train=0.3)
    grok_batch = grok_task.split(0)[0]
    task = make_task("repeated_tokens", d_vocab=64, seq_len=64, min_len=4, max_len=31)
    induction_batch = jax.tree.map(np.asarray, task.sample(jax.random.key(0), 64))
    for label, cfg, batch in [
        ("grokking: training loss and gradients", GROK, grok_batch),
        ("induction: training loss and gradients", INDUCTION, induction_batch),
    ]:
        checks[label] = check_gradients(cfg, batch)
        worst = max(checks[label]["results"], key=lambda r: r.rel_diff)
        b.log(
            f"  {label}: {'OK' if checks[label]['ok'] else 'FAILED'}: loss and "
            f"{len(checks[label]['results']) - 1} gradients, worst {worst.name} rel diff {worst.rel_diff:.1e}"
        )
    ok = all(c["ok"] for c in checks.values())
    save_json(args.json, b, checks, args.check_only)
    if not ok:
        for label, c in checks.items():
            for r in c["results"]:
                if not r.ok:
                    print(f"MISMATCH {label}: {r.name}: {r.rel_diff:.2e}")
        sys.exit("the two libraries disagree on the same weights: the timings would compare different work")
    if args.check_only:
        b.log("the two libraries agree on the same weights (--check-only: no timings)")
        return

    grok_label = f"grokking ({grok_batch.tokens.shape[0]} x 3)"
    # (2,): the "=" position, as train() computes the loss
    grok_positions = grok_task.loss_positions
    sections = [
        lambda: bench_training(b, grok_label, GROK, GROK_TC, grok_batch, 1.0, 0.8, loss_positions=grok_positions),
        lambda: bench_training(b, "induction (64 x 64)", INDUCTION, INDUCTION_TC, induction_batch, 1.5, None),
        lambda: bench_forward(b, "grokking", GROK, np.asarray(grok_batch.tokens)),
        lambda: bench_forward(b, "induction", INDUCTION, induction_batch.tokens),
        lambda: bench_patching(b),
        lambda: bench_seeds(b, induction_batch),
    ]
    for section in sections:
        section()
        save_json(args.json, b, checks)  # what is done so far survives a time limit

    cells = table(b.rows, b.peak)
    print()
    print_table(cells)
    print("\ntargets:")
    for line in targets_summary(b.rows, b.peak):
        print("  " + line)
    print("\ncompile times (first call, minillm):")
    for label, s in b.compile:
        print(f"  {label}: {fmt_time(s)}")
    for note in b.notes:
        print(note)
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - b.t0
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {elapsed:.0f} s in all")
    if not args.out:
        return
    write_results(
        args.out,
        cells,
        b,
        checks,
        jax_peak,
        torch_peak,
        torch_bf16_peak,
        started,
        load_before,
        load_after,
        elapsed,
        targets_summary(b.rows, b.peak),
    )
    print(f"wrote {args.out}")


def save_json(path: str | None, b: Bench, checks: dict, check_only: bool = False) -> None:
    """The equivalence verdict and the rows so far (seconds, FLOPs, floor, target, verdict), for
    bench/device_check.sh: rewritten after each section, so a run stopped by a time limit keeps them."""
    if not path:
        return
    out = {
        "device": DEVICE,
        "jax_device": str(jax.devices()[0]),
        "check_only": check_only,
        "checks_ok": all(c["ok"] for c in checks.values()),
        "checks": {k: {"ok": c["ok"], "worst": max(r.rel_diff for r in c["results"])} for k, c in checks.items()},
        "peak": b.peak,
        "rows": [
            {
                "section": r.section,
                "name": r.name,
                "unit": r.unit,
                "tl": r.tl,
                "ml": r.ml,
                "ratio": r.ratio,
                "flops": r.flops,
                "floor": b.floor(r.flops),
                "target": r.target,
                "verdict": r.verdict,
                "note": r.note,
            }
            for r in b.rows
        ],
        "compile": b.compile,
    }
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)


def write_results(
    path,
    cells,
    b: Bench,
    checks,
    jax_peak,
    torch_peak,
    torch_bf16_peak,
    started,
    load_before,
    load_after,
    elapsed,
    targets,
):
    v = versions()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 2**20:.0f} GiB memory"
    except OSError:
        pass
    sizes = " and ten ".join(f"{n}^3" for n in PEAK_SIZES[DEVICE])
    if DEVICE == "cuda":
        gpu = (
            f"- GPU: {torch.cuda.get_device_name()}; TransformerLens on torch device cuda, JAX on "
            f"{jax.devices()[0].device_kind} ({jax.devices()[0].platform}). Float32 matmuls as IEEE float32 "
            "on both sides (JAX's default_matmul_precision 'highest', PyTorch's default; no TF32). Timers read "
            "after torch.cuda.synchronize() and jax.block_until_ready."
        )
        if torch_bf16_peak is not None:
            gpu += f" PyTorch's bfloat16 matmul peak, for reference: {torch_bf16_peak / 1e12:.0f} TFLOP/s."
    lines = [
        "# minillm against TransformerLens"
        + (" (GPU)" if DEVICE == "cuda" else "")
        + (" (--quick: fewer repeats)" if b.quick else ""),
        "",
        f"Written by `{COMMAND}` (bench/vs_transformer_lens.py) on {started:%Y-%m-%d %H:%M %Z}; "
        f"run it again to regenerate this file. It took {elapsed / 60:.1f} minutes.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}.",
        f"- Load average (1 min) before the run {load_before[0]:.2f}, after {load_after[0]:.2f}: a load well "
        "above 0 means something else shared the CPU and the timings are noisy.",
        "- Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f"; torch threads {torch.get_num_threads()}.",
        *([gpu] if DEVICE == "cuda" else []),
        f"- Float32 matmul peak (the fastest of ten {sizes} products): "
        f"JAX {jax_peak / 1e9:.1f} GFLOP/s, PyTorch "
        f"{torch_peak / 1e9:.1f} GFLOP/s. The floor of a row is its matmul FLOPs (formulas in "
        f"`forward_flops` and beside it) over the larger, {b.peak / 1e9:.1f} GFLOP/s: the hardware's, not "
        f"either library's ({'PyTorch' if torch_peak < jax_peak else 'JAX'}'s own matmuls reach the lower "
        "figure on this machine).",
        "",
        "Times are medians over interleaved calls (TransformerLens, minillm, TransformerLens, ...). "
        '"TL / minillm" above 1 means minillm is faster. minillm runs compiled (jax.jit; training in '
        "minillm's own chunk of steps, `lax.scan`), TransformerLens eagerly as PyTorch does, inference "
        "under `torch.no_grad()`. Same weights, same batches, same loss, optax AdamW vs torch AdamW with "
        "the same hyperparameters.",
        "",
        markdown_table(cells),
        "",
        "## Targets (issue 9)",
        "",
        *[f"- {line}" for line in targets],
        "",
        "## Same weights, same numbers",
        "",
        "minillm's weights and config, as `model.to_transformer_lens()` exports them, in a `HookedTransformer` "
        "(`use_attn_result=True` so that it computes `hook_result`); the largest "
        "difference relative to the largest magnitude of each tensor (finite entries; the masked `-inf` "
        "attention scores must match exactly). The gradient rows compare minillm's training loss and "
        "`jax.grad` with the benchmark's PyTorch loss and `loss.backward()` on the training batches, "
        "relative to the largest gradient entry of any weight (`b_K`'s gradient is zero in exact "
        "arithmetic, so both sides hold rounding noise there).",
        "",
        "| model | result | logits (or loss) | worst activation (or gradient) | tensors compared "
        "| only in minillm's cache | only in TL's cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, c in checks.items():
        first = c["results"][0]
        worst = max(c["results"][1:], key=lambda r: r.rel_diff)
        lines.append(
            f"| {label} | {'equal within 1e-4' if c['ok'] else 'DIFFERENT'} | {first.rel_diff:.1e} | "
            f"{worst.name} {worst.rel_diff:.1e} | {len(c['results']) - 1} | "
            f"{', '.join(c.get('only_minillm', [])) or '-'} | {', '.join(c.get('only_tl', [])) or '-'} |"
        )
    lines += ["", "## Compile time (minillm, first call, excluded from the medians)", ""]
    lines += [f"- {label}: {fmt_time(s)}" for label, s in b.compile]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in b.notes]
    lines += [
        f"- Training: {STEPS_PER_CALL} steps per call for the several-steps rows; the grokking batch is "
        "minillm's own split (round(0.3 * 113^2) = 3831 pairs), the induction batch one draw of 64 "
        "sequences from minillm's `repeated_tokens` task, fixed across steps on both sides.",
        "- Patching floors count the work a sweep cannot avoid when each patch re-runs the model from the "
        "patched activation to the logits (`sweep_flops`); TransformerLens re-runs all layers for each patch. "
        "Attribution's floor is one forward and one backward pass (activation gradients only).",
        *(
            [
                "- Page faults per call (training rows): XLA on the CPU takes a call's buffers from the allocator "
                "afresh on every call, and glibc hands buffers this large back to the kernel when they are freed, "
                "so every call first-touches them again; PyTorch's steady state reuses its memory. This is the "
                "cost of one compiled call per step that `steps_per_call` amortises."
            ]
            if DEVICE == "cpu"
            else []
        ),
        f"- Seeds: per seed-step times; {N_SEEDS} seeds together is minillm's vmapped chunk "
        "(`train(..., seeds=[...])`), in turn is one chunk per seed after another.",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
