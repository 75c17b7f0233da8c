"""Fourier tools for grokking models (minillm/fourier.py), on synthetic weights and logits whose
Fourier structure is known by construction: nothing is trained and nothing is read from disk."""

import numpy as np
import pytest
from helpers import modular_config

from minillm import GPT
from minillm import fourier as F
from minillm.model.losses import evaluate
from minillm.tasks import ModularArithmetic


def w(k: int, p: int) -> float:
    return 2 * np.pi * k / p


def synthetic_embedding(
    n_rows: int, p: int, amplitudes: dict[int, float], noise: float, d: int = 32, seed: int = 0
) -> np.ndarray:
    """[n_rows, d]: row a < p is sum_k A_k (cos(w_k a) u_k + sin(w_k a) v_k) + noise (u, v random)."""
    rng = np.random.default_rng(seed)
    a = np.arange(p)[:, None]
    W_E = noise * rng.standard_normal((n_rows, d))
    for k, amp in amplitudes.items():
        u, v = rng.standard_normal((2, d)) / np.sqrt(d)
        W_E[:p] += amp * (np.cos(w(k, p) * a) * u + np.sin(w(k, p) * a) * v)
    return W_E.astype(np.float32)


def model_with_embedding(p: int, amplitudes: dict[int, float], noise: float = 0.0, seed: int = 0) -> GPT:
    """A random tiny model whose number embeddings are synthetic_embedding's."""
    model = GPT(modular_config(p), seed=seed)
    weights = model.state_dict()
    weights["embed.W_E"] = synthetic_embedding(p + 1, p, amplitudes, noise, model.cfg.d_model, seed)
    model.load_state_dict(weights)
    return model


