"""Multi-query associative recall (Arora et al. 2023, "Zoology"): the value stored under a key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from minillm.tasks.base import Batch, Task, _batch, _check_int

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# 5. Associative recall
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssociativeRecall(Task):
    """`k1 v1 k2 v2 ... kn vn q` -> the value paired with key q.

    tokens  n_pairs (key, value) pairs, then the queries: q1 a1 q2 a2 ... q_m
            (seq_len = 2 n_pairs + 2 n_queries - 1)
    targets each query's value, at the query's position
    mask    1 at the query positions only

    Keys in one sequence are distinct; the queries are distinct keys among them,
    in random order; values are i.i.d. uniform (repeats allowed). The answer to
    each query but the last follows it as an input token, so later queries see
    the earlier answers (teacher forcing). With n_queries=1 (the default) this is
    the classic single-query task; several queries per sequence ("multi-query
    associative recall", Arora et al. 2023, Zoology) give the loss more positions
    per sequence, which is what lets a small model find the circuit quickly.
    Token ranges are disjoint: values are ids 0..n_values-1 ("v0", "v1", ...),
    keys are ids n_values..n_values+n_keys-1 ("k0", "k1", ...). Output ids are
    value ids, so d_vocab_out = n_values and a target id is that value's token id.
    """

    name: ClassVar[str] = "associative_recall"

    n_pairs: int = 8
    n_keys: int = 32
    n_values: int = 32
    n_queries: int = 1
    n_train: int = 1024
    n_test: int = 1024

    def __post_init__(self) -> None:
        _check_int(self.name, "n_pairs", self.n_pairs, 1)
        _check_int(self.name, "n_keys", self.n_keys, self.n_pairs)  # distinct keys must fit
        _check_int(self.name, "n_values", self.n_values, 2)
        _check_int(self.name, "n_queries", self.n_queries, 1)
        if self.n_queries > self.n_pairs:
            raise ValueError(
                f"{self.name}: n_queries={self.n_queries} must be <= n_pairs={self.n_pairs} "
                "(the queries are distinct keys of the sequence)"
            )
        self._check_split_sizes()

    @property
    def vocab(self) -> tuple[str, ...]:
        return tuple(f"v{i}" for i in range(self.n_values)) + tuple(f"k{i}" for i in range(self.n_keys))

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return self.vocab[: self.n_values]

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 2 * self.n_queries - 1

    def key_token(self, key_index: int) -> int:
        """Token id of key number `key_index` ("k{key_index}")."""
        return self.n_values + key_index

    def query_positions(self) -> np.ndarray:
        """Positions of the queries (where the answers are read)."""
        return 2 * self.n_pairs + 2 * np.arange(self.n_queries)

    def _sample(self, key: Array, batch_size: int) -> Batch:
        b, n, m = batch_size, self.n_pairs, self.n_queries
        k_keys, k_values, k_query = jax.random.split(key, 3)
        # n distinct keys per row: the first n of a random permutation
        keys = jnp.argsort(jax.random.uniform(k_keys, (b, self.n_keys)), axis=1)[:, :n]
        keys = (keys + self.n_values).astype(jnp.int32)  # key token ids
        values = jax.random.randint(k_values, (b, n), 0, self.n_values, dtype=jnp.int32)
        asked = jnp.argsort(jax.random.uniform(k_query, (b, n)), axis=1)[:, :m]  # which pairs, distinct

        pairs = jnp.stack([keys, values], axis=2).reshape(b, 2 * n)  # k1 v1 k2 v2 ...
        queries = jnp.take_along_axis(keys, asked, axis=1)  # [b, m]
        answers = jnp.take_along_axis(values, asked, axis=1)  # [b, m]
        asked_pairs = jnp.stack([queries, answers], axis=2).reshape(b, 2 * m)[:, :-1]  # q1 a1 ... q_m
        tokens = jnp.concatenate([pairs, asked_pairs], axis=1)
        at = jnp.asarray(self.query_positions())
        targets = jnp.zeros((b, self.seq_len), jnp.int32).at[:, at].set(answers)
        mask = jnp.zeros((b, self.seq_len), jnp.float32).at[:, at].set(1.0)
        return _batch(tokens, targets, mask)

    def _max_sequence_prob(self) -> Fraction:
        n_key_orders = math.perm(self.n_keys, self.n_pairs)
        return Fraction(1, n_key_orders * self.n_values**self.n_pairs * math.perm(self.n_pairs, self.n_queries))
