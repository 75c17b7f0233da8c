"""Training checkpoints (minillm/training/state.py): model, optimizer state, data keys and step come
back exactly, and a file made by another run (config, task, seeds or training config) is refused
with the field named."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import modular_config

from minillm import CheckpointError
from minillm.tasks import make_task
from minillm.training.optim import TrainConfig, make_optimizer
from minillm.training.state import load_train_state, run_spec, save_train_state
from minillm.training.step import init_train_state

CFG = modular_config(11)  # fits TASK: its vocabulary and three positions
TASK = make_task("modular_arithmetic", p=11, frac_train=0.5)
TC = TrainConfig(steps=10, lr=1e-2)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_train_state_comes_back_exactly(tmp_path):
    optimizer = make_optimizer(TC)
    model, opt_state, keys = init_train_state(CFG, optimizer, seeds=[0, 1])
    spec = run_spec(CFG, TASK, TC, [0, 1])
    path = str(tmp_path / "state.safetensors")
    save_train_state(path, model, opt_state, keys, 7, 1.5, spec)
    template = init_train_state(CFG, optimizer, seeds=[5, 6])  # other values, same structure
    got_model, got_opt, got_keys, step, elapsed = load_train_state(path, template[0], template[1], spec)
    assert (step, elapsed) == (7, 1.5)
    for a, b in zip(leaves((got_model, got_opt)), leaves((model, opt_state))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(got_keys), jax.random.key_data(keys))


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda: run_spec(dataclasses.replace(CFG, d_mlp=2 * CFG.d_mlp), TASK, TC, None), "config"),
        (lambda: run_spec(CFG, make_task("modular_arithmetic", p=11, frac_train=0.6), TC, None), "task"),
        (lambda: run_spec(CFG, TASK, TC, [0]), "seeds"),
        (lambda: run_spec(CFG, TASK, dataclasses.replace(TC, lr=1e-3), None), "lr"),
    ],
)
def test_a_state_from_another_run_is_refused(tmp_path, change, field):
    optimizer = make_optimizer(TC)
    model, opt_state, key = init_train_state(CFG, optimizer)
    path = str(tmp_path / "state.safetensors")
    save_train_state(path, model, opt_state, key, 3, 0.0, run_spec(CFG, TASK, TC, None))
    with pytest.raises(CheckpointError, match=field):
        load_train_state(path, model, opt_state, change())
    longer = run_spec(CFG, TASK, dataclasses.replace(TC, steps=99), None)  # only `steps` may change
    assert load_train_state(path, model, opt_state, longer)[3] == 3


def test_a_state_saved_before_a_config_field_existed_resumes(tmp_path):
    """A checkpoint whose config JSON lacks a field added to GPTConfig later (here attention_rate)
    resumes when the field's default is what the run asks for, and is refused otherwise."""
    import json

    optimizer = make_optimizer(TC)
    model, opt_state, key = init_train_state(CFG, optimizer)
    old = run_spec(CFG, TASK, TC, None)
    config = json.loads(old["config"])
    del config["attention_rate"]
    old["config"] = json.dumps(config, sort_keys=True)
    path = str(tmp_path / "state.safetensors")
    save_train_state(path, model, opt_state, key, 3, 0.0, old)
    assert load_train_state(path, model, opt_state, run_spec(CFG, TASK, TC, None))[3] == 3
    with pytest.raises(CheckpointError, match="config"):
        load_train_state(path, model, opt_state, run_spec(dataclasses.replace(CFG, attention_rate=0.5), TASK, TC, None))
