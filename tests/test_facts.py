"""Factual recall (minillm/tasks/facts.py): each sequence names one subject and asks one of its
facts, the facts are fixed by their seed and the names shared, prompts put the subject where asked,
and the parameters refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import GENERATOR_TASKS, fresh, task_id

from minillm import tasks as T


def _factual_layout(task: T.FactualRecall, tokens: np.ndarray):
    """For each row: (first-name position, subject index, relation index), found by scanning for the
    one first name followed by a last name (asserting there is exactly one)."""
    first, last, _ = task.facts()
    by_pair = {(int(f), int(l)): s for s, (f, l) in enumerate(zip(first, last))}
    lo_f, lo_l = task.first_ids[0], task.last_ids[0]
    out = []
    for row in tokens:
        is_first = (row >= lo_f) & (row < lo_f + task.n_first)
        is_last = (row >= lo_l) & (row < lo_l + task.n_last)
        pairs = np.flatnonzero(is_first[:-1] & is_last[1:])
        assert len(pairs) == 1, f"expected exactly one first-last name pair in {task.decode(row)}"
        at = int(pairs[0])
        subject = by_pair[(int(row[at] - lo_f), int(row[at + 1] - lo_l))]
        out.append((at, subject, int(row[-1] - task.relation_ids[0])))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, T.FactualRecall)], ids=task_id)
def test_factual_recall_sequences_name_one_subject_and_ask_its_fact(task):
    tokens, targets, mask = (np.asarray(x) for x in fresh(task, 3))
    _, _, attribute = task.facts()
    layout = _factual_layout(task, tokens)
    for row, tgt, m, (at, subject, relation) in zip(tokens, targets, mask, layout):
        assert row[0] == task.BOS and row[-1] in task.relation_ids
        assert 1 <= at <= 1 + task.n_filler_slots - task.min_after
        assert tgt[-1] == attribute[subject, relation]
        assert m.sum() == 1 and m[-1] == 1
    # fillers carry stray names at about the rate asked for; every layout and subject occurs
    slots = np.ones(tokens.shape, bool)
    slots[:, [0, -1]] = False
    for i, (at, _, _) in enumerate(layout):
        slots[i, [at, at + 1]] = False
    stray = np.isin(tokens[slots], np.concatenate([task.first_ids, task.last_ids])).mean()
    assert abs(stray - task.distractor_prob) < 0.1, stray
    assert len({at for at, _, _ in layout}) == task.n_filler_slots - task.min_after + 1


def test_factual_recall_facts_are_fixed_and_names_shared():
    task = T.FactualRecall()
    first, last, attribute = task.facts()
    assert len(set(zip(first, last))) == task.n_subjects  # distinct subjects
    assert attribute.shape == (300, 3) and attribute.max() < task.n_attributes
    # neither name alone identifies a subject: every first and last name is shared by several
    assert np.bincount(first).min() >= 2 and np.bincount(last).min() >= 2
    np.testing.assert_array_equal(T.FactualRecall().facts()[2], attribute)
    assert not np.array_equal(T.FactualRecall(facts_seed=1).facts()[2], attribute)
    assert task.subject_name(0) == task.decode(np.array([task.first_ids[first[0]], task.last_ids[last[0]]], np.int32))


@pytest.mark.slow
def test_factual_recall_prompts_put_the_subject_where_asked():
    task = T.FactualRecall()
    batch = task.prompts(jax.random.key(0), 64, n_before=4)
    assert task.subject_positions(4) == (5, 6)
    for at, _, _ in _factual_layout(task, np.asarray(batch.tokens)):
        assert at == 5
    with pytest.raises(ValueError, match="n_before"):
        task.prompts(jax.random.key(0), 4, n_before=11)


INVALID = [
    (T.FactualRecall, dict(n_subjects=30, n_first=5, n_last=5), "distinct"),
    (T.FactualRecall, dict(distractor_prob=1.0), "distractor_prob"),
    (T.FactualRecall, dict(min_after=13), "min_after"),
    (T.FactualRecall, dict(n_attributes=1), "n_attributes"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
