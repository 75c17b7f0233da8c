"""Checks at the boundary (minillm/model/inputs.py): bad tokens, residual streams and layer ranges
raise errors that name the problem, directly and through every public call of the model; traced ids
never become a clamped, plausible token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT
from minillm.model.inputs import check_resid, check_tokens, layer_range

CFG = CONFIGS["mlp_ln_gelu"]


@pytest.fixture(scope="module")
def small():
    return GPT(CFG)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.array([[1, 2, CFG.d_vocab]]), ValueError, r"token id 23 .* outside \[0, d_vocab=23\)"),
        (np.array([[1, -1, 2]]), ValueError, r"token id -1"),
        (np.array([[1.0, 2.0]], np.float32), TypeError, "integer"),
        (np.array([[True, False]]), TypeError, "integer"),
        (np.zeros((1, CFG.n_ctx + 1), np.int32), ValueError, "n_ctx=12"),
        (np.array([1, 2, 3]), ValueError, r"tokens\[None\]"),
        (np.zeros((2, 3, 4), np.int32), ValueError, r"\[batch, pos\]"),
        (np.zeros((1, 0), np.int32), ValueError, "sequence length 0"),
    ],
)
def test_bad_tokens_raise_clear_errors(small, bad, error, match):
    for call in (small, lambda t: small.run_with_cache(t), lambda t: small.run_with_hooks(t, [])):
        with pytest.raises(error, match=match):
            call(bad)


def test_out_of_range_ids_under_jit_give_nan_not_a_clamped_token(small):
    logits = jax.jit(lambda m, t: m(t))(small, jnp.array([[1, 2, CFG.d_vocab + 5], [1, 2, 3]]))
    # the bad sequence is NaN throughout (attention spreads it: 0 * NaN), the good one is intact
    assert np.all(np.isnan(logits[0])) and np.all(np.isfinite(logits[1]))
    np.testing.assert_allclose(logits[1], small(np.array([[1, 2, 3]]))[0], atol=1e-5)


def test_lists_of_ints_are_accepted(small):
    np.testing.assert_array_equal(small([[1, 2, 3]]), small(np.array([[1, 2, 3]])))
    np.testing.assert_array_equal(check_tokens([[1, 2, 3]], CFG), np.array([[1, 2, 3]], np.int32))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((1, 3)),
        np.zeros((1, 3, CFG.d_model + 1)),
        np.zeros((1, 0, CFG.d_model)),
        np.zeros((1, CFG.n_ctx + 1, CFG.d_model)),
    ],
)
def test_a_bad_residual_stream_is_refused(small, bad):
    with pytest.raises(ValueError, match="residual stream"):
        check_resid(bad, CFG)
    with pytest.raises(ValueError, match="residual stream"):
        small(bad, start_at_layer=1)


def test_layer_ranges_outside_the_model_are_refused(small):
    assert list(layer_range(CFG, None, None)) == list(range(CFG.n_layers))
    assert list(layer_range(CFG, 1, 1)) == []
    assert list(layer_range(CFG, -1, None)) == [CFG.n_layers - 1]  # negative: from the end, as TL
    assert list(layer_range(CFG, None, -1)) == list(range(CFG.n_layers - 1))
    for start, stop in [(-CFG.n_layers - 1, None), (None, CFG.n_layers + 1), (2, 1), (None, -CFG.n_layers - 1)]:
        with pytest.raises(ValueError, match="start_at_layer"):
            layer_range(CFG, start, stop)
    with pytest.raises(ValueError, match="stop_at_layer"):
        small(np.array([[1, 2]]), stop_at_layer=CFG.n_layers + 1)


def test_check_indices_refuses_what_jax_would_clamp():
    from minillm.model.inputs import check_indices

    check_indices(slice(0, 99), 3, "x")  # slices are the caller's business, as in Python
    check_indices([-3, 2], 3, "x")  # negative counts from the end
    with pytest.raises(IndexError, match="x: index 3 is out of range"):
        check_indices(np.array([0, 3]), 3, "x")
    with pytest.raises(TypeError, match="integers"):
        check_indices([True], 3, "x")
