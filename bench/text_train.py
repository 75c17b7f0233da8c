"""nanoGPT's CPU config on Shakespeare's characters: minillm's trainer, TransformerLens with torch's
AdamW on the same batches, and (given a nanoGPT checkout) nanoGPT's own train.py, beside the floor.

    bash bench/run.sh --text                                       # builds bench/.venv-tl, then runs this
    bench/.venv-tl/bin/python bench/text_train.py --nanogpt DIR    # also nanoGPT's train.py (a checkout
                                                                   # or a bare git dir; never copied here)
    bench/.venv-tl/bin/python bench/text_train.py --quick          # 200 steps, for development

The config is the one nanoGPT's README gives for a CPU: 4 layers, 4 heads, d_model 128, context 64,
batch 12, 2,000 steps, lr 1e-3 with 100 warmup steps and a cosine decay to 1e-4, AdamW betas (0.9,
0.99), weight decay 0.1, gradient clipping at 1, no dropout; here with the exact GELU (nanoGPT's),
LayerNorm, d_mlp 512 (0.83 M parameters with minillm's untied embedding and unembedding and its
biases; nanoGPT's tied, bias-free model has 0.80 M). The corpus is minillm's Shakespeare in
characters (`TextTask(tokenizer="chars", seq_len=64)`: training works, held-out validation works).

What runs, and how it is timed:
- minillm's trainer: the chunk of steps that `train()` runs (`make_train_chunk` with the task's own
  batches, drawn inside the compiled chunk from the run's key and the step number), `--k` steps per
  call, on one device; and the same with the batch split over `--cpu-devices` CPU devices
  (`train(..., mesh=minillm.sharding.local_mesh())`; the script asks JAX for that many CPU devices
  before it starts). Compilation happens on a throwaway copy first and is reported apart.
- TransformerLens 3.x: a `HookedTransformer` with minillm's initial weights (bench/tl.py), eager
  PyTorch, `torch.optim.AdamW` with the same hyperparameters, the same schedule (minillm's
  `lr_schedule`, set each step), `clip_grad_norm_`, on exactly the batches minillm's trainer draws
  (computed from the same key and step numbers and handed over as arrays).
- The three run interleaved, a call of `--k` steps each in turn, so that a change of load hits all;
  each row's time is the median over its calls, per step.
- The fast path for a loop of one's own (`make_train_steps`, README "Speed"): fewer steps, one step
  per call and `--k` per call, and for reference an `nnx.jit` step with `nnx.Optimizer` per call.
- nanoGPT (with --nanogpt): its train.py, model.py and configurator.py are read from the checkout into
  a temporary folder with the corpus written in its format (train.bin: the training works,
  val.bin: the validation works, meta.pkl: minillm's 97-token alphabet), run as its README says for
  a CPU (plus --dtype=float32 and one evaluation at the end), in its own process after the others;
  its time is the median of the per-iteration times it prints (the iterations that evaluate left
  out). It draws its own batches and initialises its own way.
- Losses: the mean training loss of the last 100 steps, and the loss on `--eval-windows` fixed
  windows of the validation works (the same windows for minillm and TransformerLens; nanoGPT's
  own estimate over 200 random batches of the same works).
- Floor: the step's matmul FLOPs (bench/vs_transformer_lens.py `train_step_flops`: 3x the forward's,
  attention included) and the usual 6 x parameters x tokens, over the measured float32 matmul peak.
"""

