"""The safetensors reader shared by GPT.load (minillm/model/checkpoint.py: load_tensors) and
GPT.from_pretrained (minillm/model/hugging_face.py): a file whose header does not describe its data
exactly is refused with CheckpointError, never read as weights, never another exception.

Regression tests for each hole the reader had (a negative offset read header bytes as weights,
overlapping tensors passed, a huge shape was allocated before its size was checked, a malformed entry
raised TypeError or KeyError, the header had no size cap, a causal-mask buffer in an unexpected dtype
was refused though never read), then a deterministic fuzz over both loaders: truncations, byte flips
in the header, crafted offsets, shapes and dtypes, malformed JSON and header lengths. Every case
either loads tensors equal to the originals or raises CheckpointError.
"""

from __future__ import annotations

import collections
import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from hf_files import config, random_weights, write_gpt2

from minillm import GPT, CheckpointError
from minillm.model import hugging_face
from minillm.model.checkpoint import load_tensors, save_tensors

# A small GPT-2 (about 4 KB of float32 weights) keeps each fuzz case well under a millisecond of reading.
HF_CONFIG = config(n_layer=1, n_embd=8, n_head=2, n_positions=4, vocab_size=10)


# --- files as (header, data) and back -------------------------------------------------------------


def split(file: bytes) -> tuple[dict, bytes]:
    """A valid safetensors file as its header (a dict) and its data section."""
    (n,) = struct.unpack("<Q", file[:8])
    return json.loads(file[8 : 8 + n]), file[8 + n :]


