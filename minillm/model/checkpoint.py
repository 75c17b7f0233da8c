"""Checkpoints: safetensors files with their metadata inside, written atomically, checked on load.

A file is a safetensors archive (tensors plus a string-to-string header; reading it never runs code,
unlike pickle). minillm adds to the header: `format` ("minillm"), `kind` (e.g. "model"),
`config` (the GPTConfig as JSON) and `sha256`, a digest of every tensor's name, dtype, shape and
bytes. Loading recomputes the digest, so a file that was truncated or corrupted on disk is refused
with a message that says so, instead of giving a model with silently wrong weights.

Saving writes a temporary file in the same folder, flushes it to disk, then renames it over the
target: the rename is atomic, so a crash mid-save leaves the previous good file in place.

Reading goes through one parser, `SafetensorsFile`, shared with GPT.from_pretrained's Hugging Face
files (minillm/model/hugging_face.py). It trusts nothing in the header: the length field is at most
safetensors' own 100 MB cap and within the file; the header is a JSON object; `__metadata__`, if
present, maps strings to strings; every other entry has exactly `dtype` (a safetensors dtype), `shape`
(non-negative ints) and `data_offsets` (two ints, 0 <= start <= end <= the data section's length);
each tensor's byte count, computed from its shape and dtype in Python ints before anything is
allocated, is end - start; and the tensors are disjoint and cover the data section exactly, as the
safetensors format requires. Any failure is a CheckpointError that names the tensor. Tensors are then
read one at a time with plain reads (no memory map, whose pages would count as one more copy).

A leaf module: it knows tensors and files, not models (minillm/model/params.py writes models with it,
minillm/training/state.py training states).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
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


# The largest header safetensors itself reads (its MAX_HEADER_SIZE): a length field above it is refused unread.
MAX_HEADER_BYTES = 100_000_000
# Every dtype of the safetensors format (safetensors 0.8), with its size in bits (F4 and F6 pack below a byte).
SAFETENSORS_DTYPES = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}
# The dtypes minillm reads, as NumPy dtypes: safetensors.numpy's, and bfloat16 (which it lacks).
NUMPY_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32),
    "F32": np.dtype(np.float32),
    "I64": np.dtype(np.int64),
    "U64": np.dtype(np.uint64),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
}
_FIELDS = {"dtype", "shape", "data_offsets"}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One checked header entry: the tensor's bytes are data[start:end] of the data section."""

    name: str
    dtype: str  # a safetensors dtype string, a key of SAFETENSORS_DTYPES
    shape: tuple[int, ...]
    start: int
    end: int


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # JSON's true/false are not sizes


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused if a key appears twice (json keeps the last one silently)."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"{key!r} appears twice")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; the format has no such thing


def _byte_count(shape: tuple[int, ...], bits: int, most: int) -> int | None:
    """The bytes of `shape` elements of `bits` each, or None when they are not whole bytes; a number
    above `most` is returned as soon as the running product passes it (a shape of 2**40 ints costs
    nothing)."""
    if 0 in shape:
        return 0
    count = 1
    for n in shape:
        count *= n
        if count * bits > 8 * most:
            return most + 1
    return None if count * bits % 8 else count * bits // 8


def _check_entry(name: str, entry: Any, data_len: int, bad: Callable[[str], CheckpointError]) -> TensorInfo:
    """One header entry as a TensorInfo, or `bad(...)` raised with what is wrong."""
    if not isinstance(entry, dict) or set(entry) != _FIELDS:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise bad(f"tensor {name!r} has {got}, not exactly {sorted(_FIELDS)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise bad(f"tensor {name!r} has dtype {dtype!r}, not a safetensors dtype {sorted(SAFETENSORS_DTYPES)}")
    if not isinstance(shape, list) or not all(_int(n) and n >= 0 for n in shape):
        raise bad(f"tensor {name!r} has shape {shape!r}, not a list of non-negative ints")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(x) for x in offsets):
        raise bad(f"tensor {name!r} has data_offsets {offsets!r}, not two ints")
    start, end = offsets
    if not 0 <= start <= end <= data_len:
        raise bad(f"tensor {name!r} has data_offsets [{start}, {end}]; the data section has {data_len} bytes")
    size = _byte_count(tuple(shape), SAFETENSORS_DTYPES[dtype], end - start)
    if size != end - start:
        what = "not a whole number of bytes" if size is None else "more bytes" if size > end - start else "fewer bytes"
        raise bad(
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs {what} than its {end - start} at {offsets}"
        )
    return TensorInfo(name, dtype, tuple(shape), start, end)