from __future__ import annotations

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--k", type=int, default=20, help="steps per compiled call (the trainer's steps_per_call)")
parser.add_argument("--cpu-devices", type=int, default=2, help="CPU devices for the data-parallel row (1: no row)")
parser.add_argument("--eval-windows", type=int, default=2400, help="validation windows of 64 characters")
parser.add_argument("--fast-path-steps", type=int, default=200)
parser.add_argument("--nanogpt", default=None, help="a nanoGPT checkout (work tree or bare git dir) to run too")
parser.add_argument("--quick", action="store_true", help="200 steps, 240 windows, no nanoGPT")
parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
ARGS = parser.parse_args() if __name__ == "__main__" else parser.parse_args([])
if ARGS.quick:
    ARGS.steps, ARGS.eval_windows, ARGS.fast_path_steps, ARGS.nanogpt = 200, 240, 60, None

import jax  # noqa: E402

if ARGS.cpu_devices > 1:  # before JAX starts its backend: one CPU device per core, for the mesh row
    jax.config.update("jax_num_cpu_devices", ARGS.cpu_devices)

import json  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flax import nnx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from bench.common import cpu_model, matmul_peak_flops  # noqa: E402
from bench.tl import hooked_transformer  # noqa: E402
from bench.vs_transformer_lens import PEAK_SIZES, torch_matmul_peak, train_step_flops  # noqa: E402
from minillm import GPT, GPTConfig, sharding  # noqa: E402
from minillm.model.losses import evaluate, loss_fn  # noqa: E402
from minillm.training import TrainConfig, lr_schedule, make_optimizer, make_train_steps  # noqa: E402
from minillm.training.step import init_train_state, make_train_chunk, task_batches  # noqa: E402
from minillm.training.text import TextTask  # noqa: E402

BATCH, SEQ = 12, 64
TASK = TextTask(tokenizer="chars", seq_len=SEQ, n_eval=ARGS.eval_windows)
CFG = GPTConfig(
    n_layers=4,
    d_model=128,
    n_heads=4,
    n_ctx=SEQ,
    d_vocab=TASK.d_vocab,
    d_mlp=512,
    act_fn="gelu",
    normalization_type="LN",
)
TC = TrainConfig(
    steps=ARGS.steps,
    lr=1e-3,
    warmup_steps=100,
    schedule="cosine",
    final_lr_frac=0.1,
    betas=(0.9, 0.99),
    weight_decay=0.1,
    grad_clip=1.0,
    batch_size=BATCH,
    steps_per_call=ARGS.k,
    eval_every=ARGS.steps,
    checkpoint_every=ARGS.steps,
)
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timed:
    """A contender: call() runs `k` steps and returns their losses; times and CPU per call are kept."""

    def __init__(self, name, call, k):
        self.name, self.call, self.k = name, call, k
        self.walls, self.cpus, self.losses = [], [], []

    def __call__(self):
        c0, t0 = cpu_seconds(), time.perf_counter()
        losses = np.asarray(self.call())
        self.walls.append((time.perf_counter() - t0) / self.k)
        self.cpus.append((cpu_seconds() - c0) / self.k)
        self.losses.extend(np.ravel(losses).tolist())

    def ms_per_step(self) -> float:
        return 1e3 * statistics.median(self.walls)

    def cpu_ms_per_step(self) -> float:
        return 1e3 * statistics.median(self.cpus)


# --- minillm ---------------------------------------------------------------------------------------
def minillm_trainer(name: str, data, mesh=None):
    """train()'s chunk of steps from a fresh state of seed 0; compiled first on a throwaway copy."""
    optimizer = make_optimizer(TC)
    run_chunk = make_train_chunk(optimizer, task_batches(TASK, BATCH), mesh=mesh)

    def fresh():
        state = init_train_state(CFG, optimizer, TC.seed)
        return state if mesh is None else sharding.replicate(state, mesh)

    t0 = time.perf_counter()
    model, opt_state, key = fresh()
    jax.block_until_ready(run_chunk(model, opt_state, key, data, 0, ARGS.k))
    compile_s = time.perf_counter() - t0
    state = list(fresh()) + [0]

    def call():
        state[0], state[1], losses = run_chunk(state[0], state[1], state[2], data, state[3], ARGS.k)
        state[3] += ARGS.k
        return losses

    timed = Timed(name, call, ARGS.k)
    timed.model = lambda: state[0]
    timed.compile_s = compile_s
    return timed


def the_trainers_batches(data) -> tuple[np.ndarray, np.ndarray]:
    """tokens and targets [steps, batch, seq] that minillm's trainer draws at steps 0 .. steps - 1."""
    _, _, key = init_train_state(CFG, make_optimizer(TC), TC.seed)
    draw = jax.jit(jax.vmap(lambda s: task_batches(TASK, BATCH)(data, key, s)))
    batches = draw(jnp.arange(TC.steps))
    return np.asarray(batches.tokens), np.asarray(batches.targets)


# --- TransformerLens -----------------------------------------------------------------------------
def tl_trainer(tokens: np.ndarray, targets: np.ndarray):
    """HookedTransformer with minillm's initial weights; torch AdamW; the trainer's batches."""
    tl = hooked_transformer(GPT(CFG, seed=TC.seed)).train()
    params = [p for p in tl.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=TC.lr, betas=TC.betas, weight_decay=TC.weight_decay, eps=1e-8)
    lrs = np.asarray(jax.vmap(lr_schedule(TC))(jnp.arange(TC.steps)), np.float64)  # optax's count 0, 1, ...
    tokens_t, targets_t = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))
    step = [0]

    def one(i):
        for group in opt.param_groups:
            group["lr"] = float(lrs[i])
        logits = tl(tokens_t[i])
        loss = F.cross_entropy(logits.flatten(0, 1), targets_t[i].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, TC.grad_clip)
        opt.step()
        return loss.detach()

    def call():
        losses = [one(step[0] + j) for j in range(ARGS.k)]
        step[0] += ARGS.k
        return torch.stack(losses).numpy()

    timed = Timed("TransformerLens 3.9 + torch AdamW", call, ARGS.k)
    timed.tl = tl
    return timed


