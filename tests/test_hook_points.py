"""The catalogue of hook points (hook_names, hook_shape) against the table in CONVENTIONS.md, which
is written out here by hand: the library derives its list from the model, the test from the doc."""

import pytest

from minillm import GPTConfig, hook_names, hook_shape, hook_shapes

DOCUMENTED_BLOCK_HOOKS = {  # from CONVENTIONS.md: suffix -> shape letters
    "hook_resid_pre": "bpd",
    "attn.hook_q": "bphe",
    "attn.hook_k": "bphe",
    "attn.hook_v": "bphe",
    "attn.hook_attn_scores": "bhqk",
    "attn.hook_pattern": "bhqk",
    "attn.hook_z": "bphe",
    "attn.hook_result": "bphd",
    "hook_attn_out": "bpd",
    "hook_resid_post": "bpd",
}
LN_HOOKS = {"ln1.hook_scale": "bp1", "ln1.hook_normalized": "bpd"}
MLP_HOOKS = {"hook_resid_mid": "bpd", "mlp.hook_pre": "bpm", "mlp.hook_post": "bpm", "hook_mlp_out": "bpd"}
LN2_HOOKS = {"ln2.hook_scale": "bp1", "ln2.hook_normalized": "bpd"}


def documented_shapes(cfg, b, p):
    size = {"b": b, "p": p, "q": p, "k": p, "d": cfg.d_model, "h": cfg.n_heads, "e": cfg.d_head, "m": cfg.d_mlp, "1": 1}
    size["v"] = cfg.d_vocab_out
    table = {"hook_embed": "bpd", "hook_pos_embed": "bpd"}
    for l in range(cfg.n_layers):
        per_block = dict(DOCUMENTED_BLOCK_HOOKS)
        if cfg.normalization_type is not None:  # "LN" or "LNPre"
            per_block |= LN_HOOKS
        if not cfg.attn_only:
            per_block |= MLP_HOOKS | (LN2_HOOKS if cfg.normalization_type is not None else {})
        table |= {f"blocks.{l}.{k}": v for k, v in per_block.items()}
    if cfg.normalization_type is not None:
        table |= {"ln_final.hook_scale": "bp1", "ln_final.hook_normalized": "bpd"}
    table |= {"unembed.hook_in": "bpd", "unembed.hook_out": "bpv"}  # TransformerLens 3.x's, not yet in the table
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


def test_hook_names_follow_the_config_not_a_fixed_list():
    base = dict(n_layers=3, d_model=16, n_ctx=4, d_vocab=5, n_heads=2)
    full = hook_names(GPTConfig(**base))
    assert len(hook_names(GPTConfig(**{**base, "n_layers": 1}))) < len(full)
    assert not any("mlp" in n or "resid_mid" in n for n in hook_names(GPTConfig(**base, attn_only=True)))
    assert not any(
        ".ln" in n or n.startswith("ln_final") for n in hook_names(GPTConfig(**base, normalization_type=None))
    )
    assert hook_shapes(GPTConfig(**base), 2, 3)["blocks.2.mlp.hook_post"] == (2, 3, 64)


def test_hook_shape_of_an_unknown_name_names_the_nearest():
    with pytest.raises(KeyError, match="blocks.0.hook_resid_pre"):
        hook_shape(GPTConfig(n_layers=1, d_model=16, n_ctx=4, d_vocab=5, n_heads=2), "blocks.0.hook_resid_pr", 1, 2)
