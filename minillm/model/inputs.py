"""Checks at the boundary: what the model refuses before JAX turns it into plausible garbage.

JAX clamps an out-of-range index to a real one and broadcasts shapes it was never meant to, so a
bad token id, a 1-D sequence or a residual stream of the wrong width would give numbers that look
fine. Each check here raises an error that names the problem instead. The model calls them; so
do the tools that take tokens (patching, sampling).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model.config import GPTConfig


def check_tokens(tokens: Any, cfg: GPTConfig) -> jax.Array:
    """Integer ids [batch, pos] with 0 < pos <= n_ctx and every id in [0, d_vocab) -> int32 array.

    Traced tokens (inside jit) cannot be range-checked; the embedding then gives NaN for a bad id.
    """
    if not hasattr(tokens, "dtype"):
        tokens = np.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        hint = " (for one sequence, pass tokens[None])" if tokens.ndim == 1 else ""
        raise ValueError(f"tokens must have shape [batch, pos], got shape {tuple(tokens.shape)}{hint}")
    n_pos = tokens.shape[1]
    if n_pos == 0 or n_pos > cfg.n_ctx:
        raise ValueError(f"sequence length {n_pos} is outside [1, n_ctx={cfg.n_ctx}]")
    if not isinstance(tokens, jax.core.Tracer):
        values = np.asarray(tokens)
        bad = (values < 0) | (values >= cfg.d_vocab)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"token id {int(values[where])} at position {where} is outside "
                f"[0, d_vocab={cfg.d_vocab}) ({int(bad.sum())} bad ids in all)"
            )
    return jnp.asarray(tokens, jnp.int32)


def check_resid(resid: Any, cfg: GPTConfig) -> jax.Array:
    """A residual stream [batch, pos, d_model] with 0 < pos <= n_ctx (the input of start_at_layer)."""
    resid = jnp.asarray(resid)
    if resid.ndim != 3 or resid.shape[-1] != cfg.d_model or not 0 < resid.shape[1] <= cfg.n_ctx:
        raise ValueError(
            f"with start_at_layer, the input must be a residual stream [batch, pos, "
            f"d_model={cfg.d_model}] with pos <= n_ctx, got shape {tuple(resid.shape)}"
        )
    return resid


def check_attention_mask(mask: Any, shape: tuple[int, ...]) -> jax.Array:
    """An attention mask [batch, pos] of 0s and 1s (0 at padding), shaped like the tokens."""
    mask = jnp.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"attention_mask must have the tokens' shape {tuple(shape)}, got {tuple(mask.shape)}")
    if not isinstance(mask, jax.core.Tracer) and not np.isin(np.asarray(mask), (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (a real token)")
    return mask


def check_indices(index: Any, size: int, what: str) -> None:
    """Refuse an int or integer array outside [-size, size) (negative counts from the end), or a
    non-integer index; slices and traced values pass (JAX would clamp or drop a bad index silently)."""
    if index is None or isinstance(index, slice) or isinstance(index, jax.core.Tracer):
        return
    values = np.asarray(index)
    if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{what}: indices must be integers (or slices), got {index!r}")
    bad = values[(values < -size) | (values >= size)]
    if bad.size:
        raise IndexError(f"{what}: index {int(bad.flat[0])} is out of range for a size of {size}")


def check_positions(positions: Any, n_pos: int, stop_at_layer: int | None = None) -> tuple[int, ...]:
    """forward's output_positions: a non-empty tuple of positions in [-n_pos, n_pos), made non-negative."""
    if stop_at_layer is not None:
        raise ValueError("output_positions gives logits; with stop_at_layer there are none")
    if not isinstance(positions, (tuple, list)) or not positions:
        raise TypeError(f"output_positions must be a non-empty tuple of ints, got {positions!r}")
    check_indices(np.asarray(positions), n_pos, "output_positions")
    return tuple(int(i) % n_pos for i in positions)


def check_forward_input(
    cfg: GPTConfig,
    input: Any,
    *,
    start_at_layer: int | None = None,
    stop_at_layer: int | None = None,
    attention_mask: Any = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Every check a model call makes before it runs, once, whichever path then runs it (compiled
    or op by op): the layers, the tokens (or the residual stream, with start_at_layer) and the
    attention mask. Returns (input, attention_mask) as JAX arrays."""
    layer_range(cfg, start_at_layer, stop_at_layer)
    input = check_tokens(input, cfg) if start_at_layer is None else check_resid(input, cfg)
    if attention_mask is None:
        return input, None
    mask = check_attention_mask(attention_mask, input.shape[:2])
    if cfg.attention_dir == "bidirectional":
        raise ValueError(
            "attention_mask with bidirectional attention: TransformerLens then masks no key (it only shifts "
            "the position embeddings), minillm would; refused rather than give other numbers. Mask padding "
            "keys with a hook on hook_attn_scores instead."
        )
    return input, mask


def layer_range(cfg: GPTConfig, start_at_layer: int | None, stop_at_layer: int | None) -> range:
    """The blocks a pass runs: start_at_layer (default 0) up to, not including, stop_at_layer.
    Negative values count from the end, as Python slices (and TransformerLens) do: start_at_layer=-1
    runs the last block only, stop_at_layer=-1 every block but the last."""
    n = cfg.n_layers
    for name, value in (("start_at_layer", start_at_layer), ("stop_at_layer", stop_at_layer)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise TypeError(f"{name} must be an int or None, got {value!r}")
    start = 0 if start_at_layer is None else int(start_at_layer)
    stop = n if stop_at_layer is None else int(stop_at_layer)
    start, stop = (start + n if start < 0 else start), (stop + n if stop < 0 else stop)
    if not (0 <= start <= stop <= n):
        raise ValueError(
            f"need 0 <= start_at_layer ({start_at_layer}) <= stop_at_layer ({stop_at_layer}) <= n_layers ({n}), "
            "negative values counting from the end"
        )
    return range(start, stop)
