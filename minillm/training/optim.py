"""The optimizer side of training: the training config, the learning-rate schedule, AdamW.

tc = TrainConfig(steps=2000, lr=1e-3, warmup_steps=100, schedule="cosine")
optimizer = make_optimizer(tc)        # optax: clip the global norm, then AdamW on lr_schedule(tc)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import optax


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    schedule: str = "constant"  # after warmup: "constant" | "cosine" | "linear" decay
    decay_steps: int | None = None  # the decay ends here (default: steps), then the lr holds
    final_lr_frac: float = 0.1  # the lr at the end of the decay, as a fraction of lr
    grad_clip: float | None = 1.0  # clip the global gradient norm; None: no clipping
    batch_size: int | None = None  # None: the whole train set each step (finite tasks)
    steps_per_call: int = 20  # steps fused into one compiled lax.scan call
    eval_every: int = 100
    checkpoint_every: int = 1000
    seed: int = 0  # initialises the model and draws the batches
    data_seed: int = 0  # the train/test split
    # The run's goal: the logged metric target[0] reaching target[1]. Once it does at an evaluation
    # (every seed's, in a multi-seed run), the run trains target_margin more steps and stops (`steps`
    # is then the most it runs); target_margin=None reports the target and runs every step.
    target: tuple[str, float] | None = None
    target_margin: int | None = 0
    # Compute the logits only at the task's loss_positions (Task.loss_positions; modular addition
    # reads 1 position of 3): the same loss for less work, but rounded differently, so a run with it
    # follows another trajectory than one without. Off by default so that the recipes that shipped
    # before it existed still reproduce their checkpoints.
    loss_positions_only: bool = False

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"TrainConfig: schedule must be constant, cosine or linear, got {self.schedule!r}")
        for name in ("steps", "steps_per_call", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig: {name} must be a positive int, got {getattr(self, name)!r}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"TrainConfig: batch_size must be positive or None, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be positive, got {self.lr}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.target is not None:
            if not (len(self.target) == 2 and isinstance(self.target[0], str)):
                raise ValueError(f"TrainConfig: target must be (metric name, value), got {self.target!r}")
            object.__setattr__(self, "target", (self.target[0], float(self.target[1])))
        if self.target_margin is not None and (not isinstance(self.target_margin, int) or self.target_margin < 0):
            raise ValueError(f"TrainConfig: target_margin must be an int >= 0 or None, got {self.target_margin!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


def lr_schedule(tc: TrainConfig) -> optax.Schedule:
    """Linear warmup to lr, then constant, or a cosine / linear decay to lr * final_lr_frac."""
    decay_steps = (tc.decay_steps or tc.steps) - tc.warmup_steps
    final = tc.lr * tc.final_lr_frac
    if tc.schedule == "constant" or decay_steps <= 0:
        after = optax.constant_schedule(tc.lr)
    elif tc.schedule == "cosine":
        after = optax.cosine_decay_schedule(tc.lr, decay_steps, alpha=tc.final_lr_frac)
    else:
        after = optax.linear_schedule(tc.lr, final, decay_steps)
    if tc.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, tc.lr, tc.warmup_steps)
    return optax.join_schedules([warmup, after], [tc.warmup_steps])


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(lr_schedule(tc), b1=tc.betas[0], b2=tc.betas[1], weight_decay=tc.weight_decay)
    if tc.grad_clip is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), adamw)
