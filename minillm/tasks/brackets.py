"""Bracket strings: is a string balanced (classification), and the next bracket of a balanced one (a hidden depth)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from minillm.tasks.base import Batch, Task, _batch, _catalan, _check_int

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# 3. Balanced brackets
# ---------------------------------------------------------------------------------------------


def _uniform_dyck(key: Array, batch_size: int, k: int) -> Array:
    """Uniformly random balanced strings of k pairs as steps +1 '(' / -1 ')'. [b, 2k]

    Cycle lemma: shuffle k (+1)s and k+1 (-1)s (sum -1). Exactly one rotation
    has all proper prefix sums >= 0: the one starting just after the first
    minimum of the prefix sums. It ends with a -1; dropping it leaves a
    balanced string, and each balanced string arises from 2k+1 shuffles.
    """
    m = 2 * k + 1
    steps = jnp.concatenate([jnp.ones(k, jnp.int32), -jnp.ones(k + 1, jnp.int32)])
    order = jnp.argsort(jax.random.uniform(key, (batch_size, m)), axis=1)
    x = steps[order]  # [b, m]
    first_min = jnp.argmin(jnp.cumsum(x, axis=1), axis=1)  # [b]
    idx = (first_min[:, None] + 1 + jnp.arange(2 * k)[None, :]) % m
    return jnp.take_along_axis(x, idx, axis=1)


@dataclass(frozen=True)
class _BracketStrings(Task):
    """What the bracket tasks share: their token ids and the check that n_brackets is even."""

    START: ClassVar[int] = 0
    OPEN: ClassVar[int] = 1
    CLOSE: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _check_int(self.name, "n_brackets", self.n_brackets, 2)
        if self.n_brackets % 2:
            raise ValueError(f"{self.name}: n_brackets must be even, got {self.n_brackets}")
        self._check_split_sizes()


@dataclass(frozen=True)
class BalancedBrackets(_BracketStrings):
    """Is a string of n_brackets '(' and ')' balanced?

    tokens  [START] b_1 .. b_n [END]      (seq_len = n_brackets + 2)
    targets 1 (balanced) / 0 at the END position only; d_vocab_out = 2
    mask    1 at END only

    A string is balanced iff its elevation (#'(' - #')' so far) never drops
    below 0 and ends at 0. Examples are drawn so both rules matter:
      1/2  balanced           uniform over balanced strings
      1/4  wrong order        right counts, but the elevation dips below 0
                              (a random arrangement of n/2 '(' and n/2 ')')
      1/4  unclosed           never dips below 0 but ends at +2
                              (a balanced string with one ')' turned into '(')
    The label is computed from the string itself, not from its kind.

    Generator task. Balanced strings number Catalan(n/2) (6.6e9 for the
    default 40), so fresh samples rarely repeat a test sequence; for short
    strings they do (`test_collision_bound`), and n_brackets < 18 is refused.
    """

    name: ClassVar[str] = "balanced_brackets"

    n_brackets: int = 40
    n_train: int = 1024
    n_test: int = 1024

    END: ClassVar[int] = 3

    @property
    def vocab(self) -> tuple[str, ...]:
        return ("[START]", "(", ")", "[END]")

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return ("unbalanced", "balanced")

    @property
    def seq_len(self) -> int:
        return self.n_brackets + 2

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.seq_len - 1,)

    def _sample(self, key: Array, batch_size: int) -> Batch:
        b, n, k = batch_size, self.n_brackets, self.n_brackets // 2
        k_dyck, k_perm, k_flip, k_kind = jax.random.split(key, 4)

        balanced = _uniform_dyck(k_dyck, b, k)  # [b, n] of +1/-1

        # wrong order: random arrangement with equal counts; the rare balanced
        # one is rotated left by 1 so it ends with '(' (then it is unbalanced).
        steps = jnp.concatenate([jnp.ones(k, jnp.int32), -jnp.ones(k, jnp.int32)])
        shuffled = steps[jnp.argsort(jax.random.uniform(k_perm, (b, n)), axis=1)]
        lucky = jnp.all(jnp.cumsum(shuffled, axis=1) >= 0, axis=1, keepdims=True)
        wrong_order = jnp.where(lucky, jnp.roll(shuffled, -1, axis=1), shuffled)

        # unclosed: turn one random ')' of a balanced string into '('
        score = jnp.where(balanced < 0, jax.random.uniform(k_flip, (b, n)), -1.0)
        flip = jnp.argmax(score, axis=1)[:, None]
        unclosed = jnp.where(jnp.arange(n)[None, :] == flip, 1, balanced)

        u = jax.random.uniform(k_kind, (b, 1))
        chosen = jnp.where(u < 0.5, balanced, jnp.where(u < 0.75, wrong_order, unclosed))

        elevation = jnp.cumsum(chosen, axis=1)
        label = jnp.all(elevation >= 0, axis=1) & (elevation[:, -1] == 0)  # [b]

        brackets = jnp.where(chosen > 0, self.OPEN, self.CLOSE)
        tokens = jnp.concatenate([jnp.full((b, 1), self.START), brackets, jnp.full((b, 1), self.END)], axis=1)
        targets = jnp.zeros((b, n + 2), jnp.int32).at[:, -1].set(label.astype(jnp.int32))
        mask = jnp.zeros((b, n + 2), jnp.float32).at[:, -1].set(1.0)
        return _batch(tokens, targets, mask)

    def _max_sequence_prob(self) -> Fraction:
        # balanced: 1/2 * 1/Cat(k); unclosed: <= 1/4 * (k+1)/(k Cat(k)); wrong
        # order: <= 1/4 * 2/C(2k, k). The first is the largest.
        return Fraction(1, 2 * _catalan(self.n_brackets // 2))


# ---------------------------------------------------------------------------------------------
# 3b. Bracket depth (next-token prediction on balanced strings)
# ---------------------------------------------------------------------------------------------


@functools.cache
def _dyck_completions(n: int) -> np.ndarray:
    """[n + 1, n + 2] float64: N[r, d], the number of ways to finish a bracket string from depth d
    with r brackets left, ending at depth 0 and never going below it (0 where impossible).

    Reflection principle: paths of r steps from d down to 0 number C(r, (r + d) / 2); those that
    touch -1 are as many as the paths from -d - 2 to 0, C(r, (r + d) / 2 + 1).
    """
    counts = np.zeros((n + 1, n + 2))
    for r in range(n + 1):
        for d in range(min(r, n) + 1):
            if (r + d) % 2 == 0:
                counts[r, d] = math.comb(r, (r + d) // 2) - math.comb(r, (r + d) // 2 + 1)
    return counts


@dataclass(frozen=True)
class BracketDepth(_BracketStrings):
    """Predict the next bracket of a uniformly random balanced string: a hidden depth to track.

    tokens  [START] b_1 .. b_n            (seq_len = n_brackets + 1)
    targets b_1 .. b_n, as output ids 0 "(" / 1 ")"
    mask    1 everywhere

    The strings are uniform over all balanced strings of n brackets, so the best possible
    prediction of the next bracket is a probability that depends only on the depth so far (the
    number of '(' minus ')', never told to the model) and on how many brackets are left
    (`close_probability` computes it exactly): at depth 0 the next bracket must be '(', when the
    depth equals the brackets left it must be ')', and in between ')' grows likelier with depth.
    A model that predicts well must therefore carry the depth in its activations: the hidden
    variable that linear probes look for (`depth`).
    """

    name: ClassVar[str] = "bracket_depth"

    n_brackets: int = 24
    n_train: int = 2048
    n_test: int = 1024

    @property
    def vocab(self) -> tuple[str, ...]:
        return ("[START]", "(", ")")

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return ("(", ")")

    @property
    def seq_len(self) -> int:
        return self.n_brackets + 1

    def _sample(self, key: Array, batch_size: int) -> Batch:
        steps = _uniform_dyck(key, batch_size, self.n_brackets // 2)  # [b, n] of +1 / -1
        brackets = jnp.where(steps > 0, self.OPEN, self.CLOSE)
        tokens = jnp.concatenate([jnp.full((batch_size, 1), self.START), brackets], axis=1)
        targets = jnp.concatenate([brackets - self.OPEN, jnp.zeros((batch_size, 1), jnp.int32)], axis=1)
        mask = jnp.ones((batch_size, self.seq_len), jnp.float32).at[:, -1].set(0.0)
        return _batch(tokens, targets, mask)

    def depth(self, tokens: Any) -> np.ndarray:
        """The depth after each token [b, p] (0 at START): '(' so far minus ')' so far."""
        tokens = np.asarray(tokens)
        steps = np.where(tokens == self.OPEN, 1, np.where(tokens == self.CLOSE, -1, 0))
        return np.cumsum(steps, axis=-1)

    def close_probability(self, tokens: Any) -> np.ndarray:
        """The exact P(next bracket is ')') after each token [b, p], for uniform balanced strings:
        the completions after a ')' over all completions from here (_dyck_completions).
        The last position, with no next bracket, gets 0."""
        tokens = np.asarray(tokens)
        n = self.n_brackets
        depth = self.depth(tokens)
        left = n - np.arange(tokens.shape[-1])  # brackets still to come after position t
        counts = _dyck_completions(n)
        total = counts[left, np.clip(depth, 0, n + 1)]
        after_close = np.where(
            (depth > 0) & (left > 0), counts[np.maximum(left - 1, 0), np.clip(depth - 1, 0, n + 1)], 0.0
        )
        return np.where(total > 0, after_close / np.where(total > 0, total, 1.0), 0.0)

    def _max_sequence_prob(self) -> Fraction:
        return Fraction(1, _catalan(self.n_brackets // 2))
