"""Factual recall in miniature: (subject, relation) -> attribute, facts stored in the weights (Meng et al. 2022)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from minillm.tasks.base import Batch, Task, _batch, _check_int

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# 6. Factual recall
# ---------------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Ada Alan Anna Ben Cleo Dan Eva Finn Gus Hana Ida Ivan Jo Kai Lea Max Mia Ned Omar Pia Raj Sam Tess Zoe".split()
)
_LAST_NAMES = (
    "Abe Bell Cole Dunn Ezra Ford Gray Hale Ives Jett Kerr Lowe Moss Nash Orr Park Quinn Reed Stone Todd Vale "
    "Wood Yates Zell".split()
)


def _names(stock: Sequence[str], n: int, prefix: str) -> tuple[str, ...]:
    """n readable names: the stock ones first, then prefix + number."""
    return tuple(stock[:n]) + tuple(f"{prefix}{i}" for i in range(len(stock), n))


@functools.lru_cache(maxsize=16)
def _fact_table(
    facts_seed: int, n_subjects: int, n_first: int, n_last: int, n_relations: int, n_attributes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The facts of one FactualRecall world: (first [s], last [s], attribute [s, r]), numpy int."""
    rng = np.random.default_rng(facts_seed)
    pairs = rng.choice(n_first * n_last, size=n_subjects, replace=False)  # distinct (first, last) names
    attribute = rng.integers(0, n_attributes, size=(n_subjects, n_relations))
    for table in (pairs, attribute):
        table.setflags(write=False)
    return pairs // n_last, pairs % n_last, attribute


