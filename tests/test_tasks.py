"""The tasks package (minillm/tasks/__init__.py and base.py): the contract every task keeps (the Batch
format, the loss positions, vocabularies, disjoint and deterministic splits, fresh samples under jit
and scan, decoding and encoding, bad ids refused, samples that miss the test set) and the registry.
Each family's own answers are checked in its file: test_modular.py, test_repeated.py,
test_brackets.py, test_lists.py, test_recall.py and test_facts.py; there, every answer is recomputed
independently in plain Python (sorted(), a stack-based bracket check, dict lookup, pow(b, -1, p),
...), never read back from the code under test. The task variants are tests/helpers.py's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ALL_TASKS, GENERATOR_TASKS, fresh, n_total, rows, split, task_id

from minillm import tasks as T


def check_format(task: T.Task, batch: T.Batch, n: int) -> None:
    tokens, targets, mask = (np.asarray(x) for x in batch)
    for x in (tokens, targets, mask):
        assert x.shape == (n, task.seq_len)
    assert tokens.dtype == np.int32 and targets.dtype == np.int32 and mask.dtype == np.float32
    assert tokens.min() >= 0 and tokens.max() < task.d_vocab
    assert targets.min() >= 0 and targets.max() < task.d_vocab_out
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert np.all(mask.sum(axis=1) >= 1), "every example must count somewhere in the loss"
    assert np.all(targets[mask == 0] == 0)


@pytest.mark.parametrize("task", [t for t in ALL_TASKS if t.loss_positions is not None], ids=task_id)
def test_loss_positions_hold_every_position_the_loss_counts(task):
    """The trainer computes logits at loss_positions only (where a task names them: None is every
    position): the mask must be 0 everywhere else."""
    positions = task.loss_positions
    assert all(0 <= i < task.seq_len for i in positions)
    batch = split(task, 0)[0] if not task.has_generator else fresh(task, 0)
    mask = np.asarray(batch.mask)
    outside = np.delete(mask, list(positions), axis=1)
    assert mask.sum() > 0 and np.all(outside == 0)


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_vocab_is_consistent(task):
    assert task.d_vocab == len(task.vocab) and task.d_vocab_out == len(task.vocab_out)
    for vocab in (task.vocab, task.vocab_out):
        assert len(set(vocab)) == len(vocab), "token strings must be unique"
        assert all(word and not any(c.isspace() for c in word) for word in vocab)


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_split_format(task):
    train, test = split(task, 0)
    for batch in (train, test):
        assert all(isinstance(x, np.ndarray) for x in batch)
    check_format(task, train, task.n_train)
    check_format(task, test, task.n_test)


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_split_disjoint_and_deterministic(task):
    train, test = split(task, 0)
    train_rows, test_rows = rows(train.tokens), rows(test.tokens)
    assert len(train_rows) == len(train.tokens), "train has duplicate sequences"
    assert len(test_rows) == len(test.tokens), "test has duplicate sequences"
    assert not train_rows & test_rows

    again_train, again_test = task.split(0)  # not the cache
    for a, b in zip(train + test, again_train + again_test):
        np.testing.assert_array_equal(a, b)

    other_train, other_test = split(task, 1)
    assert rows(other_test.tokens) != test_rows
    assert rows(other_train.tokens) != train_rows


@pytest.mark.parametrize("task", GENERATOR_TASKS, ids=task_id)
def test_sample_format_and_keys(task):
    assert task.has_generator
    batch = fresh(task, 7)
    check_format(task, batch, n_total(task))
    again = task.sample(jax.random.key(7), n_total(task))
    for a, b in zip(batch, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(batch.tokens, fresh(task, 8).tokens)


# sample() is itself jit-compiled, so every test above already runs it under
# jax.jit with a traced key; this checks use inside a scan, as in a training loop
# (two tasks only: each extra task costs a compilation).
@pytest.mark.parametrize("name", ["repeated_tokens", "balanced_brackets"])
def test_sample_under_jit_and_scan(name):
    task = T.make_task(name)
    n = n_total(task)
    keys = jax.random.split(jax.random.key(7), 2)

    @jax.jit
    def draw(keys):
        def step(total, key):
            batch = task.sample(key, n)
            return total + batch.mask.sum(), batch.tokens

        return jax.lax.scan(step, jnp.float32(0), keys)

    total, tokens = draw(keys)
    assert tokens.shape == (2, n, task.seq_len) and total > 0
    np.testing.assert_array_equal(tokens[1], task.sample(keys[1], n).tokens)  # same as eager


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_decode_encode_round_trip(task):
    train, test = split(task, 0)
    examples = list(train.tokens[:5]) + list(test.tokens[:5])
    if task.has_generator:
        examples += list(fresh(task, 3).tokens[:5])
    for tokens in examples:
        text = task.decode(tokens)
        assert isinstance(text, str) and text
        encoded = task.encode(text)
        assert encoded.dtype == np.int32
        np.testing.assert_array_equal(encoded, tokens)
    assert task.decode_batch(test.tokens[:3]) == [task.decode(t) for t in test.tokens[:3]]
    assert [task.decode_target(i) for i in range(task.d_vocab_out)] == list(task.vocab_out)


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_decode_rejects_bad_ids(task):
    with pytest.raises(ValueError, match=str(task.d_vocab)):
        task.decode(np.array([0, task.d_vocab]))
    with pytest.raises(ValueError, match="-1"):
        task.decode(np.array([-1]))
    with pytest.raises(ValueError, match=str(task.d_vocab_out)):
        task.decode_target(task.d_vocab_out)
    with pytest.raises(ValueError):
        task.decode_batch(np.zeros(3, dtype=np.int32))  # 1-D is not a batch
    with pytest.raises(ValueError, match="unknown token"):
        task.encode("no-such-token")


@pytest.mark.parametrize("name", ["repeated_tokens", "balanced_brackets", "sorting", "reversal", "associative_recall"])
def test_fresh_samples_miss_the_test_set(name):
    task = T.make_task(name)
    _, test = split(task, 0)
    assert not rows(fresh(task, 2024).tokens) & rows(test.tokens)
    assert task.test_collision_bound < 1e-6


def test_registry():
    assert set(T.TASKS) == {
        "modular_arithmetic",
        "repeated_tokens",
        "balanced_brackets",
        "bracket_depth",
        "sorting",
        "reversal",
        "associative_recall",
        "factual_recall",
        "indirect_object",
    }
    for name, cls in T.TASKS.items():
        assert cls.name == name
    task = T.make_task("sorting", n=4)
    assert isinstance(task, T.Sorting) and task.n == 4
    with pytest.raises(ValueError) as info:
        T.make_task("sortin")
    for name in T.TASKS:
        assert name in str(info.value)
