"""The forward pass: hook points and shapes, a recomputation by hand from the weights, causality,
jit equivalence, generation, and the errors that guard the input boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, random_tokens

from minillm import GPT, GPTConfig, hook_names, hook_shape

DOCUMENTED_BLOCK_HOOKS = {  # from CONVENTIONS.md: suffix -> shape letters
    "hook_resid_pre": "bpd", "attn.hook_q": "bphe", "attn.hook_k": "bphe", "attn.hook_v": "bphe",
    "attn.hook_attn_scores": "bhqk", "attn.hook_pattern": "bhqk", "attn.hook_z": "bphe",
    "attn.hook_result": "bphd", "hook_attn_out": "bpd", "hook_resid_post": "bpd",
}
LN_HOOKS = {"ln1.hook_scale": "bp1", "ln1.hook_normalized": "bpd"}
MLP_HOOKS = {"hook_resid_mid": "bpd", "mlp.hook_pre": "bpm", "mlp.hook_post": "bpm", "hook_mlp_out": "bpd"}
LN2_HOOKS = {"ln2.hook_scale": "bp1", "ln2.hook_normalized": "bpd"}


def documented_shapes(cfg, b, p):
    size = {"b": b, "p": p, "q": p, "k": p, "d": cfg.d_model, "h": cfg.n_heads, "e": cfg.d_head,
            "m": cfg.d_mlp, "1": 1}
    table = {"hook_embed": "bpd", "hook_pos_embed": "bpd"}
    for l in range(cfg.n_layers):
        per_block = dict(DOCUMENTED_BLOCK_HOOKS)
        if cfg.normalization_type == "LN":
            per_block |= LN_HOOKS
        if not cfg.attn_only:
            per_block |= MLP_HOOKS | (LN2_HOOKS if cfg.normalization_type == "LN" else {})
        table |= {f"blocks.{l}.{k}": v for k, v in per_block.items()}
    if cfg.normalization_type == "LN":
        table |= {"ln_final.hook_scale": "bp1", "ln_final.hook_normalized": "bpd"}
    return {name: tuple(size[c] for c in letters) for name, letters in table.items()}


def test_full_cache_has_every_documented_hook_with_its_shape(model, cfg, tokens):
    logits, cache = model.run_with_cache(tokens)
    expected = documented_shapes(cfg, *tokens.shape)
    assert set(cache.keys()) == set(expected) == set(hook_names(cfg))
    for name, shape in expected.items():
        assert cache[name].shape == shape, name
        assert hook_shape(cfg, name, *tokens.shape) == shape, name
    assert logits.shape == (*tokens.shape, cfg.d_vocab_out)
    # the forward pass reaches the hooks in the documented order
    assert list(cache.keys()) == hook_names(cfg)


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
        np.testing.assert_allclose(c[f"{b}.hook_attn_out"],
                                   c[f"{b}.attn.hook_result"].sum(2) + W[f"{b}.attn.b_O"], atol=atol)
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


def test_run_with_cache_logits_equal_plain_call_bit_for_bit(model, tokens):
    logits, _ = model.run_with_cache(tokens)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(model(tokens)))


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
    with pytest.raises(KeyError, match="hook_embed"):  # not reached when starting at layer 1
        model.run_with_hooks(resid, [("hook_embed", lambda x, hook: x)], start_at_layer=1)


def test_generate_greedy_matches_argmax_step_by_step(model, cfg):
    if cfg.d_vocab_out > cfg.d_vocab:
        pytest.skip("outputs are not inputs")
    prompt = random_tokens(cfg, batch=2, pos=3)
    out = np.asarray(model.generate(prompt, 4, temperature=0))
    assert out.shape == (2, 7)
    np.testing.assert_array_equal(out[:, :3], prompt)
    seq = prompt
    for _ in range(4):
        nxt = np.asarray(model(seq))[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None].astype(np.int32)], axis=1)
    np.testing.assert_array_equal(out, seq)
    sampled = model.generate(prompt, 4, key=jax.random.key(0), temperature=1.0)
    new = np.asarray(sampled)[:, 3:]
    assert new.shape == (2, 4) and np.all((new >= 0) & (new < cfg.d_vocab_out))
    with pytest.raises(ValueError, match="n_ctx"):
        model.generate(prompt, cfg.n_ctx, temperature=0)
    with pytest.raises(ValueError, match="key"):
        model.generate(prompt, 2, temperature=1.0)


# --- errors at the boundary -----------------------------------------------------------------
CFG = CONFIGS["mlp_ln_gelu"]


@pytest.fixture(scope="module")
def small():
    return GPT(CFG)


@pytest.mark.parametrize("bad, error, match", [
    (np.array([[1, 2, CFG.d_vocab]]), ValueError, r"token id 23 .* outside \[0, d_vocab=23\)"),
    (np.array([[1, -1, 2]]), ValueError, r"token id -1"),
    (np.array([[1.0, 2.0]], np.float32), TypeError, "integer"),
    (np.array([[True, False]]), TypeError, "integer"),
    (np.zeros((1, CFG.n_ctx + 1), np.int32), ValueError, "n_ctx=12"),
    (np.array([1, 2, 3]), ValueError, r"tokens\[None\]"),
    (np.zeros((2, 3, 4), np.int32), ValueError, r"\[batch, pos\]"),
    (np.zeros((1, 0), np.int32), ValueError, "sequence length 0"),
])
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
