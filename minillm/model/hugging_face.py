"""GPT-2 from a local directory in Hugging Face's layout: the config and weights, read from disk only.

    model = GPT.from_pretrained("path/to/gpt2")          # config.json + model.safetensors (+ tokenizer.json)

A directory holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`), as `save_pretrained` writes them and as the Hub serves them. This
module reads them and returns a GPTConfig and the weights under TransformerLens' names and shapes
(docs/conventions.md), for any GPT-2-architecture model: gpt2, gpt2-medium, -large, -xl, distilgpt2
and models fine-tuned from them. There is no download code: a name that is not a directory is
refused with the command that fetches the files once. Nothing is unpickled: a directory with only
`pytorch_model.bin` (a pickle, which can run code when loaded) is refused with the safetensors
alternative named.

What GPT-2 stores differently, and how it is read:
- `c_attn` is one fused [d, 3d] projection in Conv1D layout (input first, x @ W): split into
  W_Q, W_K, W_V and reshaped to one [d, e] matrix per head, [h, d, e]; its bias to [h, e] each.
- `attn.c_proj` [h*e, d] is W_O [h, e, d]; `mlp.c_fc` and `mlp.c_proj` are W_in [d, m], W_out [m, d].
- The unembedding is tied to the embedding: W_U = wte.T (an `lm_head.weight` in the file is used
  when present); GPT-2 has no unembedding bias, so b_U = 0.
- The activation is the tanh GELU ("gelu_new"), the LayerNorm epsilon `layer_norm_epsilon`.
- `attn.bias` / `attn.masked_bias` in older files are the causal mask, a buffer: skipped (its header
  entry is checked like any other, but it is never read, so its dtype does not matter).

Every file's header is checked in full before a tensor is read, by the parser minillm's own
checkpoints use (minillm/model/checkpoint.py, SafetensorsFile): offsets within the data section,
each tensor's byte count equal to its shape times its dtype's size (computed before anything is
allocated), tensors disjoint and covering the data exactly, a header under the format's 100 MB cap.
A file that fails, a tensor in a dtype other than F32, F16, BF16 or F64, a name that appears twice
or does not fit config.json is refused with `CheckpointError` naming the tensor.

Memory: tensors are read one at a time with plain reads (a memory map's pages would count as a
copy), processed as NumPy arrays in place (NumPy hands freed memory back at once), and become JAX
arrays one at a time. Measured on GPT-2 small (bench/gpt2.py): loading adds a peak of 2.0x the
file's weights (the NumPy tensors and the JAX arrays made from them, side by side while they are
handed over), and the loaded model holds 1.3x (W_U is kept apart from W_E, as TransformerLens does).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from minillm.model import processing
from minillm.model.checkpoint import NUMPY_DTYPES, CheckpointError, SafetensorsFile
from minillm.model.config import DTYPES, GPTConfig
from minillm.model.tokenizer import Tokenizer, has_tokenizer_files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
# Hugging Face activation names -> minillm's (TransformerLens' names); gelu_pytorch_tanh is the same tanh GELU
ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_DOWNLOAD_HINT = (
    "minillm reads only local files and never downloads. Fetch the files once, e.g. with "
    "`hf download openai-community/gpt2 config.json model.safetensors tokenizer.json tokenizer_config.json "
    "--local-dir gpt2` "
    "(or from https://huggingface.co/gpt2/tree/main by hand), then pass that directory"
)


def _file(directory: str, name: str) -> str:
    return os.path.join(directory, name)


def check_directory(path: Any) -> str:
    """The directory as a string, or a clear error: not a directory, or no config.json in it."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"from_pretrained: {path!r} is not a directory. {_DOWNLOAD_HINT}")
    if not os.path.isfile(_file(path, CONFIG_FILE)):
        raise FileNotFoundError(
            f"from_pretrained: {path!r} has no {CONFIG_FILE} (it holds {sorted(os.listdir(path))}). {_DOWNLOAD_HINT}"
        )
    return path


