"""Losses and evaluation (minillm/model/losses.py): cross-entropy accurate in float32 where the naive
one is not, the masked loss of a task's batch, chunked evaluation equal to one batch, map_in_chunks
equal to applying the function to all rows, and the next-token loss refusing tokens without a logit
or a mask not shaped like the tokens.
(The return types and the next-token loss through the model's calls: test_gpt.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import modular_config

from minillm import GPT
from minillm.model.losses import cross_entropy, evaluate, loss_fn, map_in_chunks, masked_cross_entropy, next_token_loss
from minillm.tasks import make_task

MOD = make_task("modular_arithmetic", p=11, frac_train=0.6)
MOD_CFG = modular_config(11)  # a model that fits the task: its batches are what evaluate chunks


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


@pytest.mark.slow
def test_chunked_evaluate_equals_one_batch():
    model = GPT(MOD_CFG)
    train_set, _ = MOD.split(0)
    whole = loss_fn(model, train_set)
    for chunk in (7, 50, 1000):
        chunked = evaluate(model, train_set, chunk_size=chunk)  # 73 examples: chunks with padding
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


def test_the_next_token_loss_refuses_tokens_without_a_logit(configs):
    cfg = configs["mlp_ln_gelu"]  # d_vocab_out < d_vocab: the tokens from d_vocab_out on have no logit
    model = GPT(cfg)
    with pytest.raises(ValueError, match="d_vocab_out"):
        model(np.array([[1, cfg.d_vocab_out, 2]], np.int32), return_type="loss")


def test_the_next_token_loss_refuses_a_mask_not_shaped_like_the_tokens():
    """As TransformerLens' lm_cross_entropy_loss asserts, but as a ValueError naming both shapes (JAX
    raised an unnamed broadcasting error, or broadcast a [p] mask over the batch)."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 5, 7)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    ones = np.ones((2, 5), np.int32)
    np.testing.assert_allclose(next_token_loss(logits, tokens, ones), next_token_loss(logits, tokens), rtol=1e-6)
    for bad in (np.ones((2, 4), np.int32), np.ones(5, np.int32)):
        with pytest.raises(ValueError, match=r"attention_mask must have the tokens' shape \(2, 5\)"):
            next_token_loss(logits, tokens, bad)
