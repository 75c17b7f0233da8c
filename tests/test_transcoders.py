"""Transcoders (minillm/transcoders.py): a ReLU MLP is its own exact transcoder (variance explained
1, the spliced model's loss the model's own), training explains most of an MLP's output with each
activation (TopK, ReLU + L1, JumpReLU) and the skip path learns a linear MLP, the JumpReLU step's
straight-through gradient, the inputs and outputs gathered match the cache, and transcoders save,
load and refuse a model or layer they were not trained on."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT, CheckpointError
from minillm.tasks import Batch
from minillm.transcoders import (
    Transcoder,
    _step,
    evaluate_transcoder,
    gather_mlp_io,
    input_name,
    spliced_loss,
    train_transcoder,
    train_transcoders,
)

RELU_CONFIGS = ["mlp_noln_relu", "mlp_lnpre_relu", "mlp_ln_relu_bidirectional"]


def lm_batch(cfg, n=16, seed=0):
    """Next-token prediction on random tokens: the batch spliced_loss takes."""
    tokens = random_tokens(cfg, n, cfg.n_ctx, seed=seed)
    targets = np.concatenate([tokens[:, 1:], np.zeros((n, 1), np.int32)], 1)
    mask = np.ones(tokens.shape, np.float32)
    mask[:, -1] = 0
    return Batch(tokens, targets, mask)


@pytest.mark.parametrize(
    "name", [n if n == "mlp_noln_relu" else pytest.param(n, marks=pytest.mark.slow) for n in RELU_CONFIGS]
)
def test_a_relu_mlp_is_its_own_exact_transcoder(name):
    """Transcoder.from_mlp (LayerNorm's w and b folded into the encoder): variance explained 1, and
    with every MLP spliced out for it the model's loss is its own (fraction recovered 1)."""
    model = GPT(CONFIGS[name])
    batch = lm_batch(model.cfg)
    tcs = [Transcoder.from_mlp(model, layer) for layer in range(model.cfg.n_layers)]
    data = gather_mlp_io(model, batch.tokens)
    for tc, (x, y) in zip(tcs, data):
        stats = evaluate_transcoder(tc, x, y)
        assert stats["variance_explained"] == pytest.approx(1.0, abs=1e-5) and stats["mse"] < 1e-9
        assert stats["mean_l0"] == pytest.approx(((x @ np.asarray(tc.W_enc) + np.asarray(tc.b_enc)) > 0).sum(1).mean())
    out = spliced_loss(model, tcs, batch)
    assert out["transcoder_loss"] == pytest.approx(out["clean_loss"], abs=1e-5)
    assert out["zero_ablation_loss"] != pytest.approx(out["clean_loss"], abs=1e-4)
    assert out["fraction_recovered"] == pytest.approx(1.0, abs=1e-2)
    one = spliced_loss(model, tcs[1], batch)  # one transcoder: its layer alone
    assert one["transcoder_loss"] == pytest.approx(out["clean_loss"], abs=1e-5)


def test_gathered_inputs_and_outputs_are_the_hooks_of_the_mlp():
    for name in ("mlp_ln_gelu", "mlp_noln_relu"):
        model = GPT(CONFIGS[name])
        tokens = random_tokens(model.cfg, 5, 9)
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: True)
        data = gather_mlp_io(model, tokens, chunk_size=2)
        for layer, (x, y) in enumerate(data):
            want = cache["normalized", layer, "ln2"] if model.cfg.normalization_type else cache["resid_mid", layer]
            np.testing.assert_allclose(x, np.asarray(want).reshape(45, -1), atol=1e-6)
            np.testing.assert_allclose(y, np.asarray(cache["mlp_out", layer]).reshape(45, -1), atol=1e-6)
    assert input_name(CONFIGS["mlp_noln_relu"], 2) == "blocks.2.hook_mlp_in"
    assert input_name(CONFIGS["mlp_ln_gelu"], 1) == "blocks.1.ln2.hook_normalized"


def test_training_explains_the_mlp_output():
    """TopK with a skip path, quickly, against the untrained transcoder it starts from."""
    model = GPT(CONFIGS["mlp_ln_gelu"])
    tokens = random_tokens(model.cfg, 128, model.cfg.n_ctx)
    (x, y) = gather_mlp_io(model, tokens, [1])[0]
    tc = train_transcoder(model, 1, tokens, 64, k=8, steps=300, batch_size=256, progress=False)
    untrained = train_transcoder(model, 1, tokens, 64, k=8, steps=1, batch_size=256, progress=False)
    stats = evaluate_transcoder(tc, x, y)
    assert stats["variance_explained"] >= 0.8 and evaluate_transcoder(untrained, x, y)["variance_explained"] < 0.5
    assert 7 <= stats["mean_l0"] <= 8.5 and tc.layer == 1 and tc.W_skip is not None and tc.activation == "topk"


