"""Random tokens with a copied segment: the task that grows induction heads (Olsson et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from minillm.tasks.base import Batch, Task, _batch, _check_int, _draw_distinct, _jit_draw, _next_token_targets, _take

Array = jax.Array


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
