"""Sparse autoencoders (minillm/sae.py): on data built from a known sparse dictionary the decoder
recovers it, the evaluation numbers mean what they say, a perfect reconstruction spliced into the
model gives the model's own loss, activations are gathered by name, and SAEs save, load and refuse
bad input."""

import jax
import numpy as np
import pytest

from minillm import GPT, CheckpointError, GPTConfig
from minillm.sae import SAE, evaluate_sae, gather_activations, spliced_loss, train_sae
from minillm.tasks import make_task


def sparse_data(n=8192, d=24, n_features=48, active=3, seed=0):
    """Each example: `active` of `n_features` unit directions, with random positive weights."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_features, d))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    which = np.argsort(rng.random((n, n_features)), axis=1)[:, :active]
    weights = np.zeros((n, n_features))
    np.put_along_axis(weights, which, rng.uniform(0.5, 1.5, (n, active)), axis=1)
    return (weights @ features).astype(np.float32), features


def best_cosines(sae: SAE, features: np.ndarray) -> np.ndarray:
    decoder = np.asarray(sae.W_dec)
    return np.abs(features @ decoder.T).max(1)  # decoder rows are unit norm


@pytest.mark.slow
def test_topk_sae_recovers_a_known_sparse_dictionary():
    acts, features = sparse_data()
    sae = train_sae(acts, d_sae=96, k=3, steps=1500, lr=3e-3, batch_size=512, progress=False)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=1), 1.0, atol=1e-5)
    assert best_cosines(sae, features).mean() >= 0.9
    stats = evaluate_sae(sae, acts)
    assert stats["variance_explained"] >= 0.9
    assert 2.5 <= stats["mean_l0"] <= 3.5  # k = 3 (ties at the threshold may add a few)
    untrained = train_sae(acts, d_sae=96, k=3, steps=1, progress=False)
    assert best_cosines(untrained, features).mean() < 0.7  # what recovery is measured against


@pytest.mark.slow
def test_relu_l1_sae_is_sparse_and_reconstructs():
    acts, features = sparse_data(n=4096, seed=1)
    sae = train_sae(acts, d_sae=96, l1=1.0, steps=1500, lr=3e-3, batch_size=512, progress=False)
    stats = evaluate_sae(sae, acts)
    assert stats["variance_explained"] >= 0.85 and stats["mean_l0"] < 12  # 3 true features, 24 dims
    assert best_cosines(sae, features).mean() >= 0.9


def test_evaluation_counts_l0_and_dead_features_exactly():
    d = 4
    eye = np.eye(d, dtype=np.float32)
    # a perfect ReLU SAE: features +e_i and -e_i, so relu(x) - relu(-x) = x; two extra features never fire
    W_enc = np.concatenate([eye, -eye, np.zeros((d, 2), np.float32)], axis=1)
    W_dec = np.concatenate([eye, -eye, np.full((2, d), 0.5, np.float32)], axis=0)
    sae = SAE(W_enc, np.r_[np.zeros(2 * d), -np.ones(2)].astype(np.float32), W_dec, np.zeros(d, np.float32),
              np.float32(1.0), None)  # fmt: skip
    x = np.array([[1.0, -2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.5]], np.float32)
    np.testing.assert_allclose(sae(x), x, atol=1e-6)
    stats = evaluate_sae(sae, x)
    assert stats["variance_explained"] == pytest.approx(1.0) and stats["mean_l0"] == 2.0
    assert stats["dead_fraction"] == pytest.approx(6 / 10)  # -e_1.. : only +e0, -e1, +e2, +e3 fire


# Its own config: the model must fit the bracket_depth task (3 tokens in, 2 out, 25 positions).
CFG = GPTConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=25, d_vocab=3, d_vocab_out=2, seed=3)


@pytest.mark.slow
def test_a_perfect_reconstruction_spliced_in_gives_the_models_own_loss():
    task = make_task("bracket_depth", n_brackets=24)
    batch = task.sample(jax.random.key(0), 64)
    model = GPT(CFG)
    d = CFG.d_mlp
    eye = np.eye(d, dtype=np.float32)
    perfect = SAE(np.concatenate([eye, -eye], 1), np.zeros(2 * d, np.float32), np.concatenate([eye, -eye], 0),
                  np.zeros(d, np.float32), np.float32(1.0), None)  # fmt: skip
    out = spliced_loss(model, perfect, batch, "blocks.0.mlp.hook_post")
    assert out["sae_loss"] == pytest.approx(out["clean_loss"], abs=1e-5)
    assert out["fraction_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert out["zero_ablation_loss"] != pytest.approx(out["clean_loss"], abs=1e-3)
    acts = gather_activations(model, batch.tokens, "blocks.0.mlp.hook_post")
    sae = train_sae(acts, d_sae=128, k=8, steps=200, progress=False)
    partial = spliced_loss(model, sae, batch, "blocks.0.mlp.hook_post")
    assert partial["fraction_recovered"] < 1.0


@pytest.mark.slow
def test_gather_activations_matches_the_cache_and_selects_positions():
    model = GPT(CFG)
    tokens = make_task("bracket_depth", n_brackets=24).sample(jax.random.key(1), 300).tokens
    _, cache = model.run_with_cache(tokens)
    all_pos = gather_activations(model, tokens, "blocks.1.attn.hook_z", chunk_size=64)
    np.testing.assert_allclose(all_pos, np.asarray(cache["z", 1]).reshape(300 * 25, -1), atol=1e-5)
    last = gather_activations(model, tokens, "blocks.1.hook_resid_post", positions=[-1])
    np.testing.assert_allclose(last, np.asarray(cache["resid_post", 1])[:, -1], atol=1e-5)


@pytest.mark.slow
def test_save_load_round_trip_and_refusals(tmp_path):
    acts, _ = sparse_data(n=512)
    sae = train_sae(acts, d_sae=32, k=4, steps=20, progress=False)
    sae.save(str(tmp_path / "sae.safetensors"))
    back = SAE.load(str(tmp_path / "sae.safetensors"))
    assert back.k == 4
    np.testing.assert_array_equal(back.encode(acts), sae.encode(acts))
    GPT(CFG).save(str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not an SAE"):
        SAE.load(str(tmp_path / "model.safetensors"))
    for kwargs, match in [(dict(), "exactly one"), (dict(k=3, l1=1.0), "exactly one"), (dict(k=0), "k must"),
                          (dict(l1=-1.0), "l1 must")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            train_sae(acts, d_sae=32, progress=False, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        train_sae(np.where(acts > 0.5, np.nan, acts), d_sae=32, k=2, progress=False)
