"""Training: a masked next-token loss, AdamW, and a loop of compiled chunks of steps.

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

Reproducibility: a step's batch depends only on (seed, step), through `fold_in`, and the chunk
boundaries only on absolute step numbers, so a run that is killed and resumed from its last
checkpoint replays exactly the same compiled calls and ends with bit-identical parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minillm.checkpoint import CheckpointError, load_tensors, save_tensors, write_atomic
from minillm.config import GPTConfig
from minillm.model import GPT
from minillm.tasks import Batch, Task, make_task

MetricFn = Callable[[GPT], dict[str, float]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    schedule: str = "constant"  # after warmup: "constant" | "cosine" | "linear" decay
    decay_steps: Optional[int] = None  # the decay ends here (default: steps), then the lr holds
    final_lr_frac: float = 0.1  # the lr at the end of the decay, as a fraction of lr
    grad_clip: Optional[float] = 1.0  # clip the global gradient norm; None: no clipping
    batch_size: Optional[int] = None  # None: the whole train set each step (finite tasks)
    steps_per_call: int = 20  # steps fused into one compiled lax.scan call
    eval_every: int = 100
    checkpoint_every: int = 1000
    seed: int = 0  # initialises the model and draws the batches
    data_seed: int = 0  # the train/test split

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"TrainConfig: schedule must be constant, cosine or linear, got {self.schedule!r}")
        for name in ("steps", "steps_per_call", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {getattr(self, name)!r}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"TrainConfig: batch_size must be positive or None, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be positive, got {self.lr}")
        object.__setattr__(self, "betas", tuple(self.betas))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls(**json.loads(text))


# ---------------------------------------------------------------------------------------------
# Loss and optimizer
# ---------------------------------------------------------------------------------------------
def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target], accurate in float32 even when the loss is tiny.

    The usual logsumexp(x) - x_target computes its gradient for the target as p_target - 1, which
    rounds to 0 once p_target > 1 - 6e-8, while the other classes keep gradients of ~1e-9: the
    update is then no longer a cross-entropy gradient, and grokking runs show "slingshot" loss
    spikes (Nanda et al. 2023 computed this loss in float64 to avoid them). Written as
    log(1 + sum_{j != target} exp(x_j - x_target)), every term and its gradient stay accurate.
    """
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)  # [..., 1]
    diff = logits - target_logit  # [..., v], 0 at the target
    shift = jnp.maximum(diff.max(axis=-1, keepdims=True), 0.0)  # > 0 only when a wrong class wins
    others = jnp.where(jnp.arange(logits.shape[-1]) == targets[..., None], 0.0, jnp.exp(diff - shift))
    # log(exp(-shift) + sum others) + shift, as log1p(...) so that a tiny sum keeps its digits
    return (jnp.log1p(jnp.expm1(-shift) + others.sum(axis=-1, keepdims=True)) + shift)[..., 0]


