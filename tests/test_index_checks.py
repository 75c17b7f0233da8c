"""Across modules (no single module of its own): property-based checks that every public call taking a
layer, head, position or neuron index either gives TransformerLens' meaning (negative counts from
the end) or raises a clear error: JAX clamps an out-of-range index to a real one, so nothing may
reach it unchecked."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm import GPT, act_name
from minillm import decompose as D
from minillm.circuits import OV, QK
from minillm.interventions import ablate, ablate_heads, ablate_neurons, selection_mask, steer
from minillm.model.inputs import layer_range
from minillm.sae import gather_activations

CFG = CONFIGS["mlp_ln_gelu"]
MODEL = GPT(CFG)
TOKENS = np.array([[1, 2, 3, 4, 5], [0, 6, 5, 4, 3]], np.int32)
LOGITS, CACHE = MODEL.run_with_cache(TOKENS)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ints = st.integers(min_value=-12, max_value=12)  # past every layer, head and position, both ways


def _valid(i: int, size: int) -> bool:
    return -size <= i < size


@SETTINGS
@given(layer=ints, head=ints)
def test_weight_views_and_circuits_index_like_python(layer, head):
    for get in (lambda: MODEL.W_Q[layer, head], lambda: QK(MODEL)[layer, head], lambda: OV(MODEL)[layer, head]):
        if _valid(layer, CFG.n_layers) and _valid(head, CFG.n_heads):
            got = get()
            want = MODEL.state_dict()[f"blocks.{layer % CFG.n_layers}.attn.W_Q"][head % CFG.n_heads]
            if isinstance(got, np.ndarray):
                np.testing.assert_array_equal(got, want)
        else:
            with pytest.raises(IndexError):
                get()


@SETTINGS
@given(layer=ints)
def test_cache_keys_and_layer_ranges(layer):
    n = CFG.n_layers
    if _valid(layer, n):
        np.testing.assert_array_equal(CACHE["resid_post", layer], CACHE[f"blocks.{layer % n}.hook_resid_post"])
    else:
        with pytest.raises(KeyError):
            CACHE["resid_post", layer]
    if -n <= layer <= n:  # start_at_layer = n_layers runs no block (only the unembedding), as a slice would
        assert len(layer_range(CFG, layer, None)) == n - (layer + n if layer < 0 else layer)
    else:
        with pytest.raises(ValueError):
            layer_range(CFG, layer, None)


@pytest.mark.slow
@SETTINGS
@given(head=ints, neuron=st.integers(-CFG.d_mlp - 8, CFG.d_mlp + 8), pos=ints)
def test_interventions_refuse_indices_outside_the_activation(head, neuron, pos):
    checks = [
        (lambda: MODEL.run_with_hooks(TOKENS, ablate_heads(MODEL, [(1, head)])), _valid(head, CFG.n_heads)),
        (lambda: MODEL.run_with_hooks(TOKENS, ablate_neurons(MODEL, [(0, neuron)])), _valid(neuron, CFG.d_mlp)),
        (
            lambda: MODEL.run_with_hooks(TOKENS, [ablate(act_name("resid_pre", 1), positions=[pos])]),
            _valid(pos, TOKENS.shape[1]),
        ),
        (
            lambda: MODEL.run_with_hooks(
                TOKENS, [steer(act_name("resid_pre", 1), jnp.ones(CFG.d_model), positions=[pos])]
            ),
            _valid(pos, TOKENS.shape[1]),
        ),
    ]
    for call, valid in checks:
        if valid:
            assert np.isfinite(np.asarray(call())).all()
        else:
            with pytest.raises(IndexError, match="out of range"):
                call()
    mask = selection_mask(act_name("pattern", 0), (2, 2, 5, 5), positions=[pos]) if _valid(pos, 5) else None
    if mask is not None:
        assert int(mask.sum()) == 2 * 2 * 5  # one query row per batch and head


@pytest.mark.slow
@SETTINGS
@given(pos=ints)
def test_position_slices_of_the_decompositions_and_gathered_activations(pos):
    n_pos = TOKENS.shape[1]
    calls = [
        lambda: D.decompose_resid(MODEL, CACHE, pos_slice=pos),
        lambda: D.accumulated_resid(MODEL, CACHE, pos_slice=pos),
        lambda: D.stack_head_results(MODEL, CACHE, pos_slice=pos),
        lambda: gather_activations(MODEL, TOKENS, "blocks.0.hook_resid_post", positions=[pos]),
    ]
    for call in calls:
        if _valid(pos, n_pos):
            assert np.isfinite(np.asarray(call())).all()
        else:
            with pytest.raises(IndexError):
                call()
    if _valid(pos, n_pos):  # TransformerLens' meaning: an int picks that position and drops the axis
        np.testing.assert_array_equal(
            D.accumulated_resid(MODEL, CACHE, pos_slice=pos)[0], CACHE["resid_pre", 0][:, pos % n_pos]
        )
