"""Training: toy models on algorithmic tasks, from a recipe or from your own config.

    python -m minillm.training modular_addition --out runs/grok      # a recipe (also: minillm-train)
    from minillm.training import TrainConfig, train
    result = train(cfg, make_task("sorting"), TrainConfig(steps=2000), "runs/sort", seeds=[0, 1, 2, 3])
    train_steps = make_train_steps(make_optimizer(TrainConfig()))   # a loop of your own: K steps a call

The files, in the order a step meets them: optim.py (TrainConfig, the schedule, AdamW), step.py
(a compiled chunk of steps, vmapped over seeds), state.py (resumable checkpoints of the whole
run), loop.py (`train`: chunks, evaluation, logging, checkpoints, early stop), recipes.py (one
recipe per circuit the lessons study), cli.py (the command).
"""

from minillm.training.loop import MetricFn, TrainingDiverged, TrainResult, train
from minillm.training.optim import TrainConfig, lr_schedule, make_optimizer
from minillm.training.step import make_train_steps

__all__ = [
    "train",
    "TrainResult",
    "TrainingDiverged",
    "TrainConfig",
    "MetricFn",
    "lr_schedule",
    "make_optimizer",
    "make_train_steps",
]