def masked_cross_entropy(logits: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over the positions where batch.mask is 1."""
    nll = cross_entropy(logits, batch.targets)  # [b, p]
    n = jnp.maximum(batch.mask.sum(), 1.0)
    loss = (nll * batch.mask).sum() / n
    accuracy = ((logits.argmax(-1) == batch.targets) * batch.mask).sum() / n
    return loss, accuracy


def loss_fn(model: GPT, batch: Batch) -> tuple[jax.Array, jax.Array]:
    return masked_cross_entropy(model(batch.tokens), batch)


def evaluate(model: GPT, batch: Batch, chunk_size: int = 128) -> tuple[jax.Array, jax.Array]:
    """Masked loss and accuracy over a large batch, computed `chunk_size` sequences at a time.

    The same numbers as `loss_fn` on the whole batch; in chunks because attention tensors of a
    large batch stop fitting in the CPU's cache, which makes one big forward pass slower than several
    small ones. Jit it (or call it inside jit): the chunks run as one `lax.map`.
    """
    n = batch.tokens.shape[0]
    chunk_size = min(chunk_size, n)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    padded = jax.tree.map(lambda x: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)), batch)  # mask 0 on pads
    chunks = jax.tree.map(lambda x: x.reshape(n_chunks, chunk_size, *x.shape[1:]), padded)

    def sums(chunk: Batch):
        logits = model(chunk.tokens)
        nll = cross_entropy(logits, chunk.targets)
        correct = logits.argmax(-1) == chunk.targets
        return (nll * chunk.mask).sum(), (correct * chunk.mask).sum(), chunk.mask.sum()

    loss_sum, correct_sum, count = (x.sum() for x in jax.lax.map(sums, chunks))
    count = jnp.maximum(count, 1.0)
    return loss_sum / count, correct_sum / count


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
    """Linear warmup to lr, then constant, or a cosine / linear decay to lr * final_lr_frac."""
    decay_steps = (tc.decay_steps or tc.steps) - tc.warmup_steps
    final = tc.lr * tc.final_lr_frac
    if tc.schedule == "constant" or decay_steps <= 0:
        after = optax.constant_schedule(tc.lr)
    elif tc.schedule == "cosine":
        after = optax.cosine_decay_schedule(tc.lr, decay_steps, alpha=tc.final_lr_frac)
    else:
        after = optax.linear_schedule(tc.lr, final, decay_steps)
    if tc.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, tc.lr, tc.warmup_steps)
    return optax.join_schedules([warmup, after], [tc.warmup_steps])


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(lr_schedule(tc), b1=tc.betas[0], b2=tc.betas[1], weight_decay=tc.weight_decay)
    if tc.grad_clip is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), adamw)


# ---------------------------------------------------------------------------------------------
# The compiled chunk of steps
# ---------------------------------------------------------------------------------------------
def _batch_for_step(task: Task, tc: TrainConfig, train_set: Batch, data_key: jax.Array, step) -> Batch:
    """The batch of one step: a function of (data key, step) only, so resuming replays it."""
    key = jax.random.fold_in(data_key, step)
    if task.has_generator:
        return task.sample(key, tc.batch_size)
    if tc.batch_size is None:
        return train_set
    idx = jax.random.randint(key, (tc.batch_size,), 0, train_set.tokens.shape[0])
    return jax.tree.map(lambda x: x[idx], train_set)


def _make_chunk_fn(task: Task, tc: TrainConfig, optimizer: optax.GradientTransformation, n_seeds: Optional[int]):
    """run_chunk(models, opt_states, data_keys, train_set, start, n) -> (models, opt_states, losses [n])."""

    def one_step(model, opt_state, data_key, step, train_set):
        batch = _batch_for_step(task, tc, train_set, data_key, step)
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(model, batch)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    if n_seeds is not None:  # one program for all seeds: vmap over model, optimizer state, data key
        one_step = jax.vmap(one_step, in_axes=(0, 0, 0, None, None))

    def run_chunk(model, opt_state, data_key, train_set, start, n):
        def body(carry, step):
            model, opt_state = carry
            model, opt_state, loss = one_step(model, opt_state, data_key, step, train_set)
            return (model, opt_state), loss

        (model, opt_state), losses = jax.lax.scan(body, (model, opt_state), start + jnp.arange(n))
        return model, opt_state, losses

    return jax.jit(run_chunk, static_argnums=(5,), donate_argnums=(0, 1))


def _make_eval_fn(n_seeds: Optional[int]):
    fn = evaluate
    if n_seeds is not None:
        fn = jax.vmap(evaluate, in_axes=(0, None))
    return jax.jit(fn)


def chunk_sizes(start: int, tc: TrainConfig) -> list[tuple[int, int]]:
    """(first step, number of steps) of each compiled call from `start` to the end.

    A chunk never crosses a multiple of eval_every or checkpoint_every, so where chunks begin
    depends only on absolute step numbers: a resumed run makes the same calls as a straight one.
    """
    chunks, step = [], start
    while step < tc.steps:
        stops = [tc.steps, (step // tc.eval_every + 1) * tc.eval_every,
                 (step // tc.checkpoint_every + 1) * tc.checkpoint_every, step + tc.steps_per_call]
        end = min(stops)
        chunks.append((step, end - step))
        step = end
    return chunks


# ---------------------------------------------------------------------------------------------
# Train-state checkpoints
# ---------------------------------------------------------------------------------------------
def _flatten(prefix: str, tree: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    names = [f"{prefix}{i:04d}" for i in range(len(leaves))]
    return ({n: np.asarray(x) for n, (_, x) in zip(names, leaves)},
            [jax.tree_util.keystr(p) for p, _ in leaves])


def _unflatten(prefix: str, template: Any, tensors: dict[str, np.ndarray], paths: list[str], path: str) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if [jax.tree_util.keystr(p) for p, _ in leaves] != paths:
        raise CheckpointError(f"checkpoint {path}: its {prefix.rstrip('/')} state has a different structure")
    out = []
    for i, (_, like) in enumerate(leaves):
        x = tensors[f"{prefix}{i:04d}"]
        if x.shape != like.shape or x.dtype != like.dtype:
            raise CheckpointError(f"checkpoint {path}: {prefix}{paths[i]} has shape {x.shape} {x.dtype}, "
                                  f"expected {like.shape} {like.dtype}")
        out.append(jnp.asarray(x))
    return jax.tree_util.tree_unflatten(treedef, out)


def _run_spec(cfg: GPTConfig, task: Task, tc: TrainConfig, seeds: Optional[Sequence[int]]) -> dict[str, str]:
    """What defines a run; a checkpoint resumes only into the same spec (except for `steps`)."""
    return {"config": cfg.to_json(), "task": json.dumps({"name": task.name, **dataclasses.asdict(task)}),
            "train_config": tc.to_json(), "seeds": json.dumps(None if seeds is None else list(seeds))}


def save_train_state(path: str, model, opt_state, data_keys, step: int, elapsed: float, spec: dict[str, str]) -> None:
    model_t, model_paths = _flatten("model/", model)
    opt_t, opt_paths = _flatten("opt/", opt_state)
    tensors = {**model_t, **opt_t, "rng/data_key": np.asarray(jax.random.key_data(data_keys))}
    meta = {"kind": "train_state", "step": str(step), "elapsed": repr(elapsed),
            "model_paths": json.dumps(model_paths), "opt_paths": json.dumps(opt_paths), **spec}
    save_tensors(path, tensors, meta)


def load_train_state(path: str, model_template, opt_template, spec: dict[str, str]):
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "train_state":
        raise CheckpointError(f"{path} is not a training checkpoint (kind={meta.get('kind')!r})")
    for field in ("config", "task", "seeds"):
        if meta.get(field) != spec[field]:
            raise CheckpointError(f"cannot resume from {path}: it was made with {field} {meta.get(field)}, "
                                  f"this run has {spec[field]}")
    saved_tc, this_tc = json.loads(meta["train_config"]), json.loads(spec["train_config"])
    saved_tc.pop("steps"), this_tc.pop("steps")
    if saved_tc != this_tc:
        changed = sorted(k for k in this_tc if saved_tc.get(k) != this_tc[k])
        raise CheckpointError(f"cannot resume from {path}: the training config differs in {changed}")
    model = _unflatten("model/", model_template, tensors, json.loads(meta["model_paths"]), path)
    opt_state = _unflatten("opt/", opt_template, tensors, json.loads(meta["opt_paths"]), path)
    data_keys = jax.random.wrap_key_data(jnp.asarray(tensors["rng/data_key"]))
    return model, opt_state, data_keys, int(meta["step"]), float(meta["elapsed"])


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: Any  # a GPT, or for several seeds a GPT whose every weight has a leading [n_seeds] axis
    metrics: list[dict[str, Any]]  # every logged row (also in metrics.jsonl)
    step: int
    elapsed: float  # seconds of training, summed over resumes
    seeds: Optional[list[int]] = None

    def models(self) -> list[GPT]:
        """One GPT per seed (a list of one for a single-seed run)."""
        if self.seeds is None:
            return [self.model]
        return [jax.tree.map(lambda x: x[i], self.model) for i in range(len(self.seeds))]


def _init(cfg: GPTConfig, tc: TrainConfig, seeds: Optional[Sequence[int]], optimizer):
    if seeds is None:
        model = GPT(cfg, seed=tc.seed)
        return model, optimizer.init(model), jax.random.fold_in(jax.random.key(tc.seed), 1)
    models = [GPT(cfg, seed=s) for s in seeds]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
    return stacked, jax.vmap(optimizer.init)(stacked), keys


def _read_metrics(path: str, up_to_step: int) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step]


def train(cfg: GPTConfig, task: Task, tc: TrainConfig, out_dir: Optional[str] = None, *,
          metric_fns: Optional[dict[str, MetricFn]] = None, seeds: Optional[Sequence[int]] = None,
          resume: bool = False, progress: bool = True, stop_at_step: Optional[int] = None) -> TrainResult:
    """Train a GPT on `task`; see the module docstring. Returns the trained model and the metrics.

    metric_fns: {name: fn(model) -> {metric: float}} run at every evaluation (on each seed's model).
    seeds: train these seeds together in one vmapped program (tc.seed is then ignored).
    resume: continue from out_dir/checkpoint.safetensors if it exists.
    stop_at_step: stop (as if killed) once this step is reached; for tests and for splitting runs.
    """
    if cfg.n_ctx < task.seq_len or cfg.d_vocab != task.d_vocab or cfg.d_vocab_out != task.d_vocab_out:
        raise ValueError(f"the model does not fit the task: need n_ctx >= {task.seq_len}, d_vocab == "
                         f"{task.d_vocab}, d_vocab_out == {task.d_vocab_out}; got {cfg.n_ctx}, {cfg.d_vocab}, "
                         f"{cfg.d_vocab_out}")
    if task.has_generator and tc.batch_size is None:
        raise ValueError(f"{task.name} draws fresh examples each step: set TrainConfig.batch_size")
    seeds = None if seeds is None else [int(s) for s in seeds]
    n_seeds = None if seeds is None else len(seeds)
    metric_fns = metric_fns or {}
    optimizer = make_optimizer(tc)
    train_set, test_set = (jax.tree.map(jnp.asarray, b) for b in task.split(tc.data_seed))
    spec = _run_spec(cfg, task, tc, seeds)

    model, opt_state, data_keys = _init(cfg, tc, seeds, optimizer)
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
            raise FileExistsError(f"{ckpt_path} exists: pass resume=True (--resume) to continue it, "
                                  "or choose another out_dir")
        write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in metrics).encode())
        with open(os.path.join(out_dir, "run.json"), "w") as f:
            json.dump({k: json.loads(v) for k, v in spec.items()}, f, indent=1)

    run_chunk = _make_chunk_fn(task, tc, optimizer, n_seeds)
    evaluate = _make_eval_fn(n_seeds)
    schedule = lr_schedule(tc)

    def log_eval(step: int, elapsed: float) -> None:
        train_loss, train_acc = evaluate(model, train_set)
        test_loss, test_acc = evaluate(model, test_set)
        per_seed = [model] if seeds is None else [jax.tree.map(lambda x: x[i], model) for i in range(n_seeds)]
        rows = []
        for i, m in enumerate(per_seed):
            row = {"step": step, "seed": tc.seed if seeds is None else seeds[i],
                   "train_loss": float(np.ravel(train_loss)[i]), "train_acc": float(np.ravel(train_acc)[i]),
                   "test_loss": float(np.ravel(test_loss)[i]), "test_acc": float(np.ravel(test_acc)[i]),
                   "lr": float(schedule(step)), "time": round(elapsed, 3)}
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
    bar = _progress_bar(tc.steps, step, progress)
    last_good = step
    try:
        for start, n in chunk_sizes(step, tc):
            if stop_at_step is not None and start >= stop_at_step:
                break
            t0 = time.perf_counter()
            model, opt_state, losses = run_chunk(model, opt_state, data_keys, train_set, start, n)
            losses = np.asarray(losses)  # [n] or [n, n_seeds]; waits for the chunk to finish
            elapsed += time.perf_counter() - t0
            bad = ~np.isfinite(losses.reshape(n, -1)).all(axis=1)
            if bad.any():
                where = f" in {ckpt_path}" if ckpt_path else ""
                raise TrainingDiverged(f"loss became {losses.reshape(n, -1)[bad.argmax()].tolist()} at step "
                                       f"{start + int(bad.argmax())}; training stopped, the last good "
                                       f"checkpoint (step {last_good}){where} is kept")
            step = start + n
            bar.update(n)
            bar.set_postfix(loss=f"{float(losses[-1].mean()):.4f}")
            if step % tc.eval_every == 0 or step == tc.steps:
                log_eval(step, elapsed)
                bar.set_postfix(loss=f"{metrics[-1]['train_loss']:.4f}", test_acc=f"{metrics[-1]['test_acc']:.3f}")
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                checkpoint(step, elapsed)
                last_good = step
    finally:
        bar.close()
    if out_dir is not None and step == tc.steps:
        result = TrainResult(model, metrics, step, elapsed, seeds)
        for i, m in enumerate(result.models()):
            name = "model.safetensors" if seeds is None else f"model_seed{seeds[i]}.safetensors"
            m.save(os.path.join(out_dir, name))
        return result
    return TrainResult(model, metrics, step, elapsed, seeds)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm  # renders as a widget in notebooks, as text in terminals

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
