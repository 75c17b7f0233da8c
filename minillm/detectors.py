"""Head detectors: how much each attention head behaves like a known kind of head.

All three read attention patterns on repeated random tokens, `[BOS, r_1 .. r_n, r_1 .. r_n]`
(Elhage et al. 2021; Olsson et al. 2022), and return a [n_layers, n_heads] array of mean
attention probabilities, 1.0 for a head that does exactly the thing:

- previous-token score: attention from each position to the one before it;
- duplicate-token score: attention from a token in the second copy to the same token in the first;
- induction score: attention from a token in the second copy to the token AFTER its earlier
  occurrence (the head that, with a previous-token head before it, copies what came next).

`detect_head` is TransformerLens' head detector: any pattern, on any tokens.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model import GPT

BOS = 0


def repeated_random_tokens(key: jax.Array, batch: int, half_len: int, d_vocab: int, bos: int = BOS) -> jax.Array:
    """[batch, 1 + 2 * half_len]: a BOS token, then random tokens (not BOS), then the same again."""
    if 1 + 2 * half_len < 3:
        raise ValueError("half_len must be at least 1")
    first = jax.random.randint(key, (batch, half_len), 0, d_vocab - 1)
    first = first + (first >= bos)  # skip the BOS id
    bos_col = jnp.full((batch, 1), bos, first.dtype)
    return jnp.concatenate([bos_col, first, first], axis=1).astype(jnp.int32)


def _patterns(model: GPT, tokens: jax.Array) -> jax.Array:
    """[n_layers, b, h, q, k] attention patterns of the model on tokens."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return jnp.stack([cache["pattern", l] for l in range(model.cfg.n_layers)])


def _mean_stripe(patterns: jax.Array, offset: int, first_query: int) -> jax.Array:
    """Mean over batch and queries q >= first_query of pattern[..., q, q - offset] -> [layer, head]."""
    n_pos = patterns.shape[-1]
    q = jnp.arange(first_query, n_pos)
    return patterns[..., q, q - offset].mean(axis=(1, 3))


def head_scores(model: GPT, tokens: jax.Array) -> dict[str, jax.Array]:
    """Previous-token, duplicate-token and induction scores [layer, head] on repeated tokens."""
    n_pos = tokens.shape[1]
    half = (n_pos - 1) // 2
    if n_pos != 1 + 2 * half:
        raise ValueError("head_scores expects tokens from repeated_random_tokens: [BOS, r, r]")
    patterns = _patterns(model, tokens)
    second = 1 + half  # first position of the second copy
    return {
        "previous_token": _mean_stripe(patterns, 1, 1),
        "duplicate_token": _mean_stripe(patterns, half, second),
        "induction": _mean_stripe(patterns, half - 1, second),
    }


def previous_token_scores(model: GPT, tokens: jax.Array) -> jax.Array:
    return head_scores(model, tokens)["previous_token"]


def duplicate_token_scores(model: GPT, tokens: jax.Array) -> jax.Array:
    return head_scores(model, tokens)["duplicate_token"]


def induction_scores(model: GPT, tokens: jax.Array) -> jax.Array:
    return head_scores(model, tokens)["induction"]


# ---------------------------------------------------------------------------------------------
# TransformerLens' detect_head: any head type, given by its expected attention pattern
# ---------------------------------------------------------------------------------------------
HEAD_NAMES = ("previous_token_head", "duplicate_token_head", "induction_head")


def named_detection_pattern(name: str, tokens: np.ndarray) -> np.ndarray:
    """TransformerLens' named detection patterns for one sequence tokens [p] -> [p, p] (0/1, lower
    triangular): previous token; an earlier copy of the same token; the token after an earlier copy."""
    p = len(tokens)
    if name == "previous_token_head":
        return np.eye(p, k=-1)
    duplicate = np.tril((tokens[:, None] == tokens[None, :]).astype(float), k=-1)
    if name == "duplicate_token_head":
        return duplicate
    if name == "induction_head":
        shifted = np.zeros_like(duplicate)
        shifted[:, 1:] = duplicate[:, :-1]  # attend to the token after the earlier copy
        return np.tril(shifted)
    raise ValueError(f"detection_pattern must be an array or one of {HEAD_NAMES}; got {name!r}")


