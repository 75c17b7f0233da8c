"""What every task shares: the `Batch` format, the `Task` base class (sizes, decoding, a
deterministic train/test split) and the helpers that draw distinct examples."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Batch(NamedTuple):
    """One batch of examples (a pytree of three arrays of shape [b, p])."""

    tokens: Array  # int32 [b, p]  model input
    targets: Array  # int32 [b, p]  prediction wanted at each position (0 where mask is 0)
    mask: Array  # float32 [b, p]  1.0 where the loss counts


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _check_int(task: str, name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless `value` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{task}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{task}: {name} must be >= {minimum}, got {value}")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _catalan(k: int) -> int:
    """Number of balanced bracket strings with k pairs."""
    return math.comb(2 * k, k) // (k + 1)


def _next_token_targets(tokens: Array, mask: Array) -> Array:
    """targets[:, i] = tokens[:, i + 1] where mask is on, else 0.  [b, p] -> [b, p]."""
    shifted = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    return jnp.where(mask > 0, shifted, 0).astype(jnp.int32)


def _batch(tokens: Array, targets: Array, mask: Array) -> Batch:
    return Batch(tokens.astype(jnp.int32), targets.astype(jnp.int32), mask.astype(jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _jit_draw(task: Task, method: str, key: Array, batch_size: int) -> Any:
    """jit-compiled `task.<method>(key, batch_size)`, cached per (task, method, size)."""
    return getattr(task, method)(key, batch_size)


_MAX_DRAW_ROUNDS = 100


def _draw_distinct(task: Task, method: str, seed: int, n: int) -> Any:
    """Draw n examples with pairwise different token sequences from a generator.

    `task.<method>(key, n)` must return a Batch, or a tuple whose first element
    is a Batch (extra arrays ride along). Returns the same structure as numpy
    arrays with n rows, in order of first appearance, so the result depends
    only on (task, seed).
    """
    base_key = jax.random.key(seed)
    seen: set[bytes] = set()
    chunks = []
    for round_ in range(_MAX_DRAW_ROUNDS):
        drawn = jax.device_get(_jit_draw(task, method, jax.random.fold_in(base_key, round_), n))
        tokens = drawn.tokens if isinstance(drawn, Batch) else drawn[0].tokens
        keep = []
        for i, row in enumerate(tokens):
            row_bytes = row.tobytes()
            if row_bytes not in seen:
                seen.add(row_bytes)
                keep.append(i)
                if len(seen) == n:
                    break
        chunks.append(jax.tree.map(lambda x: x[np.array(keep, dtype=np.int64)], drawn))
        if len(seen) == n:
            return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *chunks)
    raise RuntimeError(
        f"{task!r}: found only {len(seen)} distinct sequences in {_MAX_DRAW_ROUNDS} rounds, "
        f"needed {n}; the example space is too small for n_train + n_test"
    )


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class Task:
    """Common interface of all tasks. Subclasses are frozen dataclasses.

    A subclass defines `name`, `vocab`, `seq_len`, `split` (finite tasks) or
    `sample` (generator tasks), and optionally `vocab_out` when the output
    vocabulary differs from the input one.
    """

    name: ClassVar[str]
    has_generator: ClassVar[bool] = True
    n_train: int  # size of split(seed)[0] (a field or a property of each task)
    n_test: int  # size of split(seed)[1]

    # --- sizes ---------------------------------------------------------------

    @property
    def vocab(self) -> tuple[str, ...]:
        """The string of each input token id (length d_vocab)."""
        raise NotImplementedError

    @property
    def vocab_out(self) -> tuple[str, ...]:
        """The string of each output (target) id (length d_vocab_out)."""
        return self.vocab

    @property
    def d_vocab(self) -> int:
        return len(self.vocab)

    @property
    def d_vocab_out(self) -> int:
        return len(self.vocab_out)

    @property
    def seq_len(self) -> int:
        raise NotImplementedError

    @property
    def loss_positions(self) -> tuple[int, ...] | None:
        """The only positions where a batch's mask can be 1, when that is fixed (None: any). The
        trainer then computes logits there only (GPT.forward's output_positions)."""
        return None

    # --- text <-> token ids ----------------------------------------------------

    def _check_ids(self, ids: Any, ndim: int, vocab: Sequence[str], what: str) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != ndim:
            raise ValueError(f"{self.name}: expected a {ndim}-D array of {what} ids, got shape {arr.shape}")
        if arr.size == 0:
            return arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{self.name}: {what} ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(vocab))
        if bad.any():
            raise ValueError(
                f"{self.name}: {what} id {int(arr[bad].flat[0])} is out of range; valid ids are 0..{len(vocab) - 1}"
            )
        return arr.astype(np.int64)

    def decode(self, tokens: Any) -> str:
        """One sequence of token ids [p] -> space-separated text."""
        vocab = self.vocab
        return " ".join(vocab[i] for i in self._check_ids(tokens, 1, vocab, "token"))

    def decode_batch(self, tokens: Any) -> list[str]:
        """A batch of token ids [b, p] -> one string per row."""
        arr = self._check_ids(tokens, 2, self.vocab, "token")
        return [self.decode(row) for row in arr]

    def encode(self, text: str) -> np.ndarray:
        """Inverse of `decode`: text -> int32 token ids [p]."""
        index = {word: i for i, word in enumerate(self.vocab)}
        ids = []
        for word in text.split():
            if word not in index:
                shown = ", ".join(repr(w) for w in self.vocab[:8])
                raise ValueError(f"{self.name}: unknown token {word!r}; the vocabulary is {shown}, ...")
            ids.append(index[word])
        return np.array(ids, dtype=np.int32)

    def decode_target(self, token: Any) -> str:
        """One output id (a target, or an argmax of the logits) -> text."""
        vocab_out = self.vocab_out
        return vocab_out[int(self._check_ids(token, 0, vocab_out, "output"))]

    # --- data ------------------------------------------------------------------

    def sample(self, key: Array, batch_size: int) -> Batch:
        """Fresh training examples [batch_size, seq_len] (generator tasks only).

        Pure JAX: works eagerly, under jax.jit and inside jax.lax.scan, with
        batch_size a static Python int. Compiled once per (task, batch_size).
        """
        if not self.has_generator:
            raise NotImplementedError(
                f"{type(self).__name__} has a finite table of examples and no generator "
                "(has_generator=False): train on split(seed)[0] instead"
            )
        return _jit_draw(self, "_sample", key, batch_size)

    def _sample(self, key: Array, batch_size: int) -> Batch:
        """The generator itself (subclasses); `sample` is its jit-compiled form."""
        raise NotImplementedError

    def split(self, seed: int) -> tuple[Batch, Batch]:
        """Deterministic (train, test) numpy Batches, disjoint as sets of sequences.

        Generator tasks: n_train and n_test distinct sequences drawn from
        `sample` (same distribution as training), none shared.
        """
        rows = _draw_distinct(self, "_sample", seed, self.n_train + self.n_test)
        return _take(rows, 0, self.n_train), _take(rows, self.n_train, None)

    # --- how close do fresh samples come to the test set -----------------------

    def _max_sequence_prob(self) -> Fraction:
        """Upper bound on the probability that `sample` emits any one given sequence."""
        raise NotImplementedError

    @property
    def test_collision_bound(self) -> float:
        """Upper bound on P(one fresh `sample()` sequence is in the test split).

        Union bound: n_test * (largest probability of any single sequence).
        0.0 for finite tasks, whose training data comes from the train split.
        """
        if not self.has_generator:
            return 0.0
        return float(min(Fraction(1), self.n_test * self._max_sequence_prob()))

    def _check_split_sizes(self) -> None:
        """Validate n_train / n_test against the size of the example space."""
        n_train, n_test = self.n_train, self.n_test
        _check_int(self.name, "n_train", n_train, 1)
        _check_int(self.name, "n_test", n_test, 1)
        # At least 1 / max_prob distinct sequences exist; ask for twice the split.
        if (n_train + n_test) * self._max_sequence_prob() > Fraction(1, 2):
            raise ValueError(
                f"{self.name}: the example space is too small for n_train + n_test = "
                f"{n_train + n_test} distinct sequences (any one sequence has probability up to "
                f"{float(self._max_sequence_prob()):.3g}); make the task bigger or the split smaller"
            )


def _take(rows: Any, start: int, stop: int) -> Any:
    return jax.tree.map(lambda x: x[start:stop], rows)
