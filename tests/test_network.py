"""The network (minillm/model/network.py, Transformer.__init__ and forward): every activation of
every kind of model against the independent NumPy forward pass (tests/reference.py), causality,
seeds, the weights' names and shapes, the attention options (attention_rate, bidirectional, LNPre,
padding masks), precision (bfloat16), the fused attention path and logits at chosen positions.
(The facade's calls: test_gpt.py; hook names: test_hook_points.py; input checks: test_inputs.py.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from flax import nnx
from helpers import random_tokens

from minillm import GPT
from minillm.model.hooks import Hooks
from minillm.model.losses import cross_entropy, loss_fn
from minillm.tasks import Batch


def tolerance(cfg, name: str, expected: np.ndarray) -> dict[str, float]:
    """How far a model's activation may be from the float64 reference: float32 rounding (hook_scale
    relative to its size), or, in bfloat16 (8 bits of mantissa), a few percent of the activation's
    scale."""
    if cfg.dtype == "bfloat16":
        return dict(rtol=0, atol=0.05 * float(np.abs(expected[np.isfinite(expected)]).max()) + 1e-2)
    if name.endswith("hook_scale"):
        return dict(rtol=1e-5, atol=0)
    return dict(rtol=0, atol=5e-5 if name == "logits" else 2e-5)


def with_random_biases(cfg, seed: int = 0) -> GPT:
    """GPT(cfg) with every bias and every LayerNorm w and b random: a fresh model has them at 0 (and
    w at 1), where a bias left out or a LayerNorm applied in the wrong order changes nothing."""
    model = GPT(cfg)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, value in model.state_dict().items():
        leaf = name.split(".")[-1]
        if leaf in ("w", "b") or leaf.startswith("b_"):
            value = np.asarray(value) + 0.5 * rng.standard_normal(value.shape).astype(np.float32)
        weights[name] = value
    model.load_state_dict(weights)
    return model


# --- the numbers, against the NumPy reference ---------------------------------------------------
def test_every_activation_and_the_logits_match_the_numpy_reference(every_cfg):
    """Every kind of model, with random biases and LayerNorm weights: each cached activation, the
    logits of the cached call and those of a plain call (the fused attention path, where the config
    has it) equal the reference's."""
    cfg = every_cfg
    model, tokens = with_random_biases(cfg), random_tokens(cfg)
    expected_logits, expected = reference.forward(model.state_dict(), cfg, tokens)
    logits, cache = model.run_with_cache(tokens)
    assert list(cache) == list(expected)  # the same hook points, in the same order
    for name, want in expected.items():
        got = np.asarray(cache[name], np.float64)
        np.testing.assert_allclose(got, want, **tolerance(cfg, name, want), err_msg=name)
    for got in (logits, model(tokens)):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(
            np.asarray(got, np.float64), expected_logits, **tolerance(cfg, "logits", expected_logits)
        )


def test_attention_patterns_are_distributions_over_the_keys_a_query_may_see(every_cfg):
    cfg = every_cfg
    tokens = random_tokens(cfg)
    _, cache = GPT(cfg).run_with_cache(tokens)  # the call above: its compiled program is reused
    later = np.triu_indices(tokens.shape[1], 1)  # (query, key) with the key after the query
    for l in range(cfg.n_layers):
        pattern = np.asarray(cache["pattern", l])
        np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)  # rows sum to 1
        assert np.all(pattern >= 0)
        if cfg.attention_dir == "causal":
            assert np.all(pattern[..., later[0], later[1]] == 0)
        else:
            assert np.all(pattern[..., later[0], later[1]] > 0)


