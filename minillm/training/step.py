"""The compiled training step: a chunk of AdamW steps as one `lax.scan`, for one model or a stack.

    run_chunk = make_train_chunk(optimizer, batch_fn)           # batch_fn(data, data_key, step) -> Batch
    model, opt_state, losses = run_chunk(model, opt_state, data_key, data, start, n)

`make_train_chunk` knows no task: `batch_fn` says what one step trains on, as a function of the
data passed to the call (an argument, so that a large train set is not baked into the program as
a constant), the run's data key and the step number. `task_batches(task, batch_size)` is the
trainer's batch_fn; a benchmark can pass `lambda data, key, step: data` to train on one fixed
batch. With `n_seeds`, the step is `jax.vmap`-ed over a stack of models, optimizer states and
data keys (minillm.params.stack_models): all seeds train as ONE compiled program.

For a training loop of your own, `make_train_steps(optimizer)` is the same chunk fed with batches
you pass in, K steps' worth at a time:

    train_steps = make_train_steps(optimizer)
    model, opt_state, losses = train_steps(model, opt_state, tokens)    # tokens [K, b, p]: K steps

Why K steps per call: each compiled call has a cost of its own, on a CPU about that of a step of a
small model (XLA allocates the program's work buffers afresh and the kernel faults their pages in on
every call), and a scan of K steps pays it once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from minillm.model import GPT
from minillm.model.config import GPTConfig
from minillm.model.losses import check_next_tokens, loss_fn, next_token_loss
from minillm.model.params import stack_models
from minillm.sharding import constrain_leading
from minillm.tasks import Batch, Task
from minillm.training.optim import TrainConfig

BatchFn = Callable[[Any, jax.Array, jax.Array], Batch]  # (data, data_key, step) -> the step's batch
LossFn = Callable[[GPT, Batch], tuple[jax.Array, Any]]  # (model, batch) -> (loss, aux)


def task_batches(task: Task, batch_size: int | None) -> BatchFn:
    """The trainer's batches: a function of (data key, step) only, so that resuming replays them.

    Fresh examples from the task's generator, or `batch_size` rows drawn from the train set passed
    as `data`, or (batch_size None) the whole train set every step; for a task that streams (text,
    minillm.training.text), `data` is its token array and the rows are random windows of it.
    """

    def batch_fn(train_set: Batch, data_key: jax.Array, step: jax.Array) -> Batch:
        key = jax.random.fold_in(data_key, step)
        if getattr(task, "streams", False):  # text: `train_set` is the token array, windows drawn here
            return task.sample_windows(train_set, key, batch_size)
        if task.has_generator:
            return task.sample(key, batch_size)
        if batch_size is None:
            return train_set
        idx = jax.random.randint(key, (batch_size,), 0, train_set.tokens.shape[0])
        return jax.tree.map(lambda x: x[idx], train_set)

    return batch_fn


def make_train_chunk(
    optimizer: optax.GradientTransformation,
    batch_fn: BatchFn,
    *,
    n_seeds: int | None = None,
    loss: LossFn = loss_fn,
    mesh: Mesh | None = None,
):
    """run_chunk(model, opt_state, data_key, data, start, n) -> (model, opt_state, losses).

    Steps start .. start + n - 1 in one compiled call (n is static: one compilation per chunk
    length). losses is [n], or [n, n_seeds] for a stack. The model and optimizer state passed in
    are donated: use the returned ones. With a `mesh` and one seed, each step's batch is split
    over its devices (minillm/sharding.py); a stack of seeds is split by how it is placed.
    """

    def one_step(model, opt_state, data_key, step, data):
        batch = batch_fn(data, data_key, step)
        if mesh is not None and n_seeds is None:  # data parallel: each device takes a slice of the batch
            batch = constrain_leading(batch, mesh)
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(model, batch)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, value

    if n_seeds is not None:  # one program for all seeds: vmap over model, optimizer state, data key
        one_step = jax.vmap(one_step, in_axes=(0, 0, 0, None, None))

    def run_chunk(model, opt_state, data_key, data, start, n):
        def body(carry, step):
            model, opt_state = carry
            model, opt_state, value = one_step(model, opt_state, data_key, step, data)
            return (model, opt_state), value

        (model, opt_state), losses = jax.lax.scan(body, (model, opt_state), start + jnp.arange(n))
        return model, opt_state, losses

    return jax.jit(run_chunk, static_argnums=(5,), donate_argnums=(0, 1))


def _row(batches: Any, data_key: jax.Array, step: jax.Array) -> Any:
    """Step `step`'s batch: row `step` of every array of `batches` (each [K, ...])."""
    return jax.tree.map(lambda x: x[step], batches)


