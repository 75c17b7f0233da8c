"""FactoredMatrix: a matrix kept as the product of two thin factors, A @ B, and never formed.

What it is for: the circuits of an attention head are low-rank d_model x d_model matrices.
W_QK = W_Q @ W_K^T decides where a head attends and W_OV = W_V @ W_O what it writes; each has rank
at most d_head. Multiplied out to the vocabulary (W_E W_QK W_E^T, W_E W_OV W_U) they become
d_vocab x d_vocab, too big to form for a real vocabulary, yet still of rank d_head. Kept as factors
A [..., ldim, mdim] and B [..., mdim, rdim], their singular values, eigenvalues and norms come from
mdim x mdim problems, and a product with another matrix stays factored. Leading batch dimensions
(e.g. [layer, head]) are carried along and broadcast between A and B.

    fm = FactoredMatrix(W_V, W_O)          # [layer, head, d_model, d_model], rank d_head
    U, S, V = fm.svd()                     # fm.AB == U @ diag(S) @ V^T, from the factors only
    fm.norm(), fm.eigenvalues              # [layer, head], [layer, head, d_head]
    (W_E @ fm @ W_U)[0, 3]                 # still factored: [d_vocab, d_vocab_out], rank d_head

The names (AB, BA, T, ldim, mdim, rdim, has_leading_dims, svd, U, S, V, eigenvalues, norm,
get_corner, collapse_l, collapse_r, make_even, unsqueeze, pair) are TransformerLens'
`FactoredMatrix`, with the same meaning: `svd()` returns (U, S, V) with fm.AB == U @ diag(S) @ V^T,
V [..., rdim, r] in columns (NumPy's and JAX's svd give Vh = V^T instead: careful when mixing
them), computed once per FactoredMatrix and cached, all three. Factors in bfloat16 or float16 are
upcast to float32 for the linear algebra (svd and what reads it, eigenvalues), as TransformerLens
does for eigenvalues: JAX's decompositions refuse 16-bit input. A scalar factor (`fm * x`) may be a
1-element array, as in TransformerLens. TransformerLens' `Vh`
property, a deprecated alias that returns V, is refused here with that explanation rather than
given a second meaning. Indices are range-checked (JAX would clamp fm[5] on a leading size of 2 to
fm[1]). A FactoredMatrix is a JAX pytree (leaves A and B), so it can be passed into and returned
from `jax.jit` and `jax.vmap`.

Reference: Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits" (the QK and OV
circuits as low-rank matrices); TransformerLens' FactoredMatrix (the interface).
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from minillm.model.inputs import check_indices

Array = jax.Array

# Analysis wants the exact product: no reduced-precision (TF32 / bf16) passes on accelerators.
_mm = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _swap(x: Array) -> Array:
    return jnp.swapaxes(x, -1, -2)


def _keep_dim(index: Any) -> Any:
    """An int index on a matrix dimension becomes a length-1 slice, so the result stays a matrix."""
    if isinstance(index, numbers.Integral) and not isinstance(index, bool):
        index = int(index)
        return slice(index, index + 1 if index != -1 else None)
    return index


def _is_traced(*xs: Array) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _upcast(x: Array) -> Array:
    """16-bit floats as float32 for jnp.linalg (its decompositions have no 16-bit kernels)."""
    return x.astype(jnp.float32) if x.dtype in (jnp.bfloat16, jnp.float16) else x


@jax.jit  # one compiled program per shape: much faster to build than op-by-op
def _svd_of_product(A: Array, B: Array) -> tuple[Array, Array, Array]:
    """SVD of A @ B from its factors: QR of A and of B^T, then the SVD of the small core between them."""
    Qa, Ra = jnp.linalg.qr(A)  # A = Qa Ra: Qa [..., ldim, r1] orthonormal columns, Ra [..., r1, mdim]
    Qb, Rb = jnp.linalg.qr(_swap(B))  # B^T = Qb Rb: Qb [..., rdim, r2], Rb [..., r2, mdim]
    U_core, S, Vh_core = jnp.linalg.svd(_mm(Ra, _swap(Rb)), full_matrices=False)  # core [..., r1, r2]
    return _mm(Qa, U_core), S, _mm(Vh_core, _swap(Qb))  # AB = Qa (Ra Rb^T) Qb^T


@jax.tree_util.register_pytree_node_class
class FactoredMatrix:
    """A @ B with A [..., ldim, mdim] and B [..., mdim, rdim]; the leading dims broadcast."""

    # `numpy_array @ fm` must reach __rmatmul__ instead of numpy turning fm into an object array.
    __array_ufunc__ = None

    def __init__(self, A: Any, B: Any):
        A, B = jnp.asarray(A), jnp.asarray(B)
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError(
                f"FactoredMatrix: A and B must be matrices (ndim >= 2), got shapes "
                f"{tuple(A.shape)} and {tuple(B.shape)}"
            )
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"FactoredMatrix: inner dimensions differ, A {tuple(A.shape)} @ B {tuple(B.shape)}")
        try:
            leading = jnp.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        except ValueError as e:
            raise ValueError(
                f"FactoredMatrix: leading dimensions of A {tuple(A.shape)} and B {tuple(B.shape)} do not broadcast"
            ) from e
        self.A = jnp.broadcast_to(A, leading + A.shape[-2:])  # [..., ldim, mdim]
        self.B = jnp.broadcast_to(B, leading + B.shape[-2:])  # [..., mdim, rdim]
        self._svd: tuple[Array, Array, Array] | None = None  # (U, S, V), filled by the first svd()

    # --- pytree: the leaves are A and B ------------------------------------------------------
    def tree_flatten(self):
        return (self.A, self.B), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        # Bypass __init__: JAX may rebuild the object from placeholders that are not arrays.
        obj = object.__new__(cls)
        obj.A, obj.B = children
        obj._svd = None
        return obj

    # --- sizes --------------------------------------------------------------------------------
    @property
    def ldim(self) -> int:
        return self.A.shape[-2]

    @property
    def mdim(self) -> int:
        return self.A.shape[-1]

    @property
    def rdim(self) -> int:
        return self.B.shape[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.A.shape[:-2]) + (self.ldim, self.rdim)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def has_leading_dims(self) -> bool:
        """Whether there are batch dimensions before the matrix ones ([layer, head, ...])."""
        return self.A.ndim > 2

    @property
    def pair(self) -> tuple[Array, Array]:
        return self.A, self.B

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={self.shape}, mdim={self.mdim})"

    # --- the matrix itself ----------------------------------------------------------------------
    @property
    def AB(self) -> Array:
        """The product [..., ldim, rdim]: the dense matrix (can be large)."""
        return _mm(self.A, self.B)

    @property
    def BA(self) -> Array:
        """The reverse product [..., mdim, mdim]; only defined when ldim == rdim."""
        self._check_square("BA")
        return _mm(self.B, self.A)

    def _check_square(self, what: str) -> None:
        if self.ldim != self.rdim:
            raise ValueError(f"{what} needs a square matrix (ldim == rdim), got shape {self.shape}")

    @property
    def T(self) -> FactoredMatrix:
        """The transpose over the last two dims: B^T @ A^T."""
        return FactoredMatrix(_swap(self.B), _swap(self.A))

    # --- products -------------------------------------------------------------------------------
    def __matmul__(self, other: Any) -> FactoredMatrix | Array:
        """self @ other. A vector gives a vector [..., ldim]; a matrix or FactoredMatrix gives a
        FactoredMatrix whose inner dimension is the smaller of the two available."""
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        try:
            other = jnp.asarray(other)
        except TypeError:
            return NotImplemented
        if other.ndim == 1:
            if other.shape[0] != self.rdim:
                raise ValueError(f"FactoredMatrix {self.shape} @ vector {tuple(other.shape)}: sizes differ")
            return _mm(self.A, _mm(self.B, other[:, None]))[..., 0]
        if other.shape[-2] != self.rdim:
            raise ValueError(f"FactoredMatrix {self.shape} @ {tuple(other.shape)}: inner sizes differ")
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, _mm(self.B, other))
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other: Any) -> FactoredMatrix | Array:
        """other @ self, for an array (or vector) on the left."""
        if isinstance(other, FactoredMatrix):
            return other.A @ (other.B @ self)
        try:
            other = jnp.asarray(other)
        except TypeError:
            return NotImplemented
        if other.ndim == 1:
            if other.shape[0] != self.ldim:
                raise ValueError(f"vector {tuple(other.shape)} @ FactoredMatrix {self.shape}: sizes differ")
            return _mm(_mm(other[None, :], self.A), self.B)[..., 0, :]
        if other.shape[-1] != self.ldim:
            raise ValueError(f"{tuple(other.shape)} @ FactoredMatrix {self.shape}: inner sizes differ")
        if self.ldim > self.mdim:
            return FactoredMatrix(_mm(other, self.A), self.B)
        return FactoredMatrix(other, self.AB)

    def __mul__(self, scalar: Any) -> FactoredMatrix:
        scalar = jnp.asarray(scalar)
        if scalar.size != 1:
            raise ValueError(
                f"FactoredMatrix * x needs a scalar x, got shape {tuple(scalar.shape)}; use @ for matrix products"
            )
        # a 1-element array is that scalar, as in TransformerLens (numel() == 1): it adds no dimension
        return FactoredMatrix(self.A * scalar.reshape(()), self.B)

    __rmul__ = __mul__

    # --- spectra ----------------------------------------------------------------------------------
    def svd(self) -> tuple[Array, Array, Array]:
        """(U [..., ldim, r], S [..., r], V [..., rdim, r]) with AB == U @ diag(S) @ V^T, r = min(ldim,
        mdim, rdim), S descending: TransformerLens' convention (NumPy's svd returns V^T instead).
        Computed from QR decompositions of A and B^T and the SVD of the small core between them; the
        ldim x rdim product is never formed. Computed once: every call returns the same three arrays
        (float32 for 16-bit factors)."""
        if self._svd is not None:
            return self._svd
        U, S, Vh = _svd_of_product(_upcast(self.A), _upcast(self.B))
        result = (U, S, _swap(Vh))
        if not _is_traced(*result):  # caching a tracer on an object that outlives the trace would leak it
            self._svd = result
        return result

    @property
    def U(self) -> Array:
        """Left singular vectors [..., ldim, r] (columns)."""
        return self.svd()[0]

    @property
    def S(self) -> Array:
        """Singular values [..., r], descending."""
        return self.svd()[1]

    @property
    def V(self) -> Array:
        """Right singular vectors as columns [..., rdim, r]: AB == U diag(S) V^T."""
        return self.svd()[2]

    @property
    def Vh(self) -> Array:
        raise AttributeError(
            "FactoredMatrix.Vh is refused: TransformerLens' Vh is a deprecated alias that returns V (columns), "
            "not V^T. Use .V ([..., rdim, r], columns) or jnp.swapaxes(fm.V, -1, -2) for the rows."
        )

    @property
    def eigenvalues(self) -> Array:
        """The eigenvalues of BA [..., mdim], complex. If BAv = kv then AB(Av) = k(Av): the nonzero
        eigenvalues of AB are those of the small mdim x mdim matrix BA (AB's others are zero).
        16-bit factors are upcast to float32 first (complex64 out), as TransformerLens does; BA is
        then formed in float32 too (TransformerLens forms it in 16 bits, so its eigenvalues carry
        that rounding, about 0.5% in bfloat16)."""
        self._check_square("eigenvalues")
        return jnp.linalg.eig(_mm(_upcast(self.B), _upcast(self.A)))[0]

    def norm(self) -> Array:
        """Frobenius norm [...]: sqrt of the sum of squared singular values."""
        return jnp.sqrt(jnp.sum(self.S**2, axis=-1))

    def unit_norm(self) -> FactoredMatrix:
        """The same matrices scaled to Frobenius norm 1 (a zero matrix stays zero)."""
        norm = self.norm().astype(self.A.dtype)  # the norm is float32 for 16-bit factors: keep A's dtype
        return FactoredMatrix(self.A / jnp.where(norm > 0, norm, 1.0)[..., None, None], self.B)

    def collapse_l(self) -> Array:
        """diag(S) @ Vh [..., r, rdim]: the matrix with its left orthogonal factor U removed
        (AB == U @ collapse_l()); same norms and same products' norms as AB from the left."""
        U, S, V = self.svd()
        return S[..., :, None] * _swap(V)

    def collapse_r(self) -> Array:
        """U @ diag(S) [..., ldim, r]: AB with its right orthogonal factor removed (AB == collapse_r() @ Vh)."""
        U, S, V = self.svd()
        return U * S[..., None, :]

    def make_even(self) -> FactoredMatrix:
        """The same matrix factored as (U sqrt(S)) @ (sqrt(S) Vh): both factors carry half the scale."""
        U, S, V = self.svd()
        root = jnp.sqrt(S)
        return FactoredMatrix(U * root[..., None, :], root[..., :, None] * _swap(V))

    # --- indexing -----------------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> FactoredMatrix:
        """Index the leading dims (fm[layer, head]); an index past them selects rows, then columns.
        An int on a row or column keeps that dimension (length 1), so the result is always a
        FactoredMatrix, as in TransformerLens."""
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is None or i is Ellipsis for i in index):
            raise IndexError("FactoredMatrix indexing does not take None or ...; use unsqueeze or explicit slices")
        if len(index) > self.ndim:
            raise IndexError(f"index {index} has more entries than FactoredMatrix shape {self.shape}")
        n_lead = self.ndim - 2
        for i, (entry, size) in enumerate(zip(index, self.shape)):
            check_indices(entry, size, f"FactoredMatrix {self.shape} axis {i}")
        lead, rest = index[:n_lead], index[n_lead:]
        A, B = self.A[lead], self.B[lead]
        if len(rest) >= 1:
            A = A[..., _keep_dim(rest[0]), :]
        if len(rest) == 2:
            B = B[..., :, _keep_dim(rest[1])]
        return FactoredMatrix(A, B)

    def get_corner(self, k: int = 3) -> Array:
        """The dense top-left corner: the first k entries along every dimension, leading dims included."""
        dense = _mm(self.A[..., :k, :], self.B[..., :, :k])
        return dense[tuple(slice(k) for _ in range(dense.ndim))]

    def unsqueeze(self, axis: int) -> FactoredMatrix:
        """A new leading dimension of size 1 at `axis` (0 <= axis <= number of leading dims)."""
        if not 0 <= axis <= self.ndim - 2:
            raise ValueError(f"unsqueeze: axis must be in [0, {self.ndim - 2}] (a leading dim), got {axis}")
        return FactoredMatrix(jnp.expand_dims(self.A, axis), jnp.expand_dims(self.B, axis))
