"""Smoothed n-gram language models: interpolated Kneser-Ney, the classical baseline for a small LM.

    lm = KneserNey(order=5).fit(train_tokens, vocab_size)
    lm.loss(heldout_tokens)          # nats per token, the number a transformer's loss compares with
    lm.log_probs(heldout_tokens)     # [n]: log P(token i | the order - 1 tokens before it)
    lm.next_log_probs(context)       # [vocab_size]: the whole next-token distribution

The model (Chen & Goodman 1998, "An empirical study of smoothing techniques for language
modeling", interpolated Kneser-Ney). For an n-gram h w at level k (h the k - 1 tokens of context),
with c_k(h w) its count at that level and D_k(c) the discount taken from a count c > 0:

    P_k(w | h) = max(c_k(h w) - D_k(c_k(h w)), 0) / S_k(h)  +  gamma_k(h) / S_k(h) * P_{k-1}(w | h')
    S_k(h) = sum_w c_k(h w),   gamma_k(h) = sum_{w: c_k(h w) > 0} D_k(c_k(h w)),   P_0(w) = 1 / vocab_size

where h' is h without its first token; a context with S_k(h) = 0 (never seen followed by a token)
passes P_{k-1}(w | h') through unchanged. The counts: at the highest level (k = order) the plain
counts of the n-grams in the training tokens; at every lower level the *continuation* counts
N1+(. h w) = the number of distinct tokens seen right before h w (Kneser-Ney's point: a lower-order
distribution is only used where the longer context was not seen, so it should say how many
contexts a token completes, not how often it occurs). The unigram level interpolates with the
uniform distribution over the vocabulary, so every token, seen or not, gets probability > 0, and
for every context the probabilities over the vocabulary sum to 1.

Discounts: plain Kneser-Ney takes one D per level, D = n1 / (n1 + 2 n2) from that level's
count-of-counts (n_r: how many n-grams have count r, continuation counts below the top), or the
`discount` given; modified Kneser-Ney (`modified=True`, Chen & Goodman's recommended variant) takes
three, for counts 1, 2 and 3+: D_r = r - (r + 1) Y n_{r+1} / n_r with Y = n1 / (n1 + 2 n2) (where
some of n1..n4 is 0 these cannot be formed, and all three are Y). Each D_r is then clipped into
[0.01, r - 0.01]: a level whose n-grams all occur often (characters' unigrams) has n1 = 0 and
estimates D = 0, which would leave no probability for unseen tokens.

The start of a sequence: position i < order - 1 has only i tokens of context and is scored with
level i + 1's distribution, the lower-order (continuation-count) distribution P_{i+1}; position 0
gets the unigram level P_1(w). A 2-D input [B, T] is B independent sequences, each starting so.

The implementation has no Python loop over tokens. Each distinct k-gram gets a dense id: the id of
its first k - 1 tokens (a (k - 1)-gram id) times vocab_size plus its last token is an int64 key,
and the sorted unique keys of level k (np.unique) are that level's table; a k-gram's id is its
key's index there, found by np.searchsorted when scoring. The keys never exceed
(number of distinct (k - 1)-grams) * vocab_size, so any order and vocabulary is exact (no hashing,
no collision). Fitting costs one sort of the training positions per level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DISCOUNT_MARGIN = 0.01  # an estimated D_r is clipped into [margin, r - margin]


def _as_tokens(tokens: Any, name: str, ndims: tuple[int, ...], vocab_size: int | None) -> np.ndarray:
    """`tokens` as an int64 array, checked: integer dtype, ndim in `ndims`, every id in [0, vocab_size)."""
    arr = np.asarray(tokens)
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be a {want} array of token ids; got shape {arr.shape}")
    if arr.size == 0 and arr.dtype == np.float64:  # np.asarray([]) is float: an empty list is fine
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if vocab_size is not None and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} must be ids in [0, {vocab_size}); got values in [{lo}, {hi}]")
    return arr


def _estimate_discounts(counts: np.ndarray, modified: bool) -> tuple[float, float, float]:
    """(D1, D2, D3+) from the count-of-counts of one level's counts (plain: three equal values)."""
    n = [int(np.count_nonzero(counts == r)) for r in range(1, 5)]

    y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.0
    if modified and min(n) > 0:
        raw = [r - (r + 1) * y * n[r] / n[r - 1] for r in (1, 2, 3)]
    else:
        raw = [y, y, y]
    m = DISCOUNT_MARGIN
    return tuple(float(min(max(d, m), r - m)) for r, d in zip((1, 2, 3), raw, strict=True))