def join(header: dict | str | bytes, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file from a header (a dict, or raw JSON text) and a data section; `length`
    overrides the header length field."""
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def by_offset(header: dict) -> list[str]:
    """The tensor names in the order of their bytes in the data section."""
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


# --- the two loaders, each on a file's bytes --------------------------------------------------------


class HFLoader:
    """GPT.from_pretrained's reading: a directory with config.json and model.safetensors -> weights."""

    name = "from_pretrained"

    def __init__(self, folder):
        self.folder = str(folder)
        _, self.tensors = write_gpt2(self.folder, HF_CONFIG, random_weights(HF_CONFIG, seed=3), tokenizer=False)
        self.file = os.path.join(self.folder, hugging_face.WEIGHTS_FILE)
        self.original = open(self.file, "rb").read()
        self.cfg = hugging_face.config_from_hugging_face(HF_CONFIG)
        self.expected = hugging_face.read_weights(self.folder, self.cfg)

    def load(self, data: bytes) -> dict[str, np.ndarray]:
        with open(self.file, "wb") as f:
            f.write(data)
        return hugging_face.read_weights(self.folder, self.cfg)


class CheckpointLoader:
    """GPT.load's reading: a minillm checkpoint (tensors, metadata and a digest) -> tensors."""

    name = "load_tensors"

    def __init__(self, folder):
        rng = np.random.default_rng(4)
        self.expected = {
            "w": rng.standard_normal((3, 4)).astype(np.float32),
            "half": rng.standard_normal(5).astype(ml_dtypes.bfloat16),
            "step": np.array(7, np.int32),
            "key": np.arange(4, dtype=np.uint32),
            "bias": rng.standard_normal(4).astype(np.float32),  # the byte size of "key": two can overlap exactly
            "empty": np.zeros((0, 3), np.float32),
            "flags": np.array([True, False, True]),
        }
        self.file = os.path.join(str(folder), "ckpt.safetensors")
        save_tensors(self.file, self.expected, {"kind": "other"})
        self.original = open(self.file, "rb").read()

    def load(self, data: bytes) -> dict[str, np.ndarray]:
        with open(self.file, "wb") as f:
            f.write(data)
        return load_tensors(self.file)[0]


@pytest.fixture(params=[HFLoader, CheckpointLoader], ids=["from_pretrained", "load_tensors"])
def loader(request, tmp_path):
    return request.param(tmp_path)


@pytest.fixture
def hf(tmp_path):
    return HFLoader(tmp_path)


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """The same names, dtypes, shapes and bytes."""
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


# --- regression tests: one per hole ------------------------------------------------------------------


def test_a_negative_offset_is_refused_not_read_from_the_header(loader):
    header, data = split(loader.original)
    first = by_offset(header)[0]
    start, end = header[first]["data_offsets"]
    header[first]["data_offsets"] = [start - 16, end - 16]  # 16 bytes of the header read as weights
    with pytest.raises(CheckpointError, match=rf"{first}.*-16"):
        loader.load(join(header, data))


def test_overlapping_tensors_are_refused(loader):
    header, data = split(loader.original)
    names = [k for k in by_offset(header) if header[k]["data_offsets"][1] > header[k]["data_offsets"][0]]
    # a later tensor of the same byte size pointed at an earlier one's bytes: sizes all check out
    size = {k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in names}
    a, b = next((a, b) for i, a in enumerate(names) for b in names[i + 1 :] if size[a] == size[b])
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    with pytest.raises(CheckpointError, match=rf"({a}|{b}).*overlap"):
        loader.load(join(header, data))
    header[b]["data_offsets"] = [header[a]["data_offsets"][0] + 4, header[a]["data_offsets"][1] + 4]  # partly
    with pytest.raises(CheckpointError, match="overlap"):
        loader.load(join(header, data))


def test_bytes_no_tensor_covers_are_refused(loader):
    header, data = split(loader.original)
    with pytest.raises(CheckpointError, match="bytes after the end of the last tensor"):
        loader.load(join(header, data + b"\0" * 8))  # trailing bytes
    last = by_offset(header)[-1]
    start, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [start + 4, end + 4]  # a 4-byte gap before it, its end past the data
    with pytest.raises(CheckpointError, match=last):
        loader.load(join(header, data + b"\0" * 4))


@pytest.mark.parametrize("shape", [[2**40], [2**40, 2**40], [2**70], [2**64 - 1, 2**64 - 1, 0, 2**64]])
def test_a_huge_shape_is_refused_before_anything_is_allocated(loader, shape):
    header, data = split(loader.original)
    name = next(k for k in by_offset(header) if header[k]["data_offsets"][1] > header[k]["data_offsets"][0])
    header[name]["shape"] = shape  # 4 TiB and more: the old reader tried np.empty first
    with pytest.raises(CheckpointError, match=rf"{name}.*shape"):
        loader.load(join(header, data))


MALFORMED = {
    "missing dtype": lambda e: {k: v for k, v in e.items() if k != "dtype"},
    "missing data_offsets": lambda e: {k: v for k, v in e.items() if k != "data_offsets"},
    "missing shape": lambda e: {k: v for k, v in e.items() if k != "shape"},
    "an extra field": lambda e: {**e, "offset": 0},
    "a list entry": lambda e: [e["dtype"], e["shape"], e["data_offsets"]],
    "a string entry": lambda e: "F32",
    "a null entry": lambda e: None,
    "string offsets": lambda e: {**e, "data_offsets": "0,4"},
    "three offsets": lambda e: {**e, "data_offsets": [*e["data_offsets"], 0]},
    "float offsets": lambda e: {**e, "data_offsets": [float(x) for x in e["data_offsets"]]},
    "boolean offsets": lambda e: {**e, "data_offsets": [False, True]},
    "null offsets": lambda e: {**e, "data_offsets": [None, None]},
    "a string shape": lambda e: {**e, "shape": "abc"},
    "a number shape": lambda e: {**e, "shape": 4},
    "a negative dimension": lambda e: {**e, "shape": [-1, *e["shape"]]},
    "a float dimension": lambda e: {**e, "shape": [float(s) for s in e["shape"]] or [1.0]},
    "a nested shape": lambda e: {**e, "shape": [e["shape"]]},
    "a null dimension": lambda e: {**e, "shape": [None]},
    "a numeric dtype": lambda e: {**e, "dtype": 5},
    "a null dtype": lambda e: {**e, "dtype": None},
    "a list dtype": lambda e: {**e, "dtype": ["F32"]},
}


@pytest.mark.parametrize("how", MALFORMED)
def test_a_malformed_entry_is_refused_with_its_name(loader, how):
    header, data = split(loader.original)
    name = by_offset(header)[1]
    header[name] = MALFORMED[how](header[name])
    with pytest.raises(CheckpointError, match=name):
        loader.load(join(header, data))


def test_a_header_over_the_100_mb_cap_is_refused_unread(hf):
    header, data = split(hf.original)
    raw = json.dumps(header).encode()
    raw += b" " * (100_000_001 - len(raw))  # valid JSON, padded as safetensors pads, one byte over the cap
    with pytest.raises(CheckpointError, match="100000001.*cap"):
        hf.load(join(raw, data))
    with pytest.raises(CheckpointError, match="cap"):  # a length field that claims more than the file has
        hf.load(join(header, data, length=2**63))


@pytest.mark.parametrize("dtype, array", [("U8", np.ones((1, 1, 4, 4), np.uint8)), ("BOOL", np.tri(4, dtype=bool))])
def test_a_causal_mask_buffer_in_any_dtype_is_skipped(tmp_path, dtype, array):
    """GPT-2's `attn.bias` / `attn.masked_bias` are never read, so their dtype does not matter; their
    entries are still checked."""
    tensors = random_weights(HF_CONFIG, seed=3)
    tensors["transformer.h.0.attn.bias"] = array
    tensors["transformer.h.0.attn.masked_bias"] = np.array(-1e4, np.float16)
    write_gpt2(str(tmp_path), HF_CONFIG, tensors, tokenizer=False)
    model = GPT.from_pretrained_no_processing(str(tmp_path))
    np.testing.assert_array_equal(model.W_E, tensors["transformer.wte.weight"])
    file = os.path.join(tmp_path, hugging_face.WEIGHTS_FILE)
    header, data = split(open(file, "rb").read())
    header["transformer.h.0.attn.bias"]["shape"] = [2**40]  # skipped, but checked
    with open(file, "wb") as f:
        f.write(join(header, data))
    with pytest.raises(CheckpointError, match=r"h\.0\.attn\.bias"):
        GPT.from_pretrained_no_processing(str(tmp_path))


@pytest.mark.parametrize("dtype", ["I32", "U32", "C64", "F8_E5M2"])
def test_a_read_tensor_in_a_dtype_minillm_does_not_read_is_refused_by_name_and_dtype(hf, dtype):
    header, data = split(hf.original)
    name = "transformer.ln_f.weight"
    header[name]["dtype"] = dtype
    if dtype == "C64":  # twice the bytes: a complex tensor of half the elements
        header[name]["shape"] = [header[name]["shape"][0] // 2]
    elif dtype == "F8_E5M2":
        header[name]["shape"] = [header[name]["shape"][0] * 4]
    with pytest.raises(CheckpointError, match=rf"{name} is {dtype}"):
        hf.load(join(header, data))


def test_metadata_must_map_strings_to_strings(loader):
    header, data = split(loader.original)
    for metadata in ([], "pt", {"format": 1}, {"format": None}, {"format": {"a": "b"}}):
        header["__metadata__"] = metadata
        with pytest.raises(CheckpointError, match="__metadata__"):
            loader.load(join(header, data))


def test_a_tensor_named_twice_is_refused(hf):
    header, data = split(hf.original)
    raw = json.dumps(header).encode()
    name = "transformer.ln_f.weight"
    twice = raw.replace(b'"transformer.ln_f.bias"', json.dumps(name).encode())  # the same key twice in the JSON
    with pytest.raises(CheckpointError, match=f"{name}.*twice"):
        hf.load(join(twice, data))
    # with and without Hugging Face's "transformer." prefix: the same weight twice
    header["ln_f.weight"] = header.pop("transformer.ln_f.weight")
    header["transformer.ln_f.weight"] = header.pop("transformer.ln_f.bias")
    with pytest.raises(CheckpointError, match=r"ln_f\.weight.*twice"):
        hf.load(join(header, data))


# --- the fuzz ------------------------------------------------------------------------------------------


def fuzz_cases(original: bytes, seed: int) -> list[tuple[str, bytes]]:
    """(kind, file bytes): damaged versions of a valid file, the same list for the same seed."""
    rng = np.random.default_rng(seed)
    header, data = split(original)
    (n,) = struct.unpack("<Q", original[:8])
    names = by_offset(header)
    cases = []

    # truncations: inside the length field, inside the header, at its end, at and beside every tensor boundary
    cuts = set(range(9)) | set(range(9, 8 + n, max(1, n // 40))) | {8 + n - 1, 8 + n, 8 + n + 1, len(original) - 1}
    for k in names:
        cuts |= {8 + n + x + d for x in header[k]["data_offsets"] for d in (-1, 0, 1)}
    cases += [("truncated", original[:c]) for c in sorted(cuts) if 0 <= c < len(original)]
    cases += [("appended", original + bytes(rng.integers(0, 256, size=k, dtype=np.uint8))) for k in (1, 3, 8, 100)]

    # random byte flips in the length field and the header
    for _ in range(150):
        damaged = bytearray(original)
        for _ in range(int(rng.integers(1, 3))):
            at = int(rng.integers(0, 8 + n))
            damaged[at] ^= 1 << int(rng.integers(0, 8)) if rng.random() < 0.7 else int(rng.integers(1, 256))
        cases.append(("byte flip", bytes(damaged)))

    def crafted(kind, name, field, value):
        h = json.loads(json.dumps(header))
        h[name][field] = value
        cases.append((kind, join(h, data)))

    # crafted offsets, on a few tensors
    for k in [names[0], names[len(names) // 2], names[-1], *rng.choice(names, 3, replace=False)]:
        s, e = header[k]["data_offsets"]
        others = [header[o]["data_offsets"] for o in names if o != k]
        other = others[int(rng.integers(len(others)))]
        for offsets in (
            [s - 8, e - 8],
            [-1, e],
            [-(2**63), e],
            [e, s],
            [s, e + len(data)],
            [len(data) + 8, len(data) + 8 + e - s],
            [2**64, 2**64 + e - s],
            [s + 4, e + 4],
            [s - 4, e - 4],
            other,
            [other[0], other[0] + e - s],
            [s, s],
            [e, e],
            [0, len(data)],
        ):
            crafted("offsets", k, "data_offsets", offsets)

    # crafted shapes
    for k in [names[0], names[-1], *rng.choice(names, 2, replace=False)]:
        shape = header[k]["shape"]
        for new in (
            [2**40],
            [2**40, 2**40],
            [2**63],
            [2**64 + 1],
            [-1],
            [-(2**40), -(2**40)],
            [*shape, 1],
            [1, *shape],
            shape[::-1],
            [],
            [0],
            [1.5],
            ["8"],
            [shape],
            [[1], [2]],
            [True] * max(1, len(shape)),
            None,
            {"0": 1},
            [10**100],
        ):
            crafted("shape", k, "shape", new)

    # crafted dtypes
    for k in [names[0], names[-1], *rng.choice(names, 2, replace=False)]:
        for dtype in ("F16", "BF16", "F64", "I32", "U32", "I64", "U8", "BOOL", "C64", "F4", "F6_E2M3", "F8_E4M3"):
            crafted("dtype", k, "dtype", dtype)
        for dtype in ("f32", "F33", "float32", "", 32, None, ["F32"], {"F32": 1}):
            crafted("dtype", k, "dtype", dtype)

    # malformed JSON
    raw = json.dumps(header)
    for text in (
        "",
        " ",
        "{",
        "}",
        "[]",
        "null",
        "0",
        '"header"',
        "{}",
        raw[:-1],
        raw + "}",
        raw + " x",
        raw.replace(":", "=", 1),
        raw.replace('"', "'"),
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
        raw.replace("[", "[NaN, ", 1),
        raw.replace("[", "[Infinity, ", 1),
        raw.replace("[", "[" + "9" * 5000 + ", ", 1),
        "\ufeff" + raw,
    ):
        cases.append(("malformed JSON", join(text, data)))
    cases.append(("malformed JSON", join(raw.encode()[:20] + b"\xff\xfe" + raw.encode()[22:], data)))
    cases.append(("malformed JSON", join(raw.encode("utf-16"), data)))

    # header length fields
    for length in (0, 1, 2, n - 1, n + 1, n + len(data), len(original) - 8, 100_000_001, 2**63, 2**64 - 1):
        cases.append(("header length", struct.pack("<Q", length) + original[8:]))
    return cases


def run_fuzz(loader, seed: int = 0) -> collections.Counter:
    """Every case's outcome: ("clean", kind) for a load equal to the original, ("refused", kind) for
    CheckpointError; anything else fails the test that calls it."""
    outcomes = collections.Counter()
    for i, (kind, file) in enumerate(fuzz_cases(loader.original, seed)):
        try:
            loaded = loader.load(file)
        except CheckpointError:
            outcomes["refused", kind] += 1
            continue
        except Exception as e:  # noqa: BLE001 - any other exception is the failure this test looks for
            raise AssertionError(f"{loader.name}, case {i} ({kind}): {type(e).__name__}: {e}") from e
        assert same(loaded, loader.expected), f"{loader.name}, case {i} ({kind}): loaded tensors that differ"
        outcomes["clean", kind] += 1
    return outcomes


def test_fuzzed_files_load_exactly_or_are_refused(loader):
    outcomes = run_fuzz(loader)
    assert sum(outcomes.values()) >= 300
    refused = sum(v for (outcome, _), v in outcomes.items() if outcome == "refused")
    clean = sum(v for (outcome, _), v in outcomes.items() if outcome == "clean")
    assert refused > 250 and clean > 0  # some headers come out the same: a 1-D shape reversed, a dtype set to its own