def _similarity(patterns: np.ndarray, detect: np.ndarray, exclude_bos: bool, exclude_current: bool, measure: str):
    """Scores of patterns [..., q, k] against detection patterns detect [..., q, k] (broadcast), as
    TransformerLens computes them ("mul": the share of attention on the detected entries; "abs": 1 -
    the mean absolute difference times the sequence length, rounded to 3 decimals) -> [...]."""
    p = detect.shape[-1]
    keep = np.ones((p, p))
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current:
        np.fill_diagonal(keep, 0)
    if measure == "mul":
        kept = patterns * keep
        return (kept * detect).sum((-2, -1)) / kept.sum((-2, -1))
    diff = np.abs(patterns - detect) * keep
    return 1 - np.round(diff.mean((-2, -1)) * p, 3)


def detect_head(
    model: GPT,
    tokens,
    detection_pattern: np.ndarray | str,
    heads=None,
    cache=None,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
) -> np.ndarray:
    """TransformerLens' `head_detector.detect_head`: how well each head's attention matches a pattern.

    tokens: one sequence [p] or a batch [b, p] of token ids (minillm has no tokenizer, so no text);
    the score is the mean over the batch. detection_pattern: a [p, p] lower-triangular array, or a
    name in HEAD_NAMES. heads: (layer, head) pairs or {layer: [heads]}; the others score -1.
    Returns [n_layers, n_heads] (NumPy)."""
    if isinstance(tokens, str) or (isinstance(tokens, list) and tokens and isinstance(tokens[0], str)):
        raise TypeError("detect_head: minillm models have no tokenizer; pass token ids [p] or [b, p]")
    if error_measure not in ("mul", "abs"):
        raise ValueError(f"detect_head: error_measure must be 'mul' or 'abs', got {error_measure!r}")
    tokens = np.asarray(tokens)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    n_pos = tokens.shape[1]
    if not 1 < n_pos <= model.cfg.n_ctx:
        raise ValueError(f"detect_head: the sequence must have 2 to n_ctx={model.cfg.n_ctx} tokens, got {n_pos}")
    if isinstance(detection_pattern, str):
        detects = np.stack([named_detection_pattern(detection_pattern, row) for row in tokens])  # [b, p, p]
    else:
        detect = np.asarray(detection_pattern, dtype=np.float64)
        if detect.shape != (n_pos, n_pos) or np.any(np.triu(detect, k=1) != 0):
            raise ValueError(
                f"detect_head: the detection pattern must be lower triangular [{n_pos}, {n_pos}], got {detect.shape}"
            )
        if error_measure == "mul" and not np.isin(detect, (0, 1)).all():
            warnings.warn(
                "detect_head: a detection pattern with values other than 0 or 1 under error_measure 'mul'", stacklevel=2
            )
        detects = np.broadcast_to(detect, (len(tokens), n_pos, n_pos))
    if cache is None:
        _, cache = model.run_with_cache(jnp.asarray(tokens, jnp.int32), names_filter=lambda n: n.endswith("pattern"))
    patterns = np.stack([np.asarray(cache["pattern", l], np.float64) for l in range(model.cfg.n_layers)])
    patterns = patterns.reshape(model.cfg.n_layers, -1, model.cfg.n_heads, n_pos, n_pos)  # [l, b, h, q, k]
    # [layer, batch, head] scores, each sequence against its own detection pattern, then the batch mean
    scores = _similarity(patterns, detects[None, :, None], exclude_bos, exclude_current_token, error_measure).mean(1)
    if heads is None:
        return scores
    pairs = [(l, h) for l, hs in heads.items() for h in hs] if isinstance(heads, dict) else list(heads)
    out = -np.ones_like(scores)
    for l, h in pairs:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise IndexError(
                f"detect_head: head ({l}, {h}) is outside {model.cfg.n_layers} layers x {model.cfg.n_heads} heads"
            )
        out[l, h] = scores[l, h]
    return out