def tl_eval(tl, batch) -> float:
    tl.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, batch.tokens.shape[0], 128):
            logits = tl(torch.from_numpy(np.asarray(batch.tokens[i : i + 128], np.int64)))
            nll = F.cross_entropy(
                logits.flatten(0, 1),
                torch.from_numpy(np.asarray(batch.targets[i : i + 128], np.int64)).flatten(),
                reduction="none",
            )
            mask = torch.from_numpy(np.asarray(batch.mask[i : i + 128], np.float32)).flatten()
            total += float((nll * mask).sum())
            count += float(mask.sum())
    return total / count


# --- the fast path for a loop of one's own ------------------------------------------------------------
def fast_path_rows(tokens: np.ndarray, targets: np.ndarray) -> list[dict]:
    """make_train_steps with one step per call and with k per call, and an nnx.jit step with
    nnx.Optimizer (one call per step), on the trainer's first batches; medians per step."""
    from minillm.tasks import Batch

    n = ARGS.fast_path_steps - ARGS.fast_path_steps % ARGS.k
    optimizer = make_optimizer(TC)
    stacked = Batch(jnp.asarray(tokens[:n]), jnp.asarray(targets[:n]), jnp.ones(tokens[:n].shape, jnp.float32))
    train_steps = make_train_steps(optimizer)
    rows = []
    for per_call in (1, ARGS.k):
        model = GPT(CFG, seed=TC.seed)
        opt_state = optimizer.init(model)
        calls = [jax.tree.map(lambda x, i=i: x[i : i + per_call], stacked) for i in range(0, n, per_call)]
        t0 = time.perf_counter()
        model, opt_state, losses = train_steps(model, opt_state, calls[0])
        np.asarray(losses)
        compile_s = time.perf_counter() - t0
        times = []
        for batches in calls[1:]:
            t0 = time.perf_counter()
            model, opt_state, losses = train_steps(model, opt_state, batches)
            np.asarray(losses)
            times.append((time.perf_counter() - t0) / per_call)
        rows.append(
            {
                "name": f"make_train_steps, {per_call} step{'s' if per_call > 1 else ''} per call",
                "ms": 1e3 * statistics.median(times),
                "compile_s": compile_s,
            }
        )
    model = GPT(CFG, seed=TC.seed)
    nnx_opt = nnx.Optimizer(model, optimizer, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, nnx_opt, batch):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
        nnx_opt.update(model, grads)
        return loss

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        float(nnx_step(model, nnx_opt, jax.tree.map(lambda x, i=i: x[i], stacked)))
        times.append(time.perf_counter() - t0)
    rows.append({"name": "nnx.jit step with nnx.Optimizer, 1 step per call", "ms": 1e3 * statistics.median(times[1:])})
    return rows


# --- nanoGPT's own train.py ------------------------------------------------------------------------
def nanogpt_sources(source: str, into: Path) -> None:
    """train.py, model.py, configurator.py and its Shakespeare config from a work tree or a bare git dir."""
    src = Path(source)
    for name in NANOGPT_FILES:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        if (src / name).is_file():
            (into / name).write_bytes((src / name).read_bytes())
        else:  # a bare repository (or a .git directory): the committed file
            git_dir = src / ".git" if (src / ".git").is_dir() else src
            blob = subprocess.run(
                ["git", "--git-dir", str(git_dir), "show", f"HEAD:{name}"], capture_output=True, check=True
            )
            (into / name).write_bytes(blob.stdout)