class SafetensorsFile:
    """A safetensors file opened for reading, its header checked in full before any tensor is read.

        with SafetensorsFile(path, "checkpoint model.safetensors") as file:
            tensors = {t.name: file.read(t) for t in file.tensors}

    `tensors` are the checked entries in the order of their bytes, `metadata` the `__metadata__`
    strings; `where` begins every message. Every way the file can be wrong is a CheckpointError:
    the header (see the module docstring) on opening, a dtype the caller does not read, or a file
    cut short since it was opened, on `read`.
    """

    def __init__(self, path: str, where: str):
        self.path, self.where = path, where
        self._f: BinaryIO = open(path, "rb")
        try:
            self._parse(os.fstat(self._f.fileno()).st_size)
        except BaseException:
            self._f.close()
            raise

    def _bad(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.where} is truncated or corrupt: {why}")

    def _parse(self, size: int) -> None:
        if size < 8:
            raise self._bad(f"{size} bytes, fewer than the 8 of a safetensors header length")
        (n,) = struct.unpack("<Q", self._f.read(8))
        if n > MAX_HEADER_BYTES:
            raise self._bad(f"its header length field says {n} bytes, over the format's cap of {MAX_HEADER_BYTES}")
        if 8 + n > size:
            raise self._bad(f"its header needs {n} bytes, the file has {size - 8} after the length field")
        raw = self._f.read(n)
        if len(raw) != n:
            raise self._bad(f"its header needs {n} bytes, {len(raw)} could be read")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, a key twice, ints past Python's digit cap
            raise self._bad(f"its header is not valid JSON: {type(e).__name__}: {e}") from e
        if not isinstance(header, dict):
            raise self._bad(f"its header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._bad(f"its __metadata__ is {metadata!r}, not a map of strings to strings")
        self.data_start, data_len = 8 + n, size - 8 - n
        tensors = sorted(
            (_check_entry(name, entry, data_len, self._bad) for name, entry in header.items()),
            key=lambda t: (t.start, t.end, t.name),
        )
        covered, previous = 0, None
        for t in tensors:  # sorted by offset: disjoint and gapless means each starts where the last ended
            if t.start < covered:
                raise self._bad(
                    f"tensor {t.name!r} at [{t.start}, {t.end}] overlaps {previous!r}, which ends at {covered}"
                )
            if t.start > covered:
                raise self._bad(
                    f"tensor {t.name!r} starts at {t.start}; bytes {covered}..{t.start} belong to no tensor"
                )
            covered, previous = t.end, t.name
        if covered != data_len:
            last = f"the last tensor ({previous!r})" if previous else "the header, which lists no tensor"
            raise self._bad(f"the data section has {data_len - covered} bytes after the end of {last}, in no tensor")
        self.tensors: tuple[TensorInfo, ...] = tuple(tensors)
        self.metadata: dict[str, str] = metadata

    def read(self, t: TensorInfo, dtypes: Mapping[str, np.dtype] = NUMPY_DTYPES) -> np.ndarray:
        """Tensor `t` as a NumPy array of `dtypes[t.dtype]`, read with plain reads into a fresh array
        (its size is checked against the file, so nothing larger than the file is allocated)."""
        if t.dtype not in dtypes:
            raise CheckpointError(f"{self.where}: {t.name} is {t.dtype}; minillm reads {sorted(dtypes)} here")
        dtype = np.dtype(dtypes[t.dtype])
        if 8 * dtype.itemsize != SAFETENSORS_DTYPES[t.dtype]:  # a caller's table, not the file, is wrong
            raise ValueError(f"SafetensorsFile.read: {t.dtype} is {SAFETENSORS_DTYPES[t.dtype]} bits, not {dtype}")
        try:  # end - start bytes, checked against the file when it was opened
            array = np.empty(t.shape, dtype)
        except ValueError as e:  # more dimensions than NumPy has (32 or 64)
            raise CheckpointError(f"{self.where}: {t.name} has shape {list(t.shape)}: {e}") from e
        self._f.seek(self.data_start + t.start)
        if array.nbytes and self._f.readinto(array.reshape(-1).view(np.uint8)) != array.nbytes:
            raise CheckpointError(f"{self.where} is truncated: {t.name} is cut short (the file shrank while read)")
        return array

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_tensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a file written by `save_tensors`; refuse it clearly if it is not intact: its header is
    checked in full (SafetensorsFile), then its tensors against the digest saved with them."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with SafetensorsFile(path, f"checkpoint {path}") as file:
        tensors = {t.name: file.read(t) for t in file.tensors}
        metadata = file.metadata
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a minillm checkpoint (no format=minillm)")
    if metadata.get("sha256") != tensors_digest(tensors):
        raise CheckpointError(f"checkpoint {path} is corrupt: its tensors do not match the digest saved with them")
    return tensors, metadata
