"""The optimizer side (minillm/training/optim.py): the learning-rate schedule, the training config's
checks and its JSON round trip, and AdamW with clipping as optax computes it."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm.training.optim import TrainConfig, lr_schedule, make_optimizer


def test_lr_schedule_warmup_then_cosine_to_a_tenth():
    tc = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, schedule="cosine", final_lr_frac=0.1)
    s = lr_schedule(tc)
    assert float(s(0)) == 0.0 and abs(float(s(50)) - 5e-4) < 1e-9 and abs(float(s(100)) - 1e-3) < 1e-9
    assert abs(float(s(1000)) - 1e-4) < 1e-9 and float(s(550)) < 1e-3


@pytest.mark.parametrize(
    "field, value",
    [("schedule", "exponential"), ("steps", 0), ("lr", 0.0), ("batch_size", -1), ("steps_per_call", 1.5)],
)
def test_bad_training_configs_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_training_config_round_trips_through_json():
    tc = TrainConfig(steps=7, lr=2e-3, betas=[0.9, 0.98], batch_size=16, schedule="linear")
    assert TrainConfig.from_json(tc.to_json()) == tc


def test_make_optimizer_clips_the_global_norm_before_adamw():
    tc = TrainConfig(lr=0.1, weight_decay=0.0, grad_clip=1.0)
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50: clipped to 1
    ours, _ = make_optimizer(tc).update(grads, make_optimizer(tc).init(params), params)
    reference = optax.adamw(0.1, weight_decay=0.0)
    clipped = {"w": grads["w"] / 50.0}
    theirs, _ = reference.update(clipped, reference.init(params), params)
    np.testing.assert_allclose(ours["w"], theirs["w"], rtol=1e-6)
