"""FactoredMatrix (minillm/model/factored_matrix.py) against the dense product it stands for: sizes,
products, transpose, SVD (cached), eigenvalues, norms (16-bit factors upcast), matmul chains,
scalar factors, indexing (range-checked), and its passage through jit. (The circuits made of it:
test_circuits.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense, random_factors

from minillm.model.factored_matrix import FactoredMatrix

RTOL, ATOL = 1e-4, 1e-5


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


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


def test_indices_are_range_checked():
    fm = FactoredMatrix(*random_factors((2, 3), 5, 2, 4))
    close(fm[-1].AB, fm[1].AB)  # negative: from the end
    for bad in [2, -3, (0, 3), (0, 0, 5), (0, 0, 0, 4), np.array([0, 2])]:
        with pytest.raises(IndexError, match="out of range"):
            fm[bad]


def test_has_leading_dims_as_in_transformerlens():
    A, B = random_factors((2, 3), 5, 2, 4)
    assert FactoredMatrix(A, B).has_leading_dims
    assert not FactoredMatrix(A[0, 0], B[0, 0]).has_leading_dims
    assert FactoredMatrix(A[0, 0], B).has_leading_dims  # one factor's leading dims are enough
    assert not FactoredMatrix(A, B)[1, 2].has_leading_dims  # indexed down to one matrix
    assert FactoredMatrix(A[0, 0], B[0, 0]).unsqueeze(0).has_leading_dims


def test_svd_is_computed_once_and_every_call_returns_the_same_three_arrays():
    fm = FactoredMatrix(*random_factors((2,), 6, 3, 5))
    U, S, V = fm.svd()
    again = fm.svd()
    assert again[0] is U and again[1] is S and again[2] is V  # V too, as TransformerLens caches it
    assert fm.U is U and fm.S is S and fm.V is V
    close(np.asarray(U) * np.asarray(S)[..., None, :] @ np.swapaxes(V, -1, -2), dense(fm.A, fm.B))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_factors_are_upcast_for_the_linear_algebra(dtype):
    """jnp.linalg refuses 16-bit input; the spectra come out in float32 (complex64), exact for the
    16-bit factors as they are (compared with float64 NumPy on the same rounded values)."""
    A, B = random_factors((2,), 6, 3, 6)
    fm = FactoredMatrix(jnp.asarray(A, dtype), jnp.asarray(B, dtype))
    A16, B16 = np.asarray(fm.A, np.float64), np.asarray(fm.B, np.float64)  # the rounded factors
    eig = np.asarray(fm.eigenvalues)
    assert eig.dtype == np.complex64
    want = np.linalg.eigvals(B16 @ A16)
    for i in range(2):
        close(np.sort_complex(eig[i]), np.sort_complex(want[i]), rtol=1e-4, atol=1e-4)
    U, S, V = fm.svd()
    assert S.dtype == jnp.float32
    close(S, np.linalg.svd(A16 @ B16, compute_uv=False)[..., :3])
    close(fm.norm(), np.linalg.norm(A16 @ B16, axis=(-2, -1)))
    assert fm.unit_norm().A.dtype == dtype


def test_a_one_element_array_is_a_scalar_factor():
    """fm * x takes a 1-element array as the scalar it holds, as TransformerLens does (numel() == 1)."""
    A, B = random_factors((2,), 5, 2, 4)
    fm = FactoredMatrix(A, B)
    for x in (np.array([2.0], np.float32), jnp.array([[2.0]]), np.float32(2.0)):
        for product in (fm * x, x * fm):
            assert isinstance(product, FactoredMatrix) and product.shape == fm.shape
            close(product.AB, 2 * dense(A, B))
    with pytest.raises(ValueError, match="scalar"):
        fm * np.array([2.0, 3.0])
