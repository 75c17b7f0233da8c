"""Which algorithm did a modular-addition model learn? The clock and the pizza (Zhong et al. 2023).

Zhong, Liu, Tegmark and Andreas ("The Clock and the Pizza: Two Stories in Mechanistic Explanation
of Neural Networks", NeurIPS 2023) found that models trained on a + b mod p learn one of two
algorithms, both built on the same circles of embeddings (cos(w_k a), sin(w_k a)):

- the **clock** (Nanda et al. 2023, lesson 2): the model *multiplies* the two rotations, so its
  logit for answer c is a sum of cos(w_k (a + b - c)). The right logit is the same for every pair
  with the same sum: it does not depend on a - b.
- the **pizza**: the model *adds* the two points on the circle first and reads the answer off the
  midpoint, whose length is |cos(w_k (a - b) / 2)|. The right logit is larger when a and b are close
  on the circle: it depends on a - b.

They tell the two apart with two numbers, computed here as in their code (github.com/fjzzq2002/pizza,
eval-main.ipynb), for our inputs `a b =` with the logits read at "=":

- **distance irrelevance**: arrange the right answer's logit by s = a + b and d = a - b (mod p);
  the mean over d of its standard deviation over s, divided by its standard deviation over all
  pairs. Near 1 for a clock (the logit does not care about d), small for a pizza.
- **gradient symmetricity**: for random triples (a, b, c), the cosine between the gradients of the
  logit of c with respect to the embeddings of a and of b, averaged. Near 1 for a pizza (the sum
  E_a + E_b is all that matters), lower for a clock (each input multiplies the other).

Every function takes one model and returns JAX values, so `minillm.params.map_seeds` runs it on a
whole stack of seeds in one vmapped call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from minillm.fourier import pair_logits
from minillm.model import GPT
from minillm.tasks import ModularArithmetic

Array = jax.Array


def _check_add(task: ModularArithmetic) -> int:
    if not isinstance(task, ModularArithmetic) or task.op != "add":
        raise ValueError(f"the clock and pizza diagnostics are for a + b mod p, got {task!r}")
    return task.p


def correct_logits(model: GPT, task: ModularArithmetic) -> Array:
    """The logit of the right answer (a + b) mod p at every pair: [p, p] indexed [a, b]."""
    p = _check_add(task)
    logits = pair_logits(model, task)  # [a, b, c]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return logits[a, b, (a + b) % p]


def by_sum_and_difference(values: Array) -> Array:
    """Values over pairs [p, p] (indexed [a, b]) rearranged as [s, d], s = a + b and d = a - b mod p:
    a clock's right logit is constant along each row, a pizza's varies along it."""
    p = values.shape[0]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    out = jnp.zeros_like(values)
    return out.at[(a + b) % p, (a - b) % p].set(values)


def distance_irrelevance_of(correct: Array) -> Array:
    """Distance irrelevance of right-answer logits [p, p] (indexed [a, b]): the mean over d = a - b of
    their standard deviation over s = a + b, over their standard deviation over all pairs
    (population stds). 1 when they depend on a + b only, 0 when on a - b only."""
    table = by_sum_and_difference(jnp.asarray(correct, jnp.float32))  # [s, d]
    return table.std(axis=0).mean() / table.std()


def distance_irrelevance(model: GPT, task: ModularArithmetic) -> Array:
    """Zhong et al.'s distance irrelevance of the model's right-answer logit (distance_irrelevance_of).
    About 1 when the logit ignores a - b (clock), small when it depends on it (pizza)."""
    return distance_irrelevance_of(correct_logits(model, task))


def gradient_symmetricity(model: GPT, task: ModularArithmetic, n_triples: int = 100, seed: int = 42) -> Array:
    """Zhong et al.'s gradient symmetricity: the mean over `n_triples` random (a, b, c) of the cosine
    between d logit_c / d E_a and d logit_c / d E_b, the gradients with respect to the two number
    tokens' embeddings (hook_embed at positions 0 and 1), c any answer. Near 1 for a pizza."""
    p = _check_add(task)
    rng = np.random.default_rng(seed)
    a, b, c = (rng.integers(0, p, n_triples) for _ in range(3))
    tokens = jnp.asarray(np.stack([a, b, np.full(n_triples, p)], axis=1), jnp.int32)  # `a b =`
    embed = model.run_with_cache(tokens, names_filter="hook_embed")[1]["hook_embed"]  # [n, 3, d]

    def logit(embed_one, tokens_one, c_one):
        replace = ("hook_embed", lambda x, hook: embed_one[None])
        return model.run_with_hooks(tokens_one[None], [replace])[0, -1, c_one]

    grads = jax.vmap(jax.grad(logit))(embed, tokens, jnp.asarray(c))  # [n, 3, d]
    ga, gb = grads[:, 0], grads[:, 1]
    cos = (ga * gb).sum(-1) / (jnp.linalg.norm(ga, axis=-1) * jnp.linalg.norm(gb, axis=-1) + 1e-12)
    return cos.mean()