def test_the_residual_stream_is_the_sum_of_what_each_layer_writes(model, cfg, tokens):
    """resid_post = embed + pos_embed + every attn_out and mlp_out so far, and attn_out = the heads'
    results summed + b_O: the cache is consistent with itself, whatever the weights."""
    _, cache = model.run_with_cache(tokens)
    c = {k: np.asarray(v, np.float64) for k, v in cache.items()}
    running_sum = c["hook_embed"] + c["hook_pos_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        np.testing.assert_allclose(c[f"{b}.hook_resid_pre"], running_sum, atol=2e-5)
        b_O = np.asarray(model.state_dict()[f"{b}.attn.b_O"])
        np.testing.assert_allclose(c[f"{b}.hook_attn_out"], c[f"{b}.attn.hook_result"].sum(2) + b_O, atol=2e-5)
        running_sum = running_sum + c[f"{b}.hook_attn_out"]
        if not cfg.attn_only:
            np.testing.assert_allclose(c[f"{b}.hook_resid_mid"], running_sum, atol=2e-5)
            running_sum = running_sum + c[f"{b}.hook_mlp_out"]
        np.testing.assert_allclose(c[f"{b}.hook_resid_post"], running_sum, atol=2e-5)


def test_changing_a_later_token_never_changes_earlier_logits(model, cfg):
    tokens = random_tokens(cfg, batch=2, pos=cfg.n_ctx)
    base = np.asarray(model(tokens))
    for t in (0, 4, cfg.n_ctx - 1):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % cfg.d_vocab
        out = np.asarray(model(changed))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert not np.allclose(out[:, t], base[:, t])  # and the changed position does change


# --- the weights ---------------------------------------------------------------------------------
def test_same_seed_same_weights_different_seed_different(cfg):
    a, b = GPT(cfg).state_dict(), GPT(cfg).state_dict()
    c = GPT(cfg, seed=cfg.seed + 1).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["embed.W_E"], c["embed.W_E"])


def test_state_dict_uses_transformerlens_names_and_shapes(model, cfg):
    sd = model.state_dict()
    h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
    assert sd["embed.W_E"].shape == (cfg.d_vocab, d)
    assert sd["pos_embed.W_pos"].shape == (cfg.n_ctx, d)
    assert sd["blocks.0.attn.W_Q"].shape == (h, d, e)
    assert sd["blocks.0.attn.b_Q"].shape == (h, e)
    assert sd["blocks.0.attn.W_O"].shape == (h, e, d)
    assert sd["blocks.0.attn.b_O"].shape == (d,)
    assert sd["unembed.W_U"].shape == (d, cfg.d_vocab_out)
    assert sd["unembed.b_U"].shape == (cfg.d_vocab_out,)
    if not cfg.attn_only:
        assert sd["blocks.0.mlp.W_in"].shape == (d, cfg.d_mlp)
        assert sd["blocks.0.mlp.W_out"].shape == (cfg.d_mlp, d)
    assert ("ln_final.w" in sd) == (cfg.normalization_type == "LN")
    assert ("blocks.0.mlp.W_in" in sd) == (not cfg.attn_only)


# --- the attention options -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_attention_rate_mixes_the_pattern_with_uniform_attention(cfg, tokens, rate):
    """Zhong et al.'s attention rate: rate * softmax + (1 - rate) * uniform over the visible keys."""
    mixed = GPT(dataclasses.replace(cfg, attention_rate=rate))
    plain = GPT(cfg)  # the same weights (same seed), ordinary attention
    _, mixed_cache = mixed.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    _, plain_cache = plain.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    n = tokens.shape[1]
    uniform = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    expected = rate * np.asarray(plain_cache["pattern", 0]) + (1 - rate) * uniform
    np.testing.assert_allclose(mixed_cache["pattern", 0], expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mixed_cache["pattern", 0]).sum(-1), 1.0, atol=1e-5)
    if rate == 0.0:  # constant attention: the scores do not matter
        weights = dict(mixed.state_dict())
        weights["blocks.0.attn.W_Q"] = 3.0 * weights["blocks.0.attn.W_Q"] + 1.0
        scaled = GPT(mixed.cfg)
        scaled.load_state_dict(weights)
        np.testing.assert_allclose(scaled(tokens), mixed(tokens), atol=1e-5)
        plain_scaled = GPT(cfg)  # with softmax attention the same change to W_Q does matter
        plain_scaled.load_state_dict({**plain.state_dict(), "blocks.0.attn.W_Q": weights["blocks.0.attn.W_Q"]})
        assert not np.allclose(plain_scaled(tokens), plain(tokens), atol=1e-4)


@pytest.mark.slow
def test_bidirectional_attention_sees_every_key(cfg, tokens):
    """attention_dir="bidirectional" (ARENA's bracket classifier): no causal mask, so a later token
    changes earlier positions; the pattern is a full softmax over all keys."""
    model = GPT(dataclasses.replace(cfg, attention_dir="bidirectional"))
    logits, cache = model.run_with_cache(tokens)
    pattern = np.asarray(cache["pattern", 0])
    assert (pattern[:, :, 0, 1:] > 0).all()  # the first query sees later keys
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    changed = np.array(tokens).copy()
    changed[:, -1] = (changed[:, -1] + 1) % cfg.d_vocab
    assert not np.allclose(model(changed)[:, 0], logits[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="attention_dir"):
        dataclasses.replace(cfg, attention_dir="acausal")
    with pytest.raises(ValueError, match="bidirectional"):  # TransformerLens would ignore the mask there
        model(tokens, attention_mask=np.ones(tokens.shape, np.int32))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["attn_only_ln", "mlp_ln_gelu"])  # the LayerNorm models, with and without MLP
