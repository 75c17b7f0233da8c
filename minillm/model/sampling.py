"""Sampling: continue a prompt one token at a time, greedily or at a temperature.

    tokens = generate(model, prompt, max_new_tokens=8, key=jax.random.key(0), temperature=1.0)

(`model.generate(...)` is the same call.) The whole loop is one compiled `lax.fori_loop` over a
fixed [b, p + new] buffer: the model is causal, so the logits at a position never depend on the
tokens after it, which are not sampled yet. Temperature 0 is greedy (argmax).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from minillm.model.inputs import check_tokens

if TYPE_CHECKING:
    from minillm.model.network import Transformer


def generate(
    model: Transformer,
    prompt: jax.Array,
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Sample `max_new_tokens` after `prompt` [b, p]; temperature 0 is greedy. Returns [b, p + new]."""
    cfg = model.cfg
    prompt = check_tokens(prompt, cfg)
    n_prompt = prompt.shape[1]
    total = n_prompt + int(max_new_tokens)
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if total > cfg.n_ctx:
        raise ValueError(
            f"generate: prompt length {n_prompt} + max_new_tokens {max_new_tokens} = {total} exceeds n_ctx={cfg.n_ctx}"
        )
    if cfg.d_vocab_out > cfg.d_vocab:
        raise ValueError("generate: the model's outputs (d_vocab_out) are not all valid input tokens")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    if temperature > 0 and key is None:
        raise ValueError("generate: sampling with temperature > 0 needs a key=jax.random.key(...)")
    key = jax.random.key(0) if key is None else key
    return _sample(model, prompt, key, n_prompt, total, float(temperature))


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _sample(
    model: Transformer, prompt: jax.Array, key: jax.Array, n_prompt: int, total: int, temperature: float
) -> jax.Array:
    buffer = jnp.zeros((prompt.shape[0], total), jnp.int32).at[:, :n_prompt].set(prompt)

    def step(t, carry):
        buffer, key = carry
        logits = model.forward(buffer)[:, t - 1]  # [b, v_out]: the prediction for position t
        key, sub = jax.random.split(key)
        if temperature == 0:
            new = jnp.argmax(logits, axis=-1)
        else:
            new = jax.random.categorical(sub, logits / temperature, axis=-1)
        return buffer.at[:, t].set(new.astype(jnp.int32)), key

    buffer, _ = jax.lax.fori_loop(n_prompt, total, step, (buffer, key))
    return buffer
