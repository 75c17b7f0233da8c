"""Losses and evaluation: cross-entropy accurate in float32 where the naive one is not, chunked
evaluation equal to one batch, and map_in_chunks equal to applying the function to all rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import GPT, GPTConfig
from minillm.model.losses import cross_entropy, evaluate, loss_fn, map_in_chunks, masked_cross_entropy
from minillm.tasks import make_task

MOD = make_task("modular_arithmetic", p=17, frac_train=0.6)
MOD_CFG = GPTConfig(
    n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=3, d_vocab=18, d_vocab_out=17, normalization_type=None
)


def test_cross_entropy_is_accurate_in_float32_where_the_naive_one_is_not():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)) * 3
    targets = rng.integers(0, 40, 6)
    logits[np.arange(3), targets[:3]] += 25.0  # confidently right: loss ~1e-9
    logits[3, (targets[3] + 1) % 40] += 30.0  # confidently wrong
    ref = -(
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )[np.arange(6), targets]  # float64 reference
    ours = np.asarray(cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets)))
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    naive = -np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)))[np.arange(6), targets]
    assert np.abs(naive[:3] - ref[:3]).max() / ref[:3].max() > 0.5  # the naive float32 loss is off
    # and the gradient: softmax - onehot, summing to 0 over classes, also for the tiny losses
    grad = np.asarray(
        jax.grad(lambda x: cross_entropy(x, jnp.asarray(targets)).sum())(jnp.asarray(logits, jnp.float32))
    )
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = p - np.eye(40)[targets]
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-12)


def test_chunked_evaluate_equals_one_batch():
    model = GPT(MOD_CFG)
    train_set, _ = MOD.split(0)
    whole = loss_fn(model, train_set)
    for chunk in (7, 50, 1000):
        chunked = evaluate(model, train_set, chunk_size=chunk)  # 173 examples: chunks with padding
        np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_masked_cross_entropy_counts_only_masked_positions():
    train_set, _ = MOD.split(0)
    logits = GPT(MOD_CFG)(train_set.tokens)
    loss, acc = masked_cross_entropy(logits, train_set)
    nll = np.asarray(cross_entropy(logits, train_set.targets))[:, -1]  # only the answer position is masked in
    np.testing.assert_allclose(loss, nll.mean(), rtol=1e-6)
    np.testing.assert_allclose(acc, (np.asarray(logits)[:, -1].argmax(-1) == train_set.targets[:, -1]).mean())


def test_map_in_chunks_equals_one_call_and_pads_with_zero_rows():
    xs = {"a": jnp.arange(10.0), "b": jnp.arange(20.0).reshape(10, 2)}
    out = jax.jit(lambda xs: map_in_chunks(lambda c: c["a"][:, None] * c["b"], xs, 4))(xs)
    assert out.shape == (3, 4, 2)  # 10 rows in chunks of 4: the last chunk has 2 rows of padding
    np.testing.assert_array_equal(out.reshape(-1, 2)[:10], xs["a"][:, None] * xs["b"])
    np.testing.assert_array_equal(out.reshape(-1, 2)[10:], 0.0)
    sums = map_in_chunks(lambda c: c["a"].sum(), xs, 100)  # chunk larger than the data: one chunk
    assert sums.shape == (1,) and float(sums[0]) == 45.0


def test_return_types_and_the_next_token_loss_follow_transformerlens():
    """loss = mean over positions 0..p-2 of -log softmax(logits[:, i])[tokens[:, i + 1]]; "both" gives
    (logits, loss); None gives None; per-token losses are [b, p - 1]; a bad return_type is refused."""

    model = GPT(GPTConfig(n_layers=2, d_model=16, n_heads=2, n_ctx=8, d_vocab=13, seed=5))
    tokens = np.random.default_rng(0).integers(0, 13, (3, 8)).astype(np.int32)
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
    assert cache["resid_pre", 0].shape == (3, 8, 16)
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


def test_the_next_token_loss_refuses_tokens_without_a_logit():

    model = GPT(GPTConfig(n_layers=1, d_model=8, n_heads=2, n_ctx=4, d_vocab=10, d_vocab_out=5))
    with pytest.raises(ValueError, match="d_vocab_out"):
        model(np.array([[1, 7, 2]], np.int32), return_type="loss")
