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

The tasks (`TASKS`, `make_task(name, **kwargs)`), one file per family:

    modular_arithmetic  "a b =" -> (a op b) mod p   (Nanda et al. 2023 grokking)
    repeated_tokens     random tokens with a copied segment (induction heads)
    balanced_brackets   "[START] ( ) ( ( ) ) [END]" -> balanced or not
    bracket_depth       "[START] ( ( ) ( ) )": the next bracket of a balanced string (a hidden depth)
    sorting             "5 3 9 -> 3 5 9"
    reversal            "5 3 9 -> 9 3 5"
    associative_recall  "k3 v7 k12 v0 k12" -> v0
    factual_recall      "<bos> x3 Ada Moss x7 rel1" -> attr17 (a fact stored in the weights)
    indirect_object     "<bos> f3 N7 f2 N19 f5 N7 f1 <to>" -> N19 (the name that appears once; Wang et al. 2022)

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

from typing import Any

from minillm.tasks.base import Batch, Task
from minillm.tasks.brackets import BalancedBrackets, BracketDepth
from minillm.tasks.facts import FactualRecall
from minillm.tasks.ioi import IndirectObject
from minillm.tasks.lists import Reversal, Sorting
from minillm.tasks.modular import ModularArithmetic
from minillm.tasks.recall import AssociativeRecall
from minillm.tasks.repeated import RepeatedTokens

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
    "IndirectObject",
    "TASKS",
    "make_task",
]

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
        IndirectObject,
    )
}


def make_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name, e.g. make_task("modular_arithmetic", p=97, op="sub")."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)
