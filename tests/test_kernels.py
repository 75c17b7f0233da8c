"""minillm/model/kernels.py: when attention may be fused, and that the fused kernel gives the
softmax attention's numbers (causal, bidirectional, and a mask of visible keys)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm.model.hooks import Hooks
from minillm.model.kernels import fused_attention, may_fuse


def written_out(q, k, v, visible):
    scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
    pattern = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bhqk,bkhe->bqhe", pattern, v)


@pytest.mark.parametrize("causal", [True, False])
def test_fused_attention_equals_the_softmax_written_out(causal):
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 4)) for i in range(3))
    visible = jnp.tril(jnp.ones((5, 5), bool)) if causal else jnp.ones((5, 5), bool)
    np.testing.assert_allclose(fused_attention(q, k, v, causal, None), written_out(q, k, v, visible), atol=1e-5)
    some = jnp.arange(5)[None, :] <= jnp.array([0, 2, 2, 4, 1])[:, None]  # any mask of visible keys
    np.testing.assert_allclose(
        fused_attention(q, k, v, causal, some[None, None]), written_out(q, k, v, some), atol=1e-5
    )


def test_fusing_only_when_nothing_reads_the_pattern():
    plain = Hooks()
    assert not may_fuse("exact", 1.0, False, plain)
    assert may_fuse("fused", 1.0, False, plain)
    assert not may_fuse("fused", 0.5, False, plain)  # attention_rate mixes in the pattern
    assert not may_fuse("fused", 1.0, True, plain)  # padding
    for name in ("hook_pattern", "hook_attn_scores"):
        assert not may_fuse("fused", 1.0, False, Hooks(cache=[name]))
    assert may_fuse("auto", 1.0, False, plain) == (jax.default_backend() == "gpu")
