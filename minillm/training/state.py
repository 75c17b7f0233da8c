"""Training checkpoints: model, optimizer state, data keys and step in one file, to resume from.

A train state is a checkpoint (minillm/model/checkpoint.py: safetensors, a digest, atomic writes) of
the flattened pytrees, with their tree paths and the run's spec (config, task, training config,
seeds) in the header. Resuming refuses a file whose structure or spec differs from the run's
(only `steps` may change), so a run never continues from someone else's state.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model.checkpoint import CheckpointError, load_tensors, save_tensors
from minillm.model.config import GPTConfig
from minillm.tasks import Task
from minillm.training.optim import TrainConfig


def _flatten(prefix: str, tree: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    names = [f"{prefix}{i:04d}" for i in range(len(leaves))]
    return ({n: np.asarray(x) for n, (_, x) in zip(names, leaves)}, [jax.tree_util.keystr(p) for p, _ in leaves])


def _unflatten(prefix: str, template: Any, tensors: dict[str, np.ndarray], paths: list[str], path: str) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if [jax.tree_util.keystr(p) for p, _ in leaves] != paths:
        raise CheckpointError(f"checkpoint {path}: its {prefix.rstrip('/')} state has a different structure")
    out = []
    for i, (_, like) in enumerate(leaves):
        x = tensors[f"{prefix}{i:04d}"]
        if x.shape != like.shape or x.dtype != like.dtype:
            raise CheckpointError(
                f"checkpoint {path}: {prefix}{paths[i]} has shape {x.shape} {x.dtype}, "
                f"expected {like.shape} {like.dtype}"
            )
        out.append(jnp.asarray(x))
    return jax.tree_util.tree_unflatten(treedef, out)


def run_spec(cfg: GPTConfig, task: Task, tc: TrainConfig, seeds: Sequence[int] | None) -> dict[str, str]:
    """What defines a run; a checkpoint resumes only into the same spec (except for `steps`)."""
    return {
        "config": cfg.to_json(),
        "task": json.dumps({"name": task.name, **dataclasses.asdict(task)}),
        "train_config": tc.to_json(),
        "seeds": json.dumps(None if seeds is None else list(seeds)),
    }


def _same_config(saved: str | None, this: str) -> bool:
    try:
        return saved is not None and GPTConfig.from_json(saved) == GPTConfig.from_json(this)
    except (ValueError, TypeError):
        return False


def save_train_state(path: str, model, opt_state, data_keys, step: int, elapsed: float, spec: dict[str, str]) -> None:
    model_t, model_paths = _flatten("model/", model)
    opt_t, opt_paths = _flatten("opt/", opt_state)
    tensors = {**model_t, **opt_t, "rng/data_key": np.asarray(jax.random.key_data(data_keys))}
    meta = {
        "kind": "train_state",
        "step": str(step),
        "elapsed": repr(elapsed),
        "model_paths": json.dumps(model_paths),
        "opt_paths": json.dumps(opt_paths),
        **spec,
    }
    save_tensors(path, tensors, meta)


def load_train_state(path: str, model_template, opt_template, spec: dict[str, str]):
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "train_state":
        raise CheckpointError(f"{path} is not a training checkpoint (kind={meta.get('kind')!r})")
    for field in ("config", "task", "seeds"):
        if field == "config" and _same_config(meta.get(field), spec[field]):
            continue  # equal once parsed: a field added to GPTConfig since takes its default
        if meta.get(field) != spec[field]:
            raise CheckpointError(
                f"cannot resume from {path}: it was made with {field} {meta.get(field)}, this run has {spec[field]}"
            )
    saved_tc, this_tc = json.loads(meta["train_config"]), json.loads(spec["train_config"])
    saved_tc.pop("steps"), this_tc.pop("steps")
    if saved_tc != this_tc:
        changed = sorted(k for k in this_tc if saved_tc.get(k) != this_tc[k])
        raise CheckpointError(f"cannot resume from {path}: the training config differs in {changed}")
    model = _unflatten("model/", model_template, tensors, json.loads(meta["model_paths"]), path)
    opt_state = _unflatten("opt/", opt_template, tensors, json.loads(meta["opt_paths"]), path)
    data_keys = jax.random.wrap_key_data(jnp.asarray(tensors["rng/data_key"]))
    return model, opt_state, data_keys, int(meta["step"]), float(meta["elapsed"])
