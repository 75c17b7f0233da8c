"""Circuits read off the weights: each head's QK and OV matrices, their full token-to-token forms,
composition scores between heads, and eigenvalue copying scores.

Elhage et al. 2021 ("A Mathematical Framework for Transformer Circuits") split an attention head
into two low-rank d_model x d_model matrices, in the row-vector convention of the weights here
(a residual vector x is a row, x @ W_Q is its query):

- QK circuit, W_QK = W_Q @ W_K^T: the attention score of a query x_q on a key x_k is
  x_q @ W_QK @ x_k^T (before the 1/sqrt(d_head) scale and the biases), so it decides where the head looks;
- OV circuit, W_OV = W_V @ W_O: a source residual x adds pattern * (x @ W_OV) to the destination
  (plus biases), so it decides what the head writes.

Multiplied out to tokens they become the full circuits, W_E W_QK W_E^T (which token attends to
which) and W_E W_OV W_U (how attending to a token changes each logit). Every function returns
these as `FactoredMatrix` with leading dims [layer, head], never forming a d_model x d_model (or
vocab x vocab) product unless asked (`.AB`).

They read the weights only, and so ignore LayerNorm: the real input to a head is
LN(resid) = centered resid / scale * w + b, not resid. Fold the LayerNorm into the weights first
(`minillm.weight_processing.process_weights(model)` or `fold_layer_norm`): then w and b live in
W_Q, W_K, W_V, W_in, W_U and their biases, the writing weights are centred, and what is left out is
only the per-position scale 1/scale (a positive number per token, which rescales but does not rotate).

`QK` and `OV` are the model's own (`model.QK`, minillm/model/weight_views.py). Names and definitions
follow TransformerLens (`HookedTransformer.QK`, `.OV`,
`.all_composition_scores`, `utils.composition_scores`); the model-level call is
`all_composition_scores(model, mode)`, and `composition_scores(left, right)` is the utility.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from minillm.model import GPT
from minillm.model.factored_matrix import FactoredMatrix
from minillm.model.weight_views import OV, QK  # W_Q W_K^T and W_V W_O of every head: [layer, head, d, d]

Array = jax.Array

COMPOSITION_MODES = ("Q", "K", "V")


def _embedding(model: GPT, include_pos: bool) -> Array:
    """W_E [d_vocab, d] or, with include_pos, TransformerLens' W_E_pos = [W_E; W_pos] [d_vocab + n_ctx, d]."""
    if include_pos:
        return jnp.concatenate([model.embed.W_E[...], model.pos_embed.W_pos[...]], axis=0)
    return model.embed.W_E[...]


def full_QK(model: GPT, include_pos: bool = False) -> FactoredMatrix:
    """W_E @ W_QK @ W_E^T: [layer, head, d_vocab (query token), d_vocab (key token)].

    Entry [l, h, i, j] is the (unscaled, bias-free) score of a query on token i for a key on
    token j, through the direct path from the embedding only. With include_pos, rows and columns
    run over TransformerLens' W_E_pos = [W_E; W_pos] ([d_vocab + n_ctx]): index d_vocab + p is
    position p, so the position-position block shows purely positional heads (e.g. previous-token).
    Ignores LayerNorm unless the model was folded first (module docstring).
    """
    embed = _embedding(model, include_pos)  # [v(+n_ctx), d]
    return embed @ QK(model) @ embed.T


def full_OV(model: GPT, include_pos: bool = False) -> FactoredMatrix:
    """W_E @ W_OV @ W_U: [layer, head, d_vocab (attended-to token), d_vocab_out (logit)].

    Entry [l, h, i, j] is how much attending to token i raises logit j, through the direct path
    embedding -> head -> unembedding. With include_pos, rows run over W_E_pos = [W_E; W_pos]
    (row d_vocab + p is position p). Ignores LayerNorm unless the model was folded first.
    """
    W_U = model.unembed.W_U[...]  # [d, v_out]
    return _embedding(model, include_pos) @ OV(model) @ W_U


@jax.jit  # one compiled program per shape
def composition_score(left: FactoredMatrix, right: FactoredMatrix) -> Array:
    """||left @ right||_F / (||left||_F ||right||_F), over the (broadcast) leading dims.

    Elhage et al.'s composition score: how much of what `left` writes, `right` reads. In [0, 1]:
    0 when the space left writes to is orthogonal to the space right reads from, larger the more
    they overlap (1 only for rank-1 matrices that line up exactly).
    Computed on the collapsed factors (the orthogonal U of left and Vh of right do not change any
    of the three norms), as TransformerLens does.
    """
    if left.rdim != right.ldim:
        raise ValueError(
            f"composition_score: left {left.shape} and right {right.shape} do not chain (left.rdim != right.ldim)"
        )
    inner_left = left.collapse_l()  # [..., r, d]
    inner_right = right.collapse_r()  # [..., d, r']
    product = jnp.matmul(inner_left, inner_right, precision=jax.lax.Precision.HIGHEST)  # [..., r, r']
    frobenius = lambda x: jnp.sqrt(jnp.sum(x * x, axis=(-2, -1)))
    return frobenius(product) / (frobenius(inner_left) * frobenius(inner_right))


