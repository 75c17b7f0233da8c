"""The fused attention kernel, and when the network may use it instead of the written-out softmax.

`GPTConfig.attn_implementation`: "exact" always materialises the pattern (the path every hook sees);
"fused" uses `jax.nn.dot_product_attention` (cuDNN's flash kernel on a GPU in bfloat16 / float16,
XLA's elsewhere) whenever nothing in the call reads or replaces the scores or the pattern; "auto"
(the default) fuses on a GPU only. Both give the same z up to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from minillm.model.hooks import HookScope


def may_fuse(implementation: str, attention_rate: float, masked: bool, hook: HookScope) -> bool:
    """Whether this call may skip the pattern: nothing hooks it, and it is plain softmax attention."""
    if implementation == "exact" or (implementation == "auto" and jax.default_backend() != "gpu"):
        return False
    plain = attention_rate == 1.0 and not masked
    return plain and not hook.wants("hook_attn_scores") and not hook.wants("hook_pattern")


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, causal: bool, visible: jax.Array | None) -> jax.Array:
    """z [b, q, h, e] from q [b, q, h, e], k and v [b, k, h, e] by jax.nn.dot_product_attention;
    `visible` [1, 1, q, k] (None: causal or all) says which keys each query sees."""
    e = q.shape[-1]
    cudnn = jax.default_backend() == "gpu" and q.dtype != jnp.float32 and e % 8 == 0 and e <= 128
    kind = "cudnn" if cudnn and visible is None else None
    if visible is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=kind)
    return jax.nn.dot_product_attention(q, k, v, mask=visible, implementation=kind)