@pytest.mark.slow
def test_each_activation_trains_and_the_sparsity_penalties_work():
    model = GPT(CONFIGS["mlp_noln_relu"])
    tokens = random_tokens(model.cfg, 128, model.cfg.n_ctx)
    (x, y) = gather_mlp_io(model, tokens, [0])[0]
    settings = dict(steps=600, batch_size=256, progress=False, skip=False)
    stats = {}
    for kind, kwargs in [("relu", dict(l1=0.1)), ("relu", dict(l1=1.0)), ("jumprelu", dict(l0=0.01)),
                         ("jumprelu", dict(l0=0.1))]:  # fmt: skip
        tc = train_transcoder(model, 0, tokens, 64, **kwargs, **settings)
        assert tc.activation == kind and tc.W_skip is None
        stats[next(iter(kwargs.values()))] = evaluate_transcoder(tc, x, y)
        if kind == "jumprelu":
            assert not np.allclose(np.asarray(tc.threshold), 0.1)  # the thresholds learned
    assert min(s["variance_explained"] for s in stats.values()) >= 0.7
    assert stats[1.0]["mean_l0"] < stats[0.1]["mean_l0"] and stats[0.1]["mean_l0"] < stats[0.01]["mean_l0"]
    several = train_transcoders(model, tokens, 32, k=4, steps=50, progress=False, layers=[0, 2])
    assert [tc.layer for tc in several] == [0, 2]


@pytest.mark.slow
def test_the_skip_path_learns_a_linear_mlp():
    """An MLP made linear (ReLU never cuts): a skip path alone fits it, so with skip the variance
    explained is about 1 and without it clearly less at the same sparsity."""
    model = GPT(CONFIGS["mlp_noln_relu"])
    weights = {k: np.array(v) for k, v in model.state_dict().items()}
    weights["blocks.0.mlp.b_in"] += 10.0
    model = GPT.from_state_dict(model.cfg, weights)
    tokens = random_tokens(model.cfg, 128, model.cfg.n_ctx)
    (x, y) = gather_mlp_io(model, tokens, [0])[0]
    settings = dict(k=2, steps=400, lr=1e-2, batch_size=256, progress=False)
    with_skip = evaluate_transcoder(train_transcoder(model, 0, tokens, 16, **settings), x, y)
    without = evaluate_transcoder(train_transcoder(model, 0, tokens, 16, skip=False, **settings), x, y)
    assert with_skip["variance_explained"] >= 0.99 > without["variance_explained"] + 0.05


def test_the_jumprelu_step_and_its_straight_through_gradient():
    pre = jnp.array([[0.0, 0.52, 1.0], [0.47, 0.7, 0.2]])
    threshold = jnp.array([0.5, 0.5, 0.5])
    np.testing.assert_array_equal(_step(pre, threshold, 0.1), [[0, 1, 1], [0, 1, 0]])
    # d/d threshold of sum(step): -1/bandwidth for each pre within bandwidth / 2 of it (0.47, 0.52)
    grad_threshold = jax.grad(lambda t: _step(pre, t, 0.1).sum())(threshold)
    np.testing.assert_allclose(grad_threshold, [-10.0, -10.0, 0.0])
    assert not jax.grad(lambda p: _step(p, threshold, 0.1).sum())(pre).any()


def test_save_load_and_refusals(tmp_path):
    model = GPT(CONFIGS["mlp_ln_gelu"])
    tokens = random_tokens(model.cfg, 32, model.cfg.n_ctx)
    tc = train_transcoder(model, 1, tokens, 32, l0=0.05, steps=20, progress=False)
    path = str(tmp_path / "tc.safetensors")
    tc.save(path)
    back = Transcoder.load(path, model)
    x, _ = gather_mlp_io(model, tokens[:2], [1])[0]
    np.testing.assert_array_equal(back(x), tc(x))
    assert (back.activation, back.layer, back.k) == ("jumprelu", 1, None) and back.threshold is not None
    bf16 = GPT(dataclasses.replace(model.cfg, dtype="bfloat16"))  # the same weights, computed in bfloat16
    back.check(bf16)
    with pytest.raises(ValueError, match="trained on another model"):
        Transcoder.load(path, GPT(model.cfg, seed=7))
    with pytest.raises(ValueError, match="another config.*n_heads: 4 here, 2"):
        back.check(GPT(dataclasses.replace(model.cfg, n_heads=2)))
    with pytest.raises(ValueError, match="layer 1 was given for layer 0"):
        back.check(model, 0)
    with pytest.raises(ValueError, match="attention-only model has no MLP"):
        back.check(GPT(CONFIGS["attn_only_ln"]))
    model.save(str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a transcoder"):
        Transcoder.load(str(tmp_path / "model.safetensors"))
    for kwargs, match in [({}, "exactly one"), (dict(k=3, l1=1.0), "exactly one"), (dict(k=0), "k must"),
                          (dict(l1=-1.0), "l1 must"), (dict(l0=0.0), "l0 must")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            train_transcoder(model, 0, tokens, 16, progress=False, **kwargs)
    with pytest.raises(ValueError, match="layer must be an int in 0..1"):
        train_transcoder(model, 2, tokens, 16, k=2)
    with pytest.raises(ValueError, match="only a ReLU MLP"):
        Transcoder.from_mlp(model, 0)
    with pytest.raises(ValueError, match="W_dec must have shape"):
        Transcoder.for_model(model, 0, np.zeros((32, 8)), np.zeros(8), np.zeros((8, 31)), np.zeros(32))
    with pytest.raises(ValueError, match="one transcoder per layer"):
        spliced_loss(model, [tc], lm_batch(model.cfg))
