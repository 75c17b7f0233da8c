"""TransformerLens' stacked weight properties (minillm/model/weight_views.py) equal the per-block
weights, with its shapes."""

import jax
import numpy as np
import pytest

from minillm import GPT


def test_stacked_weights_equal_the_per_block_weights(model, cfg):
    sd = model.state_dict()
    n, h, d, e = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
    shapes = {"W_Q": (n, h, d, e), "W_K": (n, h, d, e), "W_V": (n, h, d, e), "W_O": (n, h, e, d)}
    shapes |= {"b_Q": (n, h, e), "b_K": (n, h, e), "b_V": (n, h, e), "b_O": (n, d)}
    if not cfg.attn_only:
        shapes |= {"W_in": (n, d, cfg.d_mlp), "b_in": (n, cfg.d_mlp), "W_out": (n, cfg.d_mlp, d), "b_out": (n, d)}
    for name, shape in shapes.items():
        stacked = np.asarray(getattr(model, name))
        assert stacked.shape == shape, name
        part = "mlp" if name in ("W_in", "b_in", "W_out", "b_out") else "attn"
        for l in range(n):
            np.testing.assert_array_equal(stacked[l], sd[f"blocks.{l}.{part}.{name}"])
    np.testing.assert_array_equal(model.W_E, sd["embed.W_E"])
    np.testing.assert_array_equal(model.W_pos, sd["pos_embed.W_pos"])
    np.testing.assert_array_equal(model.W_E_pos, np.concatenate([sd["embed.W_E"], sd["pos_embed.W_pos"]]))
    np.testing.assert_array_equal(model.W_U, sd["unembed.W_U"])
    np.testing.assert_array_equal(model.b_U, sd["unembed.b_U"])
    np.testing.assert_allclose(model.OV[1, 0].AB, sd["blocks.1.attn.W_V"][0] @ sd["blocks.1.attn.W_O"][0], atol=1e-5)
    np.testing.assert_allclose(model.QK[0, 2].AB, sd["blocks.0.attn.W_Q"][2] @ sd["blocks.0.attn.W_K"][2].T, atol=1e-5)
    if cfg.attn_only:
        with pytest.raises(AttributeError, match="attention-only"):
            _ = model.W_in


def test_the_views_are_copies_and_the_model_still_transforms(model, tokens):
    """The views read the weights; the model stays a pytree that jit transforms as before."""
    stacked = model.W_Q
    with pytest.raises(ValueError, match="read-only"):
        stacked[0, 0] = 0.0  # a copy: change weights with load_state_dict
    with pytest.raises(IndexError):
        model.W_Q[model.cfg.n_layers]  # NumPy refuses what a JAX array would clamp to the last layer
    np.testing.assert_allclose(jax.jit(lambda m, t: m(t))(model, tokens), model(tokens), atol=1e-5)
    traced = jax.jit(lambda m: m.W_Q.sum())(model)  # inside jit the views are traced JAX arrays
    np.testing.assert_allclose(traced, model.W_Q.sum(), rtol=1e-5)
    assert isinstance(GPT.W_Q, property)
