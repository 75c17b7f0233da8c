"""The compiled training step (minillm/training/step.py) without the loop: a chunk of steps equals the
same steps taken one at a time, a stack of seeds equals each seed alone, a task's batches depend on
the key and the step only, and chunks are placed by absolute step numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import modular_config

from minillm import GPT, GPTConfig
from minillm.model.losses import loss_fn
from minillm.model.params import unstack_models
from minillm.tasks import make_task
from minillm.training.optim import TrainConfig, make_optimizer
from minillm.training.step import chunk_sizes, init_train_state, make_train_chunk, make_train_steps, task_batches

CFG = modular_config(11)  # fits TASK: its vocabulary and three positions
TASK = make_task("modular_arithmetic", p=11, frac_train=0.5)


def fixed_batch(data, data_key, step):
    return data


@pytest.mark.slow
def test_a_chunk_equals_the_same_steps_taken_one_by_one():
    optimizer = make_optimizer(TrainConfig(lr=1e-2))
    batch = jax.tree.map(jnp.asarray, TASK.split(0)[0])
    model, opt_state, key = init_train_state(CFG, optimizer, seed=1)
    by_hand, hand_state = GPT(CFG, seed=1), optimizer.init(GPT(CFG, seed=1))
    hand_losses = []
    for _ in range(5):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(by_hand, batch)
        updates, hand_state = optimizer.update(grads, hand_state, by_hand)
        by_hand = optax.apply_updates(by_hand, updates)
        hand_losses.append(float(loss))
    model, opt_state, losses = make_train_chunk(optimizer, fixed_batch)(model, opt_state, key, batch, 0, 5)
    np.testing.assert_allclose(losses, hand_losses, rtol=1e-5)
    assert hand_losses[-1] < hand_losses[0]
    # compared through the logits: b_K's gradient is rounding noise (softmax ignores a shift shared
    # by all keys), which Adam scales up to full steps, differently in the two programs
    np.testing.assert_allclose(model(batch.tokens), by_hand(batch.tokens), atol=1e-4)


@pytest.mark.slow
def test_a_stack_of_seeds_trains_as_each_seed_alone():
    optimizer = make_optimizer(TrainConfig(lr=1e-2, batch_size=8))
    batch_fn = task_batches(TASK, 8)
    train_set = jax.tree.map(jnp.asarray, TASK.split(0)[0])
    stacked, stacked_state, keys = init_train_state(CFG, optimizer, seeds=[3, 4])
    stacked, _, losses = make_train_chunk(optimizer, batch_fn, n_seeds=2)(stacked, stacked_state, keys, train_set, 0, 4)
    assert losses.shape == (4, 2)
    for i, seed in enumerate([3, 4]):
        model, state, key = init_train_state(CFG, optimizer, seed=seed)
        model, _, alone = make_train_chunk(optimizer, batch_fn)(model, state, key, train_set, 0, 4)
        np.testing.assert_allclose(losses[:, i], alone, rtol=1e-5)
        np.testing.assert_allclose(unstack_models(stacked, 2)[i](train_set.tokens), model(train_set.tokens), atol=1e-4)


def test_task_batches_depend_only_on_key_and_step():
    train_set = jax.tree.map(jnp.asarray, TASK.split(0)[0])
    batch_fn, key = task_batches(TASK, 8), jax.random.key(0)
    a, b, c = batch_fn(train_set, key, 3), batch_fn(train_set, key, 3), batch_fn(train_set, key, 4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == (8, 3) and not np.array_equal(a.tokens, c.tokens)
    assert task_batches(TASK, None)(train_set, key, 0) is train_set


def test_chunks_never_cross_eval_or_checkpoint_steps():
    tc = TrainConfig(steps=95, steps_per_call=20, eval_every=30, checkpoint_every=50)
    chunks = chunk_sizes(0, tc)
    assert sum(n for _, n in chunks) == 95
    ends = {s + n for s, n in chunks}
    assert {30, 50, 60, 90, 95} <= ends
    assert chunk_sizes(50, tc) == [c for c in chunks if c[0] >= 50]  # resuming replays the same chunks


def test_train_steps_take_k_steps_per_call_as_the_trainers_chunk_does():
    """make_train_steps (a loop of your own) on a Batch of K stacked batches: the trainer's chunk on
    the same batches, and K calls of one step agree with one call of K."""
    optimizer = make_optimizer(TrainConfig(lr=1e-2, batch_size=8))
    batch_fn = task_batches(TASK, 8)
    train_set = jax.tree.map(jnp.asarray, TASK.split(0)[0])
    model, state, key = init_train_state(CFG, optimizer, seed=2)
    batches = jax.vmap(lambda s: batch_fn(train_set, key, s))(jnp.arange(4))  # the trainer's steps 0..3
    trainer, _, trainer_losses = make_train_chunk(optimizer, batch_fn)(model, state, key, train_set, 0, 4)

    train_steps = make_train_steps(optimizer)
    model, state = GPT(CFG, seed=2), optimizer.init(GPT(CFG, seed=2))
    ours, _, losses = train_steps(model, state, batches)
    np.testing.assert_array_equal(losses, trainer_losses)
    np.testing.assert_array_equal(ours(train_set.tokens), trainer(train_set.tokens))

    model, state = GPT(CFG, seed=2), optimizer.init(GPT(CFG, seed=2))
    one_by_one = []
    for k in range(4):
        model, state, loss = train_steps(model, state, jax.tree.map(lambda x: x[k : k + 1], batches))
        one_by_one.append(float(loss[0]))
    np.testing.assert_allclose(one_by_one, losses, rtol=1e-5)
    np.testing.assert_allclose(model(train_set.tokens), ours(train_set.tokens), atol=1e-4)


def test_train_steps_on_tokens_minimise_the_next_token_loss():
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=2, n_ctx=8, d_vocab=13, act_fn="gelu")
    optimizer = make_optimizer(TrainConfig(lr=1e-2))
    tokens = np.random.default_rng(0).integers(0, 13, (3, 4, 8))
    model = GPT(cfg)
    first = float(model(tokens[0], return_type="loss"))  # before the call donates the weights
    train_steps = make_train_steps(optimizer)
    model, state, losses = train_steps(model, optimizer.init(model), tokens)
    assert losses.shape == (3,)
    np.testing.assert_allclose(losses[0], first, rtol=1e-6)
    assert float(model(tokens[0], return_type="loss")) < first
    with pytest.raises(ValueError, match="has no logit"):
        train_steps(model, state, tokens + 13)
    with pytest.raises(ValueError, match=r"ints \[K, b, p\]"):
        train_steps(model, state, tokens[0])
