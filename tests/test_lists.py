"""Sorting and reversal (minillm/tasks/lists.py): the outputs and targets against sorted() and a
reversed list, and the parameters refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GENERATOR_TASKS, fresh, split, task_id

from minillm import tasks as T


@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, (T.Sorting, T.Reversal))], ids=task_id)
def test_list_task_targets(task):
    n = task.n
    transform = sorted if isinstance(task, T.Sorting) else (lambda xs: xs[::-1])
    sampled = fresh(task, 0)
    expected_mask = np.zeros(2 * n + 1, np.float32)
    expected_mask[n : 2 * n] = 1
    for batch in (*split(task, 0), sampled):
        np.testing.assert_array_equal(batch.mask, np.tile(expected_mask, (len(batch.tokens), 1)))
        for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
            inputs, sep, outputs = tokens[:n], tokens[n], tokens[n + 1 :]
            assert sep == task.n_values and max(inputs) < task.n_values
            assert outputs == transform(inputs)
            assert targets[n : 2 * n] == transform(inputs)  # positions n..2n-1 predict the output
    text = task.decode(np.array(split(task, 0)[1].tokens[0]))
    assert " -> " in text


INVALID = [
    (T.Sorting, dict(n=0), "n"),
    (T.Sorting, dict(n_values=1), "n_values"),
    (T.Sorting, dict(n=2, n_values=4), "too small"),
    (T.Reversal, dict(n=3, n_values=5, n_test=-1), "n_test"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
