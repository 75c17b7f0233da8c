"""Bracket tasks (minillm/tasks/brackets.py): balanced_brackets' labels against a stack-based check
and its mix of hard negatives, balanced strings drawn uniformly, bracket_depth's next-bracket targets
and its exact close probability (by brute force), and the parameters refused."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from helpers import GENERATOR_TASKS, fresh, split, task_id

from minillm import tasks as T
from minillm.tasks.brackets import _uniform_dyck


def is_balanced(text: str) -> bool:
    stack = []
    for c in text:
        if c == "(":
            stack.append(c)
        elif c == ")":
            if not stack:
                return False
            stack.pop()
    return not stack


def bracket_string(task: T.BalancedBrackets, tokens: np.ndarray) -> str:
    words = task.decode(tokens).split()
    assert words[0] == "[START]" and words[-1] == "[END]"
    assert set(words[1:-1]) <= {"(", ")"}
    return "".join(words[1:-1])


@pytest.mark.parametrize("task", [t for t in GENERATOR_TASKS if isinstance(t, T.BalancedBrackets)], ids=task_id)
def test_brackets_labels_and_class_mix(task):
    batch = fresh(task, 0)
    train, _ = split(task, 0)
    expected_mask = np.zeros(task.seq_len, np.float32)
    expected_mask[-1] = 1
    for b in (batch, train):
        np.testing.assert_array_equal(b.mask, np.tile(expected_mask, (len(b.tokens), 1)))
        for tokens, target in zip(b.tokens, b.targets[:, -1]):
            s = bracket_string(task, tokens)
            assert len(s) == task.n_brackets
            assert target == int(is_balanced(s)), s
    kinds = {"balanced": 0, "wrong order": 0, "unclosed": 0, "other": 0}
    for tokens in batch.tokens:
        s = bracket_string(task, tokens)
        if is_balanced(s):
            kinds["balanced"] += 1
        elif s.count("(") == s.count(")"):
            kinds["wrong order"] += 1  # hard negative: right counts, wrong order
        elif is_balanced(s + ")" * (s.count("(") - s.count(")"))):
            kinds["unclosed"] += 1  # hard negative: a valid prefix, never dips below zero
        else:
            kinds["other"] += 1
    n = len(batch.tokens)
    for kind, share in [("balanced", 0.5), ("wrong order", 0.25), ("unclosed", 0.25)]:
        tolerance = 4 * np.sqrt(share * (1 - share) / n)  # 4 standard deviations
        assert abs(kinds[kind] / n - share) < tolerance, kinds
    assert kinds["other"] == 0
    assert abs(train.targets[:, -1].mean() - 0.5) < 4 * np.sqrt(0.25 / len(train.tokens))


def test_brackets_balanced_strings_are_uniform():
    # the generator of balanced strings (cycle lemma), for 3 pairs: 5 strings
    steps = np.asarray(jax.jit(_uniform_dyck, static_argnums=(1, 2))(jax.random.key(1), 5000, 3))
    counts: dict[str, int] = {}
    for row in steps:
        s = "".join("(" if x == 1 else ")" for x in row)
        counts[s] = counts.get(s, 0) + 1
    assert set(counts) == {"((()))", "(()())", "(())()", "()(())", "()()()"}
    assert all(0.16 < c / 5000 < 0.24 for c in counts.values()), counts


def test_bracket_depth_strings_are_balanced_and_the_targets_are_the_next_bracket():
    task = T.make_task("bracket_depth", n_brackets=12, n_train=10, n_test=10)
    batch = task.sample(jax.random.key(0), 500)
    tokens, targets, mask = (np.asarray(x) for x in batch)
    assert tokens.shape == (500, 13) and (tokens[:, 0] == task.START).all()
    depth = task.depth(tokens)
    assert (depth >= 0).all() and (depth[:, -1] == 0).all()  # never below 0, closed at the end
    np.testing.assert_array_equal(targets[:, :-1], tokens[:, 1:] - task.OPEN)  # 0 "(", 1 ")"
    assert mask[:, :-1].all() and not mask[:, -1].any()
    assert len({tuple(r) for r in tokens.tolist()}) > 100  # uniform over 132 strings, not a few


def test_bracket_depth_close_probability_is_exact():
    task = T.make_task("bracket_depth", n_brackets=8, n_train=2, n_test=2)
    # every balanced string of 8 brackets, equally likely: count the continuations by brute force
    strings = [s for s in itertools.product((1, -1), repeat=8) if min(np.cumsum(s)) >= 0 and sum(s) == 0]
    assert len(strings) == 14  # Catalan(4)
    tokens = np.array([[task.START] + [task.OPEN if s == 1 else task.CLOSE for s in row] for row in strings])
    prob = task.close_probability(tokens)
    for row, p_row in zip(tokens, prob):
        for t in range(8):
            same_prefix = [r for r in tokens if (r[: t + 1] == row[: t + 1]).all()]
            expected = np.mean([r[t + 1] == task.CLOSE for r in same_prefix])
            assert abs(p_row[t] - expected) < 1e-12, (row, t)
    assert (prob[:, -1] == 0).all()


INVALID = [
    (T.BalancedBrackets, dict(n_brackets=7), "even"),
    (T.BalancedBrackets, dict(n_brackets=0), "n_brackets"),
    (T.BalancedBrackets, dict(n_brackets=8), "too small"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