# --- basis and transforms ---------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 3, 5, 8, 12, 113])
def test_basis_is_orthonormal_with_named_rows(p):
    basis, names = F.fourier_basis(p)
    assert basis.shape == (p, p)
    np.testing.assert_allclose(basis @ basis.T, np.eye(p), atol=1e-12)
    assert len(names) == p and names[0] == "const"
    np.testing.assert_allclose(basis[0], np.full(p, p**-0.5))
    if p >= 3:
        assert names[1:3] == ["cos 1", "sin 1"]
        x = np.arange(p)
        np.testing.assert_allclose(basis[1], np.cos(w(1, p) * x) / np.linalg.norm(np.cos(w(1, p) * x)))
        np.testing.assert_allclose(basis[2], np.sin(w(1, p) * x) / np.linalg.norm(np.sin(w(1, p) * x)))
    if p % 2 == 0:  # sin(pi x) vanishes: the last row is cos p/2 alone
        assert names[-1] == f"cos {p // 2}" and F.frequency_components(p, p // 2) == [p - 1]


def test_transform_round_trips_and_finds_a_pure_frequency():
    p = 13
    x = np.random.default_rng(0).standard_normal((3, p, 4)).astype(np.float32)
    coeffs = F.fourier_transform(x, p, axis=1)
    np.testing.assert_allclose(F.inverse_fourier_transform(coeffs, p, axis=1), x, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(coeffs), np.linalg.norm(x), rtol=1e-5)  # orthonormal

    grid = np.random.default_rng(1).standard_normal((p, p, 2)).astype(np.float32)
    np.testing.assert_allclose(F.inverse_fourier_transform_2d(F.fourier_transform_2d(grid)), grid, atol=1e-5)

    _, names = F.fourier_basis(p)
    pure = F.fourier_transform(np.cos(w(4, p) * np.arange(p)))
    assert names[int(np.argmax(np.abs(pure)))] == "cos 4"
    assert np.sum(np.abs(np.asarray(pure)) > 1e-4) == 1


# --- embedding: key frequencies and sparsity ---------------------------------------------------
def test_key_frequencies_recover_a_synthetic_embedding_in_order_of_size():
    p = 113
    W_E = synthetic_embedding(p, p, {5: 2.0, 17: 3.0, 40: 1.5}, noise=0.01)
    norms = np.asarray(F.frequency_norms(W_E))
    assert norms.shape == (p // 2 + 1,)
    assert F.select_key_frequencies(norms) == [17, 5, 40]
    assert F.norm_fraction(norms, [17, 5, 40]) > 0.99
    assert F.select_key_frequencies(norms, n=2) == [17, 5]
    assert float(F.gini(F.fourier_component_norms(W_E))) > 0.8  # 6 of 113 components hold nearly all


def test_an_unstructured_embedding_has_no_key_frequency_and_low_gini():
    W_E = np.random.default_rng(3).standard_normal((113, 32))
    assert F.select_key_frequencies(F.frequency_norms(W_E)) == []
    assert float(F.gini(F.fourier_component_norms(W_E))) < 0.2
    assert F.gini(np.ones(10)) == pytest.approx(0.0, abs=1e-6)
    assert F.gini(np.eye(10)[0]) == pytest.approx(0.9, abs=1e-6)  # (n - 1) / n


# --- neurons and heads --------------------------------------------------------------------------
def test_one_frequency_functions_are_explained_by_it_and_noise_is_not():
    p, k = 31, 6
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    wk = w(k, p)
    units = np.stack(
        [
            np.cos(wk * (a + b)),
            3.0 + np.sin(wk * (a - b)),  # an offset: the fraction is of the centred variance
            np.cos(wk * a) * np.cos(wk * b) + 0.5 * np.sin(wk * a) - 0.2 * np.cos(wk * b),
            np.random.default_rng(0).standard_normal((p, p)),  # noise: ~8 / (p^2 - 1) per frequency
            np.zeros((p, p)),  # a dead neuron
        ],
        axis=-1,
    )
    fit = F.fit_frequencies(units)
    assert fit.fracs.shape == (p // 2, 5)
    assert list(fit.freq[:3]) == [k, k, k]
    np.testing.assert_allclose(fit.frac[:3], 1.0, atol=1e-5)
    assert fit.frac[3] < 0.1
    assert fit.frac[4] == 0.0
    mixed = np.cos(wk * (a + b)) + 0.5 * np.cos(w(2, p) * (a + b))  # energy 1 : 0.25
    np.testing.assert_allclose(F.fit_frequencies(mixed[..., None]).frac, [0.8], atol=1e-5)


@pytest.mark.slow
def test_neuron_and_head_fits_have_one_entry_per_unit():
    p = 11
    model = GPT(modular_config(p), seed=0)
    m, h = model.cfg.d_mlp, model.cfg.n_heads
    neurons = F.neuron_frequency_fractions(model)
    heads = F.attention_frequency_fractions(model)
    assert neurons.freq.shape == neurons.frac.shape == (m,) and neurons.fracs.shape == (p // 2, m)
    assert heads.freq.shape == (h,) and heads.fracs.shape == (p // 2, h)
    for fit in (neurons, heads):
        assert np.all((fit.freq >= 1) & (fit.freq <= p // 2))
        assert np.all((fit.frac >= 0) & (fit.frac <= 1 + 1e-6))


# --- restricted and excluded loss ----------------------------------------------------------------
def fourier_logits(p: int, freqs, scale: float) -> np.ndarray:
    """logits[a, b, c] = scale * sum_k cos(w_k (a + b - c)): the grokked model's readout."""
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    return scale * sum(np.cos(w(k, p) * (a + b - c)) for k in freqs)


def test_restricting_keeps_the_algorithm_and_excluding_leaves_uniform_logits():
    p, freqs = 23, [3, 7, 10]
    clean = fourier_logits(p, freqs, scale=12.0)
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    junk = (
        2.0 * np.cos(w(5, p) * a)
        + 1.5 * np.sin(w(7, p) * b) * np.cos(w(2, p) * c)  # a or b alone
        + np.cos(w(3, p) * (a - b) - w(1, p) * c)  # a key frequency, but of a - b
        + 0.7 * np.cos(w(2, p) * (a + b - c))  # a + b, but not a key frequency
        + 0.3 * c / p
    )  # a constant over the pairs: kept
    full = F.loss_on_pairs(clean)
    assert full < 0.01
    restricted = F.restricted_logits(clean + junk, freqs)
    np.testing.assert_allclose(restricted, clean + 0.3 * c / p, atol=1e-4)
    np.testing.assert_allclose(F.loss_on_pairs(F.restricted_logits(clean, freqs)), full, rtol=1e-3)
    np.testing.assert_allclose(F.loss_on_pairs(F.excluded_logits(clean, freqs)), np.log(p), rtol=1e-5)
    # keeping only some frequencies keeps only their part
    np.testing.assert_allclose(F.key_frequency_logits(clean, [3]), fourier_logits(p, [3], 12.0), atol=1e-4)
    np.testing.assert_allclose(F.excluded_logits(clean, [3]), fourier_logits(p, [7, 10], 12.0), atol=1e-4)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_key_frequency_logits_equal_the_papers_2d_projections(op):
    """Project each answer's logits onto cos(w_k(a +- b)), sin(w_k(a +- b)) as unit vectors in R^{p^2},
    built from the 2-D basis as in the paper's helpers: (cos cos -+ sin sin)/sqrt 2, (sin cos +- cos sin)/sqrt 2."""
    p, freqs = 17, [2, 5]
    logits = np.random.default_rng(1).standard_normal((p, p, p))
    basis, _ = F.fourier_basis(p)
    sign = 1.0 if op == "add" else -1.0
    expected = np.zeros_like(logits)
    for k in freqs:
        cos_k, sin_k = basis[2 * k - 1], basis[2 * k]
        directions = [
            np.outer(cos_k, cos_k) - sign * np.outer(sin_k, sin_k),
            np.outer(sin_k, cos_k) + sign * np.outer(cos_k, sin_k),
        ]
        for d in directions:
            d = d / np.sqrt(2)
            np.testing.assert_allclose(np.linalg.norm(d), 1.0)
            expected += d[..., None] * np.einsum("abc,ab->c", logits, d)
    np.testing.assert_allclose(F.key_frequency_logits(logits, freqs, op), expected, atol=1e-5)


@pytest.mark.slow
def test_loss_entry_points_on_a_tiny_model():
    p = 11
    task = ModularArithmetic(p=p, frac_train=0.4)
    model = GPT(modular_config(p), seed=0)
    assert F.pair_logits(model, task).shape == (p, p, p)
    # rows in all_pairs order, and the right pairs in the train set: the losses are the trainer's
    assert F.full_loss(model, task) == pytest.approx(float(evaluate(model, task.all_pairs())[0]), rel=1e-5)
    train_loss = float(evaluate(model, task.split(0)[0])[0])
    assert F.full_loss(model, task, "train") == pytest.approx(train_loss, rel=1e-5)
    assert F.excluded_loss(model, task, []) == pytest.approx(train_loss, rel=1e-5)  # nothing removed
    for value in (F.restricted_loss(model, task, [1, 3]), F.excluded_loss(model, task, [1, 3])):
        assert isinstance(value, float) and np.isfinite(value)
    mask = F.split_mask(task, "train")
    assert mask.sum() == task.n_train and (~F.split_mask(task, "test")).sum() == task.n_train
    with pytest.raises(ValueError, match="op"):
        F.pair_logits(model, ModularArithmetic(p=p, op="mul"))


@pytest.mark.slow
def test_projecting_the_embedding_onto_every_frequency_changes_nothing():
    p = 11
    task = ModularArithmetic(p=p, frac_train=0.4)
    model = model_with_embedding(p, {2: 1.0}, noise=0.3)
    W_E = np.asarray(model.embed.W_E[...])
    every = list(range(1, p // 2 + 1))
    np.testing.assert_allclose(F.projected_embedding(model, every), W_E, atol=1e-5)
    test_acc = float(evaluate(model, task.split(0)[1])[1])
    assert F.projected_embedding_accuracy(model, task, every) == pytest.approx(test_acc, abs=1e-6)
    only_2 = np.asarray(F.projected_embedding(model, [2]))
    np.testing.assert_allclose(only_2[p], W_E[p])  # the "=" row is kept
    norms = np.asarray(F.frequency_norms(only_2[:p]))
    assert np.all(norms[[1, 3, 4, 5]] < 1e-5) and norms[2] > 0.5


# --- progress measures --------------------------------------------------------------------------
@pytest.mark.slow
def test_grokking_metrics_match_the_separate_functions():
    p = 11  # p // 2 = 5 frequencies: the default threshold (4x the mean) is too high, use 1.5x
    task = ModularArithmetic(p=p, frac_train=0.4)
    model = model_with_embedding(p, {2: 3.0, 4: 2.5}, noise=0.05)
    assert F.key_frequencies(model, threshold=1.5) == [2, 4]
    for key_freqs in (None, [2, 4], [3]):
        out = F.grokking_metrics(task, key_freqs, threshold=1.5)["fourier"](model)
        assert set(out) == {
            "restricted_loss",
            "excluded_loss",
            "sum_sq_weights",
            "embed_fourier_gini",
            "n_key_freqs",
            "key_norm_frac",
        }
        assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
        freqs = [2, 4] if key_freqs is None else key_freqs
        assert out["n_key_freqs"] == len(freqs)
        assert out["restricted_loss"] == pytest.approx(F.restricted_loss(model, task, freqs), rel=1e-4)
        assert out["excluded_loss"] == pytest.approx(F.excluded_loss(model, task, freqs), rel=1e-4)
        assert out["sum_sq_weights"] == pytest.approx(F.sum_squared_weights(model), rel=1e-5)
        assert out["embed_fourier_gini"] == pytest.approx(F.fourier_norm_gini(model), rel=1e-4)
        assert out["key_norm_frac"] == pytest.approx(F.norm_fraction(F.embedding_fourier_norms(model), freqs), rel=1e-4)


@pytest.mark.slow
def test_grokking_metrics_on_an_untrained_model_have_no_key_frequencies():
    task = ModularArithmetic(p=11, frac_train=0.4)
    model = GPT(modular_config(11), seed=1)
    out = F.grokking_metrics(task)["fourier"](model)
    assert all(np.isfinite(v) for v in out.values())
    assert out["n_key_freqs"] == 0.0
    assert out["excluded_loss"] == pytest.approx(F.full_loss(model, task, "train"), rel=1e-5)
    with pytest.raises(ValueError, match="frequency"):
        F.grokking_metrics(task, key_freqs=[6])  # frequencies of p = 11 are 1..5
