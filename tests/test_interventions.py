"""Ablations, steering and noise as hook functions (minillm/interventions.py), and their index checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT, act_name
from minillm.interventions import ablate, ablate_heads, ablate_neurons, add_noise, selection_mask, steer

CFG = CONFIGS["mlp_ln_gelu"]


@pytest.fixture(scope="module")
def setup():
    model = GPT(CFG)
    tokens, other = random_tokens(CFG, seed=1), random_tokens(CFG, seed=2)
    return model, tokens, other, model.run_with_cache(tokens)[1], model.run_with_cache(other)[1]


def test_zero_ablating_one_head_zeroes_only_that_head(setup):
    model, tokens, other, cache, other_cache = setup
    _, hooked = model.run_with_cache(tokens, names_filter=act_name("z", 1), fwd_hooks=ablate_heads(model, [(1, 2)]))
    z = np.asarray(hooked["z", 1])
    assert np.all(z[:, :, 2] == 0)
    # the clean cache is a compiled call, the hooked one runs op by op: equal up to float rounding
    np.testing.assert_allclose(z[:, :, [0, 1, 3]], np.asarray(cache["z", 1])[:, :, [0, 1, 3]], rtol=1e-5, atol=1e-6)


def test_zero_ablating_every_head_equals_removing_attention_writes(setup):
    model, tokens, *_ = setup
    heads = [(0, h) for h in range(CFG.n_heads)]
    by_heads = model.run_with_hooks(tokens, ablate_heads(model, heads))
    b_O = model.blocks[0].attn.b_O[...]
    by_out = model.run_with_hooks(tokens, [(act_name("attn_out", 0), lambda x, hook: jnp.broadcast_to(b_O, x.shape))])
    np.testing.assert_allclose(by_heads, by_out, atol=1e-5)


def test_mean_and_resample_ablation(setup):
    model, tokens, other, cache, other_cache = setup
    _, mean_run = model.run_with_cache(
        tokens, names_filter=act_name("z", 0), fwd_hooks=ablate_heads(model, [(0, 1)], "mean", reference=other_cache)
    )
    expected = np.asarray(other_cache["z", 0])[:, :, 1].mean(0)
    np.testing.assert_allclose(
        np.asarray(mean_run["z", 0])[:, :, 1], np.broadcast_to(expected, (3, 10, CFG.d_head)), atol=1e-6
    )
    resampled = model.run_with_hooks(
        tokens, [ablate(act_name("resid_pre", 1), "resample", reference=other_cache["resid_pre", 1])]
    )
    np.testing.assert_allclose(resampled, model(other), atol=1e-5)
    with pytest.raises(ValueError, match="reference"):
        ablate(act_name("z", 0), "mean")
    with pytest.raises(ValueError, match="kind"):
        ablate(act_name("z", 0), "random")


def test_neuron_ablation_and_masks(setup):
    model, tokens, *_ = setup
    _, hooked = model.run_with_cache(
        tokens, names_filter=act_name("post", 0), fwd_hooks=ablate_neurons(model, [(0, 3), (0, 7)])
    )
    post = np.asarray(hooked["post", 0])
    assert np.all(post[..., [3, 7]] == 0) and np.any(post[..., 4] != 0)
    mask = selection_mask("blocks.0.attn.hook_pattern", (2, 4, 5, 5), heads=[1], positions=[3])
    assert mask.sum() == 2 * 5 and bool(mask[0, 1, 3, 0]) and not bool(mask[0, 0, 3, 0])
    with pytest.raises(ValueError, match="per-head"):
        selection_mask("blocks.0.hook_resid_pre", (2, 5, 8), heads=[0])
    with pytest.raises(ValueError, match="neurons"):
        selection_mask("blocks.0.hook_resid_pre", (2, 5, 8), neurons=[0])


def test_steering_adds_a_vector_at_chosen_positions(setup):
    model, tokens, *_ = setup
    vector = jnp.ones(CFG.d_model)
    name = act_name("resid_pre", 1)
    _, hooked = model.run_with_cache(tokens, names_filter=name, fwd_hooks=[steer(name, vector, 2.0, positions=[4])])
    _, clean = model.run_with_cache(tokens, names_filter=name)
    diff = np.asarray(hooked[name] - clean[name])
    np.testing.assert_allclose(diff[:, 4], 2.0, atol=1e-5)
    np.testing.assert_allclose(diff[:, :4], 0, atol=1e-6)  # (a compiled clean call: equal up to rounding)
    np.testing.assert_allclose(diff[:, 5:], 0, atol=1e-6)
    logits = model.run_with_hooks(tokens, [steer(name, vector, 2.0, positions=[4])])
    clean = model.run_with_hooks(tokens, [(name, lambda x, hook: None)])  # op by op, as the steered run
    np.testing.assert_array_equal(logits[:, :4], clean[:, :4])  # causal: earlier positions untouched


def test_noise_is_added_at_chosen_positions_and_is_the_same_every_call(setup):
    model, tokens, *_ = setup
    hook = add_noise("hook_embed", 0.5, jax.random.key(0), positions=[2, 3])
    _, a = model.run_with_cache(tokens, names_filter="hook_embed", fwd_hooks=[hook])
    _, b = model.run_with_cache(tokens, names_filter="hook_embed", fwd_hooks=[hook])
    clean = model.run_with_cache(tokens, names_filter="hook_embed")[1]["hook_embed"]
    diff = np.asarray(a["hook_embed"] - clean)
    np.testing.assert_array_equal(a["hook_embed"], b["hook_embed"])
    assert np.all(diff[:, [0, 1, 4, 5]] == 0)
    assert 0.4 < diff[:, 2:4].std() < 0.6  # std 0.5
    with pytest.raises(ValueError, match="std"):
        add_noise("hook_embed", -1.0, jax.random.key(0))


def test_out_of_range_indices_are_refused_not_dropped(setup):
    model, tokens, *_ = setup
    with pytest.raises(IndexError, match="out of range"):
        model.run_with_hooks(tokens, ablate_heads(model, [(0, CFG.n_heads)]))
    with pytest.raises(IndexError, match="out of range"):
        model.run_with_hooks(tokens, [steer(act_name("resid_pre", 0), jnp.ones(CFG.d_model), positions=[10])])
    with pytest.raises(TypeError, match="integers"):
        selection_mask("blocks.0.hook_resid_pre", (2, 5, 8), positions=[1.5])
    assert bool(selection_mask("blocks.0.hook_resid_pre", (2, 5, 8), positions=[-1])[0, 4, 0])  # negative: from the end
