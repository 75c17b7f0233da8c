"""Algorithmic tasks for training toy transformers.

Each task generates its own data (nothing is downloaded) in one common format,
so that the same model and training loop can learn any of them and the same
interpretability tools can take them apart:

    Batch(tokens, targets, mask)
      tokens  int32   [b, p]  model input, ids in [0, d_vocab)
      targets int32   [b, p]  what the logits at each position should predict,
                              ids in [0, d_vocab_out); 0 where mask is 0
      mask    float32 [b, p]  1.0 at the positions the loss counts

    loss = sum(mask * cross_entropy(logits, targets)) / sum(mask)

`Batch` is a NamedTuple, hence a pytree: it passes through `jax.jit` and
`jax.lax.scan` unchanged.

The tasks (`TASKS`, `make_task(name, **kwargs)`):

    modular_arithmetic  "a b =" -> (a op b) mod p   (Nanda et al. 2023 grokking)
    repeated_tokens     random tokens with a copied segment (induction heads)
    balanced_brackets   "[START] ( ) ( ( ) ) [END]" -> balanced or not
    bracket_depth       "[START] ( ( ) ( ) )": the next bracket of a balanced string (a hidden depth)
    sorting             "5 3 9 -> 3 5 9"
    reversal            "5 3 9 -> 9 3 5"
    associative_recall  "k3 v7 k12 v0 k12" -> v0
    factual_recall      "<bos> x3 Ada Moss x7 rel1" -> attr17 (a fact stored in the weights)

Every task has the sizes a model needs (`d_vocab`, `d_vocab_out`, `seq_len`;
the model's n_ctx must be >= seq_len), readable `decode` / `encode`, and a
deterministic train/test `split(seed)` whose train and test sets are disjoint
as sets of token sequences.

Two kinds of task:

* Finite tasks (`has_generator = False`, only modular arithmetic): the whole
  table of examples is enumerated and `split(seed)` divides it. `sample()`
  raises NotImplementedError; the trainer samples from the train split.
* Generator tasks (`has_generator = True`, all the others): the example space
  is far too big to enumerate. `sample(key, batch_size)` is pure JAX and
  jittable (batch_size static) and draws fresh training examples.
  `split(seed)` returns a fixed train set (to measure train loss) and a
  held-out test set, drawn from the same generator and deduplicated so that
  they share no sequence. Fresh samples are NOT forced to avoid the test set:
  with the sizes allowed here they coincide with a test sequence with
  negligible probability, at most `task.test_collision_bound` per sampled
  sequence (a union bound, e.g. ~1e-7 for the default balanced brackets and
  < 1e-40 for the default repeated tokens). Construction refuses example
  spaces so small that the split itself could not be drawn.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "Batch",
    "Task",
    "ModularArithmetic",
    "RepeatedTokens",
    "BalancedBrackets",
    "BracketDepth",
    "Sorting",
    "Reversal",
    "AssociativeRecall",
    "FactualRecall",
    "TASKS",
    "make_task",
]


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


# ---------------------------------------------------------------------------------------------
# 1. Modular arithmetic (finite)
# ---------------------------------------------------------------------------------------------

_MOD_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class ModularArithmetic(Task):
    """`a b =` -> (a op b) mod p: the grokking task of Nanda et al. 2023.

    tokens  [a, b, p]   (p is the "=" token; d_vocab = p + 1)
    targets [0, 0, c]   c = (a op b) mod p; d_vocab_out = p
    mask    [0, 0, 1]

    op: "add" a+b, "sub" a-b, "mul" a*b, "div" a * b^{-1} (b != 0, p prime).
    The table of all pairs (p*p of them; p*(p-1) for div) is shuffled by
    `split(seed)`, and a fraction frac_train of it is the train set.
    """

    name: ClassVar[str] = "modular_arithmetic"
    has_generator: ClassVar[bool] = False

    p: int = 113
    op: str = "add"
    frac_train: float = 0.3

    def __post_init__(self) -> None:
        _check_int(self.name, "p", self.p, 2)
        if self.op not in _MOD_OPS:
            raise ValueError(f"{self.name}: op must be one of {sorted(_MOD_OPS)}, got {self.op!r}")
        if self.op == "div" and not _is_prime(self.p):
            raise ValueError(f"{self.name}: op='div' needs a prime p (so every b != 0 has an inverse), got p={self.p}")
        if not (isinstance(self.frac_train, (int, float)) and 0.0 < self.frac_train < 1.0):
            raise ValueError(f"{self.name}: frac_train must be in (0, 1), got {self.frac_train!r}")
        n_pairs = self.p * (self.p - 1 if self.op == "div" else self.p)
        if not 1 <= self.n_train < n_pairs:
            raise ValueError(
                f"{self.name}: frac_train={self.frac_train} leaves an empty train or test set "
                f"(n_train={self.n_train} of {n_pairs} pairs)"
            )

    @property
    def vocab(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.p)) + ("=",)

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.p))

    @property
    def seq_len(self) -> int:
        return 3

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.seq_len - 1,)

    @property
    def eq_token(self) -> int:
        """Token id of "="."""
        return self.p

    @property
    def n_train(self) -> int:
        return int(round(self.frac_train * len(self._pairs()[0])))

    @property
    def n_test(self) -> int:
        return len(self._pairs()[0]) - self.n_train

    def decode(self, tokens: Any) -> str:
        """`[12, 45, 113]` -> "12 + 45 =" (the operator is shown for readability only)."""
        words = super().decode(tokens).split()
        if len(words) >= 2:
            words.insert(1, _MOD_OPS[self.op])
        return " ".join(words)

    def encode(self, text: str) -> np.ndarray:
        """ "12 + 45 =" -> [12, 45, 113]. The operator symbol, not a token, is skipped."""
        return super().encode(" ".join(w for w in text.split() if w != _MOD_OPS[self.op]))

    def apply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(a op b) mod p, elementwise on integer arrays."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        p = self.p
        if self.op == "add":
            return (a + b) % p
        if self.op == "sub":
            return (a - b) % p
        if self.op == "mul":
            return (a * b) % p
        if np.any(b % p == 0):
            raise ValueError(f"{self.name}: division by 0 (mod {p})")
        # Fermat: b^{-1} = b^(p-2) mod p; tabulate once for all b.
        inverse = np.array([0] + [pow(x, p - 2, p) for x in range(1, p)], dtype=np.int64)
        return (a * inverse[b % p]) % p

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All (a, b) in row-major order: a outer, b inner (b >= 1 for div)."""
        b_values = np.arange(1 if self.op == "div" else 0, self.p)
        a, b = np.meshgrid(np.arange(self.p), b_values, indexing="ij")
        return a.ravel(), b.ravel()

    def _examples(self, a: np.ndarray, b: np.ndarray) -> Batch:
        n = len(a)
        tokens = np.stack([a, b, np.full(n, self.eq_token)], axis=1).astype(np.int32)
        targets = np.zeros((n, 3), dtype=np.int32)
        targets[:, 2] = self.apply(a, b)
        mask = np.zeros((n, 3), dtype=np.float32)
        mask[:, 2] = 1.0
        return Batch(tokens, targets, mask)

    def all_pairs(self) -> Batch:
        """Every example, in (a, b) row-major order: row a * p + b (add/sub/mul).

        For div, b runs over 1..p-1 and the row is a * (p - 1) + (b - 1).
        Reshape e.g. logits[:, -1] to [p, p, d_vocab_out] for Fourier analysis.
        """
        return self._examples(*self._pairs())

    def split(self, seed: int) -> tuple[Batch, Batch]:
        """Shuffle all pairs with `seed`; the first round(frac_train * N) are train."""
        a, b = self._pairs()
        order = np.random.default_rng(seed).permutation(len(a))
        train, test = order[: self.n_train], order[self.n_train :]
        return self._examples(a[train], b[train]), self._examples(a[test], b[test])


