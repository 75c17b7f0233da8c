"""Lists of numbers to sort or reverse: positional and comparison attention."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import jax
import jax.numpy as jnp

from minillm.tasks.base import Batch, Task, _batch, _check_int, _next_token_targets

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# 4. Sorting and reversal
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ListTask(Task):
    """Shared layout of list-to-list tasks (Sorting, Reversal).

    tokens  x_1 .. x_n SEP y_1 .. y_n     (seq_len = 2n + 1)
    targets next token, at positions n .. 2n-1 (SEP predicts y_1, y_i predicts y_{i+1})
    mask    1 at positions n .. 2n-1

    Values x_i are i.i.d. uniform on [0, n_values) (repeats allowed); SEP is
    token n_values and is shown as "->". d_vocab_out = d_vocab (next-token
    prediction over the same vocabulary).
    """

    n: int = 8
    n_values: int = 32
    n_train: int = 1024
    n_test: int = 1024

    def __post_init__(self) -> None:
        _check_int(self.name, "n", self.n, 1)
        _check_int(self.name, "n_values", self.n_values, 2)
        self._check_split_sizes()

    def _output(self, values: Array) -> Array:
        """Input list [b, n] -> output list [b, n]."""
        raise NotImplementedError

    @property
    def sep_token(self) -> int:
        return self.n_values

    @property
    def vocab(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.n_values)) + ("->",)

    @property
    def seq_len(self) -> int:
        return 2 * self.n + 1

    def _sample(self, key: Array, batch_size: int) -> Batch:
        b, n = batch_size, self.n
        values = jax.random.randint(key, (b, n), 0, self.n_values, dtype=jnp.int32)
        sep = jnp.full((b, 1), self.sep_token, jnp.int32)
        tokens = jnp.concatenate([values, sep, self._output(values)], axis=1)
        pos = jnp.arange(2 * n + 1)[None, :]
        mask = jnp.broadcast_to((pos >= n) & (pos < 2 * n), (b, 2 * n + 1)).astype(jnp.float32)
        return _batch(tokens, _next_token_targets(tokens, mask), mask)

    def _max_sequence_prob(self) -> Fraction:
        return Fraction(1, self.n_values**self.n)


@dataclass(frozen=True)
class Sorting(_ListTask):
    """`5 3 9 -> 3 5 9`: output the input list sorted ascending (see _ListTask)."""

    name: ClassVar[str] = "sorting"

    def _output(self, values: Array) -> Array:
        return jnp.sort(values, axis=1)


@dataclass(frozen=True)
class Reversal(_ListTask):
    """`5 3 9 -> 9 3 5`: output the input list reversed (see _ListTask)."""

    name: ClassVar[str] = "reversal"

    def _output(self, values: Array) -> Array:
        return values[:, ::-1]