def read_config(path: str) -> dict[str, Any]:
    """config.json as a dict; refused unless it describes a GPT-2-architecture model minillm computes."""
    try:
        with open(_file(path, CONFIG_FILE)) as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"from_pretrained: {_file(path, CONFIG_FILE)} is not valid JSON: {e}") from e
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type != "gpt2":
        raise ValueError(
            f"from_pretrained: {path!r} holds a {model_type!r} model ({architectures}); minillm loads the GPT-2 "
            "architecture only (model_type 'gpt2': gpt2, gpt2-medium/large/xl, distilgpt2 and their fine-tunes)"
        )
    other = [a for a in architectures if a not in ARCHITECTURES]
    if other:
        raise ValueError(
            f"from_pretrained: architectures {other} are not a language model minillm loads {ARCHITECTURES}"
        )
    refuse = {  # options that make the same weights compute other numbers here
        "scale_attn_weights": (True, "minillm always divides attention scores by sqrt(d_head)"),
        "scale_attn_by_inverse_layer_idx": (False, "minillm does not scale scores by 1 / (layer + 1)"),
        "add_cross_attention": (False, "cross-attention belongs to an encoder-decoder"),
    }
    for key, (wanted, why) in refuse.items():
        if hf.get(key, wanted) != wanted:
            raise ValueError(f"from_pretrained: {CONFIG_FILE} sets {key}={hf[key]!r}: not supported ({why})")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise ValueError(
            f"from_pretrained: activation_function={act!r} is not supported (minillm has {sorted(ACTIVATIONS)})"
        )
    return hf


def config_from_hugging_face(hf: dict[str, Any], dtype: str = "float32") -> GPTConfig:
    """The GPTConfig of a GPT-2 config.json (n_embd -> d_model, n_layer -> n_layers, ...)."""
    d_model, n_heads = int(hf["n_embd"]), int(hf["n_head"])
    if d_model % n_heads:
        raise ValueError(f"from_pretrained: n_embd={d_model} is not divisible by n_head={n_heads}")
    return GPTConfig(
        n_layers=int(hf["n_layer"]),
        d_model=d_model,
        n_ctx=int(hf.get("n_positions") or hf["n_ctx"]),
        d_vocab=int(hf["vocab_size"]),
        n_heads=n_heads,
        d_mlp=int(hf.get("n_inner") or 4 * d_model),
        act_fn=ACTIVATIONS[hf.get("activation_function", "gelu_new")],
        eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        normalization_type="LN",
        dtype=dtype,
    )


_MAX_INDEX_BYTES = 100_000_000  # as the safetensors header cap


def read_index(index_path: str) -> list[str]:
    """The shard file names an index's weight_map names, sorted, each checked: the index is a JSON
    object under 100 MB whose "weight_map" maps tensor names to plain file names ending in
    .safetensors in the same directory (no path separators, no "..": an index cannot point outside
    its directory). Any other content is a CheckpointError."""
    size = os.path.getsize(index_path)
    if size > _MAX_INDEX_BYTES:
        raise CheckpointError(f"{index_path}: {size} bytes, over the {_MAX_INDEX_BYTES}-byte cap for an index")
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{index_path} is not valid JSON: {e}") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f'{index_path}: expected a JSON object with a non-empty "weight_map" object')
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{index_path}: tensor {name!r} maps to {shard!r}, not a file name")
        plain = shard == os.path.basename(shard) and "/" not in shard and "\\" not in shard
        if not plain or shard in (".", "..") or not shard.endswith(".safetensors"):
            raise CheckpointError(
                f"{index_path}: tensor {name!r} maps to {shard!r}; a shard must be a .safetensors file "
                "in the index's own directory"
            )
    return sorted(set(weight_map.values()))


