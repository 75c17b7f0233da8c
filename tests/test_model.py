"""The forward pass: a recomputation by hand from the weights, causality, jit equivalence, seeds,
TransformerLens' weight names, and start/stop at a layer. (Hook names: test_hook_points.py; sampling:
test_sampling.py; input checks: test_inputs.py.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, random_tokens
from flax import nnx

from minillm import GPT
from minillm.model.hooks import Hooks
from minillm.model.losses import cross_entropy, loss_fn
from minillm.tasks import Batch


def _layer_norm(x, w, b, eps):
    x = x - x.mean(-1, keepdims=True)
    scale = np.sqrt((x**2).mean(-1, keepdims=True) + eps)
    return x / scale * w + b, scale


def test_forward_recomputed_by_hand_from_state_dict(model, cfg, tokens):
    """Rebuild every stage with numpy from the weights and check it against the cache."""
    W = {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}
    logits, cache = model.run_with_cache(tokens)
    c = {k: np.asarray(v, np.float64) for k, v in cache.items()}
    atol = 2e-5
    n_pos = tokens.shape[1]
    resid = W["embed.W_E"][tokens] + W["pos_embed.W_pos"][:n_pos]
    np.testing.assert_allclose(c["hook_embed"] + c["hook_pos_embed"], resid, atol=atol)
    running_sum = c["hook_embed"] + c["hook_pos_embed"]
    for l in range(cfg.n_layers):
        b = f"blocks.{l}"
        np.testing.assert_allclose(c[f"{b}.hook_resid_pre"], resid, atol=atol)
        x = resid
        if cfg.normalization_type == "LN":
            x, scale = _layer_norm(resid, W[f"{b}.ln1.w"], W[f"{b}.ln1.b"], cfg.eps)
            np.testing.assert_allclose(c[f"{b}.ln1.hook_scale"], scale, rtol=1e-5)
        q = np.einsum("bpd,hde->bphe", x, W[f"{b}.attn.W_Q"]) + W[f"{b}.attn.b_Q"]
        k = np.einsum("bpd,hde->bphe", x, W[f"{b}.attn.W_K"]) + W[f"{b}.attn.b_K"]
        v = np.einsum("bpd,hde->bphe", x, W[f"{b}.attn.W_V"]) + W[f"{b}.attn.b_V"]
        np.testing.assert_allclose(c[f"{b}.attn.hook_q"], q, atol=atol)
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(cfg.d_head)
        scores = np.where(np.tril(np.ones((n_pos, n_pos), bool)), scores, -np.inf)
        pattern = np.exp(scores - scores.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        cached_pattern = c[f"{b}.attn.hook_pattern"]
        np.testing.assert_allclose(cached_pattern, pattern, atol=atol)
        np.testing.assert_allclose(cached_pattern.sum(-1), 1.0, atol=1e-5)  # rows sum to 1
        assert np.all(cached_pattern[..., np.triu_indices(n_pos, 1)[0], np.triu_indices(n_pos, 1)[1]] == 0)
        z = np.einsum("bhqk,bkhe->bqhe", pattern, v)
        np.testing.assert_allclose(c[f"{b}.attn.hook_z"], z, atol=atol)
        result = np.einsum("bqhe,hed->bqhd", z, W[f"{b}.attn.W_O"])
        np.testing.assert_allclose(c[f"{b}.attn.hook_result"], result, atol=atol)
        # attn_out = sum over heads of hook_result + b_O
        np.testing.assert_allclose(
            c[f"{b}.hook_attn_out"], c[f"{b}.attn.hook_result"].sum(2) + W[f"{b}.attn.b_O"], atol=atol
        )
        resid = resid + result.sum(2) + W[f"{b}.attn.b_O"]
        running_sum = running_sum + c[f"{b}.hook_attn_out"]
        if not cfg.attn_only:
            np.testing.assert_allclose(c[f"{b}.hook_resid_mid"], resid, atol=atol)
            x = resid
            if cfg.normalization_type == "LN":
                x, _ = _layer_norm(resid, W[f"{b}.ln2.w"], W[f"{b}.ln2.b"], cfg.eps)
            pre = x @ W[f"{b}.mlp.W_in"] + W[f"{b}.mlp.b_in"]
            if cfg.act_fn == "relu":
                post = np.maximum(pre, 0)
            else:
                from math import erf

                post = pre * 0.5 * (1 + np.vectorize(erf)(pre / np.sqrt(2)))
            np.testing.assert_allclose(c[f"{b}.mlp.hook_post"], post, atol=atol)
            resid = resid + post @ W[f"{b}.mlp.W_out"] + W[f"{b}.mlp.b_out"]
            running_sum = running_sum + c[f"{b}.hook_mlp_out"]
        # residual = embed + pos + sum of every attn_out and mlp_out so far
        np.testing.assert_allclose(c[f"{b}.hook_resid_post"], running_sum, atol=atol)
        np.testing.assert_allclose(c[f"{b}.hook_resid_post"], resid, atol=atol)
    if cfg.normalization_type == "LN":
        resid, _ = _layer_norm(resid, W["ln_final.w"], W["ln_final.b"], cfg.eps)
    expected_logits = resid @ W["unembed.W_U"] + W["unembed.b_U"]
    np.testing.assert_allclose(np.asarray(logits), expected_logits, atol=5e-5)


def test_changing_a_later_token_never_changes_earlier_logits(model, cfg):
    tokens = random_tokens(cfg, batch=2, pos=cfg.n_ctx)
    base = np.asarray(model(tokens))
    for t in (0, 4, cfg.n_ctx - 1):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % cfg.d_vocab
        out = np.asarray(model(changed))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert not np.allclose(out[:, t], base[:, t])  # and the changed position does change


def test_jit_and_eager_agree_on_logits_and_cache(model, tokens):
    eager_logits, eager_cache = model.run_with_cache(tokens)
    jit_logits, jit_cache = jax.jit(lambda m, t: m.run_with_cache(t))(model, tokens)
    np.testing.assert_allclose(jit_logits, eager_logits, atol=1e-5, rtol=1e-5)
    assert set(jit_cache.keys()) == set(eager_cache.keys())
    for name in eager_cache:
        np.testing.assert_allclose(jit_cache[name], eager_cache[name], atol=1e-5, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(jax.jit(lambda m, t: m(t))(model, tokens), eager_logits, atol=1e-5, rtol=1e-5)


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


def test_lnpre_is_layernorm_without_weights(cfg, tokens):
    """normalization_type="LNPre" (TransformerLens' LayerNormPre): the LayerNorms have no w and b,
    and the model equals the "LN" model with w = 1 and b = 0 (its initial values)."""
    if cfg.normalization_type is None:
        return
    pre = GPT(dataclasses.replace(cfg, normalization_type="LNPre"))
    ln = GPT(cfg)  # same seed: same other weights, and LN starts at w = 1, b = 0
    assert not any(name.endswith((".w", ".b")) for name in pre.state_dict())
    np.testing.assert_allclose(pre(tokens), ln(tokens), atol=1e-6)
    _, cache = pre.run_with_cache(tokens)
    assert "blocks.0.ln1.hook_scale" in cache and "ln_final.hook_normalized" in cache


def test_attention_mask_hides_padding_keys(model, cfg, tokens):
    """attention_mask [b, p] with 0 at padding: no query attends to a padding key, so what a padding
    token is does not matter to the real ones; padding queries that see nothing attend to nothing."""
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
    with pytest.raises(ValueError, match="attention_mask"):
        model(tokens, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match="only 0"):
        model(tokens, attention_mask=mask * 2)


# --- precision (cfg.dtype) -----------------------------------------------------------------------
def test_bfloat16_forward_matches_float32_within_its_precision(cfg, tokens):
    """The same float32 weights computed in bfloat16 (8 bits of mantissa): the logits agree to a
    few percent of their scale; the weights stay float32, the softmax and the logits are float32."""
    exact = GPT(cfg)
    half = GPT(dataclasses.replace(cfg, dtype="bfloat16"))
    for k, v in half.state_dict().items():
        assert v.dtype == jnp.float32, k
        np.testing.assert_array_equal(v, exact.state_dict()[k])
    logits, cache = half.run_with_cache(tokens)
    reference = np.asarray(exact(tokens))
    assert logits.dtype == jnp.float32
    error = np.abs(np.asarray(logits) - reference).max()
    assert error < 0.03 * np.abs(reference).max() + 1e-2, error
    assert cache["resid_post", 0].dtype == jnp.bfloat16
    assert cache["pattern", 0].dtype == jnp.float32 and cache["attn_scores", 0].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cache["pattern", 0]).sum(-1), 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="dtype"):  # a hook must keep the activation's dtype
        half.run_with_hooks(tokens, [("blocks.0.hook_resid_pre", lambda x, hook: x.astype(jnp.float32))])


@pytest.mark.parametrize("name", ["mlp_ln_gelu", "attn_only_noln"])  # with and without LayerNorm and MLP
def test_bfloat16_gradients_are_float32_and_close(name):
    cfg = CONFIGS[name]
    grad = nnx.jit(nnx.grad(_next_token_loss(cfg, random_tokens(cfg))))
    g32 = jax.tree.leaves(nnx.state(grad(GPT(cfg))))
    g16 = jax.tree.leaves(nnx.state(grad(GPT(dataclasses.replace(cfg, dtype="bfloat16")))))
    assert all(g.dtype == jnp.float32 for g in g16)
    a, b = (np.concatenate([np.ravel(g) for g in gs]) for gs in (g32, g16))
    assert np.linalg.norm(a - b) < 0.05 * np.linalg.norm(a), np.linalg.norm(a - b) / np.linalg.norm(a)


def _next_token_loss(cfg, tokens):
    """A next-token loss for any config (targets folded into d_vocab_out)."""
    t = jnp.asarray(tokens)
    return lambda model: cross_entropy(model(t)[:, :-1], t[:, 1:] % cfg.d_vocab_out).mean()


def test_unknown_dtype_is_refused(cfg):
    with pytest.raises(ValueError, match="dtype"):
        dataclasses.replace(cfg, dtype="float64")
    with pytest.raises(ValueError, match="attn_implementation"):
        dataclasses.replace(cfg, attn_implementation="flash")


# --- the fused attention path --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp_ln_gelu", "attn_only_noln"])
def test_fused_attention_gives_the_same_logits_and_gradients(name):
    """attn_implementation="fused" (jax.nn.dot_product_attention, no pattern materialised) against
    the exact path: same logits and gradients up to rounding; a call that caches or hooks the
    pattern still gets it (that call takes the exact path)."""
    cfg, tokens = CONFIGS[name], random_tokens(CONFIGS[name])
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
    _, reference = exact.run_with_cache(t, names_filter=lambda n: n.endswith("hook_pattern"))
    for name in reference:
        np.testing.assert_allclose(cache[name], reference[name], atol=1e-6)
    zeroed = fused.run_with_hooks(t, [("blocks.0.attn.hook_pattern", lambda x, hook: jnp.zeros_like(x))])
    assert np.abs(np.asarray(zeroed) - np.asarray(fused(t))).max() > 1e-4  # the hook ran


def test_auto_attention_is_exact_on_the_cpu(cfg, tokens):
    if jax.default_backend() != "cpu":
        pytest.skip("on a GPU, auto is the fused path")
    model = GPT(cfg)  # attn_implementation="auto"
    t = jnp.asarray(tokens)
    np.testing.assert_array_equal(model.forward(t, Hooks()), model.run_with_hooks(t, [("hook_embed", lambda x, h: x)]))


# --- logits at chosen positions only -------------------------------------------------------------
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
