"""Training: the loop that runs compiled chunks of steps, evaluates, logs and checkpoints.

    result = train(GPTConfig(...), make_task("modular_arithmetic"), TrainConfig(steps=2000), out_dir="runs/x")

What happens, in order:
- The task's `split(data_seed)` gives a fixed train and test set. Each step trains on a batch: the
  whole train set (`batch_size=None`), a sample of it, or fresh examples from the task's generator.
- One step is `jax.value_and_grad` of the masked cross-entropy, gradient clipping, then optax
  AdamW with linear warmup and a cosine or linear decay. `steps_per_call` steps run inside one
  `jax.lax.scan`, compiled once, so Python is visited once a chunk, not once a step.
- Every `eval_every` steps: loss and accuracy on the train and test sets plus the user's metric
  callbacks, appended to `metrics.jsonl`. Every `checkpoint_every` steps and at the end: model,
  optimizer state and step written atomically to `checkpoint.safetensors`.
- Several seeds train at once as ONE compiled program: the step is `jax.vmap`-ed over a stack of
  models, optimizer states and data keys.
- With `TrainConfig.target`, the run stops `target_margin` steps after the evaluation at which the
  target was first reached (every seed's; with target_margin None it only reports it). With
  `loss_positions_only`, the loss computes logits at the task's loss positions only. With
  `mesh=`, the batch (one seed) or the seeds are split over several devices (minillm/sharding.py).

The pieces live beside this file: TrainConfig and the optimizer (optim.py), the compiled chunk of
steps (step.py), resumable train states (state.py); the loss itself is the model's
(minillm/model/losses.py).

Reproducibility: a step's batch depends only on (seed, step), through `fold_in`, and the chunk
boundaries only on absolute step numbers, so a run that is killed and resumed from its last
checkpoint replays exactly the same compiled calls and ends with bit-identical parameters.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from minillm import sharding
from minillm.model import GPT
from minillm.model.checkpoint import write_atomic
from minillm.model.config import GPTConfig
from minillm.model.losses import evaluate, loss_fn
from minillm.model.params import unstack_models
from minillm.tasks import Task
from minillm.training.optim import TrainConfig, lr_schedule, make_optimizer
from minillm.training.state import load_train_state, run_spec, save_train_state
from minillm.training.step import chunk_sizes, init_train_state, make_train_chunk, task_batches

MetricFn = Callable[[GPT], dict[str, float]]  # a metric callback of train(): model -> {name: value}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    model: Any  # a GPT, or for several seeds a GPT whose every weight has a leading [n_seeds] axis
    metrics: list[dict[str, Any]]  # every logged row (also in metrics.jsonl)
    step: int
    elapsed: float  # seconds of training, summed over resumes
    seeds: list[int] | None = None

    def models(self) -> list[GPT]:
        """One GPT per seed (a list of one for a single-seed run)."""
        return [self.model] if self.seeds is None else unstack_models(self.model, len(self.seeds))


def _read_metrics(path: str, up_to_step: int) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step]


def train(
    cfg: GPTConfig,
    task: Task,
    tc: TrainConfig,
    out_dir: str | None = None,
    *,
    metric_fns: dict[str, MetricFn] | None = None,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at_step: int | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Train a GPT on `task`; see the module docstring. Returns the trained model and the metrics.

    metric_fns: {name: fn(model) -> {metric: float}} run at every evaluation (on each seed's model).
    seeds: train these seeds together in one vmapped program (tc.seed is then ignored).
    resume: continue from out_dir/checkpoint.safetensors if it exists.
    stop_at_step: stop (as if killed) once this step is reached; for tests and for splitting runs.
    mesh: a one-axis jax.sharding.Mesh (minillm.sharding.local_mesh()): one seed's batch, or the
        seeds of a multi-seed run, split over its devices (minillm/sharding.py).
    """
    if cfg.n_ctx < task.seq_len or cfg.d_vocab != task.d_vocab or cfg.d_vocab_out != task.d_vocab_out:
        raise ValueError(
            f"the model does not fit the task: need n_ctx >= {task.seq_len}, d_vocab == "
            f"{task.d_vocab}, d_vocab_out == {task.d_vocab_out}; got {cfg.n_ctx}, {cfg.d_vocab}, "
            f"{cfg.d_vocab_out}"
        )
    streams = getattr(task, "streams", False)  # text: windows of a token array, drawn inside the step
    if (task.has_generator or streams) and tc.batch_size is None:
        raise ValueError(f"{task.name} draws fresh examples each step: set TrainConfig.batch_size")
    seeds = None if seeds is None else [int(s) for s in seeds]
    n_seeds = None if seeds is None else len(seeds)
    metric_fns = metric_fns or {}
    optimizer = make_optimizer(tc)
    train_set, test_set = (jax.tree.map(jnp.asarray, b) for b in task.split(tc.data_seed))
    data = task.training_data() if streams else train_set  # what every compiled chunk of steps reads
    spec = run_spec(cfg, task, tc, seeds)

    model, opt_state, data_keys = init_train_state(cfg, optimizer, tc.seed, seeds)
    step, elapsed, metrics = 0, 0.0, []
    ckpt_path = metrics_path = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        ckpt_path = os.path.join(out_dir, "checkpoint.safetensors")
        metrics_path = os.path.join(out_dir, "metrics.jsonl")
        if resume and os.path.exists(ckpt_path):
            model, opt_state, data_keys, step, elapsed = load_train_state(ckpt_path, model, opt_state, spec)
            metrics = _read_metrics(metrics_path, step)
        elif os.path.exists(ckpt_path) and not resume:
            raise FileExistsError(
                f"{ckpt_path} exists: pass resume=True (--resume) to continue it, or choose another out_dir"
            )
        write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in metrics).encode())
        if streams:  # a model of text is read with its tokenizer: GPT.load finds it beside the model
            task.data.tokenizer.save(out_dir)
        with open(os.path.join(out_dir, "run.json"), "w") as f:
            json.dump({k: json.loads(v) for k, v in spec.items()}, f, indent=1)

    if mesh is not None:  # the weights on every device (one seed), or the seeds split over them
        mesh = sharding.check_mesh(mesh)
        place = sharding.replicate if seeds is None else partial(sharding.shard_leading, what="the seeds")
        model, opt_state, data_keys = place((model, opt_state, data_keys), mesh)
        train_set, test_set, data = sharding.replicate((train_set, test_set, data), mesh)
    loss = partial(loss_fn, positions=task.loss_positions if tc.loss_positions_only else None)
    run_chunk = make_train_chunk(optimizer, task_batches(task, tc.batch_size), n_seeds=n_seeds, loss=loss, mesh=mesh)
    evaluate_all = jax.jit(evaluate if seeds is None else jax.vmap(evaluate, in_axes=(0, None)))
    schedule = lr_schedule(tc)

    def log_eval(step: int, elapsed: float) -> None:
        train_loss, train_acc = evaluate_all(model, train_set)
        test_loss, test_acc = evaluate_all(model, test_set)
        per_seed = [model] if seeds is None else unstack_models(model, n_seeds)
        rows = []
        for i, m in enumerate(per_seed):
            row = {
                "step": step,
                "seed": tc.seed if seeds is None else seeds[i],
                "train_loss": float(np.ravel(train_loss)[i]),
                "train_acc": float(np.ravel(train_acc)[i]),
                "test_loss": float(np.ravel(test_loss)[i]),
                "test_acc": float(np.ravel(test_acc)[i]),
                "lr": float(schedule(step)),
                "time": round(elapsed, 3),
            }
            for fn in metric_fns.values():
                row.update({k: float(v) for k, v in fn(m).items()})
            rows.append(row)
        metrics.extend(rows)
        if metrics_path is not None:
            with open(metrics_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

    def checkpoint(step: int, elapsed: float) -> None:
        if ckpt_path is not None:
            save_train_state(ckpt_path, model, opt_state, data_keys, step, elapsed, spec)

    if step == 0 and not metrics:
        log_eval(0, 0.0)
    last_step = min(tc.steps, _target_stop(tc, metrics, n_seeds or 1))  # moves only when metrics are logged
    finished = step >= last_step
    bar = _progress_bar(tc.steps, step, progress)
    last_good = step
    try:
        for start, n in chunk_sizes(step, tc):
            if finished or (stop_at_step is not None and start >= stop_at_step):
                break
            t0 = time.perf_counter()
            model, opt_state, losses = run_chunk(model, opt_state, data_keys, data, start, n)
            losses = np.asarray(losses)  # [n] or [n, n_seeds]; waits for the chunk to finish
            elapsed += time.perf_counter() - t0
            bad = ~np.isfinite(losses.reshape(n, -1)).all(axis=1)
            if bad.any():
                where = f" in {ckpt_path}" if ckpt_path else ""
                raise TrainingDiverged(
                    f"loss became {losses.reshape(n, -1)[bad.argmax()].tolist()} at step "
                    f"{start + int(bad.argmax())}; training stopped, the last good "
                    f"checkpoint (step {last_good}){where} is kept"
                )
            step = start + n
            bar.update(n)
            bar.set_postfix(loss=f"{float(losses[-1].mean()):.4f}")
            finished = step >= last_step
            if step % tc.eval_every == 0 or finished:
                log_eval(step, elapsed)
                bar.set_postfix(loss=f"{metrics[-1]['train_loss']:.4f}", test_acc=f"{metrics[-1]['test_acc']:.3f}")
                last_step = min(tc.steps, _target_stop(tc, metrics, n_seeds or 1))
                finished = step >= last_step
            if step % tc.checkpoint_every == 0 or finished:
                checkpoint(step, elapsed)
                last_good = step
    finally:
        bar.close()
    if out_dir is not None and finished:
        result = TrainResult(model, metrics, step, elapsed, seeds)
        for i, m in enumerate(result.models()):
            name = "model.safetensors" if seeds is None else f"model_seed{seeds[i]}.safetensors"
            m.save(os.path.join(out_dir, name))
        return result
    return TrainResult(model, metrics, step, elapsed, seeds)


def _target_stop(tc: TrainConfig, metrics: list[dict[str, Any]], n_seeds: int) -> float:
    """The step at which a run with tc.target stops: target_margin steps after the first evaluation
    at which every seed has reached the target (inf until then, without a target, or with a target
    that is only reported: target_margin None)."""
    if tc.target is None or tc.target_margin is None:
        return np.inf
    name, value = tc.target
    first: dict[Any, int] = {}
    for row in metrics:
        if row.get(name, -np.inf) >= value:
            first.setdefault(row["seed"], row["step"])
    return max(first.values()) + tc.target_margin if len(first) == n_seeds else np.inf


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm  # renders as a widget in notebooks, as text in terminals

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
