"""The training loop (minillm/training/loop.py, `train`): it learns (in bfloat16 too, and on every
task), stops a margin after its target, resumes bit-identically and refuses another run's
checkpoint, trains a stack of seeds as the single runs, stops cleanly on divergence, and refuses a
model that does not fit the task."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import CONFIGS, modular_config, numpy_weights

from minillm import GPT, CheckpointError, GPTConfig
from minillm.tasks import TASKS, make_task
from minillm.training import TrainConfig, TrainingDiverged, train

MOD = make_task("modular_arithmetic", p=17, frac_train=0.6)
MOD_CFG = modular_config(17)  # the task's vocabulary and length: the model must fit the task


@pytest.mark.slow
def test_tiny_model_learns_modular_addition():
    tc = TrainConfig(steps=300, lr=1e-2, weight_decay=0.1, steps_per_call=50, eval_every=100)
    result = train(MOD_CFG, MOD, tc, progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["step"] == 300 and last["train_acc"] >= 0.99
    assert last["train_loss"] < 0.1 * first["train_loss"]


@pytest.mark.slow
def test_training_in_bfloat16_learns_too():
    """Mixed precision (GPTConfig.dtype="bfloat16"): float32 weights and optimizer, bfloat16 compute."""
    tc = TrainConfig(steps=300, lr=1e-2, weight_decay=0.1, steps_per_call=50, eval_every=100)
    result = train(dataclasses.replace(MOD_CFG, dtype="bfloat16"), MOD, tc, progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["train_acc"] >= 0.95 and last["train_loss"] < 0.1 * first["train_loss"], last
    assert result.model.embed.W_E[...].dtype == np.float32


@pytest.mark.slow
def test_a_run_with_a_target_stops_its_margin_after_reaching_it(tmp_path):
    tc = TrainConfig(
        steps=600,
        lr=1e-2,
        weight_decay=0.1,
        steps_per_call=50,
        eval_every=50,
        target=("train_acc", 0.9),
        target_margin=100,
        loss_positions_only=True,  # logits at the answer position only (1 of 3): it learns all the same
    )
    out = tmp_path / "run"
    result = train(MOD_CFG, MOD, tc, str(out), progress=False)
    hit = next(r["step"] for r in result.metrics if r["train_acc"] >= 0.9)
    assert result.step == hit + 100 < 600 and result.metrics[-1]["step"] == result.step
    assert (out / "model.safetensors").exists()
    again = train(MOD_CFG, MOD, tc, str(out), progress=False, resume=True)  # finished: nothing more to train
    assert again.step == result.step
    np.testing.assert_array_equal(numpy_weights(again.model)["embed.W_E"], numpy_weights(result.model)["embed.W_E"])
    with pytest.raises(ValueError, match="target"):
        TrainConfig(target=("train_acc",))


def _cfg_for(task, **kw):
    """A small model that fits `task` (its vocabularies and length: one config per task)."""
    return GPTConfig(
        n_layers=1, d_model=32, n_heads=2, n_ctx=task.seq_len, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, **kw
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_loss_goes_down_on_every_task(name):
    sizes = dict(n_train=64, n_test=64) if TASKS[name].has_generator else {}  # a small split: it is drawn row by row
    task = make_task(name, **sizes)
    tc = TrainConfig(
        steps=80, lr=3e-3, steps_per_call=40, eval_every=80, batch_size=None if not task.has_generator else 32
    )
    result = train(_cfg_for(task), task, tc, progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["train_loss"] < 0.95 * first["train_loss"], (first, last)


@pytest.mark.slow
def test_killed_and_resumed_run_ends_bit_identical(tmp_path):
    tc = TrainConfig(steps=60, lr=1e-2, steps_per_call=10, eval_every=20, checkpoint_every=20)
    straight = train(MOD_CFG, MOD, tc, str(tmp_path / "straight"), progress=False)
    # "kill" the run at step 50: the last checkpoint is step 40, steps 40..50 are lost
    killed = train(MOD_CFG, MOD, tc, str(tmp_path / "resumed"), progress=False, stop_at_step=50)
    assert killed.step == 50
    with pytest.raises(FileExistsError, match="resume"):
        train(MOD_CFG, MOD, tc, str(tmp_path / "resumed"), progress=False)
    resumed = train(MOD_CFG, MOD, tc, str(tmp_path / "resumed"), progress=False, resume=True)
    a, b = numpy_weights(straight.model), numpy_weights(resumed.model)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # metrics.jsonl has each step once, as in the straight run
    rows = [json.loads(l) for l in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 20, 40, 60]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in straight.metrics]
    # the final model file is the same model
    loaded = GPT.load(str(tmp_path / "resumed" / "model.safetensors"))
    np.testing.assert_array_equal(numpy_weights(loaded)["embed.W_E"], a["embed.W_E"])


@pytest.mark.slow
def test_resume_refuses_a_different_run(tmp_path):
    tc = TrainConfig(steps=20, lr=1e-2, steps_per_call=10, eval_every=10, checkpoint_every=10)
    train(MOD_CFG, MOD, tc, str(tmp_path), progress=False, stop_at_step=10)
    other = TrainConfig(steps=20, lr=3e-2, steps_per_call=10, eval_every=10, checkpoint_every=10)
    with pytest.raises(CheckpointError, match=r"differs in \['lr'\]"):
        train(MOD_CFG, MOD, other, str(tmp_path), progress=False, resume=True)


@pytest.mark.slow
def test_corrupt_checkpoint_is_refused_and_resume_does_not_overwrite_it(tmp_path):
    tc = TrainConfig(steps=20, lr=1e-2, steps_per_call=10, eval_every=10, checkpoint_every=10)
    train(MOD_CFG, MOD, tc, str(tmp_path), progress=False, stop_at_step=10)
    path = tmp_path / "checkpoint.safetensors"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        train(MOD_CFG, MOD, tc, str(tmp_path), progress=False, resume=True)
    assert path.read_bytes() == good[: len(good) // 2]  # nothing was written over it


@pytest.mark.slow
def test_n_seeds_with_vmap_equal_n_single_runs():
    tc = TrainConfig(steps=40, lr=1e-2, steps_per_call=20, eval_every=20, batch_size=16)
    together = train(MOD_CFG, MOD, tc, progress=False, seeds=[3, 4, 5])
    assert len(together.metrics) == 3 * 3  # 3 evaluations x 3 seeds
    for i, seed in enumerate([3, 4, 5]):
        alone = train(MOD_CFG, MOD, TrainConfig(**{**tc.__dict__, "seed": seed}), progress=False)
        a, b = numpy_weights(together.models()[i]), numpy_weights(alone.model)
        # b_K's gradient is zero in exact arithmetic (softmax ignores a constant added to every
        # score of a query), so AdamW turns float noise of ~1e-10 into full-size updates: it is noise
        # in both runs and cannot agree. Every other weight must, but an element whose gradient is
        # near zero moves the same way by a little (1.5e-5, one element in 2048, on an AMD EPYC): so
        # fewer than 1% of the elements may be off by more than 1e-5, none by more than lr / 10.
        for k in (k for k in a if not k.endswith("b_K")):
            off = ~np.isclose(a[k], b[k], rtol=1e-4, atol=1e-5)
            assert off.mean() < 0.01, f"seed {seed} {k}: {off.sum()} of {off.size} elements differ"
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-3, err_msg=f"seed {seed} {k}")
        rows = [r for r in together.metrics if r["seed"] == seed]
        np.testing.assert_allclose([r["train_loss"] for r in rows], [r["train_loss"] for r in alone.metrics], rtol=1e-4)
    w = numpy_weights(together.models()[0])["embed.W_E"], numpy_weights(together.models()[1])["embed.W_E"]
    assert not np.allclose(*w)  # the seeds really differ


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # the lr ramps to 1e38 / 1e6 per step: weights blow up and the loss turns NaN within a few steps
    tc = TrainConfig(
        steps=10, lr=1e38, warmup_steps=10**6, grad_clip=None, steps_per_call=1, checkpoint_every=1, eval_every=1
    )
    with pytest.raises(TrainingDiverged, match=r"loss became \[nan\] at step (\d+).*last good checkpoint"):
        train(MOD_CFG, MOD, tc, str(tmp_path), progress=False)
    from minillm.model.checkpoint import load_tensors

    tensors, meta = load_tensors(str(tmp_path / "checkpoint.safetensors"))
    assert int(meta["step"]) < 10
    assert all(np.all(np.isfinite(v)) for k, v in tensors.items() if k.startswith("model/"))


def test_model_that_does_not_fit_the_task_is_refused():
    cfg = CONFIGS["attn_only_ln"]
    assert cfg.d_vocab != MOD.d_vocab  # 23 tokens in, where the task has 18
    with pytest.raises(ValueError, match="does not fit"):
        train(cfg, MOD, TrainConfig(steps=1))
