"""The weight-side circuits (minillm/circuits.py: QK, OV, full circuits, composition scores,
eigenvalue scores) against the same quantities computed by hand in NumPy from the raw weights, and
on heads built by hand. (FactoredMatrix itself: test_factored_matrix.py.)"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS, random_factors

from minillm import GPT
from minillm import circuits as C
from minillm.model.factored_matrix import FactoredMatrix

RTOL, ATOL = 1e-4, 1e-5


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# --- circuits from a model --------------------------------------------------------------------------
CFG = CONFIGS["mlp_noln_relu"]  # 3 layers, for composition; d_head != d_model / n_heads; d_vocab_out == d_vocab
L, H, D = CFG.n_layers, CFG.n_heads, CFG.d_model


@pytest.fixture(scope="module")
def model():
    return GPT(CFG)


def raw(model):
    return {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}


def stacked(w, name, n_layers):
    return np.stack([w[f"blocks.{l}.attn.{name}"] for l in range(n_layers)])


def test_qk_and_ov_are_the_products_of_the_raw_weights(model):
    w, n = raw(model), CFG.n_layers
    W_Q, W_K, W_V, W_O = (stacked(w, x, n) for x in ("W_Q", "W_K", "W_V", "W_O"))
    qk, ov = C.QK(model), C.OV(model)
    assert qk.shape == ov.shape == (L, H, D, D) and qk.mdim == ov.mdim == CFG.d_head
    close(qk.AB, np.einsum("lhde,lhfe->lhdf", W_Q, W_K))
    close(ov.AB, np.einsum("lhde,lhef->lhdf", W_V, W_O))


@pytest.mark.parametrize("include_pos", [False, True])
def test_full_circuits_equal_the_dense_products(model, include_pos):
    w, n = raw(model), CFG.n_layers
    embed = np.concatenate([w["embed.W_E"], w["pos_embed.W_pos"]]) if include_pos else w["embed.W_E"]
    W_QK = np.einsum("lhde,lhfe->lhdf", stacked(w, "W_Q", n), stacked(w, "W_K", n))
    W_OV = np.einsum("lhde,lhef->lhdf", stacked(w, "W_V", n), stacked(w, "W_O", n))
    full_qk, full_ov = C.full_QK(model, include_pos=include_pos), C.full_OV(model, include_pos=include_pos)
    rows = CFG.d_vocab + (CFG.n_ctx if include_pos else 0)
    assert full_qk.shape == (L, H, rows, rows) and full_ov.shape == (L, H, rows, CFG.d_vocab_out)
    assert full_qk.mdim == full_ov.mdim == CFG.d_head  # still factored through d_head
    close(full_qk.AB, embed @ W_QK @ embed.T)
    close(full_ov.AB, embed @ W_OV @ w["unembed.W_U"])


def comp_score_by_hand(W_A, W_B):
    return np.linalg.norm(W_A @ W_B) / (np.linalg.norm(W_A) * np.linalg.norm(W_B))


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_composition_scores_match_the_definition_and_are_zero_unless_layer2_is_later(model, mode):
    w = raw(model)

    def head(l, h):
        a = {x: w[f"blocks.{l}.attn.{x}"][h] for x in ("W_Q", "W_K", "W_V", "W_O")}
        return a["W_V"] @ a["W_O"], a["W_Q"] @ a["W_K"].T  # W_OV, W_QK [d, d]

    scores = np.asarray(C.all_composition_scores(model, mode))
    assert scores.shape == (L, H, L, H)
    for l1, h1, l2, h2 in [(0, 1, 1, 2), (0, 2, 2, 0), (1, 0, 2, 2)]:
        ov1, _ = head(l1, h1)
        ov2, qk2 = head(l2, h2)
        reader = {"Q": qk2, "K": qk2.T, "V": ov2}[mode]
        assert scores[l1, h1, l2, h2] == pytest.approx(comp_score_by_hand(ov1, reader), rel=1e-4)
    by_layers = scores.transpose(0, 2, 1, 3)  # [l1, l2, h1, h2]
    l1, l2 = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    assert np.all(by_layers[l1 >= l2] == 0)
    assert np.all(by_layers[l1 < l2] > 0)


def test_q_and_k_composition_differ_and_unknown_modes_are_refused(model):
    q, k = C.all_composition_scores(model, "Q"), C.all_composition_scores(model, "K")
    assert not np.allclose(q[0, :, 1], k[0, :, 1])
    with pytest.raises(ValueError, match="mode"):
        C.all_composition_scores(model, "O")
    with pytest.raises(TypeError, match="all_composition_scores"):  # TL's utility has this name: two matrices
        C.composition_scores(model, "Q")


def test_composition_score_is_one_for_aligned_rank_one_and_zero_for_orthogonal():
    u, v = np.eye(6, dtype=np.float32)[:, :1], np.eye(6, dtype=np.float32)[:, 1:2]
    writes_u = FactoredMatrix(v, u.T)  # x -> (x . v) u
    reads_u = FactoredMatrix(u, v.T)
    reads_v = FactoredMatrix(v, u.T)
    assert float(C.composition_score(writes_u, reads_u)) == pytest.approx(1.0, abs=1e-6)
    assert float(C.composition_score(writes_u, reads_v)) == pytest.approx(0.0, abs=1e-6)


def eigenvalue_score_by_hand(M):
    eig = np.linalg.eigvals(M)
    return eig.sum().real / np.abs(eig).sum()


def test_copying_and_matching_scores_match_dense_eigenvalues(model):
    w, n = raw(model), CFG.n_layers
    W_E, W_U = w["embed.W_E"], w["unembed.W_U"]
    W_OV = np.einsum("lhde,lhef->lhdf", stacked(w, "W_V", n), stacked(w, "W_O", n))
    W_QK = np.einsum("lhde,lhfe->lhdf", stacked(w, "W_Q", n), stacked(w, "W_K", n))
    ov_scores, qk_scores = np.asarray(C.ov_copying_score(model)), np.asarray(C.qk_matching_score(model))
    assert ov_scores.shape == qk_scores.shape == (L, H)
    for l, h in [(0, 0), (1, 2), (2, 1)]:
        assert ov_scores[l, h] == pytest.approx(eigenvalue_score_by_hand(W_E @ W_OV[l, h] @ W_U), abs=1e-4)
        assert qk_scores[l, h] == pytest.approx(eigenvalue_score_by_hand(W_E @ W_QK[l, h] @ W_E.T), abs=1e-4)


def test_a_head_built_to_copy_scores_one_and_one_built_to_suppress_scores_minus_one():
    """Tokens are one-hot in the first d_vocab dims and W_U reads them back, so the full OV circuit
    of head 0 is the identity on d_head tokens (copying) and of head 1 its negative."""
    cfg = CONFIGS["attn_only_ln"]
    assert cfg.d_vocab <= cfg.d_model  # room for one-hot tokens
    model = GPT(cfg)
    w = {k: np.asarray(v).copy() for k, v in model.state_dict().items()}
    e = cfg.d_head
    w["embed.W_E"] = np.eye(cfg.d_vocab, cfg.d_model, dtype=np.float32)
    w["unembed.W_U"] = w["embed.W_E"].T.copy()
    w["blocks.0.attn.W_V"][:2] = np.eye(cfg.d_model, e, dtype=np.float32)
    w["blocks.0.attn.W_O"][0] = np.eye(e, cfg.d_model, dtype=np.float32)
    w["blocks.0.attn.W_O"][1] = -np.eye(e, cfg.d_model, dtype=np.float32)
    model.load_state_dict({k: jnp.asarray(v) for k, v in w.items()})
    scores = np.asarray(C.ov_copying_score(model))
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0, 1] == pytest.approx(-1.0, abs=1e-5)
    assert np.all(np.abs(scores[0, 2:]) < 0.99)  # the random heads are neither


def test_ov_copying_score_refuses_different_input_and_output_vocabularies():
    cfg = CONFIGS["mlp_ln_gelu"]
    assert cfg.d_vocab_out != cfg.d_vocab
    model = GPT(cfg)
    assert C.full_OV(model).shape == (cfg.n_layers, cfg.n_heads, cfg.d_vocab, cfg.d_vocab_out)
    with pytest.raises(ValueError, match="d_vocab_out"):
        C.ov_copying_score(model)


def test_composition_scores_of_two_matrices_give_every_pair_as_transformerlens():
    """utils.composition_scores(left, right): [*left leading, *right leading], each entry the score
    of one pair; broadcast_dims=False pairs them up by broadcasting instead."""
    left = FactoredMatrix(*random_factors((2, 3), 8, 2, 8))
    right = FactoredMatrix(*random_factors((4,), 8, 3, 8, seed=1))
    every = np.asarray(C.composition_scores(left, right))
    assert every.shape == (2, 3, 4)
    for i, j, k in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        want = float(C.composition_score(left[i, j], right[k]))
        assert every[i, j, k] == pytest.approx(want, rel=1e-5)
    paired = np.asarray(
        C.composition_scores(left, FactoredMatrix(*random_factors((3,), 8, 3, 8)), broadcast_dims=False)
    )
    assert paired.shape == (2, 3)


def test_circuit_indices_are_range_checked(model):
    with pytest.raises(IndexError, match="out of range"):
        C.OV(model)[CFG.n_layers]
