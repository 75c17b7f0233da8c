"""Indirect object identification (minillm/tasks/ioi.py): IO once and S twice among fillers, the
answer IO at the last position, the orders drawn as asked, Wang et al.'s corruptions, and the
parameters refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import GENERATOR_TASKS, fresh, split, task_id

from minillm import tasks as T
from minillm.tasks.ioi import ORDERS


def check_prompt(task, tokens, target, io=None, s=None, order=None):
    """One prompt's structure: <bos> ... <to>, exactly three names (one of them once, the other
    twice), fillers elsewhere, the target the name that appears once."""
    assert tokens[0] == 0 and tokens[-1] == 1 and len(tokens) == task.seq_len
    middle = np.asarray(tokens[1:-1])
    at = np.flatnonzero(middle >= task.first_name) + 1
    assert len(at) == 3 and ((middle < task.first_name) == (middle >= 2)).sum() == task.n_slots - 3
    names = np.asarray(tokens)[at] - task.first_name
    values, counts = np.unique(names, return_counts=True)
    assert sorted(counts.tolist()) == [1, 2], "one name once (IO), one twice (S)"
    once = int(values[counts == 1][0])
    assert target == once and task.decode_target(target) == f"N{once}"
    if io is not None:
        assert (once, int(values[counts == 2][0])) == (io, s)
    if order is not None:
        assert "".join("A" if n == once else "B" for n in names) == order


@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, T.IndirectObject)], ids=task_id)
def test_every_prompt_has_io_once_s_twice_and_the_answer_io(task):
    assert task.loss_positions == (task.seq_len - 1,) and task.d_vocab_out == task.n_names
    for batch in (*split(task, 0), fresh(task, 0)):
        assert (batch.mask[:, :-1] == 0).all() and (batch.mask[:, -1] == 1).all()
        orders = set()
        for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
            check_prompt(task, tokens, targets[-1])
            names = [t for t in tokens if t >= task.first_name]
            orders.add("".join("A" if names.count(n) == 1 else "B" for n in names))
        assert orders == set(task.orders), "every allowed order is drawn, and no other"


@pytest.mark.slow
def test_info_orders_and_corruptions():
    task = T.IndirectObject()
    for order in ORDERS:
        batch, info = task.sample_with_info(jax.random.key(0), 16, order)
        assert set(task.order_of(info)) == {order}
        for i, tokens in enumerate(np.asarray(batch.tokens).tolist()):
            check_prompt(task, tokens, int(batch.targets[i, -1]), int(info.io[i]), int(info.s[i]), order)
            assert [tokens[p] for p in info.positions[i].tolist()] == [t for t in tokens if t >= task.first_name]
        swapped = task.swap_names(batch, info)
        swapped_order = "".join("B" if c == "A" else "A" for c in order)  # S's slots now hold IO's name once
        for i, tokens in enumerate(np.asarray(swapped.tokens).tolist()):
            check_prompt(task, tokens, int(swapped.targets[i, -1]), int(info.s[i]), int(info.io[i]))
            names = [t for t in tokens if t >= task.first_name]
            assert "".join("B" if names.count(n) == 1 else "A" for n in names) == swapped_order
        abc = task.abc_names(batch, info, jax.random.key(1))
        changed = np.asarray(abc.tokens) != np.asarray(batch.tokens)
        rows = np.arange(16)[:, None]
        assert changed[rows, np.asarray(info.positions)].all() and changed.sum() == 3 * 16  # only the names
        names = np.asarray(abc.tokens)[rows, np.asarray(info.positions)] - task.first_name
        assert all(len(set(r)) == 3 for r in names.tolist())  # three different names
        assert not (names[:, :, None] == np.stack([info.io, info.s], 1)[:, None, :]).any()  # none of IO and S
    batch, info = task.sample_with_info(jax.random.key(3), 16, "BAB", positions=(2, 7, 16))  # a template
    assert (np.asarray(info.positions) == [2, 7, 16]).all() and (
        np.asarray(batch.tokens)[:, 7] - task.first_name == info.io
    ).all()
    for bad in [(2, 2, 5), (0, 3, 5), (3, 5, 17), (5, 3, 7), (1, 2)]:
        with pytest.raises(ValueError, match="positions must be 3 increasing"):
            task.sample_with_info(jax.random.key(3), 2, positions=bad)
    twin = T.IndirectObject(orders=("ABB", "BAB"))
    _, info = twin.sample_with_info(jax.random.key(2), 256)
    assert set(twin.order_of(info)) == {"ABB", "BAB"}
    _, info = twin.sample_with_info(jax.random.key(2), 8, order="BBA")  # an unseen order, on request
    assert set(twin.order_of(info)) == {"BBA"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(orders=("ABB", "AAB")), "orders"),
        (dict(orders=()), "orders"),
        (dict(orders=("ABB", "ABB")), "orders"),
        (dict(n_names=2), "n_names"),
        (dict(n_slots=2), "n_slots"),
        (dict(n_names=3, n_fillers=1, n_slots=3, orders=("ABB",)), "too small"),
    ],
)
def test_invalid_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.IndirectObject(**kwargs)
    with pytest.raises(ValueError, match="order must be one of"):
        T.IndirectObject().sample_with_info(jax.random.key(0), 2, order="AAB")
