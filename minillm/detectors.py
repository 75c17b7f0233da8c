"""Head detectors: how much each attention head behaves like a known kind of head.

All three read attention patterns on repeated random tokens, `[BOS, r_1 .. r_n, r_1 .. r_n]`
(Elhage et al. 2021; Olsson et al. 2022), and return a [n_layers, n_heads] array of mean
attention probabilities, 1.0 for a head that does exactly the thing:

- previous-token score: attention from each position to the one before it;
- duplicate-token score: attention from a token in the second copy to the same token in the first;
- induction score: attention from a token in the second copy to the token AFTER its earlier
  occurrence (the head that, with a previous-token head before it, copies what came next).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
