"""Repeated random tokens (minillm/tasks/repeated.py): every counted position predictable by
induction, random copy lengths and gaps, loss_on="repeat" the same tokens with the repeat mask, and
the parameters refused."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from helpers import GENERATOR_TASKS, n_total, split, task_id

from minillm import tasks as T


def copy_region(repeat_mask_row: np.ndarray) -> tuple[int, int]:
    """(copy_start, L) from one row of the repeat mask, which must be one contiguous run."""
    on = np.flatnonzero(repeat_mask_row)
    assert len(on) >= 1 and np.all(np.diff(on) == 1), "repeat mask must be one contiguous run"
    return int(on[0]), len(on) + 1


@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, T.RepeatedTokens)], ids=task_id)
def test_repeated_tokens_structure(task):
    batch, repeat_mask = jax.device_get(task.sample_with_repeat_mask(jax.random.key(0), n_total(task)))
    batch, repeat_mask = T.Batch(*(x[:256] for x in batch)), repeat_mask[:256]
    tokens = batch.tokens
    p = task.seq_len
    assert np.all(tokens[:, 0] == 0) and np.all(tokens[:, 1:] >= 1)
    segment_starts, lengths, gaps = set(), set(), set()
    for row, rmask in zip(tokens.tolist(), repeat_mask):
        c, L = copy_region(rmask)
        assert task.min_len <= L <= task.max_len and c + L <= p
        # the copy repeats an earlier segment, at some gap in [0, max_gap]
        found = [g for g in range(task.max_gap + 1) if c - L - g >= 1 and row[c : c + L] == row[c - L - g : c - g]]
        assert found, "copy does not repeat an earlier segment"
        segment_starts.add(c - L - found[0])
        lengths.add(L)
        gaps.add(found[0])
        # every counted position is predictable by induction: the current token
        # occurred earlier, followed by the token we must predict
        for i in np.flatnonzero(rmask):
            assert any(row[j] == row[i] and row[j + 1] == row[i + 1] for j in range(i))
    # random lengths and offsets (no fixed period to cheat with)
    assert len(segment_starts) >= 10 and len(lengths) >= min(5, task.max_len - task.min_len + 1)
    if task.max_gap > 0:
        assert len(gaps) > 1

    if task.loss_on == "all":
        expected_mask = np.ones((256, p), np.float32)
        expected_mask[:, -1] = 0
    else:
        expected_mask = repeat_mask
    np.testing.assert_array_equal(batch.mask, expected_mask)
    on = batch.mask > 0
    np.testing.assert_array_equal(batch.targets[:, :-1][on[:, :-1]], tokens[:, 1:][on[:, :-1]])


def test_repeated_tokens_loss_on_repeat_same_tokens():
    task = T.RepeatedTokens()
    repeat_task = dataclasses.replace(task, loss_on="repeat")
    key = jax.random.key(5)
    batch, repeat_mask = task.sample_with_repeat_mask(key, n_total(task))
    repeat_batch = repeat_task.sample(key, n_total(task))
    np.testing.assert_array_equal(batch.tokens, repeat_batch.tokens)
    np.testing.assert_array_equal(repeat_batch.mask, repeat_mask)
    # the split is the same sequences too, and split_with_repeat_mask matches split
    (train, train_rm), (test, test_rm) = task.split_with_repeat_mask(0)
    np.testing.assert_array_equal(train.tokens, split(task, 0)[0].tokens)
    np.testing.assert_array_equal(test.tokens, split(task, 0)[1].tokens)
    _, repeat_test = repeat_task.split(0)
    np.testing.assert_array_equal(repeat_test.tokens, test.tokens)
    np.testing.assert_array_equal(repeat_test.mask, test_rm)
    assert train_rm.shape == train.tokens.shape and train_rm.dtype == np.float32


INVALID = [
    (T.RepeatedTokens, dict(seq_len=10, max_len=5), "seq_len"),
    (T.RepeatedTokens, dict(seq_len=64, max_len=30, max_gap=4), "seq_len"),
    (T.RepeatedTokens, dict(min_len=1), "min_len"),
    (T.RepeatedTokens, dict(min_len=10, max_len=5), "max_len"),
    (T.RepeatedTokens, dict(max_gap=-1), "max_gap"),
    (T.RepeatedTokens, dict(loss_on="copy"), "loss_on"),
    (T.RepeatedTokens, dict(d_vocab=2), "d_vocab"),
    (T.RepeatedTokens, dict(n_train=0), "n_train"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