def test_lnpre_is_layernorm_without_weights(configs, name):
    """normalization_type="LNPre" (TransformerLens' LayerNormPre): the LayerNorms have no w and b,
    and the model equals the "LN" model with w = 1 and b = 0 (its initial values)."""
    cfg = configs[name]
    tokens = random_tokens(cfg)
    pre = GPT(dataclasses.replace(cfg, normalization_type="LNPre"))
    ln = GPT(cfg)  # same seed: same other weights, and LN starts at w = 1, b = 0
    assert not any(w.endswith((".w", ".b")) for w in pre.state_dict())
    np.testing.assert_allclose(pre(tokens), ln(tokens), atol=1e-6)
    _, cache = pre.run_with_cache(tokens)
    assert "blocks.0.ln1.hook_scale" in cache and "ln_final.hook_normalized" in cache


@pytest.mark.slow
def test_attention_mask_hides_padding_keys(model, cfg, tokens):
    """attention_mask [b, p] with 0 at padding: no query attends to a padding key, so what a padding
    token is does not matter to the real ones; padding queries that see nothing attend to nothing;
    every activation is the reference's with the same mask."""
    mask = np.ones(tokens.shape, np.int32)
    mask[:, :2] = 0  # left padding
    logits, cache = model.run_with_cache(tokens, attention_mask=mask)
    pattern = np.asarray(cache["pattern", 0])
    assert np.all(pattern[..., :2] == 0)
    np.testing.assert_allclose(pattern[:, :, 2:].sum(-1), 1.0, atol=1e-5)
    assert np.all(pattern[:, :, :2] == 0)  # padding queries see no key at all
    other = np.array(tokens).copy()
    other[:, :2] = (other[:, :2] + 5) % cfg.d_vocab
    np.testing.assert_allclose(model(other, attention_mask=mask)[:, 2:], logits[:, 2:], atol=1e-5)
    # as TransformerLens: left padding shifts the positions of the real tokens to start at 0
    b, p = tokens.shape
    shifted = np.broadcast_to(model.W_pos[: p - 2], (b, p - 2, cfg.d_model))
    np.testing.assert_allclose(cache["hook_pos_embed"][:, 2:], shifted, atol=1e-6)
    assert np.all(np.asarray(cache["hook_pos_embed"])[:, :2] == 0)
    expected_logits, expected = reference.forward(model.state_dict(), cfg, tokens, attention_mask=mask)
    for name, want in expected.items():
        np.testing.assert_allclose(
            np.asarray(cache[name], np.float64), want, **tolerance(cfg, name, want), err_msg=name
        )
    np.testing.assert_allclose(
        np.asarray(logits, np.float64), expected_logits, **tolerance(cfg, "logits", expected_logits)
    )
    with pytest.raises(ValueError, match="attention_mask"):
        model(tokens, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match="only 0"):
        model(tokens, attention_mask=mask * 2)


# --- precision (cfg.dtype) -----------------------------------------------------------------------
@pytest.mark.slow
def test_bfloat16_forward_matches_float32_within_its_precision(cfg, tokens):
    """The same float32 weights computed in bfloat16 (8 bits of mantissa): the logits agree to a
    few percent of their scale; the weights stay float32, the softmax and the logits are float32."""
    exact = GPT(cfg)
    half = GPT(dataclasses.replace(cfg, dtype="bfloat16"))
    for k, v in half.state_dict().items():
        assert v.dtype == jnp.float32, k
        np.testing.assert_array_equal(v, exact.state_dict()[k])
    logits, cache = half.run_with_cache(tokens)
    expected = np.asarray(exact(tokens))
    assert logits.dtype == jnp.float32
    error = np.abs(np.asarray(logits) - expected).max()
    assert error < 0.03 * np.abs(expected).max() + 1e-2, error
    assert cache["resid_post", 0].dtype == jnp.bfloat16
    assert cache["pattern", 0].dtype == jnp.float32 and cache["attn_scores", 0].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cache["pattern", 0]).sum(-1), 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="dtype"):  # a hook must keep the activation's dtype
        half.run_with_hooks(tokens, [("blocks.0.hook_resid_pre", lambda x, hook: x.astype(jnp.float32))])