# ---------------------------------------------------------------------------------------------
# 2. Repeated tokens (induction heads)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepeatedTokens(Task):
    """Random tokens containing one copied segment: the induction-head task.

    Layout of one sequence (p = seq_len):

        [BOS] r r r  s1 s2 .. sL  (gap: r r)  s1 s2 .. sL  r r r
        pos 0        start         (max_gap)  copy_start

    Token 0 is BOS; every other token is uniform on [1, d_vocab). The segment
    length L is uniform on [min_len, max_len], the gap uniform on [0, max_gap],
    the segment start uniform over all offsets that fit. Random lengths and
    offsets matter: a segment repeated at a fixed period lets a model cheat
    with a positional head instead of learning induction.

    Next-token prediction: targets[i] = tokens[i + 1]; the last position is
    masked out. `loss_on="all"` counts every next-token position;
    `loss_on="repeat"` counts only the "repeat mask": positions i inside the
    copy whose next token is predictable by induction (copy_start <= i <=
    copy_start + L - 2, L - 1 positions).

    The repeat mask is returned by `sample_with_repeat_mask` and
    `split_with_repeat_mask` whatever loss_on is (it is not derivable from the
    tokens alone). Equivalently, `dataclasses.replace(task, loss_on="repeat")`
    draws the very same tokens for the same key or seed, with mask = repeat mask.
    """

    name: ClassVar[str] = "repeated_tokens"

    d_vocab: int = 64
    seq_len: int = 64
    min_len: int = 4
    max_len: int = 31
    max_gap: int = 0
    loss_on: str = "all"
    n_train: int = 1024
    n_test: int = 1024

    BOS: ClassVar[int] = 0

    def __post_init__(self) -> None:
        _check_int(self.name, "d_vocab", self.d_vocab, 3)
        _check_int(self.name, "min_len", self.min_len, 2)  # L - 1 >= 1 predictable positions
        _check_int(self.name, "max_len", self.max_len, self.min_len)
        _check_int(self.name, "max_gap", self.max_gap, 0)
        _check_int(self.name, "seq_len", self.seq_len, 1)
        needed = 1 + 2 * self.max_len + self.max_gap
        if needed > self.seq_len:
            raise ValueError(
                f"{self.name}: BOS + segment + gap + copy needs up to 1 + 2*max_len + max_gap = "
                f"{needed} positions, but seq_len = {self.seq_len}"
            )
        if self.loss_on not in ("all", "repeat"):
            raise ValueError(f"{self.name}: loss_on must be 'all' or 'repeat', got {self.loss_on!r}")
        self._check_split_sizes()

    @property
    def vocab(self) -> tuple[str, ...]:
        return ("[BOS]",) + tuple(str(i) for i in range(1, self.d_vocab))

    def sample_with_repeat_mask(self, key: Array, batch_size: int) -> tuple[Batch, Array]:
        """(batch, repeat_mask float32 [b, p]); batch is exactly `sample(key, batch_size)`.

        Jittable like `sample` (batch_size static).
        """
        return _jit_draw(self, "_sample_with_repeat_mask", key, batch_size)

    def _sample_with_repeat_mask(self, key: Array, batch_size: int) -> tuple[Batch, Array]:
        b, p = batch_size, self.seq_len
        k_tokens, k_len, k_gap, k_start = jax.random.split(key, 4)
        noise = jax.random.randint(k_tokens, (b, p), 1, self.d_vocab, dtype=jnp.int32)
        seg_len = jax.random.randint(k_len, (b, 1), self.min_len, self.max_len + 1)  # L
        gap = jax.random.randint(k_gap, (b, 1), 0, self.max_gap + 1)
        # segment occupies [start, start + L), copy [copy_start, copy_start + L) < p
        start = jax.random.randint(k_start, (b, 1), 1, p - 2 * seg_len - gap + 1)
        copy_start = start + seg_len + gap

        pos = jnp.arange(p)[None, :]  # [1, p]
        in_copy = (pos >= copy_start) & (pos < copy_start + seg_len)  # [b, p]
        source = jnp.where(in_copy, pos - seg_len - gap, pos)  # copy reads from the segment
        tokens = jnp.take_along_axis(noise, source, axis=1)
        tokens = tokens.at[:, 0].set(self.BOS)

        # Position i predicts tokens[i + 1]. For copy_start <= i <= copy_start + L - 2
        # that is the token which followed tokens[i] in the segment (induction).
        repeat_mask = ((pos >= copy_start) & (pos < copy_start + seg_len - 1)).astype(jnp.float32)
        all_mask = jnp.broadcast_to(pos < p - 1, (b, p)).astype(jnp.float32)
        mask = all_mask if self.loss_on == "all" else repeat_mask
        return _batch(tokens, _next_token_targets(tokens, mask), mask), repeat_mask

    def sample(self, key: Array, batch_size: int) -> Batch:
        # Shares one compiled generator with sample_with_repeat_mask and split.
        return self.sample_with_repeat_mask(key, batch_size)[0]

    def split_with_repeat_mask(self, seed: int) -> tuple[tuple[Batch, np.ndarray], tuple[Batch, np.ndarray]]:
        """((train, train_repeat_mask), (test, test_repeat_mask)); same rows as `split(seed)`."""
        batch, repeat_mask = _draw_distinct(self, "_sample_with_repeat_mask", seed, self.n_train + self.n_test)
        n = self.n_train
        return (_take(batch, 0, n), repeat_mask[:n]), (_take(batch, n, None), repeat_mask[n:])

    def split(self, seed: int) -> tuple[Batch, Batch]:
        (train, _), (test, _) = self.split_with_repeat_mask(seed)
        return train, test

    def _max_sequence_prob(self) -> Fraction:
        # At least seq_len - 1 - max_len positions are free uniform tokens.
        return Fraction(1, (self.d_vocab - 1) ** (self.seq_len - 1 - self.max_len))


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


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        ModularArithmetic,
        RepeatedTokens,
        BalancedBrackets,
        BracketDepth,
        Sorting,
        Reversal,
        AssociativeRecall,
        FactualRecall,
    )
}


def make_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name, e.g. make_task("modular_arithmetic", p=97, op="sub")."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)
