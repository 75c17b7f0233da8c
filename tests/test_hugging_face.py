"""GPT.from_pretrained (minillm/model/hugging_face.py): GPT-2 directories written by the test load and
compute what an independent NumPy pass over Hugging Face's tensors computes; every bad directory is
refused with a message that names the problem; nothing is downloaded or unpickled."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from hf_files import config, random_weights, write_gpt2
from reference import gpt2_forward

from minillm import GPT, CheckpointError
from minillm import weight_processing as WP
from minillm.model import hugging_face

TOKENS = np.array([[5, 17, 200, 3, 99, 42, 7, 7, 250, 1], [299, 0, 12, 12, 12, 150, 8, 64, 33, 2]])


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gpt2"))
    cfg, tensors = write_gpt2(path, tokenizer=False)
    return path, cfg, tensors


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_unprocessed_weights_give_hugging_faces_numbers(gpt2_dir):
    path, cfg, tensors = gpt2_dir
    model = GPT.from_pretrained_no_processing(path)
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads, model.cfg.d_mlp) == (2, 32, 4, 128)
    assert model.cfg.act_fn == "gelu_new" and model.cfg.n_ctx == 24 and model.cfg.eps == 1e-5
    ref_logits, ref = gpt2_forward(tensors, cfg, TOKENS)
    logits, cache = model.run_with_cache(TOKENS)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for l in range(2):  # the residual stream and the attention pattern, layer by layer
        np.testing.assert_allclose(cache["resid_post", l], ref[f"hidden.{l}"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cache["pattern", l], ref[f"attn.{l}"], rtol=1e-5, atol=1e-6)
    # the split of the fused c_attn: head 1's query weights are columns 8..16 of its first third
    np.testing.assert_array_equal(model.W_Q[0, 1], tensors["transformer.h.0.attn.c_attn.weight"][:, 8:16])
    np.testing.assert_array_equal(model.W_V[1, 3], tensors["transformer.h.1.attn.c_attn.weight"][:, 64 + 24 : 64 + 32])
    np.testing.assert_array_equal(model.W_U, tensors["transformer.wte.weight"].T)  # tied


def test_processing_is_transformer_lens_default_and_keeps_log_probs(gpt2_dir):
    path, cfg, tensors = gpt2_dir
    processed = GPT.from_pretrained(path)  # fold_ln, center_writing_weights, center_unembed, fold_value_biases
    raw = GPT.from_pretrained_no_processing(path)
    np.testing.assert_allclose(
        log_softmax(np.asarray(processed(TOKENS), np.float64)),
        log_softmax(gpt2_forward(tensors, cfg, TOKENS)[0]),
        atol=2e-5,
    )
    assert np.allclose(processed.blocks[0].ln1.w[...], 1) and np.allclose(processed.blocks[0].attn.b_V[...], 0)
    # the same weights as processing the raw model with minillm.weight_processing
    for name, w in WP.process_weights(raw).state_dict().items():
        np.testing.assert_allclose(processed.state_dict()[name], w, rtol=1e-6, atol=1e-6, err_msg=name)


def test_layouts_save_pretrained_and_hub_write(tmp_path):
    """The Hub's gpt2 files have no "transformer." prefix and keep the causal-mask buffers; a model
    with untied embeddings stores lm_head.weight; big models come in shards with an index."""
    cfg = config(n_layer=1, tie_word_embeddings=False)
    tensors = random_weights(cfg, seed=1, prefix="")
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), np.float32))  # a buffer, skipped
    tensors["lm_head.weight"] = np.random.default_rng(2).standard_normal((300, 32)).astype(np.float32)
    write_gpt2(str(tmp_path / "hub"), cfg, tensors, tokenizer=False)
    model = GPT.from_pretrained_no_processing(str(tmp_path / "hub"))
    np.testing.assert_allclose(model(TOKENS), gpt2_forward(tensors, cfg, TOKENS)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.W_U, tensors["lm_head.weight"].T)

    sharded = tmp_path / "sharded"  # two shards and model.safetensors.index.json
    sharded.mkdir()
    shutil.copy(tmp_path / "hub" / "config.json", sharded)
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in parts.items():
        safetensors.numpy.save_file({k: tensors[k] for k in keys}, str(sharded / file))
    index = {"weight_map": {k: file for file, keys in parts.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(GPT.from_pretrained_no_processing(str(sharded))(TOKENS), model(TOKENS))

    # the index is a file from outside too: every way it can be wrong is one CheckpointError
    outside = tmp_path / "outside.safetensors"  # a valid file the index must not be able to reach
    shutil.copy(sharded / "model-00001-of-00002.safetensors", outside)
    for bad in [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"weight_map": []}',
        b'{"weight_map": {}}',
        b'{"metadata": {}}',
        json.dumps({"weight_map": {names[0]: 3}}).encode(),
        json.dumps({"weight_map": {names[0]: "../outside.safetensors"}}).encode(),
        json.dumps({"weight_map": {names[0]: str(outside)}}).encode(),
        json.dumps({"weight_map": {names[0]: ".."}}).encode(),
        json.dumps({"weight_map": {names[0]: "model-00001-of-00002.bin"}}).encode(),
        b"[" * 100_000,
    ]:
        (sharded / "model.safetensors.index.json").write_bytes(bad)
        with pytest.raises(CheckpointError):
            GPT.from_pretrained_no_processing(str(sharded))


def test_bfloat16_stores_bfloat16_weights_unless_float32_weights(gpt2_dir):
    path, cfg, tensors = gpt2_dir
    half = GPT.from_pretrained_no_processing(path, dtype="bfloat16")
    assert {w.dtype for w in half.state_dict().values()} == {jnp.dtype("bfloat16")}
    master = GPT.from_pretrained_no_processing(path, dtype=jnp.bfloat16, float32_weights=True)
    assert {w.dtype for w in master.state_dict().values()} == {jnp.dtype("float32")}
    ref = gpt2_forward(tensors, cfg, TOKENS)[0]
    for model in (half, master):
        assert model.cfg.dtype == "bfloat16"
        logits = np.asarray(model(TOKENS), np.float64)
        assert np.abs(logits - ref).max() < 0.05 * np.abs(ref).max()  # bfloat16 precision
    # a bfloat16 model saves and loads as it is
    half.save(os.path.join(os.path.dirname(path), "half.safetensors"))
    back = GPT.load(os.path.join(os.path.dirname(path), "half.safetensors"))
    np.testing.assert_array_equal(back(TOKENS), half(TOKENS))
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT.from_pretrained(path, dtype="int8")


def test_tokenizer_is_attached_when_the_directory_has_one(tmp_path):
    write_gpt2(str(tmp_path), config(n_layer=1), tokenizer=True)
    model = GPT.from_pretrained(str(tmp_path))
    assert model.tokenizer is not None and model.tokenizer.bos_token == "<|endoftext|>"
    assert model.to_str_tokens("the fox")[0] == "<|endoftext|>"
    os.remove(tmp_path / "tokenizer.json")
    without = GPT.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="to_str_tokens: this model has no tokenizer"):
        without.to_str_tokens("the fox")
    without.tokenizer = model.tokenizer  # or minillm.Tokenizer.from_directory(path)
    assert without.to_single_token(" the") == model.to_single_token(" the")


def _broken(tmp_path, change_config=None, change_tensors=None, name="m"):
    cfg, tensors = config(n_layer=1), random_weights(config(n_layer=1))
    cfg = change_config(cfg) if change_config else cfg
    tensors = change_tensors(tensors) if change_tensors else tensors
    path = str(tmp_path / name)
    write_gpt2(path, cfg, tensors, tokenizer=False)
    return path


@pytest.mark.parametrize(
    "change_config, change_tensors, error, match",
    [
        (lambda c: {**c, "model_type": "llama"}, None, ValueError, "GPT-2 architecture only"),
        (lambda c: {**c, "architectures": ["GPT2ForSequenceClassification"]}, None, ValueError, "not a language model"),
        (lambda c: {**c, "scale_attn_by_inverse_layer_idx": True}, None, ValueError, "scale_attn_by_inverse_layer_idx"),
        (lambda c: {**c, "activation_function": "silu"}, None, ValueError, "activation_function='silu'"),
        (
            lambda c: {**c, "n_embd": 48},
            None,
            ValueError,
            r"wte.weight has shape \(300, 32\), config.json implies \(300, 48\)",
        ),
        (
            None,
            lambda t: {k: v for k, v in t.items() if "c_fc.bias" not in k},
            ValueError,
            r"missing \['h.0.mlp.c_fc.bias'\]",
        ),
        (
            None,
            lambda t: {**t, "score.weight": np.zeros((2, 32), np.float32)},
            ValueError,
            r"unexpected \['score.weight'\]",
        ),
        (lambda c: {**c, "tie_word_embeddings": False}, None, ValueError, "no lm_head.weight"),
    ],
)
def test_bad_directories_are_refused_by_name(tmp_path, change_config, change_tensors, error, match):
    with pytest.raises(error, match=match):
        GPT.from_pretrained(_broken(tmp_path, change_config, change_tensors))


def test_missing_files_pickles_and_damage_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory.*never downloads"):
        GPT.from_pretrained("gpt2")  # a Hub name: no download, the command to fetch the files instead
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        GPT.from_pretrained(str(tmp_path / "empty"))
    path = _broken(tmp_path)
    os.rename(os.path.join(path, "model.safetensors"), os.path.join(path, "pytorch_model.bin"))
    with pytest.raises(ValueError, match="pickle.*never unpickles.*model.safetensors"):
        GPT.from_pretrained(path)
    os.remove(os.path.join(path, "pytorch_model.bin"))
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        GPT.from_pretrained(path)
    path = _broken(tmp_path, name="truncated")
    file = os.path.join(path, "model.safetensors")
    data = open(file, "rb").read()
    open(file, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        GPT.from_pretrained(path)


def test_config_mapping_reads_gpt2_fields():
    cfg = hugging_face.config_from_hugging_face(
        {
            "n_embd": 64,
            "n_head": 8,
            "n_layer": 3,
            "n_ctx": 40,
            "vocab_size": 11,
            "n_inner": 100,
            "layer_norm_epsilon": 1e-6,
        }
    )
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_layers, cfg.n_ctx, cfg.d_mlp, cfg.eps) == (
        64,
        8,
        8,
        3,
        40,
        100,
        1e-6,
    )
    assert cfg.act_fn == "gelu_new" and cfg.normalization_type == "LN" and cfg.d_vocab_out == 11