def _next_token_loss(cfg, tokens):
    """A next-token loss for any config (targets folded into d_vocab_out)."""
    t = jnp.asarray(tokens)
    return lambda model: cross_entropy(model(t)[:, :-1], t[:, 1:] % cfg.d_vocab_out).mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp_ln_gelu", "attn_only_noln"])  # with and without LayerNorm and MLP
def test_bfloat16_gradients_are_float32_and_close(configs, name):
    cfg = configs[name]
    grad = nnx.jit(nnx.grad(_next_token_loss(cfg, random_tokens(cfg))))
    g32 = jax.tree.leaves(nnx.state(grad(GPT(cfg))))
    g16 = jax.tree.leaves(nnx.state(grad(GPT(dataclasses.replace(cfg, dtype="bfloat16")))))
    assert all(g.dtype == jnp.float32 for g in g16)
    a, b = (np.concatenate([np.ravel(g) for g in gs]) for gs in (g32, g16))
    assert np.linalg.norm(a - b) < 0.05 * np.linalg.norm(a), np.linalg.norm(a - b) / np.linalg.norm(a)


# --- the fused attention path --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp_ln_gelu", "attn_only_noln"])
def test_fused_attention_gives_the_same_logits_and_gradients(configs, name):
    """attn_implementation="fused" (jax.nn.dot_product_attention, no pattern materialised) against
    the exact path: same logits and gradients up to rounding; a call that caches or hooks the
    pattern still gets it (that call takes the exact path)."""
    cfg = configs[name]
    tokens = random_tokens(cfg)
    exact = GPT(dataclasses.replace(cfg, attn_implementation="exact"))
    fused = GPT(dataclasses.replace(cfg, attn_implementation="fused"))
    t = jnp.asarray(tokens)
    np.testing.assert_allclose(fused(t), exact(t), rtol=1e-5, atol=1e-5)

    loss = _next_token_loss(cfg, tokens)
    for x, y in zip(
        jax.tree.leaves(nnx.state(nnx.grad(loss)(exact))), jax.tree.leaves(nnx.state(nnx.grad(loss)(fused)))
    ):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)
    _, cache = fused.run_with_cache(t, names_filter=lambda n: n.endswith("hook_pattern"))
    _, expected = exact.run_with_cache(t, names_filter=lambda n: n.endswith("hook_pattern"))
    for hook in expected:
        np.testing.assert_allclose(cache[hook], expected[hook], atol=1e-6)
    zeroed = fused.run_with_hooks(t, [("blocks.0.attn.hook_pattern", lambda x, hook: jnp.zeros_like(x))])
    assert np.abs(np.asarray(zeroed) - np.asarray(fused(t))).max() > 1e-4  # the hook ran


def test_auto_attention_is_exact_on_the_cpu(cfg, tokens):
    if jax.default_backend() != "cpu":
        pytest.skip("on a GPU, auto is the fused path")
    model = GPT(cfg)  # attn_implementation="auto"
    t = jnp.asarray(tokens)
    np.testing.assert_array_equal(model.forward(t, Hooks()), model.run_with_hooks(t, [("hook_embed", lambda x, h: x)]))


# --- logits at chosen positions only -------------------------------------------------------------
@pytest.mark.slow
def test_output_positions_give_the_logits_there_and_the_same_loss(cfg, tokens):
    model = GPT(cfg)
    t = jnp.asarray(tokens)
    full = np.asarray(model.forward(t, Hooks()))
    some = model.forward(t, Hooks(), output_positions=(0, 4, -1))
    assert some.shape == (t.shape[0], 3, cfg.d_vocab_out)
    np.testing.assert_allclose(some, full[:, [0, 4, t.shape[1] - 1]], rtol=1e-5, atol=1e-6)
    mask = np.zeros(t.shape, np.float32)
    mask[:, [2, 5]] = 1
    batch = Batch(t, jnp.asarray(np.roll(tokens, -1, axis=1) % cfg.d_vocab_out), jnp.asarray(mask))
    np.testing.assert_allclose(loss_fn(model, batch, positions=(2, 5)), loss_fn(model, batch), rtol=1e-5)
    with pytest.raises(IndexError, match="output_positions"):
        model.forward(t, Hooks(), output_positions=(t.shape[1],))
    with pytest.raises(ValueError, match="stop_at_layer"):
        model.forward(t, Hooks(), output_positions=(0,), stop_at_layer=1)
