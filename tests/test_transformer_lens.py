"""Weights to and from TransformerLens without torch (minillm/model/transformer_lens.py, GPT.to_ and
GPT.from_transformer_lens): the round trip, its buffers dropped, files,
tensor-like objects, and every config option that would change the numbers refused by name.
(The cross-library check against TransformerLens itself is bench/tl_suite.py.)"""

import dataclasses

import numpy as np
import pytest
import safetensors.numpy
from helpers import CONFIGS

from minillm import GPT
from minillm.model.transformer_lens import config_from_transformer_lens


class FakeTensor:
    """What the conversion uses of a torch tensor: detach().cpu().numpy()."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_round_trip_through_transformer_lens_form(model, cfg, tokens, tmp_path):
    weights, tl_cfg = model.to_transformer_lens()
    assert set(weights) == set(model.state_dict()) and tl_cfg["n_layers"] == cfg.n_layers
    with_buffers = {k: FakeTensor(v) for k, v in weights.items()}
    for l in range(cfg.n_layers):  # TransformerLens' own buffers are dropped
        with_buffers[f"blocks.{l}.attn.IGNORE"] = FakeTensor(-1e5)
        with_buffers[f"blocks.{l}.attn.mask"] = FakeTensor(np.tril(np.ones((cfg.n_ctx, cfg.n_ctx), bool)))
    back = GPT.from_transformer_lens(
        with_buffers, {**tl_cfg, "d_vocab_out": -1 if cfg.d_vocab_out == cfg.d_vocab else cfg.d_vocab_out}
    )
    np.testing.assert_array_equal(back(tokens), model(tokens))
    path = str(tmp_path / "tl.safetensors")
    safetensors.numpy.save_file(weights, path)  # a plain safetensors file, as TransformerLens users save
    np.testing.assert_array_equal(GPT.from_transformer_lens(path, tl_cfg)(tokens), model(tokens))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(act_fn="gelu_fast"), "act_fn"),
        (dict(positional_embedding_type="rotary"), "positional_embedding_type"),
        (dict(normalization_type="RMS"), "normalization_type"),
        (dict(attn_scale=2.0), "attn_scale"),
        (dict(gated_mlp=True), "gated_mlp"),
        (dict(n_key_value_heads=2), "n_key_value_heads"),
        (dict(use_local_attn=True), "use_local_attn"),
        (dict(parallel_attn_mlp=True), "parallel_attn_mlp"),
    ],
)
def test_options_that_change_the_numbers_are_refused_by_name(change, match):
    base = GPT(CONFIGS["mlp_ln_gelu"]).to_transformer_lens()[1]
    with pytest.raises(ValueError, match=match):
        config_from_transformer_lens({**base, **change})


def test_a_model_transformer_lens_cannot_express_is_refused_and_bad_files_are_named(tmp_path):
    cfg = CONFIGS["mlp_ln_gelu"]
    with pytest.raises(ValueError, match="attention_rate"):
        GPT(dataclasses.replace(cfg, attention_rate=0.0)).to_transformer_lens()
    with pytest.raises(ValueError, match="bfloat16"):
        GPT(dataclasses.replace(cfg, dtype="bfloat16")).to_transformer_lens()
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x80\x04not safetensors")  # e.g. a pickle: never unpickled
    with pytest.raises(ValueError, match="safetensors"):
        GPT.from_transformer_lens(str(bad), GPT(cfg).to_transformer_lens()[1])


def test_n_heads_not_given_is_derived_from_d_head_as_transformer_lens_does():
    """HookedTransformerConfig's default n_heads is -1, meaning d_model // d_head; leaving it out means
    the same. A d_head that does not divide d_model is refused, as TransformerLens refuses it."""
    base = GPT(CONFIGS["mlp_ln_gelu"]).to_transformer_lens()[1]
    want = config_from_transformer_lens(base)
    assert want.n_heads == base["d_model"] // base["d_head"]
    without = {k: v for k, v in base.items() if k != "n_heads"}
    for given in (without, {**without, "n_heads": -1}, {**without, "n_heads": None}):
        assert config_from_transformer_lens(given) == want
    with pytest.raises(ValueError, match="d_head=5"):
        config_from_transformer_lens({**without, "d_head": 5})  # d_model 32
    odd = GPT(CONFIGS["mlp_noln_relu"]).to_transformer_lens()[1]  # d_head * n_heads != d_model: n_heads kept
    assert config_from_transformer_lens(odd).n_heads == CONFIGS["mlp_noln_relu"].n_heads