def _next_token_or_task_loss(model: GPT, batch: Batch | jax.Array) -> tuple[jax.Array, Any]:
    """A Batch: the masked cross-entropy against its targets (what train() minimises). Tokens [b, p]:
    TransformerLens' language-model loss, each position predicting the next token."""
    if isinstance(batch, Batch):
        return loss_fn(model, batch)
    return next_token_loss(model.forward(batch), batch), None


def make_train_steps(optimizer: optax.GradientTransformation, *, loss: LossFn | None = None):
    """steps(model, opt_state, batches) -> (model, opt_state, losses [K]): K optimizer steps in ONE
    compiled call, for a training loop of your own.

    `batches` holds K steps' batches stacked on a leading axis: int tokens [K, b, p] (the next-token
    loss, as `model(tokens, return_type="loss")` computes it), or a Batch of [K, b, p] arrays
    (`loss_fn`'s masked cross-entropy against its targets, as train() computes it). Step k trains on
    row k. `loss`: another loss(model, batch) -> (value, aux). One compilation per K and batch
    shape; the model and optimizer state passed in are donated (use the returned ones). This is
    train()'s own chunk of steps (`make_train_chunk`), so a call of K steps costs the overhead of a
    call once; K = 1 is a step per call and pays it every step.
    """
    run_chunk = make_train_chunk(optimizer, _row, loss=loss or _next_token_or_task_loss)
    no_key = jax.random.key(0)  # _row reads no key

    def steps(model, opt_state, batches):
        if not isinstance(batches, Batch):
            batches = jnp.asarray(batches)
            if batches.ndim != 3 or not jnp.issubdtype(batches.dtype, jnp.integer):
                raise ValueError(f"train_steps: tokens must be ints [K, b, p], got {batches.dtype} {batches.shape}")
            if loss is None:  # a token with no logit would train on a clamped target: refuse it here
                check_next_tokens(batches.reshape(-1, batches.shape[-1]), model.cfg.d_vocab_out)
        return run_chunk(model, opt_state, no_key, batches, 0, jax.tree.leaves(batches)[0].shape[0])

    return steps


def init_train_state(
    cfg: GPTConfig, optimizer: optax.GradientTransformation, seed: int = 0, seeds: Sequence[int] | None = None
):
    """(model, opt_state, data_key) for one seed, or stacked over `seeds` (then `seed` is unused).

    The model is GPT(cfg, seed=s); the data key is fold_in(key(s), 1), independent of the weights.
    """
    if seeds is None:
        model = GPT(cfg, seed=seed)
        return model, optimizer.init(model), jax.random.fold_in(jax.random.key(seed), 1)
    stacked = stack_models([GPT(cfg, seed=s) for s in seeds])
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
    return stacked, jax.vmap(optimizer.init)(stacked), keys


def chunk_sizes(start: int, tc: TrainConfig) -> list[tuple[int, int]]:
    """(first step, number of steps) of each compiled call from `start` to the end.

    A chunk never crosses a multiple of eval_every or checkpoint_every, so where chunks begin
    depends only on absolute step numbers: a resumed run makes the same calls as a straight one.
    """
    chunks, step = [], start
    while step < tc.steps:
        stops = [
            tc.steps,
            (step // tc.eval_every + 1) * tc.eval_every,
            (step // tc.checkpoint_every + 1) * tc.checkpoint_every,
            step + tc.steps_per_call,
        ]
        end = min(stops)
        chunks.append((step, end - step))
        step = end
    return chunks
