"""Weights by name (minillm/model/params.py): state_dict round trips, load_state_dict refuses what does
not fit, model files carry their config, and a stack of seeds unstacks to the models it was made of."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT, CheckpointError
from minillm.model.checkpoint import save_tensors
from minillm.model.params import (
    load_state_dict,
    map_seeds,
    read_model,
    save_model,
    stack_models,
    state_dict,
    unstack_models,
)

CFG = CONFIGS["mlp_ln_gelu"]


def test_state_dict_round_trips_into_a_fresh_model():
    source, target = GPT(CFG, seed=1), GPT(CFG, seed=2)
    load_state_dict(target, state_dict(source))
    for name, value in state_dict(source).items():
        np.testing.assert_array_equal(state_dict(target)[name], value, err_msg=name)


def test_load_state_dict_names_what_is_missing_unexpected_or_misshapen():
    model, weights = GPT(CFG), dict(state_dict(GPT(CFG)))
    with pytest.raises(ValueError, match=r"missing \['embed.W_E'\]"):
        load_state_dict(model, {k: v for k, v in weights.items() if k != "embed.W_E"})
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        load_state_dict(model, {**weights, "extra": jnp.zeros(1)})
    with pytest.raises(ValueError, match=r"unembed.b_U has shape \(3,\)"):
        load_state_dict(model, {**weights, "unembed.b_U": jnp.zeros(3)})
    with pytest.raises(ValueError, match="dtype"):
        load_state_dict(model, {**weights, "unembed.b_U": weights["unembed.b_U"].astype(jnp.float16)})


def test_a_model_file_carries_its_config(tmp_path):
    model = GPT(CFG, seed=5)
    save_model(model, str(tmp_path / "m.safetensors"))
    cfg, weights = read_model(str(tmp_path / "m.safetensors"))
    assert cfg == CFG
    np.testing.assert_array_equal(weights["embed.W_E"], state_dict(model)["embed.W_E"])
    save_tensors(str(tmp_path / "bare.safetensors"), {"x": np.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="no config"):
        read_model(str(tmp_path / "bare.safetensors"))


def test_stack_then_unstack_gives_back_each_model():
    models = [GPT(CFG, seed=s) for s in (0, 1, 2)]
    stacked = stack_models(models)
    assert state_dict(stacked)["embed.W_E"].shape == (3, CFG.d_vocab, CFG.d_model)
    for original, back in zip(models, unstack_models(stacked, 3)):
        tokens = np.array([[1, 2, 3]])
        np.testing.assert_array_equal(back(tokens), original(tokens))


def test_load_seeds_reads_a_multi_seed_run_in_order_of_seed(tmp_path):
    cfg = CONFIGS["attn_only_ln"]
    for seed in (10, 2, 0):
        GPT(cfg, seed=seed).save(str(tmp_path / f"model_seed{seed}.safetensors"))
    (tmp_path / "model.safetensors").write_bytes(b"not a seed file, ignored")
    models = GPT.load_seeds(str(tmp_path))
    assert list(models) == [0, 2, 10]
    for seed, model in models.items():
        np.testing.assert_array_equal(model.state_dict()["embed.W_E"], GPT(cfg, seed=seed).state_dict()["embed.W_E"])
    stacked = stack_models(list(models.values()))
    norms = map_seeds(lambda m: jnp.linalg.norm(m.embed.W_E[...]), stacked)
    assert norms.shape == (3,) and len(set(np.asarray(norms).round(6))) == 3
    with pytest.raises(FileNotFoundError, match="no directory"):
        GPT.load_seeds(str(tmp_path / "nothing_here"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="model_seed"):
        GPT.load_seeds(str(empty))
