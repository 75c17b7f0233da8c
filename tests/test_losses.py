"""Losses and evaluation: cross-entropy accurate in float32 where the naive one is not, chunked
evaluation equal to one batch, and map_in_chunks equal to applying the function to all rows."""

import jax
import jax.numpy as jnp
import numpy as np

from minillm import GPT, GPTConfig
from minillm.losses import cross_entropy, evaluate, loss_fn, map_in_chunks, masked_cross_entropy
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
