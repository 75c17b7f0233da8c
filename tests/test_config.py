"""GPTConfig (minillm/model/config.py): defaults, validation with clear messages, and the JSON round
trip. (Its own configs, not the shared ones of tests/helpers.py: these tests are about a config's
fields.)"""

import dataclasses

import pytest

from minillm import GPTConfig

BASE = dict(n_layers=2, d_model=64, n_ctx=32, d_vocab=50, n_heads=4)


def test_defaults_follow_transformerlens():
    cfg = GPTConfig(**BASE)
    assert cfg.d_head == 16 and cfg.d_mlp == 256 and cfg.d_vocab_out == 50
    assert cfg.normalization_type == "LN" and cfg.act_fn == "relu"
    assert abs(cfg.init_range - 0.8 / 64**0.5) < 1e-12
    assert GPTConfig(**BASE, attn_only=True).d_mlp is None


def test_json_round_trip():
    cfg = GPTConfig(**BASE, d_vocab_out=7, act_fn="gelu", normalization_type=None, seed=5)
    assert GPTConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(d_model=0), "d_model must be a positive int"),
        (dict(n_layers=-1), "n_layers"),
        (dict(n_heads=3), "not divisible"),
        (dict(act_fn="swish"), "act_fn"),
        (dict(normalization_type="RMS"), "normalization_type"),
        (dict(positional_embedding_type="rotary"), "positional_embedding_type"),
        (dict(d_vocab=2.5), "d_vocab"),
        (dict(n_ctx=True), "n_ctx"),
        (dict(eps=0.0), "eps"),
        (dict(d_mlp=0), "d_mlp"),
        (dict(attention_rate=1.5), "attention_rate"),
        (dict(attention_rate=True), "attention_rate"),
        (dict(dtype="float64"), "dtype"),
        (dict(attn_implementation="flash"), "attn_implementation"),
    ],
)
def test_invalid_configs_are_refused_with_the_field_named(change, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**BASE, **change})


def test_unknown_fields_in_json_are_refused():
    with pytest.raises(ValueError, match="unknown fields"):
        GPTConfig.from_dict({**BASE, "n_experts": 4})


def test_config_is_frozen():
    cfg = GPTConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 3


def test_from_dict_derives_n_heads_from_d_head_as_transformerlens():
    """HookedTransformerConfig.from_dict takes d_head without n_heads (its n_heads defaults to -1) and
    derives n_heads = d_model // d_head; GPTConfig.from_dict does the same. A d_head that does not
    divide d_model is refused (TransformerLens rounds n_heads down with a logged warning)."""
    without = {k: v for k, v in BASE.items() if k != "n_heads"}
    cfg = GPTConfig.from_dict({**without, "d_head": 8})
    assert (cfg.n_heads, cfg.d_head, cfg.d_model) == (64 // 8, 8, 64)
    assert cfg == GPTConfig(**without, n_heads=8, d_head=8)
    for unset in (-1, None):  # TransformerLens' default, and a to_dict() of a config that left it out
        assert GPTConfig.from_dict({**without, "d_head": 8, "n_heads": unset}) == cfg
    assert GPTConfig.from_dict({**without, "d_head": 8, "n_heads": 4}).n_heads == 4  # given: kept as given
    assert GPTConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="d_head=24"):
        GPTConfig.from_dict({**without, "d_head": 24})  # 64 / 24: TransformerLens would round down to 2 heads
    with pytest.raises(ValueError, match="n_heads"):
        GPTConfig.from_dict(without)  # neither n_heads nor d_head
