"""Checkpoints: safetensors files with their metadata inside, written atomically, checked on load.

A file is a safetensors archive (tensors plus a string-to-string header; reading it never runs code,
unlike pickle). minillm adds to the header: `format` ("minillm"), `kind` (e.g. "model"),
`config` (the GPTConfig as JSON) and `sha256`, a digest of every tensor's name, dtype, shape and
bytes. Loading recomputes the digest, so a file that was truncated or corrupted on disk is refused
with a message that says so, instead of giving a model with silently wrong weights.

Saving writes a temporary file in the same folder, flushes it to disk, then renames it over the
target: the rename is atomic, so a crash mid-save leaves the previous good file in place.

A leaf module: it knows tensors and files, not models (minillm/model/params.py writes models with it,
minillm/training/state.py training states).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from typing import Any

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

FORMAT = "minillm"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: missing, truncated, corrupt or mismatched."""


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either the old contents or the new, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); a saved model is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_tensors(path: str, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Save named arrays and string metadata, with a digest, atomically."""
    arrays = {name: np.asarray(value, order="C") for name, value in tensors.items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, "sha256": tensors_digest(arrays)}
    bad = [k for k, v in header.items() if not isinstance(v, str)]
    if bad:
        raise TypeError(f"checkpoint metadata values must be strings; not strings: {bad}")
    write_atomic(path, safetensors.numpy.save(arrays, metadata=header))


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file's bytes, bfloat16 included (safetensors.numpy.load lacks it)."""
    arrays = {}
    for name, view in safetensors.deserialize(data):
        dtype = ml_dtypes.bfloat16 if view["dtype"] == "BF16" else safetensors.numpy._TYPES[view["dtype"]]
        arrays[name] = np.frombuffer(view["data"], dtype=dtype).reshape(view["shape"])
    return arrays


def load_tensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a file written by `save_tensors`; refuse it clearly if it is not intact."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes): not a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise CheckpointError(
            f"checkpoint {path} is truncated: its header needs {header_len} bytes, the file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = _arrays(data)
    except Exception as e:  # safetensors' own errors for bad offsets, short data, bad JSON
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {e}") from e
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a minillm checkpoint (no format=minillm)")
    if metadata.get("sha256") != tensors_digest(tensors):
        raise CheckpointError(f"checkpoint {path} is corrupt: its tensors do not match the digest saved with them")
    return tensors, metadata