class KneserNey:
    """An interpolated Kneser-Ney n-gram model of `order` tokens (1: unigram, 5: four tokens of context).

    discount: None estimates each level's discount from its count-of-counts; a float in (0, 1) is
    used at every level (plain Kneser-Ney only). modified: Chen & Goodman's modified Kneser-Ney
    (three estimated discounts per level, for counts 1, 2 and 3+).

    After `fit`: `discounts[k - 1]` is level k's (D1, D2, D3+) and `num_ngrams[k - 1]` the number of
    distinct k-grams in the training tokens.
    """

    def __init__(self, order: int, discount: float | None = None, modified: bool = False):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"order must be an integer >= 1; got {order!r}")
        if not isinstance(modified, bool):
            raise ValueError(f"modified must be True or False; got {modified!r}")
        if discount is not None:
            if modified:
                raise ValueError("a fixed discount is for plain Kneser-Ney: modified=True estimates its three")
            if isinstance(discount, bool) or not isinstance(discount, (int, float, np.floating, np.integer)):
                raise ValueError(f"discount must be a number in (0, 1) or None; got {discount!r}")
            if not 0.0 < float(discount) < 1.0:
                raise ValueError(f"discount must be in (0, 1) (exclusive) or None; got {discount!r}")
            discount = float(discount)
        self.order = int(order)
        self.discount = discount
        self.modified = modified
        self.vocab_size: int | None = None
        self.discounts: list[tuple[float, float, float]] = []
        self.num_ngrams: list[int] = []
        # per level k = 1..order (index k - 1): the sorted int64 keys of its distinct k-grams; alpha,
        # one per k-gram plus a trailing 0 (the unseen k-gram, id -1): max(c - D(c), 0) / S(context);
        # backoff, one per (k - 1)-gram context plus a trailing 1 (the unseen context): gamma / S, or
        # 1 where S = 0. Then P_k(w | h) = alpha[id(h w)] + backoff[id(h)] * P_{k-1}(w | h').
        self._keys: list[np.ndarray] = []
        self._alpha: list[np.ndarray] = []
        self._backoff: list[np.ndarray] = []

    def __repr__(self) -> str:
        fitted = f", vocab_size={self.vocab_size}" if self.vocab_size is not None else ", unfitted"
        kind = ", modified=True" if self.modified else ""
        return f"KneserNey(order={self.order}{kind}{fitted})"

    def fit(self, tokens: Any, vocab_size: int) -> KneserNey:
        """Count the n-grams of `tokens` ([n] integer ids in [0, vocab_size), one sequence); returns self."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an integer >= 1; got {vocab_size!r}")
        V = int(vocab_size)
        tok = _as_tokens(tokens, "tokens", (1,), V)
        n = tok.shape[0]
        if n == 0:
            raise ValueError("tokens must hold at least one token to fit on")
        if n * V >= 2**62:
            raise ValueError(f"{n} tokens x vocab_size {V} overflows the int64 n-gram keys")

        keys_by_level, counts_by_level = [], []
        prev_ids = np.zeros(n, dtype=np.int64)  # id of the (k-1)-gram starting at each position; level 0: one id
        for k in range(1, self.order + 1):
            m = n - k + 1  # positions where a k-gram starts
            if m > 0:
                keys, first, ids, counts = np.unique(
                    prev_ids[:m] * V + tok[k - 1 :], return_index=True, return_inverse=True, return_counts=True
                )
                ids = ids.reshape(-1)
            else:
                keys = first = ids = counts = np.zeros(0, dtype=np.int64)
            if k > 1:  # continuation counts of level k - 1: distinct tokens before each (k-1)-gram
                counts_by_level[-1] = np.bincount(prev_ids[first + 1], minlength=len(keys_by_level[-1]))
            keys_by_level.append(keys)
            counts_by_level.append(counts)
            prev_ids = ids

        self.vocab_size = V
        self._keys, self._alpha, self._backoff, self.discounts, self.num_ngrams = [], [], [], [], []
        n_contexts = 1
        for keys, counts in zip(keys_by_level, counts_by_level, strict=True):
            if self.discount is not None:
                d = (self.discount,) * 3
            else:
                d = _estimate_discounts(counts[counts > 0], self.modified)
            table = np.array((0.0, *d))  # D(c) for c = 0, 1, 2, 3+
            dc = table[np.minimum(counts, 3)]
            context = keys // V
            S = np.bincount(context, weights=counts, minlength=n_contexts).astype(np.float64)
            gamma = np.bincount(context, weights=dc, minlength=n_contexts)
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = np.where(counts > 0, np.maximum(counts - dc, 0.0) / S[context], 0.0)
                backoff = np.where(S > 0, gamma / S, 1.0)
            self._keys.append(keys)
            self._alpha.append(np.append(alpha, 0.0))
            self._backoff.append(np.append(backoff, 1.0))
            self.discounts.append(d)
            self.num_ngrams.append(len(keys))
            n_contexts = len(keys)
        return self

    def log_probs(self, tokens: Any) -> np.ndarray:
        """Natural log of P(tokens[i] | tokens[max(0, i - order + 1) : i]) for every position i.

        tokens: [n] one sequence, or [B, T] B independent sequences; the result has its shape
        (float64). The first order - 1 positions of a sequence have less context (module docstring).
        """
        V = self._fitted()
        t = _as_tokens(tokens, "tokens", (1, 2), V)
        rows = t.reshape(-1, t.shape[-1]) if t.ndim == 2 else t[None, :]
        T = rows.shape[1]
        p = np.full(rows.shape, 1.0 / V)
        prev_ids = np.zeros(rows.shape, dtype=np.int64)  # id of the (k-1)-gram starting at each position
        for k in range(1, min(self.order, T) + 1):
            keys, m = self._keys[k - 1], T - k + 1
            context = prev_ids[:, :m]
            key = context * V + rows[:, k - 1 :]
            ids = np.full(key.shape, -1, dtype=np.int64)
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
                found = (context >= 0) & (keys[pos] == key)
                ids[found] = pos[found]
            p[:, k - 1 :] = self._alpha[k - 1][ids] + self._backoff[k - 1][context] * p[:, k - 1 :]
            prev_ids = ids
            if not (ids >= 0).any():  # no k-gram seen: longer contexts are unseen too (backoff 1)
                break
        return np.log(p).reshape(t.shape)

    def loss(self, tokens: Any) -> float:
        """Mean negative log probability of `tokens` ([n] or [B, T]), in nats per token."""
        lp = self.log_probs(tokens)
        if lp.size == 0:
            raise ValueError("tokens is empty: there is no loss to average")
        return float(-lp.mean())

    def next_log_probs(self, context: Any) -> np.ndarray:
        """[vocab_size] log P(w | context) for every token w, after `context` ([n] ids, may be empty).

        Only the last order - 1 tokens of context matter; a shorter context is the start of a
        sequence, as in log_probs (whose last position this is, for each w).
        """
        V = self._fitted()
        ctx = _as_tokens(context, "context", (1,), V)
        ctx = ctx[max(0, len(ctx) - (self.order - 1)) :]
        rows = np.concatenate([np.broadcast_to(ctx, (V, len(ctx))), np.arange(V)[:, None]], axis=1)
        return self.log_probs(rows)[:, -1]

    def _fitted(self) -> int:
        if self.vocab_size is None:
            raise ValueError(f"{self!r} is not fitted: call .fit(tokens, vocab_size) first")
        return self.vocab_size
