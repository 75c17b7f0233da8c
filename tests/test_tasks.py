"""Tests for minillm.tasks: data format, splits, decoding, and correct answers.

Every answer is recomputed here independently (plain Python: sorted(), a
stack-based bracket check, dict lookup, pow(b, -1, p), ...), never read back
from the code under test.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import tasks as T
from minillm.tasks.brackets import _uniform_dyck

# Defaults plus a small non-default variant of each generator task.
GENERATOR_TASKS = [
    T.RepeatedTokens(),
    T.RepeatedTokens(
        d_vocab=20, seq_len=40, min_len=2, max_len=10, max_gap=6, loss_on="repeat", n_train=200, n_test=100
    ),
    T.BalancedBrackets(),
    T.Sorting(),
    T.Sorting(n=5, n_values=10, n_train=300, n_test=300),
    T.Reversal(),
    T.Reversal(n=3, n_values=50, n_train=200, n_test=100),
    T.AssociativeRecall(),
    T.AssociativeRecall(n_pairs=3, n_keys=3, n_values=4, n_train=200, n_test=100),
    T.AssociativeRecall(n_pairs=6, n_keys=16, n_values=16, n_queries=4, n_train=200, n_test=100),
    T.FactualRecall(n_train=512, n_test=512),
    T.FactualRecall(
        n_subjects=12,
        n_first=4,
        n_last=5,
        n_relations=2,
        n_attributes=3,
        n_fillers=3,
        n_filler_slots=4,
        min_after=0,
        distractor_prob=0.5,
        n_train=200,
        n_test=100,
    ),
]
FINITE_TASKS = [
    T.ModularArithmetic(),
    T.ModularArithmetic(p=7, op="div", frac_train=0.5),
    T.ModularArithmetic(p=10, op="sub", frac_train=0.6),
]
ALL_TASKS = GENERATOR_TASKS + FINITE_TASKS


def task_id(task: T.Task) -> str:
    fields = ",".join(f"{f.name}={getattr(task, f.name)}" for f in dataclasses.fields(task))
    return f"{task.name}({fields})"


@functools.cache
def split(task: T.Task, seed: int) -> tuple[T.Batch, T.Batch]:
    return task.split(seed)


def n_total(task: T.Task) -> int:
    return task.n_train + task.n_test


@functools.cache
def fresh(task: T.Task, seed: int) -> T.Batch:
    """task.sample with the split's batch size, so both share one compilation (fast tests)."""
    return jax.device_get(task.sample(jax.random.key(seed), n_total(task)))


def rows(tokens: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(t) for t in row) for row in np.asarray(tokens)}


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


# ---------------------------------------------------------------------------
# Common contract
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", ALL_TASKS, ids=task_id)
def test_loss_positions_hold_every_position_the_loss_counts(task):
    """The trainer computes logits at loss_positions only: the mask must be 0 everywhere else."""
    positions = task.loss_positions
    if positions is None:
        return
    assert all(0 <= i < task.seq_len for i in positions)
    batch = task.split(0)[0] if not task.has_generator else task.sample(jax.random.key(0), 64)
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
    }
    for name, cls in T.TASKS.items():
        assert cls.name == name
    task = T.make_task("sorting", n=4)
    assert isinstance(task, T.Sorting) and task.n == 4
    with pytest.raises(ValueError) as info:
        T.make_task("sortin")
    for name in T.TASKS:
        assert name in str(info.value)


# ---------------------------------------------------------------------------
# Invalid parameters
# ---------------------------------------------------------------------------

INVALID = [
    (T.ModularArithmetic, dict(p=1), "p"),
    (T.ModularArithmetic, dict(p=113.0), "p"),
    (T.ModularArithmetic, dict(p=12, op="div"), "prime"),
    (T.ModularArithmetic, dict(op="pow"), "op"),
    (T.ModularArithmetic, dict(frac_train=0.0), "frac_train"),
    (T.ModularArithmetic, dict(frac_train=1.0), "frac_train"),
    (T.ModularArithmetic, dict(frac_train=1.5), "frac_train"),
    (T.ModularArithmetic, dict(p=2, frac_train=0.01), "empty"),
    (T.RepeatedTokens, dict(seq_len=10, max_len=5), "seq_len"),
    (T.RepeatedTokens, dict(seq_len=64, max_len=30, max_gap=4), "seq_len"),
    (T.RepeatedTokens, dict(min_len=1), "min_len"),
    (T.RepeatedTokens, dict(min_len=10, max_len=5), "max_len"),
    (T.RepeatedTokens, dict(max_gap=-1), "max_gap"),
    (T.RepeatedTokens, dict(loss_on="copy"), "loss_on"),
    (T.RepeatedTokens, dict(d_vocab=2), "d_vocab"),
    (T.RepeatedTokens, dict(n_train=0), "n_train"),
    (T.BalancedBrackets, dict(n_brackets=7), "even"),
    (T.BalancedBrackets, dict(n_brackets=0), "n_brackets"),
    (T.BalancedBrackets, dict(n_brackets=8), "too small"),
    (T.Sorting, dict(n=0), "n"),
    (T.Sorting, dict(n_values=1), "n_values"),
    (T.Sorting, dict(n=2, n_values=4), "too small"),
    (T.Reversal, dict(n=3, n_values=5, n_test=-1), "n_test"),
    (T.AssociativeRecall, dict(n_pairs=5, n_keys=4), "n_keys"),
    (T.AssociativeRecall, dict(n_values=1), "n_values"),
    (T.AssociativeRecall, dict(n_pairs=0), "n_pairs"),
    (T.AssociativeRecall, dict(n_pairs=3, n_queries=4), "n_queries"),
    (T.FactualRecall, dict(n_subjects=30, n_first=5, n_last=5), "distinct"),
    (T.FactualRecall, dict(distractor_prob=1.0), "distractor_prob"),
    (T.FactualRecall, dict(min_after=13), "min_after"),
    (T.FactualRecall, dict(n_attributes=1), "n_attributes"),
]


@pytest.mark.parametrize("cls,kwargs,match", INVALID, ids=lambda x: str(x))
def test_invalid_parameters_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# ---------------------------------------------------------------------------
# Modular arithmetic
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Repeated tokens
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Balanced brackets
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Sorting and reversal
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Associative recall
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Factual recall
# ---------------------------------------------------------------------------


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


def test_factual_recall_prompts_put_the_subject_where_asked():
    task = T.FactualRecall()
    batch = task.prompts(jax.random.key(0), 64, n_before=4)
    assert task.subject_positions(4) == (5, 6)
    for at, _, _ in _factual_layout(task, np.asarray(batch.tokens)):
        assert at == 5
    with pytest.raises(ValueError, match="n_before"):
        task.prompts(jax.random.key(0), 4, n_before=11)
