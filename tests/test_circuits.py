"""FactoredMatrix against the dense product it stands for, and the weight-side circuits (QK, OV, full
circuits, composition scores, eigenvalue scores) against the same quantities computed by hand in
NumPy from the raw weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import GPT, GPTConfig
from minillm import circuits as C
from minillm.model.factored_matrix import FactoredMatrix

RTOL, ATOL = 1e-4, 1e-5


def random_factors(leading, ldim, mdim, rdim, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((*leading, ldim, mdim)).astype(np.float32)
    B = rng.standard_normal((*leading, mdim, rdim)).astype(np.float32)
    return A, B


def dense(A, B):
    return np.asarray(A, np.float64) @ np.asarray(B, np.float64)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


# --- FactoredMatrix ---------------------------------------------------------------------------------
def test_sizes_products_and_transpose_match_the_dense_matrix():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm = FactoredMatrix(A, B)
    assert fm.shape == (2, 3, 12, 9) and fm.ndim == 4
    assert (fm.ldim, fm.mdim, fm.rdim) == (12, 4, 9)
    close(fm.AB, dense(A, B))
    close(fm.T.AB, np.swapaxes(dense(A, B), -1, -2))
    assert fm.T.shape == (2, 3, 9, 12)
    square = FactoredMatrix(*random_factors((2,), 12, 4, 12))
    close(square.BA, dense(square.B, square.A))
    with pytest.raises(ValueError, match="square"):
        _ = fm.BA


def test_leading_dims_broadcast_between_the_factors():
    A, _ = random_factors((3,), 6, 2, 5)
    _, B = random_factors((), 6, 2, 5, seed=1)
    fm = FactoredMatrix(A, B)
    assert fm.shape == (3, 6, 5)
    close(fm.AB, dense(A, B))
    with pytest.raises(ValueError, match="inner"):
        FactoredMatrix(A, np.ones((3, 5), np.float32))


@pytest.mark.parametrize("ldim, mdim, rdim", [(12, 4, 9), (5, 8, 6), (7, 7, 3)])
def test_svd_reconstructs_the_product_and_matches_numpy(ldim, mdim, rdim):
    A, B = random_factors((2, 3), ldim, mdim, rdim)
    fm = FactoredMatrix(A, B)
    U, S, V = fm.svd()  # TransformerLens' convention: AB == U diag(S) V^T, V in columns
    Vh = np.swapaxes(V, -1, -2)
    rank = min(ldim, mdim, rdim)
    assert U.shape == (2, 3, ldim, rank) and S.shape == (2, 3, rank) and Vh.shape == (2, 3, rank, rdim)
    close(np.asarray(U) * np.asarray(S)[..., None, :] @ np.asarray(Vh), dense(A, B))
    close(S, np.linalg.svd(dense(A, B), compute_uv=False)[..., :rank])
    eye = np.broadcast_to(np.eye(rank), (2, 3, rank, rank))
    close(np.swapaxes(U, -1, -2) @ U, eye)  # orthonormal columns
    close(Vh @ np.swapaxes(Vh, -1, -2), eye)  # orthonormal rows
    close(fm.V, np.swapaxes(Vh, -1, -2))
    assert fm.U is U and fm.S is S  # cached
    with pytest.raises(AttributeError, match="deprecated alias"):  # TL's Vh returns V: refused, not redefined
        _ = fm.Vh
    close(fm.norm(), np.linalg.norm(dense(A, B), axis=(-2, -1)))
    close(U @ fm.collapse_l(), dense(A, B))
    close(fm.collapse_r() @ Vh, dense(A, B))
    close(fm.make_even().AB, dense(A, B))


def test_eigenvalues_are_the_nonzero_eigenvalues_of_the_dense_product():
    A, B = random_factors((2, 3), 12, 4, 12)
    eig = np.asarray(FactoredMatrix(A, B).eigenvalues)
    assert eig.shape == (2, 3, 4)
    full = np.linalg.eigvals(dense(A, B))  # [2, 3, 12]: 4 nonzero, 8 zero
    for i in np.ndindex(2, 3):
        by_size = full[i][np.argsort(-np.abs(full[i]))]
        assert np.abs(by_size[4:]).max() < 1e-6 * np.abs(by_size[0])
        for value in eig[i]:  # each of ours is one of the dense ones, and vice versa
            assert np.abs(by_size[:4] - value).min() < 1e-4 * np.abs(by_size[0])
        for value in by_size[:4]:
            assert np.abs(eig[i] - value).min() < 1e-4 * np.abs(by_size[0])


def test_unit_norm_scales_each_matrix_to_norm_one():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm = FactoredMatrix(A, B)
    unit = fm.unit_norm()
    close(unit.norm(), np.ones((2, 3)))
    close(unit.AB, dense(A, B) / np.linalg.norm(dense(A, B), axis=(-2, -1))[..., None, None])


def test_matmul_chains_match_dense_products():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm, M = FactoredMatrix(A, B), dense(A, B)
    rng = np.random.default_rng(1)
    right_wide = rng.standard_normal((9, 7)).astype(np.float32)  # rdim 9 > mdim 4: B @ other
    right_narrow = rng.standard_normal((4, 4, 7)).astype(np.float32)
    left = rng.standard_normal((5, 12)).astype(np.float32)
    vec_r, vec_l = rng.standard_normal(9).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    other = FactoredMatrix(*random_factors((2, 3), 9, 2, 6, seed=2))

    assert isinstance(fm @ right_wide, FactoredMatrix) and (fm @ right_wide).mdim == 4
    close((fm @ right_wide).AB, M @ right_wide)
    close((jnp.asarray(left) @ fm).AB, left @ M)  # a JAX array on the left
    close((left @ fm).AB, left @ M)  # a NumPy array on the left reaches __rmatmul__
    close(fm @ vec_r, M @ vec_r)
    close(vec_l @ fm, vec_l @ M)
    close((fm @ other).AB, M @ dense(other.A, other.B))
    close((left @ fm @ jnp.asarray(right_wide)).AB, left @ M @ right_wide)
    close((fm * 2.5).AB, 2.5 * M)
    narrow = FactoredMatrix(*random_factors((), 4, 6, 4, seed=3))  # mdim 6 > rdim 4: forms AB @ other
    close((narrow @ right_narrow).AB, dense(narrow.A, narrow.B) @ right_narrow)
    with pytest.raises(ValueError):
        fm @ left
    with pytest.raises(ValueError, match="scalar"):
        fm * np.ones(3)


def test_indexing_selects_leading_dims_then_rows_then_columns():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm, M = FactoredMatrix(A, B), dense(A, B)
    close(fm[1].AB, M[1])
    assert fm[1, 2].shape == (12, 9)
    close(fm[1, 2].AB, M[1, 2])
    close(fm[:, 0].AB, M[:, 0])
    close(fm[1, np.int64(2)].AB, M[1, 2])
    close(fm[0, 1, 3:7].AB, M[0, 1, 3:7])
    assert fm[0, 1, 3].shape == (1, 9)  # an int on a row keeps the dim
    close(fm[0, 1, 3].AB, M[0, 1, 3:4])
    close(fm[0, 1, -1, 2:5].AB, M[0, 1, -1:, 2:5])
    with pytest.raises(IndexError):
        fm[0, 0, 0, 0, 0]


def test_unsqueeze_adds_a_leading_dim_and_pair_gives_the_factors():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm = FactoredMatrix(A, B)
    assert fm.unsqueeze(1).shape == (2, 1, 3, 12, 9)
    close(fm.unsqueeze(1).AB[:, 0], dense(A, B))
    with pytest.raises(ValueError, match="leading"):
        fm.unsqueeze(3)
    close(fm.pair[0], A)
    close(fm.pair[1], B)


def test_corner_is_the_dense_top_left_block():
    A, B = random_factors((4, 5), 12, 4, 9)
    close(FactoredMatrix(A, B).get_corner(3), dense(A, B)[:3, :3, :3, :3])


def test_factored_matrix_is_a_pytree_that_goes_through_jit():
    A, B = random_factors((2, 3), 12, 4, 9)
    fm = FactoredMatrix(A, B)
    norms = jax.jit(lambda m: m.norm())(fm)
    close(norms, np.linalg.norm(dense(A, B), axis=(-2, -1)))
    doubled = jax.jit(lambda m: m * 2.0)(fm)
    assert isinstance(doubled, FactoredMatrix)
    close(doubled.AB, 2 * dense(A, B))


# --- circuits from a model --------------------------------------------------------------------------
CFG = GPTConfig(n_layers=3, d_model=32, n_heads=4, n_ctx=10, d_vocab=20, attn_only=True, seed=5)


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
    assert qk.shape == ov.shape == (3, 4, 32, 32) and qk.mdim == ov.mdim == CFG.d_head
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
    assert full_qk.shape == (3, 4, rows, rows) and full_ov.shape == (3, 4, rows, CFG.d_vocab_out)
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
    assert scores.shape == (3, 4, 3, 4)
    for l1, h1, l2, h2 in [(0, 1, 1, 2), (0, 3, 2, 0), (1, 0, 2, 3)]:
        ov1, _ = head(l1, h1)
        ov2, qk2 = head(l2, h2)
        reader = {"Q": qk2, "K": qk2.T, "V": ov2}[mode]
        assert scores[l1, h1, l2, h2] == pytest.approx(comp_score_by_hand(ov1, reader), rel=1e-4)
    by_layers = scores.transpose(0, 2, 1, 3)  # [l1, l2, h1, h2]
    l1, l2 = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
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
    assert ov_scores.shape == qk_scores.shape == (3, 4)
    for l, h in [(0, 0), (1, 2), (2, 3)]:
        assert ov_scores[l, h] == pytest.approx(eigenvalue_score_by_hand(W_E @ W_OV[l, h] @ W_U), abs=1e-4)
        assert qk_scores[l, h] == pytest.approx(eigenvalue_score_by_hand(W_E @ W_QK[l, h] @ W_E.T), abs=1e-4)


def test_a_head_built_to_copy_scores_one_and_one_built_to_suppress_scores_minus_one():
    """Tokens are one-hot in the first d_vocab dims and W_U reads them back, so the full OV circuit
    of head 0 is the identity on d_head tokens (copying) and of head 1 its negative."""
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=4, n_ctx=10, d_vocab=20, attn_only=True)
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
    model = GPT(GPTConfig(n_layers=1, d_model=32, n_heads=4, n_ctx=10, d_vocab=20, d_vocab_out=7, attn_only=True))
    assert C.full_OV(model).shape == (1, 4, 20, 7)
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


def test_factored_matrix_indices_are_range_checked():
    fm = FactoredMatrix(*random_factors((2, 3), 5, 2, 4))
    close(fm[-1].AB, fm[1].AB)  # negative: from the end
    for bad in [2, -3, (0, 3), (0, 0, 5), (0, 0, 0, 4), np.array([0, 2])]:
        with pytest.raises(IndexError, match="out of range"):
            fm[bad]
    with pytest.raises(IndexError, match="out of range"):
        C.OV(GPT(GPTConfig(n_layers=2, d_model=8, n_heads=2, n_ctx=4, d_vocab=5)))[2]