def weight_files(path: str) -> list[str]:
    """The safetensors files that hold the weights: one file, or the shards of an index."""
    if os.path.isfile(_file(path, WEIGHTS_FILE)):
        return [_file(path, WEIGHTS_FILE)]
    if os.path.isfile(_file(path, INDEX_FILE)):
        shards = read_index(_file(path, INDEX_FILE))
        missing = [s for s in shards if not os.path.isfile(_file(path, s))]
        if missing:
            raise FileNotFoundError(
                f"from_pretrained: {INDEX_FILE} in {path!r} names shards that are missing: {missing}"
            )
        return [_file(path, s) for s in shards]
    pickles = [p for p in PICKLE_FILES if os.path.isfile(_file(path, p))]
    if pickles:
        raise ValueError(
            f"from_pretrained: {path!r} has only {pickles}, a pickle-based format; minillm never unpickles (loading a "
            f"pickle can run code). Use {WEIGHTS_FILE} instead: the Hub serves it for gpt2, gpt2-medium/large/xl and "
            "distilgpt2, or convert once where torch is installed: "
            "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`"
        )
    raise FileNotFoundError(f"from_pretrained: {path!r} has no {WEIGHTS_FILE} (nor {INDEX_FILE}). {_DOWNLOAD_HINT}")


# the dtypes a GPT-2 file's weights come in (a tensor in another is refused by name and dtype)
_DTYPES = {k: NUMPY_DTYPES[k] for k in ("F32", "F16", "BF16", "F64")}


