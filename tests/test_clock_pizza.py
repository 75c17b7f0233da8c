"""The clock-and-pizza diagnostics (minillm/clock_pizza.py): distance irrelevance on logits whose
answer we know, gradient symmetricity against an independent gradient and on a model that can only
be symmetric, and both on a stack of seeds in one vmapped call."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import modular_config

from minillm import GPT
from minillm.clock_pizza import (
    by_sum_and_difference,
    correct_logits,
    distance_irrelevance,
    distance_irrelevance_of,
    gradient_symmetricity,
)
from minillm.fourier import pair_logits
from minillm.model.params import map_seeds, stack_models
from minillm.tasks import make_task

P = 11
TASK = make_task("modular_arithmetic", p=P, frac_train=0.5)
CFG = modular_config(P)  # fits TASK; no LayerNorm (constant attention then sees E_a + E_b only)


def test_distance_irrelevance_is_one_for_a_function_of_the_sum_and_zero_for_one_of_the_difference():
    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    rng = np.random.default_rng(0)
    f, g = rng.normal(size=P), rng.normal(size=P)
    np.testing.assert_allclose(distance_irrelevance_of(f[(a + b) % P]), 1.0, atol=1e-5)
    np.testing.assert_allclose(distance_irrelevance_of(g[(a - b) % P]), 0.0, atol=1e-5)
    mixed = float(distance_irrelevance_of(f[(a + b) % P] + g[(a - b) % P]))
    assert 0.1 < mixed < 0.95
    table = by_sum_and_difference(jnp.asarray(a * 100 + b, jnp.float32))  # each pair lands on its (s, d)
    s, d = 3, 5
    a0 = int(np.flatnonzero(((np.arange(P) - (s - np.arange(P))) % P) == d)[0])  # a with a - (s - a) = d
    assert int(table[s, d]) == a0 * 100 + (s - a0) % P


@pytest.mark.slow
def test_correct_logits_read_the_right_answer():
    model = GPT(CFG)
    logits = np.asarray(pair_logits(model, TASK))
    correct = np.asarray(correct_logits(model, TASK))
    assert correct[2, 5] == logits[2, 5, 7] and correct[9, 4] == logits[9, 4, (9 + 4) % P]
    assert np.isfinite(float(distance_irrelevance(model, TASK)))


def _independent_symmetricity(model, n_triples=100, seed=42):
    """The same quantity with the gradient taken at the residual stream entering block 0."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.integers(0, P, n_triples) for _ in range(3))
    tokens = jnp.asarray(np.stack([a, b, np.full(n_triples, P)], axis=1), jnp.int32)
    resid = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")[1]["resid_pre", 0]

    def logit(r, c_one):
        return model(r[None], start_at_layer=0)[0, -1, c_one]

    grads = np.asarray(jax.vmap(jax.grad(logit))(resid, jnp.asarray(c)))
    ga, gb = grads[:, 0], grads[:, 1]
    return float((np.sum(ga * gb, -1) / np.linalg.norm(ga, axis=-1) / np.linalg.norm(gb, axis=-1)).mean())


@pytest.mark.slow
def test_gradient_symmetricity_matches_an_independent_gradient_and_is_one_under_constant_attention():
    softmax = GPT(dataclasses.replace(CFG, init_range=0.5))  # large weights: attention far from uniform
    value = float(gradient_symmetricity(softmax, TASK))
    np.testing.assert_allclose(value, _independent_symmetricity(softmax), atol=1e-5)
    assert value < 0.99
    # with constant attention and no LayerNorm, "=" sees E_a + E_b only: the two gradients are equal
    constant = GPT(dataclasses.replace(CFG, attention_rate=0.0))
    np.testing.assert_allclose(float(gradient_symmetricity(constant, TASK)), 1.0, atol=1e-5)


@pytest.mark.slow
def test_diagnostics_run_on_a_stack_of_seeds_in_one_call():
    models = [GPT(CFG, seed=s) for s in range(3)]
    stacked = stack_models(models)
    di = np.asarray(map_seeds(distance_irrelevance, stacked, TASK))
    gs = np.asarray(map_seeds(gradient_symmetricity, stacked, TASK))
    assert di.shape == gs.shape == (3,)
    np.testing.assert_allclose(di, [float(distance_irrelevance(m, TASK)) for m in models], atol=1e-5)
    np.testing.assert_allclose(gs, [float(gradient_symmetricity(m, TASK)) for m in models], atol=1e-5)


@pytest.mark.slow
def test_only_addition_is_accepted():
    with pytest.raises(ValueError, match="a \\+ b"):
        distance_irrelevance(GPT(CFG), make_task("modular_arithmetic", p=P, op="sub"))
