"""Interpolated Kneser-Ney n-grams (minillm/ngrams.py), checked against a plain dictionary version of
the same definition on tiny random corpora, and for the properties any language model must have."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from minillm.ngrams import DISCOUNT_MARGIN, KneserNey


def reference_log_probs(train, test, order, vocab_size, discount=None, modified=False):
    """Interpolated (modified) Kneser-Ney written out with dictionaries of tuples, one token at a time."""
    train, test = [int(t) for t in train], [int(t) for t in test]
    raw = {k: Counter(tuple(train[i : i + k]) for i in range(len(train) - k + 1)) for k in range(1, order + 2)}
    counts = {}  # level k: the count of each k-gram seen in training
    for k in range(1, order + 1):
        if k == order:
            counts[k] = dict(raw[k])
        else:  # continuation count: how many distinct tokens come right before the k-gram
            before = defaultdict(set)
            for gram in raw[k + 1]:
                before[gram[1:]].add(gram[0])
            counts[k] = {gram: len(before[gram]) for gram in raw[k]}

    def estimate(values):
        n = [sum(1 for v in values if v == r) for r in (1, 2, 3, 4)]
        y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.0
        if modified and min(n) > 0:
            ds = [r - (r + 1) * y * n[r] / n[r - 1] for r in (1, 2, 3)]
        else:
            ds = [y, y, y]
        return [min(max(d, DISCOUNT_MARGIN), r - DISCOUNT_MARGIN) for r, d in zip((1, 2, 3), ds, strict=True)]

    discounts = {}
    for k in range(1, order + 1):
        positive = [c for c in counts[k].values() if c > 0]
        discounts[k] = [discount] * 3 if discount is not None else estimate(positive)

    def D(k, c):
        return discounts[k][min(c, 3) - 1]

    def prob(k, context, w):
        lower = 1.0 / vocab_size if k == 1 else prob(k - 1, context[1:], w)
        following = {g: c for g, c in counts[k].items() if g[:-1] == context and c > 0}
        total = sum(following.values())
        if total == 0:
            return lower
        c = following.get(context + (w,), 0)
        numerator = max(c - D(k, c), 0) if c > 0 else 0
        gamma = sum(D(k, c) for c in following.values())
        return (numerator + gamma * lower) / total

    out = []
    for i, w in enumerate(test):
        k = min(i + 1, order)
        out.append(math.log(prob(k, tuple(test[i - k + 1 : i]), w)))
    return np.array(out)


def markov_tokens(n, vocab_size, seed, skip=()):
    """A random second-order Markov chain, so that counts of longer n-grams repeat; tokens in `skip` never occur."""
    rng = np.random.default_rng(seed)
    allowed = [t for t in range(vocab_size) if t not in skip]
    table = rng.dirichlet(np.full(len(allowed), 0.3), size=(vocab_size, vocab_size))
    out = [allowed[0], allowed[1]]
    for _ in range(n - 2):
        out.append(allowed[rng.choice(len(allowed), p=table[out[-2], out[-1]])])
    return np.array(out)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["plain", "modified", "fixed"])
def test_matches_the_dictionary_reference(order, kind):
    V = 6
    train = markov_tokens(300, V, seed=order, skip={5})  # token 5 is never seen in training
    test = np.concatenate([markov_tokens(80, V, seed=10 + order), [5, 5, 0, 5]])  # unseen contexts too
    kwargs = {"plain": {}, "modified": {"modified": True}, "fixed": {"discount": 0.6}}[kind]
    lm = KneserNey(order, **kwargs).fit(train, V)
    expected = reference_log_probs(train, test, order, V, **kwargs)
    np.testing.assert_allclose(lm.log_probs(test), expected, rtol=0, atol=1e-10)
    assert lm.loss(test) == pytest.approx(-expected.mean(), abs=1e-12)
    assert (
        lm.num_ngrams
        == [len({tuple(train[i : i + k]) for i in range(len(train) - k + 1)}) for k in range(1, 5)][:order]
    )
    if kind == "modified" and order > 1:  # the three discounts differ somewhere: the modified path ran
        assert any(len(set(d)) > 1 for d in lm.discounts)


def test_a_short_training_sequence_against_the_reference():
    # fewer tokens than the order: the top levels have no n-grams at all
    train, test = np.array([1, 2, 1]), np.array([1, 2, 1, 0, 2, 1])
    lm = KneserNey(5).fit(train, 3)
    np.testing.assert_allclose(lm.log_probs(test), reference_log_probs(train, test, 5, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("modified", [False, True])
def test_every_next_token_distribution_sums_to_one(modified):
    V = 7
    train = markov_tokens(500, V, seed=3, skip={6})
    lm = KneserNey(4, modified=modified).fit(train, V)
    contexts = [[], [int(train[0])], list(train[10:13]), list(train[40:50]), [6, 6, 6], [0, 6, 1], [6]]
    for context in contexts:
        lp = lm.next_log_probs(np.array(context, dtype=np.int64))
        assert lp.shape == (V,)
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-12), context
        # the same numbers as scoring context + [w] in one sequence
        for w in (0, 6):
            assert lp[w] == pytest.approx(lm.log_probs(np.array([*context, w]))[-1], abs=1e-14)


def test_unseen_tokens_and_contexts_get_finite_log_probs():
    V = 10
    train = markov_tokens(400, V, seed=5, skip={7, 8, 9})
    lm = KneserNey(5).fit(train, V)
    lp = lm.log_probs(np.array([9, 8, 7, 9, 0, 1, 9, 9, 9, 9]))
    assert np.isfinite(lp).all()
    assert (lp < 0).all()
    # an unseen token after a seen context is still less likely than the seen continuations
    context = train[100:104]
    nxt = lm.next_log_probs(context)
    assert np.isfinite(nxt).all() and nxt[9] < nxt[int(train[104])]


def test_training_loss_falls_with_the_order():
    V = 8
    train = markov_tokens(3000, V, seed=7)
    losses = [KneserNey(order).fit(train, V).loss(train) for order in range(1, 7)]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses


def test_a_repeated_sequence_is_predicted_almost_perfectly_at_high_order():
    rng = np.random.default_rng(0)
    block = rng.integers(0, 5, size=60)  # random, so a short context does not determine the next token
    tokens = np.tile(block, 30)
    low = KneserNey(1).fit(tokens, 5).loss(tokens[len(block) :])
    high = KneserNey(10).fit(tokens, 5).loss(tokens[len(block) :])
    assert low > 1.0
    assert high < 0.05


def test_rows_are_independent_sequences():
    V = 6
    train = markov_tokens(400, V, seed=2)
    lm = KneserNey(3, modified=True).fit(train, V)
    rows = markov_tokens(40, V, seed=9).reshape(4, 10)
    np.testing.assert_array_equal(lm.log_probs(rows), np.stack([lm.log_probs(r) for r in rows]))
    assert lm.loss(rows) == pytest.approx(-np.mean([lm.log_probs(r) for r in rows]))


def test_any_integer_dtype_and_a_list_give_the_same_numbers():
    V = 6
    train = markov_tokens(300, V, seed=4)
    a = KneserNey(3).fit(train.astype(np.uint16), V)
    b = KneserNey(3).fit(list(train), V)
    test = markov_tokens(30, V, seed=8)
    np.testing.assert_array_equal(a.log_probs(test.astype(np.int32)), b.log_probs(list(test)))
    assert a.log_probs([]).shape == (0,)


def test_a_fixed_discount_is_used_at_every_level():
    lm = KneserNey(3, discount=0.3).fit(markov_tokens(200, 5, seed=1), 5)
    assert lm.discounts == [(0.3, 0.3, 0.3)] * 3


def test_discounts_without_singletons_fall_to_the_margin():
    # every unigram occurs 100 times: n1 = n2 = 0, so D = 0 would be the estimate (no mass for unseen tokens);
    # modified Kneser-Ney cannot form its three estimates and falls back to the plain one, clipped
    for modified in (False, True):
        lm = KneserNey(1, modified=modified).fit(np.tile([0, 1, 2], 100), 4)
        assert lm.discounts == [(DISCOUNT_MARGIN,) * 3]
        assert np.isfinite(lm.log_probs([3])).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: KneserNey(0), "order"),
        (lambda: KneserNey(-2), "order"),
        (lambda: KneserNey(2.0), "order"),
        (lambda: KneserNey(True), "order"),
        (lambda: KneserNey(3, discount=0.0), "discount"),
        (lambda: KneserNey(3, discount=1.0), "discount"),
        (lambda: KneserNey(3, discount=-0.5), "discount"),
        (lambda: KneserNey(3, discount=float("nan")), "discount"),
        (lambda: KneserNey(3, discount="0.5"), "discount"),
        (lambda: KneserNey(3, discount=0.5, modified=True), "fixed discount"),
        (lambda: KneserNey(3, modified=1), "modified"),
        (lambda: KneserNey(3).fit(np.array([0, 1, 2]), 0), "vocab_size"),
        (lambda: KneserNey(3).fit(np.array([0, 1, 2]), 2.5), "vocab_size"),
        (lambda: KneserNey(3).fit(np.array([0, 1, 3]), 3), r"\[0, 3\)"),
        (lambda: KneserNey(3).fit(np.array([0, -1, 2]), 3), r"\[0, 3\)"),
        (lambda: KneserNey(3).fit(np.array([0.0, 1.0]), 3), "integer"),
        (lambda: KneserNey(3).fit(np.array([[0, 1], [1, 0]]), 3), "1-D"),
        (lambda: KneserNey(3).fit(np.array([], dtype=np.int64), 3), "at least one"),
        (lambda: KneserNey(3).log_probs(np.array([0, 1])), "not fitted"),
        (lambda: KneserNey(2).fit([0, 1, 2], 3).log_probs(np.array([0, 3])), r"\[0, 3\)"),
        (lambda: KneserNey(2).fit([0, 1, 2], 3).log_probs(np.zeros((2, 2, 2), dtype=int)), "1-D or 2-D"),
        (lambda: KneserNey(2).fit([0, 1, 2], 3).log_probs(np.array([0.5])), "integer"),
        (lambda: KneserNey(2).fit([0, 1, 2], 3).loss(np.array([], dtype=int)), "empty"),
        (lambda: KneserNey(2).fit([0, 1, 2], 3).next_log_probs(np.array([[0]])), "1-D"),
    ],
)
def test_bad_inputs_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