@dataclass(frozen=True)
class FactualRecall(Task):
    """A miniature of factual recall in language models: facts stored in the weights.

    A world of n_subjects people, each named by a first and a last name (distinct pairs; names are
    shared, so neither name alone says who it is), n_relations relations, and one fixed attribute
    per (subject, relation), all drawn from `facts_seed` (`facts()`). A sequence is

        <bos>  filler x n_before  FIRST LAST  filler x n_after  RELATION    (seq_len = n_filler_slots + 4)
        targets: the attribute of (subject, relation), at the last position only

    with n_before + n_after = n_filler_slots, n_after >= min_after, n_before uniform. Filler tokens
    are meaningless, except that each is replaced with probability `distractor_prob` by a random
    first or last name (never a first name followed by a last name, which would be a second
    subject). The distractors matter: without them a model can find the two names by their token
    type alone and do all the work at the final position (see lesson 0); with them it must bind
    the two names where they stand, at the last subject token, as large language models do (Meng
    et al. 2022; Geva et al. 2023).

    Every fact is seen in training; the test split holds unseen contexts (fillers, distractors,
    positions) of the same facts. `prompts(key, batch_size, n_before)` draws sequences with the
    subject at one fixed position, so that activations line up by position across a batch.
    Input tokens: "<bos>", fillers "x0".., first names, last names, relations "rel0"..; outputs:
    attributes "attr0"...
    """

    name: ClassVar[str] = "factual_recall"

    n_subjects: int = 300
    n_first: int = 24
    n_last: int = 24
    n_relations: int = 3
    n_attributes: int = 40
    n_fillers: int = 30
    n_filler_slots: int = 12
    min_after: int = 2
    distractor_prob: float = 0.3
    facts_seed: int = 0
    n_train: int = 2048
    n_test: int = 2048

    BOS: ClassVar[int] = 0

    def __post_init__(self) -> None:
        for name, minimum in [
            ("n_first", 2),
            ("n_last", 2),
            ("n_relations", 1),
            ("n_attributes", 2),
            ("n_fillers", 1),
            ("n_filler_slots", 1),
            ("min_after", 0),
            ("facts_seed", 0),
        ]:
            _check_int(self.name, name, getattr(self, name), minimum)
        _check_int(self.name, "n_subjects", self.n_subjects, 1)
        if self.n_subjects > self.n_first * self.n_last:
            raise ValueError(
                f"{self.name}: n_subjects={self.n_subjects} needs that many distinct (first, last) pairs, "
                f"but n_first * n_last = {self.n_first * self.n_last}"
            )
        if self.min_after > self.n_filler_slots:
            raise ValueError(f"{self.name}: min_after={self.min_after} > n_filler_slots={self.n_filler_slots}")
        if not (isinstance(self.distractor_prob, (int, float)) and 0.0 <= self.distractor_prob < 1.0):
            raise ValueError(f"{self.name}: distractor_prob must be in [0, 1), got {self.distractor_prob!r}")
        self._check_split_sizes()

    # --- token ids: <bos> | fillers | first names | last names | relations -------------------
    @property
    def first_ids(self) -> np.ndarray:
        return 1 + self.n_fillers + np.arange(self.n_first)

    @property
    def last_ids(self) -> np.ndarray:
        return 1 + self.n_fillers + self.n_first + np.arange(self.n_last)

    @property
    def relation_ids(self) -> np.ndarray:
        return 1 + self.n_fillers + self.n_first + self.n_last + np.arange(self.n_relations)

    @property
    def vocab(self) -> tuple[str, ...]:
        return (
            ("<bos>",)
            + tuple(f"x{i}" for i in range(self.n_fillers))
            + _names(_FIRST_NAMES, self.n_first, "First")
            + _names(_LAST_NAMES, self.n_last, "Last")
            + tuple(f"rel{i}" for i in range(self.n_relations))
        )

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return tuple(f"attr{i}" for i in range(self.n_attributes))

    @property
    def seq_len(self) -> int:
        return self.n_filler_slots + 4

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.seq_len - 1,)

    def subject_positions(self, n_before: int) -> tuple[int, int]:
        """Positions of the first and the last subject token when n_before fillers precede them."""
        return 1 + n_before, 2 + n_before

    # --- the facts ----------------------------------------------------------------------------
    def facts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first-name index [s], last-name index [s], attribute [s, r]): the world's facts."""
        return _fact_table(
            self.facts_seed, self.n_subjects, self.n_first, self.n_last, self.n_relations, self.n_attributes
        )

    def subject_name(self, subject: int) -> str:
        first, last, _ = self.facts()
        return f"{self.vocab[self.first_ids[first[subject]]]} {self.vocab[self.last_ids[last[subject]]]}"

    # --- data ---------------------------------------------------------------------------------
    def prompts(self, key: Array, batch_size: int, n_before: int) -> Batch:
        """Sequences with the subject after exactly n_before fillers (jittable, batch_size static)."""
        if not 0 <= n_before <= self.n_filler_slots - self.min_after:
            raise ValueError(
                f"{self.name}: n_before must be in 0..{self.n_filler_slots - self.min_after} "
                f"(n_filler_slots - min_after), got {n_before}"
            )
        return self._draw(key, batch_size, jnp.full((batch_size, 1), n_before))

    def _sample(self, key: Array, batch_size: int) -> Batch:
        key, k_pos = jax.random.split(key)
        n_before = jax.random.randint(k_pos, (batch_size, 1), 0, self.n_filler_slots - self.min_after + 1)
        return self._draw(key, batch_size, n_before)

    def _draw(self, key: Array, batch_size: int, n_before: Array) -> Batch:
        b, n = batch_size, self.n_filler_slots
        k_subj, k_rel, k_fill, k_dis, k_name, k_fix = jax.random.split(key, 6)
        first, last, attribute = (jnp.asarray(t) for t in self.facts())
        subject = jax.random.randint(k_subj, (b,), 0, self.n_subjects)
        relation = jax.random.randint(k_rel, (b,), 0, self.n_relations)
        # fillers, some of them replaced by a random name (first or last)
        filler = jax.random.randint(k_fill, (b, n), 1, 1 + self.n_fillers)
        names = 1 + self.n_fillers + jax.random.randint(k_name, (b, n), 0, self.n_first + self.n_last)
        filler = jnp.where(jax.random.bernoulli(k_dis, self.distractor_prob, (b, n)), names, filler)
        # lay out: filler[:n_before], FIRST, LAST, filler[n_before:]
        slot = jnp.arange(n + 2)[None, :]  # positions 1 .. n + 2 of the sequence
        source = jnp.where(slot < n_before, slot, slot - 2)
        middle = jnp.take_along_axis(filler, jnp.clip(source, 0, n - 1), axis=1)
        middle = jnp.where(slot == n_before, (self.first_ids[0] + first[subject])[:, None], middle)
        middle = jnp.where(slot == n_before + 1, (self.last_ids[0] + last[subject])[:, None], middle)
        # no second subject: a stray first name followed by a stray last name loses the last name
        is_first = (middle >= self.first_ids[0]) & (middle <= self.first_ids[-1])
        is_last = (middle >= self.last_ids[0]) & (middle <= self.last_ids[-1])
        fake = is_first[:, :-1] & is_last[:, 1:] & (slot[:, :-1] != n_before)
        plain = jax.random.randint(k_fix, (b, n + 1), 1, 1 + self.n_fillers)
        middle = middle.at[:, 1:].set(jnp.where(fake, plain, middle[:, 1:]))
        tokens = jnp.concatenate(
            [jnp.full((b, 1), self.BOS), middle, (self.relation_ids[0] + relation)[:, None]], axis=1
        )
        targets = jnp.zeros((b, self.seq_len), jnp.int32).at[:, -1].set(attribute[subject, relation])
        mask = jnp.zeros((b, self.seq_len), jnp.float32).at[:, -1].set(1.0)
        return _batch(tokens, targets, mask)

    def _max_sequence_prob(self) -> Fraction:
        # Each filler slot holds a given token with probability at most max(1 / n_fillers,
        # distractor_prob / n_names), whatever came before it.
        p = Fraction(self.distractor_prob).limit_denominator(10**6)
        slot = max(Fraction(1, self.n_fillers), p / (self.n_first + self.n_last))
        n_layouts = self.n_filler_slots - self.min_after + 1
        return slot**self.n_filler_slots / (n_layouts * self.n_subjects * self.n_relations)