def composition_scores(left: FactoredMatrix, right: FactoredMatrix, broadcast_dims: bool = True) -> Array:
    """TransformerLens' `utils.composition_scores`: the composition score of every left matrix with
    every right one, [*left leading dims, *right leading dims] (broadcast_dims=True), or of the pairs
    their leading dims broadcast into (broadcast_dims=False, as `composition_score`)."""
    if not (isinstance(left, FactoredMatrix) and isinstance(right, FactoredMatrix)):
        raise TypeError(
            "composition_scores(left, right) takes two FactoredMatrix, as TransformerLens' utils.composition_scores; "
            "for every pair of heads of a model use all_composition_scores(model, mode)"
        )
    if broadcast_dims:
        n_left, n_right = left.ndim - 2, right.ndim - 2
        left = FactoredMatrix(
            left.A.reshape(*left.A.shape[:-2], *[1] * n_right, *left.A.shape[-2:]),
            left.B.reshape(*left.B.shape[:-2], *[1] * n_right, *left.B.shape[-2:]),
        )
        right = FactoredMatrix(
            right.A.reshape(*[1] * n_left, *right.A.shape), right.B.reshape(*[1] * n_left, *right.B.shape)
        )
    return composition_score(left, right)


def all_composition_scores(model: GPT, mode: str) -> Array:
    """Q-, K- or V-composition of every head with every head of a later layer: [l1, h1, l2, h2]
    (TransformerLens' `model.all_composition_scores(mode)`).

    The earlier head writes through its OV circuit W_OV^{l1,h1}; the later head reads it as
      "Q": its query,  score(W_OV^{l1,h1}, W_QK^{l2,h2})
      "K": its key,    score(W_OV^{l1,h1}, (W_QK^{l2,h2})^T)
      "V": its value,  score(W_OV^{l1,h1}, W_OV^{l2,h2})
    with score = `composition_score`. Entries with l2 <= l1 (no composition possible) are 0.
    Ignores LayerNorm unless the model was folded first.
    """
    if mode not in COMPOSITION_MODES:
        raise ValueError(f"all_composition_scores: mode must be one of {COMPOSITION_MODES}, got {mode!r}")
    qk, ov = QK(model), OV(model)
    right = {"Q": qk, "K": qk.T, "V": ov}[mode]
    scores = composition_scores(ov, right)  # [l1, h1, l2, h2]
    layers = jnp.arange(model.cfg.n_layers)
    later = layers[:, None, None, None] < layers[None, None, :, None]  # l1 < l2
    return jnp.where(later, scores, 0.0)


@jax.jit  # one compiled program per shape
def positive_eigenvalue_score(matrix: FactoredMatrix) -> Array:
    """sum(eigenvalues) / sum(|eigenvalues|) over the leading dims, in [-1, 1].

    Elhage et al.'s summary of a square circuit: 1 when every eigenvalue is positive (the matrix
    maps each direction roughly onto itself: copying), -1 when all are negative (suppression), near
    0 for a random matrix. The eigenvalues come from the small factored form (`.eigenvalues`); a
    zero matrix gives NaN.
    """
    eigenvalues = matrix.eigenvalues  # [..., mdim], complex: conjugate pairs cancel in the sum
    return jnp.real(eigenvalues.sum(axis=-1)) / jnp.abs(eigenvalues).sum(axis=-1)


def ov_copying_score(model: GPT) -> Array:
    """Positive-eigenvalue score of each head's full OV circuit W_E W_OV W_U: [layer, head].

    Near 1 for a copying head: attending to token t raises the logit of t (Elhage et al. 2021,
    "Copying / Primarily Positive Eigenvalues"). Needs d_vocab_out == d_vocab, so that the input
    and output tokens are the same set. Direct path only; fold LayerNorm first for a trained model.
    """
    cfg = model.cfg
    if cfg.d_vocab_out != cfg.d_vocab:
        raise ValueError(
            f"ov_copying_score needs the same tokens in and out, but d_vocab={cfg.d_vocab} "
            f"and d_vocab_out={cfg.d_vocab_out}"
        )
    return positive_eigenvalue_score(full_OV(model))


def qk_matching_score(model: GPT) -> Array:
    """Positive-eigenvalue score of each head's full QK circuit W_E W_QK W_E^T: [layer, head].

    The same summary for where a head attends: near 1 when a token's query prefers keys of the
    same token (a same-token / duplicate-token matching head on the direct path), near -1 when it
    avoids them. Direct path only; fold LayerNorm first for a trained model.
    """
    return positive_eigenvalue_score(full_QK(model))
