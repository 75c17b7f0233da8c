"""Associative recall (minillm/tasks/recall.py): distinct keys and queries, every answer looked up
in the sequence's own table, and the parameters refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import GENERATOR_TASKS, fresh, split, task_id

from minillm import tasks as T


@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, T.AssociativeRecall)], ids=task_id)
def test_associative_recall_targets(task):
    n, m = task.n_pairs, task.n_queries
    key_ids = set(range(task.n_values, task.n_values + task.n_keys))
    value_ids = set(range(task.n_values))
    assert not key_ids & value_ids
    assert task.seq_len == 2 * n + 2 * m - 1
    query_at = [2 * n + 2 * i for i in range(m)]
    expected_mask = np.zeros(task.seq_len, np.float32)
    expected_mask[query_at] = 1
    sampled = fresh(task, 0)
    for batch in (*split(task, 0), sampled):
        np.testing.assert_array_equal(batch.mask, np.tile(expected_mask, (len(batch.tokens), 1)))
        for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
            keys, values = tokens[0 : 2 * n : 2], tokens[1 : 2 * n : 2]
            assert set(keys) <= key_ids and set(values) <= value_ids
            assert len(set(keys)) == n, "keys must be distinct"
            table = dict(zip(keys, values))
            queries = [tokens[i] for i in query_at]
            assert len(set(queries)) == m, "queries must be distinct keys"
            for i, query in zip(query_at, queries):
                assert query in table
                assert targets[i] == table[query]
                assert task.decode_target(targets[i]) == task.vocab[table[query]]
                if i + 1 < len(tokens):
                    assert tokens[i + 1] == table[query]  # the answer follows its query as input


INVALID = [
    (T.AssociativeRecall, dict(n_pairs=5, n_keys=4), "n_keys"),
    (T.AssociativeRecall, dict(n_values=1), "n_values"),
    (T.AssociativeRecall, dict(n_pairs=0), "n_pairs"),
    (T.AssociativeRecall, dict(n_pairs=3, n_queries=4), "n_queries"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
