"""Modular arithmetic, `a b =` -> (a op b) mod p: the finite task of grokking (Nanda et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import numpy as np

from minillm.tasks.base import Batch, Task, _check_int, _is_prime

Array = jax.Array


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
