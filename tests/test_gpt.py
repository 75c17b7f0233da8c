"""The facade (minillm/model/gpt.py: GPT = the network + TransformerLens' calls): return types and
the next-token loss, run_with_cache's options under jit and eagerly, start and stop at a layer,
the input checks made once per call whichever path runs it, and a model built from a state dict.
(Hooks and the cache: test_hooks.py; the compiled path: test_compiled.py; weights on disk:
test_checkpoint.py and test_params.py; TransformerLens' formats: test_transformer_lens.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_tokens

from minillm import GPT
from minillm.model.network import Transformer


def test_a_gpt_is_the_network_with_its_forward_pass(model, tokens):
    assert isinstance(model, Transformer) and GPT.forward is Transformer.forward
    np.testing.assert_allclose(model(tokens), model.forward(jnp.asarray(tokens)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_return_types_and_the_next_token_loss_follow_transformerlens(configs):
    """loss = mean over positions 0..p-2 of -log softmax(logits[:, i])[tokens[:, i + 1]]; "both" gives
    (logits, loss); None gives None; per-token losses are [b, p - 1]; a bad return_type is refused."""
    cfg = configs["mlp_noln_relu"]  # d_vocab_out == d_vocab: every token is a target
    model = GPT(cfg)
    tokens = random_tokens(cfg, pos=8)
    logits = np.asarray(model(tokens), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], -1)[..., 0]  # [3, 7]
    np.testing.assert_allclose(model(tokens, return_type="loss"), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(model(tokens, return_type="loss", loss_per_token=True), expected, rtol=1e-5)
    both_logits, both_loss = model(tokens, return_type="both")
    np.testing.assert_allclose(both_logits, logits, atol=1e-5)
    np.testing.assert_allclose(both_loss, expected.mean(), rtol=1e-5)
    assert model(tokens, return_type=None) is None
    np.testing.assert_allclose(model.loss_fn(both_logits, tokens, per_token=True), expected, rtol=1e-5)
    loss, cache = model.run_with_cache(tokens, return_type="loss")
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
    assert cache["resid_pre", 0].shape == (3, 8, cfg.d_model)
    hooked = model.run_with_hooks(tokens, [("blocks.0.hook_resid_pre", lambda x, hook: x)], return_type="loss")
    np.testing.assert_allclose(hooked, expected.mean(), rtol=1e-5)
    # with start_at_layer the input is a residual stream: the loss needs the tokens passed in
    resid = model(tokens, stop_at_layer=1)
    np.testing.assert_allclose(
        model(resid, return_type="loss", start_at_layer=1, tokens=tokens), expected.mean(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="tokens"):
        model(resid, return_type="loss", start_at_layer=1)
    with pytest.raises(ValueError, match="return_type"):
        model(tokens, return_type="logit")
    with pytest.raises(ValueError, match="residual stream"):
        model(tokens, return_type="loss", stop_at_layer=1)
    # padding: predictions of and from masked positions are left out
    mask = np.ones((3, 8), np.int32)
    mask[:, :2] = 0  # left padding
    keep = mask[:, 1:] * mask[:, :-1]
    padded = model(tokens, return_type="loss", attention_mask=mask, loss_per_token=True)
    assert np.all(np.asarray(padded)[keep == 0] == 0)


@pytest.mark.slow
def test_jit_and_eager_agree_on_logits_and_cache(model, tokens):
    eager_logits, eager_cache = model.run_with_cache(tokens)
    jit_logits, jit_cache = jax.jit(lambda m, t: m.run_with_cache(t))(model, tokens)
    np.testing.assert_allclose(jit_logits, eager_logits, atol=1e-5, rtol=1e-5)
    assert set(jit_cache.keys()) == set(eager_cache.keys())
    for name in eager_cache:
        np.testing.assert_allclose(jit_cache[name], eager_cache[name], atol=1e-5, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(jax.jit(lambda m, t: m(t))(model, tokens), eager_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_start_and_stop_at_layer_split_the_forward_pass(model, cfg, tokens):
    logits, cache = model.run_with_cache(tokens)
    resid = model(tokens, stop_at_layer=1)
    np.testing.assert_allclose(resid, cache["resid_pre", 1], atol=1e-6)
    np.testing.assert_allclose(model(resid, start_at_layer=1), logits, atol=1e-5)
    # as in TransformerLens, a hook on a point this pass does not reach is accepted and never runs
    never = lambda x, hook: x * np.nan
    np.testing.assert_allclose(
        model.run_with_hooks(resid, [("hook_embed", never)], start_at_layer=1), logits, atol=1e-5
    )
    with pytest.raises(KeyError, match="Unknown hook point"):  # a name no pass has is still refused
        model.run_with_hooks(resid, [("hook_embedding", never)], start_at_layer=1)
    _, partial = model.run_with_cache(resid, start_at_layer=1)
    with pytest.raises(KeyError, match="start_at_layer"):  # and the cache says why it lacks a valid name
        partial["resid_pre", 0]
    # negative layers count from the end, as Python slices and TransformerLens do
    last = cfg.n_layers - 1
    np.testing.assert_allclose(model(tokens, stop_at_layer=-1), cache["resid_pre", last], atol=1e-6)
    np.testing.assert_allclose(model(cache["resid_pre", last], start_at_layer=-1), logits, atol=1e-5)
    with pytest.raises(ValueError, match="start_at_layer"):
        model(tokens, stop_at_layer=-cfg.n_layers - 1)


@pytest.mark.slow
def test_a_call_checks_its_inputs_once_whichever_path_runs_it(configs, monkeypatch):
    """The checks at the boundary run once per call, before the call chooses the compiled program or
    the op-by-op pass (GPT.run_with_cache), and never again inside the forward pass."""
    from minillm.model import inputs

    calls = []
    real = inputs.check_tokens
    monkeypatch.setattr(inputs, "check_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = configs["attn_only_noln"]
    model = GPT(cfg)
    tokens = np.arange(11, dtype=np.int32)[None] % cfg.d_vocab  # [1, 11]: a shape no other test compiles
    for call in (
        lambda: model(tokens),  # compiled, and compiled for the first time
        lambda: model(tokens),  # compiled, from the cache
        lambda: model.run_with_hooks(tokens, [("hook_embed", lambda x, hook: x)]),  # op by op
        lambda: jax.jit(lambda t: model(t))(tokens),  # while tracing
    ):
        calls.clear()
        call()
        assert len(calls) == 1
    with pytest.raises(ValueError, match=f"token id {cfg.d_vocab}"):
        model(tokens * 0 + cfg.d_vocab)


def test_from_state_dict_builds_the_model_with_those_weights(model, cfg, tokens):
    """GPT.from_state_dict draws no random weights: the model it returns has exactly the ones given."""
    weights = {k: np.asarray(v) * 2.0 for k, v in model.state_dict().items()}
    built = GPT.from_state_dict(cfg, weights)
    assert isinstance(built, GPT) and built.cfg == cfg
    for name, value in built.state_dict().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    doubled = GPT(cfg)
    doubled.load_state_dict(weights)
    np.testing.assert_array_equal(built(tokens), doubled(tokens))