def run_nanogpt(source: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nanogpt_sources(source, tmp)
        data_dir = tmp / "data" / "shakespeare_char"
        data_dir.mkdir(parents=True)
        text = TASK.data
        for split, name in (("train", "train"), ("validation", "val")):
            np.asarray(text.tokens[split], np.uint16).tofile(data_dir / f"{name}.bin")
        tok = text.tokenizer
        itos = {i: tok.decode([i]) for i in range(tok.vocab_size)}
        with open(data_dir / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": tok.vocab_size, "itos": itos, "stoi": {s: i for i, s in itos.items()}}, f)
        command = [
            sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
            "--dtype=float32", "--eval_iters=200", "--log_interval=1", f"--block_size={SEQ}", f"--batch_size={BATCH}",
            "--n_layer=4", "--n_head=4", "--n_embd=128", f"--max_iters={TC.steps}", f"--lr_decay_iters={TC.steps}",
            "--dropout=0.0", f"--eval_interval={TC.steps}", "--always_save_checkpoint=False",
        ]  # fmt: skip
        load = os.getloadavg()[0]
        out = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=True).stdout
    times = [
        float(m[2]) for m in re.finditer(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", out) if 0 < int(m[1]) < TC.steps
    ]
    final = re.search(rf"step {TC.steps}: train loss ([\d.]+), val loss ([\d.]+)", out)
    params = re.search(r"number of parameters: ([\d.]+)M", out)
    return {
        "ms": statistics.median(times),
        "train_loss": float(final[1]),
        "val_loss": float(final[2]),
        "params_M": float(params[1]),
        "load_before": load,
        "command": " ".join(command[1:]),
    }


# --- the run ---------------------------------------------------------------------------------------
def main() -> None:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    data = TASK.training_data()
    _, validation = TASK.split(0)
    tokens, targets = the_trainers_batches(data)

    contenders = [minillm_trainer("minillm trainer, 1 device", data)]
    devices = len(jax.devices())
    if ARGS.cpu_devices > 1 and devices >= ARGS.cpu_devices and BATCH % ARGS.cpu_devices == 0:
        mesh = sharding.local_mesh(ARGS.cpu_devices)
        name = f"minillm trainer, batch split over {ARGS.cpu_devices} CPU devices"
        contenders.append(minillm_trainer(name, sharding.replicate(data, mesh), mesh))
    tl = tl_trainer(tokens, targets)
    contenders.append(tl)
    for _ in range(TC.steps // ARGS.k):  # interleaved: a call of k steps each in turn
        for c in contenders:
            c()
    load_mid = os.getloadavg()

    val = {c.name: float(jax.jit(evaluate)(c.model(), validation)[0]) for c in contenders if hasattr(c, "model")}
    val[tl.name] = tl_eval(tl.tl, validation)
    fast = fast_path_rows(tokens, targets)
    nanogpt = run_nanogpt(ARGS.nanogpt) if ARGS.nanogpt else None
    load_after = os.getloadavg()

    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(GPT(CFG), nnx.Param)))
    flops = train_step_flops(CFG, BATCH, SEQ)
    six_nd = 6 * n_params * BATCH * SEQ
    jax_peak, torch_peak = matmul_peak_flops(), torch_matmul_peak(PEAK_SIZES["cpu"])
    peak = max(jax_peak, torch_peak)

    def fmt(x: float) -> str:
        return f"{x:.1f} ms"

    lines = [
        f"Run on {started}: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average (1 min) {load_before[0]:.2f} before, "
        f"{load_mid[0]:.2f} after the interleaved runs, {load_after[0]:.2f} at the end.",
        f"{TC.steps} steps of batch {BATCH} x {SEQ} characters, {ARGS.k} steps per call; minillm "
        f"{n_params / 1e6:.2f} M parameters; validation loss on {ARGS.eval_windows} fixed windows of the "
        "validation works (nats per character).",
        "",
        "| | ms per step | CPU ms per step | train loss, last 100 steps | validation loss | first call (compiles) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in contenders:
        compile_s = f"{c.compile_s:.1f} s" if hasattr(c, "compile_s") else ""
        lines.append(
            f"| {c.name} | {fmt(c.ms_per_step())} | {fmt(c.cpu_ms_per_step())} | {np.mean(c.losses[-100:]):.4f} "
            f"| {val[c.name]:.4f} | {compile_s} |"
        )
    if nanogpt:
        lines.append(
            f"| nanoGPT's train.py ({nanogpt['params_M']:.2f} M parameters; its own batches and init; run after "
            f"the others, load {nanogpt['load_before']:.2f}) | {fmt(nanogpt['ms'])} | | {nanogpt['train_loss']:.3f} "
            f"(its estimate at step {TC.steps}) | {nanogpt['val_loss']:.3f} (its estimate, 200 batches) | |"
        )
    else:
        lines.append("| nanoGPT's train.py | not run (pass --nanogpt DIR, a nanoGPT checkout) | | | | |")
    lines += [
        f"| floor: {flops / 1e9:.2f} GFLOP of matmuls per step (6 x parameters x tokens: {six_nd / 1e9:.2f}) "
        f"over the matmul peak, {peak / 1e9:.0f} GFLOP/s (JAX {jax_peak / 1e9:.0f}, torch {torch_peak / 1e9:.0f}) "
        f"| {fmt(1e3 * flops / peak)} | | | | |",
        "",
        f"A loop of one's own ({ARGS.fast_path_steps - ARGS.fast_path_steps % ARGS.k} steps of the same batches, "
        "medians per step, compilation left out):",
        "",
        "| | ms per step |",
        "| --- | --- |",
        *[f"| {r['name']} | {fmt(r['ms'])} |" for r in fast],
    ]
    if nanogpt:
        lines += ["", f"nanoGPT ran as: `python {nanogpt['command']}`"]
    print("\n".join(lines))
    result = {
        "rows": {
            c.name: {"ms": c.ms_per_step(), "cpu_ms": c.cpu_ms_per_step(), "val_loss": val[c.name]} for c in contenders
        },
        "fast_path": fast,
        "nanogpt": nanogpt,
        "flops": flops,
        "jax_peak": jax_peak,
        "torch_peak": torch_peak,
    }
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
