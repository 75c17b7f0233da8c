"""Weights on disk (minillm/model/checkpoint.py, GPT.save and GPT.load): bit-identical round trips,
atomic writes, and refusal of files that cannot be trusted."""

import dataclasses
import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy

from minillm import GPT, CheckpointError, GPTConfig
from minillm.model.checkpoint import load_tensors, save_tensors


def test_save_then_load_gives_bit_identical_weights_and_logits(model, cfg, tokens, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(str(path))
    loaded = GPT.load(str(path))
    assert loaded.cfg == cfg
    original, restored = model.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for name in original:
        np.testing.assert_array_equal(np.asarray(restored[name]), np.asarray(original[name]), err_msg=name)
    np.testing.assert_array_equal(np.asarray(loaded(tokens)), np.asarray(model(tokens)))


def test_loading_keeps_trained_weights_not_the_seeded_init(configs, tmp_path):
    cfg = configs["attn_only_ln"]
    model = GPT(cfg)
    weights = {k: np.asarray(v) + 1.0 for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    model.save(str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(
        GPT.load(str(tmp_path / "m.safetensors")).state_dict()["embed.W_E"], weights["embed.W_E"]
    )


@pytest.fixture
def saved(configs, tmp_path):
    model = GPT(configs["mlp_ln_gelu"])
    path = tmp_path / "model.safetensors"
    model.save(str(path))
    return model, path


def test_truncated_checkpoint_is_refused(saved):
    _, path = saved
    data = path.read_bytes()
    for keep in (4, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="truncated"):
            GPT.load(str(path))


def test_corrupt_bytes_are_caught_by_the_digest(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        GPT.load(str(path))


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path):
    model, _ = saved
    weights = {k: np.asarray(v) for k, v in model.state_dict().items()}
    other = dataclasses.replace(model.cfg, d_mlp=2 * model.cfg.d_mlp)
    path = tmp_path / "mismatch.safetensors"
    save_tensors(str(path), weights, {"kind": "model", "config": other.to_json()})
    with pytest.raises(CheckpointError, match=r"does not match its config.*blocks\.0\.mlp\.W_in"):
        GPT.load(str(path))
    del weights["unembed.b_U"]
    save_tensors(str(path), weights, {"kind": "model", "config": model.cfg.to_json()})
    with pytest.raises(CheckpointError, match=r"missing \['unembed\.b_U'\]"):
        GPT.load(str(path))


def test_foreign_or_configless_files_are_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"x": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="not a minillm checkpoint"):
        GPT.load(str(path))
    save_tensors(str(path), {"x": np.zeros(3, np.float32)}, {"kind": "model"})
    with pytest.raises(CheckpointError, match="no config"):
        GPT.load(str(path))
    with pytest.raises(FileNotFoundError):
        GPT.load(str(tmp_path / "absent.safetensors"))


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        GPT(dataclasses.replace(model.cfg, seed=99)).save(str(path))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    GPT.load(str(path))


def test_loading_runs_no_code_the_header_is_plain_json(saved):
    model, path = saved
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["format"] == "minillm" and GPTConfig.from_json(meta["config"]) == model.cfg
    tensors, metadata = load_tensors(str(path))
    assert all(isinstance(v, np.ndarray) for v in tensors.values())


def test_scalars_and_integer_tensors_keep_their_shape_and_dtype(tmp_path):
    tensors = {"step": np.array(7, np.int32), "key": np.arange(4, dtype=np.uint32), "w": np.ones((2, 3), np.float32)}
    save_tensors(str(tmp_path / "t.safetensors"), tensors, {"kind": "other"})
    loaded, meta = load_tensors(str(tmp_path / "t.safetensors"))
    for k, v in tensors.items():
        assert loaded[k].shape == v.shape and loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)
    assert meta["kind"] == "other"
