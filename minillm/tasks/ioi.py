"""Indirect object identification in miniature (Wang et al. 2022, "Interpretability in the Wild").

GPT-2 completes "When Mary and John went to the store, John gave a drink to" with " Mary": the name
that appears once (the indirect object, IO), not the one that appears twice (the subject, S). This
task keeps only that logic: a BOS, filler tokens with three names among them (IO once, S twice) at
random slots, then `<to>`, and the answer is IO.

    <bos> f3 f0 N7 f11 f2 N19 f5 f5 f8 N7 f1 f0 f6 f2 f9 f4 <to>   ->  N19

Which of the three name slots holds IO is the prompt's *order*: "ABB" (IO first), "BAB", "BBA".
Wang et al.'s sentences have the first two only (ABBA and BABA: the repeated name always comes
last), and a model trained on those can learn "answer the name that is not the last one" instead
of IO: the `orders` field makes that cautionary twin (`orders=("ABB", "BAB")`), whose accuracy on
the unseen order "BBA" tells the two algorithms apart.

`sample_with_info` returns where the names are and which they are, and `swap_names` / `abc_names`
make Wang et al.'s corruptions of a batch: the IO and S names exchanged (the answer flips), and
three different names in the same slots (their "ABC" prompts, whose activations are the means of
mean ablation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minillm.tasks.base import Batch, Task, _batch, _check_int

Array = jax.Array
ORDERS = ("ABB", "BAB", "BBA")  # the slot of IO: first, middle, last


class NameInfo(NamedTuple):
    """Where the names of a batch are, and which: each [b] or [b, 3]."""

    positions: Array  # int32 [b, 3]: the token positions of the three name slots, in order
    io_slot: Array  # int32 [b]: which of the three holds IO (0, 1, 2: ORDERS' index)
    io: Array  # int32 [b]: IO's name index (0..n_names-1), also its output id
    s: Array  # int32 [b]: S's name index


@dataclass(frozen=True)
class IndirectObject(Task):
    """`<bos>`, n_slots slots (three names, fillers elsewhere), `<to>` -> the name that appears once.

    tokens  id 0 "<bos>", 1 "<to>", 2.. the fillers "f0".., then the names "N0"..; seq_len n_slots + 2
    targets IO's name index (an output id: d_vocab_out = n_names), at the last position only
    orders  the orders drawn, uniformly: any of "ABB", "BAB", "BBA"
    """

    name: ClassVar[str] = "indirect_object"

    n_names: int = 30
    n_fillers: int = 12
    n_slots: int = 16
    orders: tuple[str, ...] = ORDERS
    n_train: int = 1024
    n_test: int = 1024

    def __post_init__(self) -> None:
        _check_int(self.name, "n_names", self.n_names, 3)
        _check_int(self.name, "n_fillers", self.n_fillers, 1)
        _check_int(self.name, "n_slots", self.n_slots, 3)
        orders = tuple(self.orders)
        if not orders or any(o not in ORDERS for o in orders) or len(set(orders)) != len(orders):
            raise ValueError(f"{self.name}: orders must be distinct among {ORDERS}, got {self.orders!r}")
        object.__setattr__(self, "orders", orders)
        self._check_split_sizes()

    # --- sizes and names -------------------------------------------------------------------------
    @property
    def vocab(self) -> tuple[str, ...]:
        fillers = tuple(f"f{i}" for i in range(self.n_fillers))
        return ("<bos>", "<to>", *fillers, *(f"N{i}" for i in range(self.n_names)))

    @property
    def vocab_out(self) -> tuple[str, ...]:
        return tuple(f"N{i}" for i in range(self.n_names))

    @property
    def seq_len(self) -> int:
        return self.n_slots + 2

    @property
    def loss_positions(self) -> tuple[int, ...]:
        return (self.seq_len - 1,)

    @property
    def first_name(self) -> int:
        """The token id of name 0: name i is token first_name + i, output id i."""
        return 2 + self.n_fillers

    # --- data ------------------------------------------------------------------------------------
    def sample_with_info(
        self, key: Array, batch_size: int, order: str | None = None, positions: tuple[int, int, int] | None = None
    ) -> tuple[Batch, NameInfo]:
        """A batch and where its names are; `order` ("ABB", "BAB" or "BBA") fixes the order of every
        prompt (any of the three, trained on or not), None draws from the task's own orders;
        `positions` fixes the three names' token positions (increasing, in 1..n_slots), a template
        as Wang et al.'s sentences have, so that a position means the same name slot in every prompt."""
        if order is not None and order not in ORDERS:
            raise ValueError(f"{self.name}: order must be one of {ORDERS}, got {order!r}")
        b = batch_size
        k_pos, k_names, k_order, k_fill = jax.random.split(key, 4)
        if positions is None:
            slots = jnp.sort(jnp.argsort(jax.random.uniform(k_pos, (b, self.n_slots)), axis=1)[:, :3], axis=1)
            positions = (slots + 1).astype(jnp.int32)  # after <bos>
        else:
            at = [int(i) for i in positions]
            if len(at) != 3 or at != sorted(set(at)) or at[0] < 1 or at[-1] > self.n_slots:
                raise ValueError(
                    f"{self.name}: positions must be 3 increasing positions in 1..{self.n_slots}, got {positions!r}"
                )
            positions = jnp.broadcast_to(jnp.asarray(at, jnp.int32), (b, 3))
        names = jnp.argsort(jax.random.uniform(k_names, (b, self.n_names)), axis=1)[:, :2].astype(jnp.int32)
        io, s = names[:, 0], names[:, 1]
        if order is None:
            allowed = jnp.asarray([ORDERS.index(o) for o in self.orders], jnp.int32)
            io_slot = allowed[jax.random.randint(k_order, (b,), 0, len(self.orders))]
        else:
            io_slot = jnp.full((b,), ORDERS.index(order), jnp.int32)
        slot_names = jnp.where(jnp.arange(3)[None, :] == io_slot[:, None], io[:, None], s[:, None])  # [b, 3]
        fillers = jax.random.randint(k_fill, (b, self.seq_len), 2, 2 + self.n_fillers, dtype=jnp.int32)
        tokens = fillers.at[:, 0].set(0).at[:, -1].set(1)
        rows = jnp.arange(b)[:, None]
        tokens = tokens.at[rows, positions].set(slot_names + self.first_name)
        last = self.seq_len - 1
        targets = jnp.zeros((b, self.seq_len), jnp.int32).at[:, last].set(io)
        mask = jnp.zeros((b, self.seq_len), jnp.float32).at[:, last].set(1.0)
        return _batch(tokens, targets, mask), NameInfo(positions, io_slot, io, s)

    def _sample(self, key: Array, batch_size: int) -> Batch:
        return self.sample_with_info(key, batch_size)[0]

    def _max_sequence_prob(self) -> Fraction:
        layouts = math.comb(self.n_slots, 3) * self.n_names * (self.n_names - 1) * len(self.orders)
        return Fraction(1, layouts * self.n_fillers ** (self.n_slots - 3))

    # --- Wang et al.'s corruptions -----------------------------------------------------------------
    def swap_names(self, batch: Batch, info: NameInfo) -> Batch:
        """IO and S exchanged in every slot: the same template, and the answer is now S."""
        tokens = jnp.asarray(batch.tokens)
        rows = jnp.arange(tokens.shape[0])[:, None]
        now = tokens[rows, info.positions] - self.first_name  # [b, 3]
        swapped = jnp.where(now == info.io[:, None], info.s[:, None], info.io[:, None])
        tokens = tokens.at[rows, info.positions].set(swapped + self.first_name)
        last = self.seq_len - 1
        return _batch(tokens, jnp.asarray(batch.targets).at[:, last].set(info.s), jnp.asarray(batch.mask))

    def abc_names(self, batch: Batch, info: NameInfo, key: Array) -> Batch:
        """Three different names, none of IO and S, in the three slots (Wang et al.'s "ABC"
        prompts): no name repeats, so nothing tells which is the indirect object. Targets unchanged."""
        tokens = jnp.asarray(batch.tokens)
        b = tokens.shape[0]
        scores = jax.random.uniform(key, (b, self.n_names))
        taken = jax.nn.one_hot(info.io, self.n_names, dtype=bool) | jax.nn.one_hot(info.s, self.n_names, dtype=bool)
        others = jnp.argsort(jnp.where(taken, 2.0, scores), axis=1)[:, :3].astype(jnp.int32)  # [b, 3]
        rows = jnp.arange(b)[:, None]
        tokens = tokens.at[rows, info.positions].set(others + self.first_name)
        return _batch(tokens, jnp.asarray(batch.targets), jnp.asarray(batch.mask))

    def order_of(self, info: NameInfo) -> np.ndarray:
        """Each prompt's order as a string ("ABB", ...), [b]."""
        return np.asarray(ORDERS)[np.asarray(info.io_slot)]
