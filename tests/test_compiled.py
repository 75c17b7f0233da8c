"""Eager calls, compiled (minillm/model/compiled.py): the same numbers as the op-by-op pass, the same
checks at the boundary, new weights seen at once, the call's options compiled, and hooks and traced
calls left to run as before. (That a call checks its inputs once, whichever path: test_gpt.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import GPT
from minillm.model.hooks import Hooks


@pytest.mark.slow
def test_compiled_calls_match_the_op_by_op_pass(model, tokens):
    """model(tokens) and run_with_cache run compiled (minillm/model/compiled.py): the same numbers as the
    op-by-op forward up to float32 rounding, and every cached activation too."""
    hooks = Hooks(cache=None)
    eager = np.asarray(model.forward(jnp.asarray(tokens), hooks))
    logits, cache = model.run_with_cache(tokens)
    np.testing.assert_allclose(np.asarray(model(tokens)), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logits), eager, rtol=1e-5, atol=1e-6)
    assert list(cache) == list(hooks.cache)  # the same names, in forward order
    for name, act in hooks.cache.items():
        np.testing.assert_allclose(np.asarray(cache[name]), np.asarray(act), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(model(tokens)))  # deterministic


def test_compiled_calls_see_new_weights_and_check_inputs(cfg, tokens):
    model = GPT(cfg)
    before = np.asarray(model(tokens))
    model.load_state_dict({k: v * 1.5 for k, v in model.state_dict().items()})
    after = np.asarray(model(tokens))  # the weights are an argument of the compiled call, not a constant
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, np.asarray(model.forward(jnp.asarray(tokens), Hooks())), rtol=1e-4, atol=1e-5)
    bad = np.array(tokens).copy()
    bad[0, 1] = cfg.d_vocab
    with pytest.raises(ValueError, match="outside"):
        model(bad)
    with pytest.raises(KeyError, match="hook_resid_pre"):
        model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pr"])


def test_calls_inside_a_transform_and_calls_with_hooks_are_not_compiled_again(model, tokens):
    """Inside jax.jit the plain forward is traced (the caller compiles it); a hook that keeps a
    Python list still sees concrete arrays, as it would op by op."""
    seen = []
    model.run_with_hooks(tokens, [("hook_embed", lambda x, hook: seen.append(x))])
    assert isinstance(seen[0], jax.Array) and not isinstance(seen[0], jax.core.Tracer)
    jitted = jax.jit(lambda t: model(t))(jnp.asarray(tokens))
    np.testing.assert_allclose(jitted, model(tokens), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cache_options_match_the_op_by_op_call(model, cfg, tokens):
    """remove_batch_dim, start/stop_at_layer, return types and a predicate names_filter compiled."""
    t = jnp.asarray(tokens)
    if cfg.d_vocab_out < cfg.d_vocab:
        t = t % cfg.d_vocab_out  # the next-token loss needs every token to have a logit
    loss, cache = model.run_with_cache(
        t[:1], names_filter=lambda n: n.endswith("resid_pre"), return_type="both", remove_batch_dim=True
    )
    logits, value = loss
    np.testing.assert_allclose(value, model.loss_fn(model.forward(t[:1], Hooks()), t[:1]), rtol=1e-5)
    assert cache["resid_pre", 0].shape == (t.shape[1], cfg.d_model)
    assert list(cache) == [f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)]
    resid = model(t, stop_at_layer=-1)
    np.testing.assert_allclose(model(resid, start_at_layer=-1), model(t), rtol=1e-5, atol=1e-6)
    per_token = model(t, return_type="loss", loss_per_token=True)
    assert per_token.shape == (t.shape[0], t.shape[1] - 1)
    with pytest.raises(ValueError, match="return_type"):
        model(t, return_type="logit")
