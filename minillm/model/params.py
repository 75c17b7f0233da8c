"""Weights by name: a model's flat state dict, model files on disk, and stacks of seeds.

`state_dict(model)` flattens an nnx model's parameters under TransformerLens' names
("blocks.0.attn.W_Q"); `load_state_dict` writes them back after checking every name, shape and
dtype. A model file is a checkpoint (minillm/model/checkpoint.py) of that dict with the config in its
header. Several seeds of one config are trained and studied as one "stacked" model, whose every
weight has a leading [n_seeds] axis, so that `jax.vmap` runs them all in one program.

The model's `state_dict`, `load_state_dict`, `save` and `load` call these; this module does not
import the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minillm.model.checkpoint import CheckpointError, load_tensors, save_tensors
from minillm.model.config import GPTConfig


def state_dict(model: nnx.Module) -> dict[str, jax.Array]:
    """The parameters, flat, under their dotted paths: {"blocks.0.attn.W_Q": [h, d, e], ...}."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(str(k) for k in path): var.get_value() for path, var in flat}


def load_state_dict(model: nnx.Module, weights: dict[str, Any]) -> None:
    """Replace the parameters in place; names and shapes must match exactly, and each dtype is the
    model's (float32) or its compute dtype (`cfg.dtype`: weights stored in bfloat16, without
    float32 master weights, as GPT.from_pretrained(dtype="bfloat16") loads them)."""
    own = state_dict(model)
    compute = jnp.dtype(model.cfg.dtype)
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"load_state_dict: weights do not match the config: missing {missing}, unexpected {unexpected}"
        )
    wrong = [
        f"{name} has shape {tuple(value.shape)} and dtype {value.dtype}, the config needs "
        f"{tuple(own[name].shape)} {own[name].dtype}"
        for name, value in sorted(weights.items())
        if tuple(value.shape) != tuple(own[name].shape) or value.dtype not in (own[name].dtype, compute)
    ]
    if wrong:
        raise ValueError("load_state_dict: " + "; ".join(wrong))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        var.set_value(jnp.asarray(weights[".".join(str(k) for k in path)]))


def save_model(model: nnx.Module, path: str, metadata: dict[str, str] | None = None) -> None:
    """Weights and config (`model.cfg`) in one safetensors file, written atomically."""
    weights = {name: np.asarray(value) for name, value in state_dict(model).items()}
    save_tensors(path, weights, {"kind": "model", "config": model.cfg.to_json(), **(metadata or {})})


def read_model(path: str) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """The config and weights of a model file; a truncated, corrupt or config-less file is refused."""
    tensors, metadata = load_tensors(path)
    if "config" not in metadata:
        raise CheckpointError(f"checkpoint {path} has no config in its metadata")
    try:
        cfg = GPTConfig.from_json(metadata["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid config: {e}") from e
    return cfg, tensors


def load_model(cls: type, path: str) -> Any:
    """`cls.from_state_dict` of a model file (GPT.load); weights that do not fit the config are refused."""
    cfg, weights = read_model(path)
    try:
        return cls.from_state_dict(cfg, weights)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} does not match its config: {e}") from e


def stack_models(models: Sequence[Any]) -> Any:
    """One model whose every weight is the stack of the models' weights: [n_models, ...]."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *models)


def unstack_models(stacked: Any, n: int) -> list[Any]:
    """The n models of a stack, each as an ordinary model."""
    return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)]


def map_seeds(fn: Any, stacked: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(model, *args, **kwargs) for every model of a stack, as one vmapped call: each output gets a
    leading [n_seeds] axis. fn must be traceable (JAX arrays out, no float() or numpy inside)."""
    return jax.vmap(lambda model: fn(model, *args, **kwargs))(stacked)


_SEED_FILE = re.compile(r"^model_seed(-?\d+)\.safetensors$")


def load_seeds(cls: type, directory: str) -> dict[int, Any]:
    """{seed: model} from a multi-seed run directory (its model_seed{s}.safetensors files, as
    `train(..., seeds=...)` writes them), in order of seed. Stack them with stack_models."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"load_seeds: no directory {directory!r}")
    found = sorted((int(m.group(1)), name) for name in os.listdir(directory) if (m := _SEED_FILE.match(name)))
    if not found:
        raise FileNotFoundError(f"load_seeds: no model_seed{{s}}.safetensors files in {directory!r}")
    return {seed: load_model(cls, os.path.join(directory, name)) for seed, name in found}