def _tensors(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every tensor but the causal-mask buffers, the "transformer." prefix dropped.

    Each file's header is checked in full first (SafetensorsFile: offsets, sizes, coverage, the
    buffers' entries included); the tensors are then read one at a time, in file order, with plain
    reads: no memory map, whose pages would count as one more copy of the model."""
    for file in files:
        with SafetensorsFile(file, f"from_pretrained: {file}") as st:
            for t in st.tensors:
                if t.name.endswith(_BUFFERS):  # never read: its dtype does not matter
                    continue
                yield t.name.removeprefix("transformer."), st.read(t, _DTYPES)


def _expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 file holds, under Hugging Face's names, with its shape for this config."""
    d, m = cfg.d_model, cfg.d_mlp
    shapes = {"wte.weight": (cfg.d_vocab, d), "wpe.weight": (cfg.n_ctx, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for l in range(cfg.n_layers):
        shapes |= {
            f"h.{l}.ln_1.weight": (d,),
            f"h.{l}.ln_1.bias": (d,),
            f"h.{l}.attn.c_attn.weight": (d, 3 * d),
            f"h.{l}.attn.c_attn.bias": (3 * d,),
            f"h.{l}.attn.c_proj.weight": (d, d),
            f"h.{l}.attn.c_proj.bias": (d,),
            f"h.{l}.ln_2.weight": (d,),
            f"h.{l}.ln_2.bias": (d,),
            f"h.{l}.mlp.c_fc.weight": (d, m),
            f"h.{l}.mlp.c_fc.bias": (m,),
            f"h.{l}.mlp.c_proj.weight": (m, d),
            f"h.{l}.mlp.c_proj.bias": (d,),
        }
    return shapes


def _convert(name: str, x: np.ndarray, cfg: GPTConfig) -> dict[str, np.ndarray]:
    """One Hugging Face tensor as the TransformerLens-named weight(s) it becomes."""
    h, e = cfg.n_heads, cfg.d_head
    if name == "wte.weight":
        return {"embed.W_E": x}
    if name == "wpe.weight":
        return {"pos_embed.W_pos": x}
    if name == "lm_head.weight":  # [v, d] as a torch Linear
        return {"unembed.W_U": x.T}
    if name.startswith("ln_f."):
        return {"ln_final." + ("w" if name.endswith("weight") else "b"): x}
    _, l, module, *rest = name.split(".")
    kind = rest[-1]  # weight | bias
    blk = f"blocks.{l}"
    if module in ("ln_1", "ln_2"):
        return {f"{blk}.ln{module[-1]}." + ("w" if kind == "weight" else "b"): x}
    part = ".".join(rest[:-1])
    if module == "attn" and part == "c_attn":
        if kind == "weight":  # [d, 3 * h * e] -> 3 x [h, d, e]
            q, k, v = (w.reshape(cfg.d_model, h, e).transpose(1, 0, 2) for w in np.split(x, 3, axis=1))
            return {f"{blk}.attn.W_Q": q, f"{blk}.attn.W_K": k, f"{blk}.attn.W_V": v}
        q, k, v = (b.reshape(h, e) for b in np.split(x, 3))
        return {f"{blk}.attn.b_Q": q, f"{blk}.attn.b_K": k, f"{blk}.attn.b_V": v}
    if module == "attn" and part == "c_proj":
        return {f"{blk}.attn.W_O": x.reshape(h, e, cfg.d_model)} if kind == "weight" else {f"{blk}.attn.b_O": x}
    if module == "mlp":
        which = {"c_fc": "in", "c_proj": "out"}[part]
        return {f"{blk}.mlp.{'W' if kind == 'weight' else 'b'}_{which}": x}
    raise AssertionError(f"unhandled tensor {name}")  # _expected_shapes lists only the names above


def read_weights(path: str, cfg: GPTConfig, tied: bool = True) -> dict[str, np.ndarray]:
    """The weights of a GPT-2 directory under TransformerLens' names, float32 NumPy arrays.

    Every tensor is checked against the config (a missing, unexpected or repeated name, or a shape
    that does not fit, is refused with the name and both shapes: CheckpointError) before it is
    converted.
    """
    expected = _expected_shapes(cfg)
    weights: dict[str, np.ndarray] = {}
    read, seen, unexpected, wrong = set(), set(), [], []
    for name, x in _tensors(weight_files(path)):
        if name in read:  # the later copy would silently replace the earlier
            wrong.append(f"{name} appears twice (with and without 'transformer.', or in two shards)")
            continue
        read.add(name)
        want = (cfg.d_vocab, cfg.d_model) if name == "lm_head.weight" else expected.get(name)
        if want is None:
            unexpected.append(name)
            continue
        if tuple(x.shape) != want:
            wrong.append(f"{name} has shape {tuple(x.shape)}, config.json implies {want}")
            continue
        seen.add(name)
        weights.update(_convert(name, x.astype(np.float32, copy=False), cfg))
    missing = sorted(set(expected) - seen)
    if missing or unexpected or wrong:
        problems = [f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}"] if missing else []
        problems += [f"unexpected {unexpected[:8]}"] if unexpected else []
        raise CheckpointError(
            f"from_pretrained: the weights in {path!r} do not fit its {CONFIG_FILE}: " + "; ".join(problems + wrong)
        )
    if "unembed.W_U" not in weights:  # tied (GPT-2's default): the unembedding is the embedding
        if not tied:
            raise CheckpointError(
                f"from_pretrained: {CONFIG_FILE} says tie_word_embeddings=false, but {path!r} has no lm_head.weight"
            )
        weights["unembed.W_U"] = weights["embed.W_E"].T
    weights["unembed.b_U"] = np.zeros(cfg.d_vocab, np.float32)
    return weights


def load_pretrained(
    cls: type,
    path: Any,
    *,
    dtype: Any = "float32",
    float32_weights: bool = False,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> Any:
    """`cls.from_state_dict` of a GPT-2 directory, its weights processed as asked, its tokenizer
    attached when the directory has one (GPT.from_pretrained)."""
    path = check_directory(path)
    dtype = jnp.dtype(dtype).name
    if dtype not in DTYPES:
        raise ValueError(f"from_pretrained: dtype must be one of {DTYPES}, got {dtype!r}")
    hf = read_config(path)
    cfg = config_from_hugging_face(hf, dtype)
    weights = read_weights(path, cfg, tied=hf.get("tie_word_embeddings", True))
    weights = processing.process(
        weights,
        cfg,
        fold_layer_norm=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembedding=center_unembed,
        fold_biases_of_values=fold_value_biases,
    )
    store = "float32" if float32_weights else dtype  # the weights' own dtype: the compute dtype, unless asked
    for name in weights:  # NumPy -> JAX in place: each NumPy array is freed as its JAX copy replaces it
        weights[name] = jnp.asarray(weights[name], store)
    model = cls.from_state_dict(cfg, weights)
    if has_tokenizer_files(path):
        try:
            model.tokenizer = Tokenizer.from_directory(path)
        except ImportError as e:
            warnings.warn(
                f"from_pretrained: {path!r} has a tokenizer, but {e}; the model has no text calls", stacklevel=3
            )
    return model
