"""Fourier analysis of modular addition ("grokking") models, after Nanda et al. 2023.

A one-layer transformer that has grokked `a b =` -> (a + b) mod p computes with rotations, at a
handful of "key frequencies" k (w_k = 2 pi k / p):
  1. the embedding writes cos(w_k a), sin(w_k a) and cos(w_k b), sin(w_k b): W_E[:p] is sparse in
     the Fourier basis over token ids;
  2. attention and the MLP multiply them (the ReLU makes the products) into cos(w_k (a + b)) and
     sin(w_k (a + b)), by the angle-addition identities;
  3. W_out W_U reads each answer c off as
     cos(w_k (a + b - c)) = cos(w_k (a + b)) cos(w_k c) + sin(w_k (a + b)) sin(w_k c),
     which is 1 at every k exactly when c = a + b mod p; summed over the key frequencies, the
     other answers interfere destructively and the right logit stands out.
Here: the basis and transforms; the key frequencies, read off the embedding; how much one
frequency explains each neuron and head; and the paper's progress measures: restricted loss (keep
only the key frequencies' cos/sin(w_k(a+b)) part of the logits), excluded loss (remove it), the
sum of squared weights, and the Gini coefficient of the embedding's Fourier norms.

Conventions: the basis is over Z/p, rows const, cos 1, sin 1, cos 2, ..., orthonormal; a
"frequency" k runs over 1..p//2; a tensor over all pairs is [p, p, ...] indexed [a, b, ...], the
rows of `ModularArithmetic.all_pairs()` reshaped. Shape letters: m d_mlp, h heads, c answers.

References: Nanda, Chan, Lieberum, Smith, Steinhardt, "Progress measures for grokking via
mechanistic interpretability" (ICLR 2023), and its code (github.com/mechanistic-interpretability-
grokking/progress-measures-paper: transformers.py, helpers.py); TransformerLens' Grokking_Demo.
Each docstring says which definition it follows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model import GPT
from minillm.model.hooks import act_name
from minillm.model.losses import cross_entropy, map_in_chunks
from minillm.tasks import ModularArithmetic

Array = jax.Array

KEY_THRESHOLD = 4.0  # key frequency: squared norm above this many times the mean over frequencies
WELL_EXPLAINED = 0.85  # the paper's cut: a neuron above this fraction is "explained by one frequency"
CHUNK = 256  # pairs per forward pass: small batches stay in the CPU cache (losses.map_in_chunks)


# ---------------------------------------------------------------------------------------------
# The basis and the transforms
# ---------------------------------------------------------------------------------------------
@functools.cache
def _basis(p: int) -> tuple[np.ndarray, tuple[str, ...]]:
    x = np.arange(p)
    rows, names = [np.ones(p)], ["const"]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / p))
        names.append(f"cos {k}")
        if 2 * k != p:  # for even p, sin(pi x) is 0 everywhere: cos p/2 stands alone
            rows.append(np.sin(2 * np.pi * k * x / p))
            names.append(f"sin {k}")
    basis = np.stack(rows)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis.setflags(write=False)
    return basis, tuple(names)


def fourier_basis(p: int) -> tuple[np.ndarray, list[str]]:
    """The Fourier basis of functions on Z/p: [p, p] float64, orthonormal rows, and their names.

    Rows const, cos 1, sin 1, cos 2, sin 2, ...: cos(w_k x) and sin(w_k x), w_k = 2 pi k / p, each
    scaled to unit norm, as in the paper. For even p the last row is cos(pi x) alone.
    """
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
        raise ValueError(f"fourier_basis: p must be an int >= 2, got {p!r}")
    basis, names = _basis(int(p))
    return basis, list(names)


def frequency_components(p: int, k: int) -> list[int]:
    """The rows of fourier_basis(p) for frequency k: [cos k, sin k] (just [cos k] for k = p/2)."""
    if not 1 <= k <= p // 2:
        raise ValueError(f"a frequency must be in 1..{p // 2} for p={p}, got {k}")
    return [2 * k - 1] if 2 * k == p else [2 * k - 1, 2 * k]


def _membership(p: int) -> np.ndarray:
    """[p//2 + 1, p] 0/1: row 0 marks the constant, row k frequency k's components."""
    member = np.zeros((p // 2 + 1, p), np.float32)
    member[0, 0] = 1.0
    for k in range(1, p // 2 + 1):
        member[k, frequency_components(p, k)] = 1.0
    return member


def _frequency_projector(p: int, freqs: Sequence[int]) -> np.ndarray:
    """[p, p] orthogonal projector onto span{cos(w_k x), sin(w_k x) : k in freqs}."""
    rows = [r for k in sorted({int(k) for k in freqs}) for r in frequency_components(p, k)]
    sub = fourier_basis(p)[0][rows]  # [r, p]
    return (sub.T @ sub).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("axis", "inverse"))
def _transform(x: Array, axis: int, inverse: bool) -> Array:
    basis = fourier_basis(x.shape[axis])[0]
    matrix = jnp.asarray(basis.T if inverse else basis, x.dtype)
    return jnp.moveaxis(jnp.tensordot(matrix, x, axes=([1], [axis])), 0, axis)


def _as_float(x) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_axis(x: Array, p: int | None, axis: int, what: str) -> int:
    axis = axis % x.ndim
    if p is not None and x.shape[axis] != p:
        raise ValueError(f"{what}: axis {axis} has size {x.shape[axis]}, expected p={p}")
    return axis


def fourier_transform(x, p: int | None = None, axis: int = 0) -> Array:
    """Coefficients of x in the Fourier basis along `axis` (of size p); other axes are kept.

    Orthonormal: norms are kept, and inverse_fourier_transform undoes it.
    """
    x = _as_float(x)
    return _transform(x, _check_axis(x, p, axis, "fourier_transform"), False)


def inverse_fourier_transform(coeffs, p: int | None = None, axis: int = 0) -> Array:
    """Values on Z/p from Fourier coefficients along `axis`."""
    coeffs = _as_float(coeffs)
    return _transform(coeffs, _check_axis(coeffs, p, axis, "inverse_fourier_transform"), True)


def _check_pairs(x: Array, p: int | None, what: str) -> None:
    p = x.shape[0] if p is None else p
    if x.ndim < 2 or x.shape[:2] != (p, p):
        raise ValueError(
            f"{what}: expected a tensor [p, p, ...] with p={p}, got shape {tuple(x.shape)} "
            "(reshape all-pairs rows with x.reshape(p, p, ...))"
        )


def fourier_transform_2d(x, p: int | None = None) -> Array:
    """2-D Fourier transform over (a, b) of x [p, p, ...] (a function of all pairs, per trailing index).

    out[i, j, ...] is the coefficient of basis[i](a) * basis[j](b). The paper's fft2d.
    """
    x = _as_float(x)
    _check_pairs(x, p, "fourier_transform_2d")
    return _transform(_transform(x, 0, False), 1, False)


def inverse_fourier_transform_2d(coeffs, p: int | None = None) -> Array:
    coeffs = _as_float(coeffs)
    _check_pairs(coeffs, p, "inverse_fourier_transform_2d")
    return _transform(_transform(coeffs, 0, True), 1, True)


# ---------------------------------------------------------------------------------------------
# The embedding: key frequencies and sparsity
# ---------------------------------------------------------------------------------------------
@jax.jit
def _component_norms(x: Array) -> Array:
    coeffs = _transform(x, 0, False)  # [p, ...]
    return jnp.sqrt((coeffs.reshape(coeffs.shape[0], -1) ** 2).sum(axis=1))


def fourier_component_norms(x, p: int | None = None) -> Array:
    """Norm of each Fourier component of x [p, ...] along axis 0 -> [p] (const, cos 1, sin 1, ...)."""
    x = _as_float(x)
    _check_axis(x, p, 0, "fourier_component_norms")
    return _component_norms(x)


def frequency_norms(x, p: int | None = None) -> Array:
    """Norm per frequency of x [p, ...] along axis 0 -> [p//2 + 1]: index 0 the constant, index k
    frequency k, cos and sin together (sqrt(|cos k|^2 + |sin k|^2))."""
    sq = fourier_component_norms(x, p) ** 2
    return jnp.sqrt(jnp.asarray(_membership(sq.shape[0])) @ sq)


def _p_of(model: GPT, p: int | None) -> int:
    return model.cfg.d_vocab_out if p is None else int(p)


def embedding_fourier_norms(model: GPT, p: int | None = None) -> np.ndarray:
    """Per-frequency norms [p//2 + 1] of the number tokens' embeddings W_E[:p] (index 0: constant)."""
    p = _p_of(model, p)
    return np.asarray(frequency_norms(model.embed.W_E[...][:p], p))


def select_key_frequencies(norms, *, threshold: float = KEY_THRESHOLD, n: int | None = None) -> list[int]:
    """Key frequencies from per-frequency norms [p//2 + 1] (index 0, the constant, is ignored).

    Rule: the frequencies whose squared norm is above `threshold` times the mean squared norm of
    the p//2 frequencies, i.e. that carry more than threshold / (p//2) of the non-constant squared
    norm (7.1% for p = 113), largest first. An embedding without structure has every frequency
    near the mean, so none is key; one that spreads its norm evenly over n frequencies puts each
    at (p//2) / n times the mean. (No frequency can pass when p//2 <= threshold: for such small p
    give a lower threshold, or n.) With `n`: the n largest, whatever their size.

    Why 4: in a p = 113 model grokked with the modular_addition recipe, the three frequencies
    the neurons use sit at 13-18 times the mean, and the next one (12, which no neuron uses and
    whose removal costs nothing) at 2.8 times; at initialisation the largest is ~1.2 times.
    """
    sq = np.asarray(norms, dtype=np.float64)[1:] ** 2
    order = np.argsort(-sq, kind="stable")
    if n is not None:
        return [int(k) + 1 for k in order[:n]]
    is_key = np.asarray(_is_key(sq, threshold))
    return [int(k) + 1 for k in order if is_key[k]]


def _is_key(freq_sq, threshold):
    """The rule itself, on squared norms per frequency [p//2] (numpy or traced): above threshold
    times their mean. (A zero embedding has no key frequency.)"""
    mean = freq_sq.mean()
    return (mean > 0) & (freq_sq > threshold * mean)


def key_frequencies(
    model: GPT, p: int | None = None, *, threshold: float = KEY_THRESHOLD, n: int | None = None
) -> list[int]:
    """The key frequencies of the model's embedding W_E[:p], most important first
    (select_key_frequencies' rule).

    The paper reads them off the Fourier norms of W_E and of the neurons (Sec. 4); its training
    code takes every frequency that some neuron is best explained by (neuron_frequency_fractions
    gives those; on a grokked model they agree with these, plus a few stray neurons).
    """
    return select_key_frequencies(embedding_fourier_norms(model, p), threshold=threshold, n=n)


def norm_fraction(norms, freqs: Sequence[int]) -> float:
    """Fraction of the non-constant squared norm carried by the frequencies `freqs` (norms as above)."""
    sq = np.asarray(norms, dtype=np.float64) ** 2
    total = sq[1:].sum()
    return float(sq[list(freqs)].sum() / total) if total > 0 else 0.0


@jax.jit
def gini(x) -> Array:
    """Gini coefficient of non-negative values: 0 when all are equal, (n - 1) / n when one has all."""
    x = jnp.sort(jnp.ravel(x).astype(jnp.float32))
    n = x.shape[0]
    total = x.sum()
    weighted = ((2 * jnp.arange(1, n + 1) - n - 1) * x).sum()
    return jnp.where(total > 0, weighted / (n * jnp.where(total > 0, total, 1.0)), 0.0)


def fourier_norm_gini(model: GPT, p: int | None = None, which: str = "W_E") -> float:
    """Gini coefficient of the norms of the p Fourier components (const, cos 1, sin 1, ...) of W_E[:p]
    over the input token (which="W_E"), or of W_L = W_out W_U over the answer c ("W_L").

    The paper's sparsity measure (Sec. 5.1, Fig. 7): it jumps in the cleanup phase, when weight
    decay removes the memorising, non-Fourier part of the weights.
    """
    p = _p_of(model, p)
    if which == "W_E":
        x = model.embed.W_E[...][:p]  # [p, d]
    elif which == "W_L":
        x = (model.blocks[-1].mlp.W_out[...] @ model.unembed.W_U[...]).T  # [c, m]
    else:
        raise ValueError(f"fourier_norm_gini: which must be 'W_E' or 'W_L', got {which!r}")
    return float(gini(fourier_component_norms(x, p)))


# ---------------------------------------------------------------------------------------------
# Neurons and heads: how much of each one frequency explains
# ---------------------------------------------------------------------------------------------
class FrequencyFit(NamedTuple):
    """Per unit (neuron or head): its best frequency and the fraction of variance it explains."""

    freq: np.ndarray  # [n] int, the best frequency, in 1..p//2
    frac: np.ndarray  # [n] the fraction of the unit's centred variance that frequency explains
    fracs: np.ndarray  # [p//2, n] the fraction for every frequency (row k - 1: frequency k)


@jax.jit
def _frequency_fractions(x: Array) -> Array:
    p = x.shape[0]
    x = x - x.mean(axis=(0, 1), keepdims=True)
    energy = _transform(_transform(x, 0, False), 1, False) ** 2  # [p, p, n]
    block = _membership(p)[1:]
    block[:, 0] = 1.0  # frequency k's terms: {const, cos k, sin k} in a times the same in b
    block = jnp.asarray(block)
    explained = jnp.einsum("ki,kj,ijn->kn", block, block, energy)  # [p//2, n]
    total = energy.sum(axis=(0, 1))
    return jnp.where(total > 0, explained / jnp.where(total > 0, total, 1.0), 0.0)


def frequency_fractions_2d(x) -> Array:
    """x [p, p, n] (n functions of (a, b)) -> [p//2, n]: the fraction of each function's centred
    variance that frequency k explains (row k - 1).

    The paper's measure (Sec. 4.3; extract_freq_2d in its helpers, and its calculate_key_freqs):
    the energy of the centred function's 2-D Fourier transform in the 3 x 3 block
    {const, cos k, sin k} (a) x {const, cos k, sin k} (b), i.e. in the polynomials of degree <= 2
    in cos/sin(w_k a) and cos/sin(w_k b): the terms in a alone or b alone, and the products,
    which span cos/sin(w_k(a + b)) and cos/sin(w_k(a - b)). A unit with no variance gets 0.
    """
    x = _as_float(x)
    _check_pairs(x, None, "frequency_fractions_2d")
    if x.ndim != 3:
        raise ValueError(f"frequency_fractions_2d: expected [p, p, n], got shape {tuple(x.shape)}")
    return _frequency_fractions(x)


def fit_frequencies(x) -> FrequencyFit:
    """Each function's best frequency and its fraction, for x [p, p, n] (frequency_fractions_2d)."""
    fracs = np.asarray(frequency_fractions_2d(x))
    best = fracs.argmax(axis=0)
    return FrequencyFit(best + 1, fracs[best, np.arange(fracs.shape[1])], fracs)


@functools.cache
def _pairs(p: int, op: str = "add") -> tuple[np.ndarray, np.ndarray]:
    """The task's own table of every pair: tokens [p^2, 3] (`a b =`, row a * p + b) and the answers
    [p, p] indexed [a, b]: ModularArithmetic.all_pairs()."""
    rows = ModularArithmetic(p=p, op=op).all_pairs()
    return rows.tokens, rows.targets[:, -1].reshape(p, p)


def _in_chunks(fn: Callable[[Array], Array], tokens: Array) -> Array:
    """fn on CHUNK rows of tokens at a time, as one lax.map (call it inside jit) -> [n, ...]."""
    out = map_in_chunks(fn, tokens, CHUNK)  # [n_chunks, CHUNK, ...]
    return out.reshape(-1, *out.shape[2:])[: tokens.shape[0]]


@jax.jit
def _last_logits(model: GPT, tokens: Array) -> Array:
    return _in_chunks(lambda t: model(t)[:, -1], tokens)  # [n, c]


@functools.partial(jax.jit, static_argnames=("name", "pos_axis"))
def _cached_at_last_position(model: GPT, tokens: Array, name: str, pos_axis: int) -> Array:
    """The activation `name` at the last position (its axis pos_axis: the query axis for patterns)."""
    return _in_chunks(
        lambda t: jnp.take(model.run_with_cache(t, names_filter=[name])[1][name], -1, axis=pos_axis), tokens
    )


def neuron_frequency_fractions(model: GPT, p: int | None = None) -> FrequencyFit:
    """For each neuron of the last MLP (hook_post at "=", over all p^2 pairs, centred): its best
    frequency and the fraction of its variance that frequency's terms explain (fit_frequencies).

    The paper (Sec. 4.3): 433 of the 512 neurons of its main model are more than 85%
    (WELL_EXPLAINED) explained by one frequency. A dead neuron gets fraction 0.
    """
    p = _p_of(model, p)
    name = act_name("post", model.cfg.n_layers - 1)
    acts = _cached_at_last_position(model, _pairs(p)[0], name, pos_axis=1)  # [p^2, m]
    return fit_frequencies(acts.reshape(p, p, -1))


def attention_frequency_fractions(model: GPT, p: int | None = None) -> FrequencyFit:
    """For each head of layer 0: its attention from "=" to a, as a function of (a, b), fitted as
    in neuron_frequency_fractions (the attention to b is nearly 1 minus it).

    The paper (App. C.1.2): each head's pattern is ~0.5 plus terms of one frequency in a and b,
    97.9-99.1% of its variance."""
    p = _p_of(model, p)
    pattern = _cached_at_last_position(model, _pairs(p)[0], act_name("pattern", 0), pos_axis=2)  # [p^2, h, k]
    return fit_frequencies(pattern[:, :, 0].reshape(p, p, -1))


# ---------------------------------------------------------------------------------------------
# Restricted and excluded loss
# ---------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("op",))
def _key_part(logits: Array, projector: Array, op: str) -> Array:
    """The part of logits [p, p, c] that is a function of s = a +- b lying in projector's span."""
    p = logits.shape[0]
    a = np.arange(p)
    s = np.arange(p)[:, None]
    b_on_line = (s - a) % p if op == "add" else (a - s) % p  # [s, a]: the b with a +- b = s
    line_mean = logits[a, b_on_line].mean(axis=1)  # [s, c]
    return (projector @ line_mean)[_pairs(p, op)[1]]  # [p, p, c]


@functools.partial(jax.jit, static_argnames=("op",))
def _masked_loss(logits: Array, mask: Array, op: str) -> Array:
    nll = cross_entropy(logits, jnp.asarray(_pairs(logits.shape[0], op)[1]))  # [p, p]
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _check_op(op: str) -> None:
    if op not in ("add", "sub"):
        raise ValueError(f"the Fourier analysis here is for op 'add' or 'sub' (answers a +- b), got {op!r}")


def key_frequency_logits(logits, freqs: Sequence[int], op: str = "add") -> Array:
    """The part of logits [p, p, c] along cos(w_k(a + b)) and sin(w_k(a + b)), k in freqs, each a
    direction in the p^2-dim space of functions of (a, b), projected separately for each c. -> [p, p, c].

    As the paper's get_component_cos_xpy + get_component_sin_xpy. Those directions depend on (a, b)
    only through s = a + b mod p, so the projection is computed as: average the logits along each
    line a + b = s (-> [s, c]), keep that function of s's frequencies in `freqs`, and spread it
    back along the lines. op="sub": the lines a - b = s instead.
    """
    _check_op(op)
    logits = _as_float(logits)
    _check_pairs(logits, None, "key_frequency_logits")
    return _key_part(logits, jnp.asarray(_frequency_projector(logits.shape[0], freqs)), op)


def restricted_logits(logits, freqs: Sequence[int], op: str = "add") -> Array:
    """Logits [p, p, c] keeping only the constant and the key_frequency_logits for freqs.

    As the paper's calculate_trig_loss (with bias_correction): the key-frequency part plus, for
    each answer c, the mean of the original logits over all p^2 pairs; that is the 2-D constant
    term, which the key directions (mean 0 over the pairs) do not have.
    """
    logits = _as_float(logits)
    return logits.mean(axis=(0, 1), keepdims=True) + key_frequency_logits(logits, freqs, op)


def excluded_logits(logits, freqs: Sequence[int], op: str = "add") -> Array:
    """Logits [p, p, c] minus key_frequency_logits for freqs (everything else, the constant included,
    is kept): the paper's calculate_excluded_loss ablation."""
    logits = _as_float(logits)
    return logits - key_frequency_logits(logits, freqs, op)


def loss_on_pairs(logits, mask=None, op: str = "add") -> float:
    """Mean cross-entropy of logits [p, p, c] against c = a +- b mod p over the pairs where mask
    [p, p] is true (every pair if None)."""
    _check_op(op)
    logits = _as_float(logits)
    _check_pairs(logits, None, "loss_on_pairs")
    p = logits.shape[0]
    mask = jnp.ones((p, p)) if mask is None else jnp.asarray(mask, jnp.float32)
    return float(_masked_loss(logits, mask, op))


def _check_task(model: GPT, task: ModularArithmetic) -> int:
    if not isinstance(task, ModularArithmetic):
        raise TypeError(f"expected a ModularArithmetic task, got {type(task).__name__}")
    _check_op(task.op)
    if model.cfg.d_vocab != task.d_vocab or model.cfg.d_vocab_out != task.d_vocab_out:
        raise ValueError(
            f"the model (d_vocab {model.cfg.d_vocab}, d_vocab_out {model.cfg.d_vocab_out}) "
            f"does not fit the task (p={task.p})"
        )
    return task.p


def pair_logits(model: GPT, task: ModularArithmetic) -> Array:
    """The model's logits at "=" for every pair, [p, p, c] indexed [a, b, c]."""
    p = _check_task(model, task)
    return _last_logits(model, _pairs(p)[0]).reshape(p, p, -1)


def split_mask(task: ModularArithmetic, on: str = "train", data_seed: int = 0) -> np.ndarray:
    """[p, p] bool: the pairs of task.split(data_seed)'s train set ("train"), its test set ("test"),
    or every pair ("all")."""
    p = task.p
    if on == "all":
        return np.ones((p, p), bool)
    if on not in ("train", "test"):
        raise ValueError(f"on must be 'train', 'test' or 'all', got {on!r}")
    train = task.split(data_seed)[0].tokens
    mask = np.zeros((p, p), bool)
    mask[train[:, 0], train[:, 1]] = True
    return mask if on == "train" else ~mask


def full_loss(model: GPT, task: ModularArithmetic, on: str = "all", data_seed: int = 0) -> float:
    """The model's own loss on the train, test or all pairs, to compare the two below with."""
    return loss_on_pairs(pair_logits(model, task), split_mask(task, on, data_seed), task.op)


def restricted_loss(
    model: GPT, task: ModularArithmetic, key_freqs: Sequence[int], on: str = "all", data_seed: int = 0
) -> float:
    """The paper's restricted loss: the loss of restricted_logits, by default on all p^2 pairs.

    As its released code (calculate_trig_loss; its training loop logs it on all pairs): done on
    the final logits, constant kept. (TransformerLens' Grokking_Demo instead projects the MLP
    activations, adds their mean, multiplies by W_out W_U and evaluates on the test set.) Low
    once the Fourier circuit alone solves the task: it falls while the circuit forms, before the
    test loss does.
    """
    logits = pair_logits(model, task)
    return loss_on_pairs(restricted_logits(logits, key_freqs, task.op), split_mask(task, on, data_seed), task.op)


def excluded_loss(
    model: GPT, task: ModularArithmetic, key_freqs: Sequence[int], on: str = "train", data_seed: int = 0
) -> float:
    """The paper's excluded loss: the loss of excluded_logits on the train set.

    As its released code (calculate_excluded_loss): done on the final logits, which keep
    everything but the key frequencies' cos/sin(w_k(a+b)) parts. That code logs one excluded loss
    per key frequency; here all of `key_freqs` are removed together, as in the Grokking_Demo and
    the values the paper reports (pass one frequency for the per-frequency version). A memorising
    model hardly notices; one that relies on the circuit goes to, or beyond, the uniform log p.
    """
    logits = pair_logits(model, task)
    return loss_on_pairs(excluded_logits(logits, key_freqs, task.op), split_mask(task, on, data_seed), task.op)


# ---------------------------------------------------------------------------------------------
# The embedding restricted to some frequencies
# ---------------------------------------------------------------------------------------------
def projected_embedding(model: GPT, freqs: Sequence[int], p: int | None = None, keep_constant: bool = True) -> Array:
    """W_E [d_vocab, d_model] with the number rows W_E[:p] projected onto the frequencies `freqs`
    (and the constant, unless keep_constant=False); the "=" row is left as it is."""
    p = _p_of(model, p)
    projector = _frequency_projector(p, freqs)
    if keep_constant:
        projector = projector + np.float32(1.0 / p)
    W_E = model.embed.W_E[...]
    return W_E.at[:p].set(jnp.asarray(projector) @ W_E[:p])


@jax.jit
def _accuracy_with_embedding(model: GPT, W_E: Array, tokens: Array, mask: Array, answers: Array) -> Array:
    def last_logits(t):  # the model's forward from the residual stream, with this W_E
        return model(W_E[t] + model.pos_embed.W_pos[...][: t.shape[1]], start_at_layer=0)[:, -1]

    correct = _in_chunks(last_logits, tokens).argmax(-1) == answers  # [p^2]
    return (correct * mask).sum() / mask.sum()


def projected_embedding_accuracy(
    model: GPT,
    task: ModularArithmetic,
    freqs: Sequence[int],
    on: str = "test",
    data_seed: int = 0,
    keep_constant: bool = True,
) -> float:
    """Accuracy (default: on the test set) when a and b are embedded with projected_embedding: only
    the frequencies `freqs` (plus the constant) of W_E[:p] are kept.

    Near 1 with the key frequencies when the model computes with them alone; leaving one key
    frequency out should cost accuracy. (The paper's Sec. 4.4 ablates frequencies in the logits
    and the MLP instead; this is the embedding-side analogue.)
    """
    p = _check_task(model, task)
    mask = jnp.asarray(split_mask(task, on, data_seed).ravel(), jnp.float32)
    answers = jnp.asarray(_pairs(p, task.op)[1].ravel())
    W_E = projected_embedding(model, freqs, p, keep_constant)
    return float(_accuracy_with_embedding(model, W_E, _pairs(p)[0], mask, answers))


# ---------------------------------------------------------------------------------------------
# Progress measures during training
# ---------------------------------------------------------------------------------------------
@jax.jit
def _sum_squares(model: GPT) -> Array:
    return sum(jnp.sum(jnp.square(w)) for w in model.state_dict().values())


def sum_squared_weights(model: GPT) -> float:
    """Sum of the squares of all the weights: what weight decay shrinks (the paper's Fig. 7)."""
    return float(_sum_squares(model))


@functools.partial(jax.jit, static_argnames=("op",))
def _progress(
    model: GPT, tokens: Array, train_mask: Array, fixed_keep: Array, use_fixed: Array, threshold: Array, op: str
) -> dict[str, Array]:
    """Everything grokking_metrics reports, in one compiled call. fixed_keep [p//2] marks the given
    key frequencies; without them (use_fixed False) they are found from W_E as in
    select_key_frequencies."""
    p = train_mask.shape[0]
    member = jnp.asarray(_membership(p))  # [p//2 + 1, p]
    component_norms = _component_norms(model.embed.W_E[...][:p])  # [p]
    freq_sq = (member @ component_norms**2)[1:]  # [p//2]
    found = _is_key(freq_sq, threshold).astype(jnp.float32)
    keep = jnp.where(use_fixed, fixed_keep, found)  # [p//2] 0/1
    basis = jnp.asarray(fourier_basis(p)[0], jnp.float32)
    projector = basis.T @ ((keep @ member[1:])[:, None] * basis)  # [p, p], onto the kept frequencies

    logits = _last_logits(model, tokens).reshape(p, p, -1)  # [a, b, c]
    key = _key_part(logits, projector, op)
    everywhere = jnp.ones((p, p))
    return {
        "restricted_loss": _masked_loss(logits.mean(axis=(0, 1), keepdims=True) + key, everywhere, op),
        "excluded_loss": _masked_loss(logits - key, train_mask, op),
        "sum_sq_weights": _sum_squares(model),
        "embed_fourier_gini": gini(component_norms),
        "n_key_freqs": keep.sum(),
        "key_norm_frac": (keep * freq_sq).sum() / freq_sq.sum(),
    }


def grokking_metrics(
    task: ModularArithmetic,
    key_freqs: Sequence[int] | None = None,
    *,
    data_seed: int = 0,
    threshold: float = KEY_THRESHOLD,
) -> dict[str, Callable[[GPT], dict[str, float]]]:
    """Progress measures for `train(..., metric_fns=grokking_metrics(task))`, as in the paper's Fig. 7.

    One callback, "fourier", returning: restricted_loss (all pairs), excluded_loss (the train
    pairs of task.split(data_seed): pass the run's TrainConfig.data_seed), sum_sq_weights,
    embed_fourier_gini (fourier_norm_gini of W_E), n_key_freqs, and key_norm_frac (the share of
    W_E's non-constant squared Fourier norm in the key frequencies). One compiled call each time.

    key_freqs: the frequencies to keep / remove. The paper used the FINAL model's key frequencies
    at every checkpoint; they are known only once training is over, so train, find them with
    key_frequencies, and pass them to recompute the curves on saved checkpoints or a rerun. With
    None, they are found from the current W_E at each evaluation (select_key_frequencies): before
    the embedding has any structure there are none, and then restricted loss is the loss of the
    per-answer constant logits and excluded loss is the train loss.
    """
    p = task.p
    _check_op(task.op)
    tokens = _pairs(p)[0]
    train_mask = jnp.asarray(split_mask(task, "train", data_seed), jnp.float32)
    fixed_keep = np.zeros(p // 2, np.float32)
    for k in key_freqs or ():
        frequency_components(p, int(k))  # refuses a frequency out of range
        fixed_keep[int(k) - 1] = 1.0
    args = (jnp.asarray(fixed_keep), jnp.asarray(key_freqs is not None), jnp.asarray(threshold, jnp.float32))

    def fourier(model: GPT) -> dict[str, float]:
        _check_task(model, task)
        out = _progress(model, tokens, train_mask, *args, op=task.op)
        return {name: float(value) for name, value in jax.device_get(out).items()}

    return {"fourier": fourier}
