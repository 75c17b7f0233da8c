"""Modular arithmetic (minillm/tasks/modular.py): every pair in order with the answer recomputed in
plain Python (pow(b, -1, p) for division), splits that partition the table, Nanda et al.'s defaults,
and the parameters refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import FINITE_TASKS, rows, split, task_id

from minillm import tasks as T


def expected_mod(op: str, a: int, b: int, p: int) -> int:
    if op == "add":
        return (a + b) % p
    if op == "sub":
        return (a - b) % p
    if op == "mul":
        return (a * b) % p
    return (a * pow(b, -1, p)) % p


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_modular_all_pairs_order_and_answers(op):
    p = 11
    task = T.ModularArithmetic(p=p, op=op, frac_train=0.5)
    batch = task.all_pairs()
    b_values = range(1, p) if op == "div" else range(p)
    expected_pairs = [(a, b) for a in range(p) for b in b_values]  # row-major
    assert [tuple(row[:2]) for row in batch.tokens.tolist()] == expected_pairs
    assert np.all(batch.tokens[:, 2] == p)
    np.testing.assert_array_equal(batch.mask, np.tile([0.0, 0.0, 1.0], (len(expected_pairs), 1)))
    answers = [expected_mod(op, a, b, p) for a, b in expected_pairs]
    assert batch.targets[:, 2].tolist() == answers
    if op == "div":  # the answer c satisfies c * b == a
        assert all((c * b) % p == a for (a, b), c in zip(expected_pairs, answers))


@pytest.mark.parametrize("task", FINITE_TASKS, ids=task_id)
def test_modular_split_partitions_the_table(task):
    train, test = split(task, 0)
    everything = task.all_pairs()
    assert len(train.tokens) == round(task.frac_train * len(everything.tokens))
    assert len(test.tokens) == len(everything.tokens) - len(train.tokens)
    assert rows(train.tokens) | rows(test.tokens) == rows(everything.tokens)
    for batch in (train, test):
        for (a, b, _eq), target in zip(batch.tokens.tolist(), batch.targets[:, 2].tolist()):
            assert target == expected_mod(task.op, a, b, task.p)


def test_modular_defaults_are_nanda_setup():
    task = T.ModularArithmetic()
    assert (task.p, task.op, task.frac_train) == (113, "add", 0.3)
    assert (task.d_vocab, task.d_vocab_out, task.seq_len) == (114, 113, 3)
    assert task.has_generator is False
    with pytest.raises(NotImplementedError, match="split"):
        task.sample(jax.random.key(0), 4)
    assert task.decode(np.array([12, 45, 113])) == "12 + 45 ="
    np.testing.assert_array_equal(task.encode("12 + 45 ="), [12, 45, 113])
    assert T.ModularArithmetic(p=7, op="div").decode(np.array([3, 5, 7])) == "3 / 5 ="
    assert task.decode_target(112) == "112"


INVALID = [
    (T.ModularArithmetic, dict(p=1), "p"),
    (T.ModularArithmetic, dict(p=113.0), "p"),
    (T.ModularArithmetic, dict(p=12, op="div"), "prime"),
    (T.ModularArithmetic, dict(op="pow"), "op"),
    (T.ModularArithmetic, dict(frac_train=0.0), "frac_train"),
    (T.ModularArithmetic, dict(frac_train=1.0), "frac_train"),
    (T.ModularArithmetic, dict(frac_train=1.5), "frac_train"),
    (T.ModularArithmetic, dict(p=2, frac_train=0.01), "empty"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
