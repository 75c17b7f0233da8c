"""GPT-2 directories in Hugging Face's layout, written by the tests themselves (no download, no torch).

`write_gpt2(path, ...)` writes what `GPT2LMHeadModel.save_pretrained` and the Hub's gpt2 repository
hold: config.json, model.safetensors with random weights under Hugging Face's names and in its
Conv1D shapes (input first: c_attn.weight is [d, 3d]), and a tokenizer.json: a byte-level BPE that
`tokenizers` trains here on a small text, with GPT-2's `<|endoftext|>`. `gpt2_forward` in
tests/reference.py computes the same model from these tensors in NumPy, independently of minillm.
"""

from __future__ import annotations

import json
import os

import numpy as np
import safetensors.numpy

TEXT = """The quick brown fox jumps over the lazy dog. When Mary and John went to the store, John gave a drink
to Mary. Induction heads copy what came after the previous occurrence of the current token.
Naïve café owners serve crème brûlée — 🦊 and 🐶 emoji too! Numbers: 12345 + 678 = 13023.
"""


def config(n_layer: int = 2, n_embd: int = 32, n_head: int = 4, n_positions: int = 24, vocab_size: int = 300, **extra):
    """A GPT-2 config.json dict, with Hugging Face's field names."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_positions": n_positions,
        "n_inner": None,
        "vocab_size": vocab_size,
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": vocab_size - 1,
        "eos_token_id": vocab_size - 1,
        **extra,
    }


def random_weights(cfg: dict, seed: int = 0, prefix: str = "transformer.") -> dict[str, np.ndarray]:
    """Random float32 tensors under Hugging Face's GPT-2 names and shapes (LayerNorms away from 1, 0)."""
    rng = np.random.default_rng(seed)
    d, v, n = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    m = cfg.get("n_inner") or 4 * d

    def normal(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    w = {"wte.weight": normal(v, d), "wpe.weight": normal(n, d, scale=0.05)}
    w |= {"ln_f.weight": 1 + normal(d, scale=0.1), "ln_f.bias": normal(d, scale=0.1)}
    for l in range(cfg["n_layer"]):
        h = f"h.{l}"
        w |= {
            f"{h}.ln_1.weight": 1 + normal(d, scale=0.1),
            f"{h}.ln_1.bias": normal(d, scale=0.1),
            f"{h}.attn.c_attn.weight": normal(d, 3 * d),
            f"{h}.attn.c_attn.bias": normal(3 * d, scale=0.1),
            f"{h}.attn.c_proj.weight": normal(d, d),
            f"{h}.attn.c_proj.bias": normal(d, scale=0.1),
            f"{h}.ln_2.weight": 1 + normal(d, scale=0.1),
            f"{h}.ln_2.bias": normal(d, scale=0.1),
            f"{h}.mlp.c_fc.weight": normal(d, m),
            f"{h}.mlp.c_fc.bias": normal(m, scale=0.1),
            f"{h}.mlp.c_proj.weight": normal(m, d),
            f"{h}.mlp.c_proj.bias": normal(d, scale=0.1),
        }
    return {prefix + k: x for k, x in w.items()}


def train_tokenizer(vocab_size: int):
    """A byte-level BPE trained on TEXT, `<|endoftext|>` its last id, as GPT-2's (50256 of 50257)."""
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size - 1, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([TEXT], trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == vocab_size and tok.token_to_id("<|endoftext|>") == vocab_size - 1
    return tok


def write_gpt2(
    path: str,
    cfg: dict | None = None,
    weights: dict[str, np.ndarray] | None = None,
    tokenizer: bool = True,
    seed: int = 0,
) -> tuple[dict, dict[str, np.ndarray]]:
    """A directory as save_pretrained writes it; returns (config dict, the tensors written)."""
    cfg = config() if cfg is None else cfg
    weights = random_weights(cfg, seed) if weights is None else weights
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    safetensors.numpy.save_file(weights, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer:
        train_tokenizer(cfg["vocab_size"]).save(os.path.join(path, "tokenizer.json"))
    return cfg, weights


# Every file of a snapshot of the Hub's openai-community/gpt2 repository (`hf download openai-community/gpt2
# --local-dir gpt2`, its file page https://huggingface.co/openai-community/gpt2/tree/main), with what each holds.
HUB_GPT2_FILES = (
    ".gitattributes",
    "64-8bits.tflite",
    "64-fp16.tflite",
    "64.tflite",
    "README.md",
    "config.json",  # the sizes, no tie_word_embeddings, n_inner, scale_attn_weights keys (their defaults)
    "flax_model.msgpack",
    "generation_config.json",  # bos / eos 50256
    "merges.txt",  # "#version: 0.2" first
    "model.safetensors",  # names without "transformer.", the causal-mask buffers h.{l}.attn.bias included
    "onnx/config.json",
    "onnx/decoder_model.onnx",
    "onnx/decoder_model_merged.onnx",
    "onnx/decoder_with_past_model.onnx",
    "onnx/generation_config.json",
    "onnx/merges.txt",
    "onnx/special_tokens_map.json",
    "onnx/tokenizer.json",
    "onnx/tokenizer_config.json",
    "onnx/vocab.json",
    "pytorch_model.bin",
    "rust_model.ot",
    "tf_model.h5",
    "tokenizer.json",  # <|endoftext|> both in the BPE vocabulary and in added_tokens, special
    "tokenizer_config.json",  # {"model_max_length": 1024}: it names no special token
    "vocab.json",  # <|endoftext|> last
)


def hub_config(n_layer: int = 2, n_embd: int = 32, n_head: int = 4, n_positions: int = 64, vocab_size: int = 300):
    """config.json as the Hub's gpt2 holds it (its keys exactly), at a small size."""
    eot = vocab_size - 1
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": eot,
        "embd_pdrop": 0.1,
        "eos_token_id": eot,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_positions,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_layer": n_layer,
        "n_positions": n_positions,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": vocab_size,
    }


def hub_tokenizer_files(vocab_size: int) -> dict[str, str]:
    """tokenizer.json, vocab.json and merges.txt as GPT-2's on the Hub: the same byte-level BPE in three
    files; `<|endoftext|>` is the last id of the BPE vocabulary and an added token marked special
    (normalized, as GPT-2's); the merges are "a b" strings and merges.txt starts with its version line."""
    tok = json.loads(train_tokenizer(vocab_size).to_str())
    eot = vocab_size - 1
    tok["added_tokens"] = [
        {"id": eot, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": True, "special": True}
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok["pre_tokenizer"] = {"type": "ByteLevel", **byte_level}
    tok["post_processor"] = {"type": "ByteLevel", **byte_level, "add_prefix_space": True, "trim_offsets": False}
    tok["decoder"] = {"type": "ByteLevel", **byte_level, "add_prefix_space": True}
    model = tok["model"]
    model |= {"continuing_subword_prefix": "", "end_of_word_suffix": ""}
    model["vocab"] = {**model["vocab"], "<|endoftext|>": eot}
    model["merges"] = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {
        "tokenizer.json": json.dumps(tok, ensure_ascii=False),
        "vocab.json": json.dumps(model["vocab"], ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(model["merges"]) + "\n",
    }


def write_hub_gpt2(path: str, cfg: dict | None = None, seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """A directory laid out exactly as a snapshot of the Hub's gpt2 repository: every file of
    HUB_GPT2_FILES, at a small size (random weights in model.safetensors, GPT-2's names and layout). The
    formats minillm does not read (pytorch_model.bin, tf_model.h5, the ONNX and TFLite files, ...) hold
    dummy bytes: a loader that opened them would fail. Returns (config dict, the weights written)."""
    cfg = hub_config() if cfg is None else cfg
    weights = random_weights(cfg, seed, prefix="")  # the Hub's gpt2 file has no "transformer." prefix
    n = cfg["n_positions"]
    mask = np.tril(np.ones((n, n), np.float32))[None, None]  # the causal-mask buffer GPT-2's file carries
    stored = {**weights, **{f"h.{l}.attn.bias": mask for l in range(cfg["n_layer"])}}
    eot = cfg["vocab_size"] - 1
    text = hub_tokenizer_files(cfg["vocab_size"])
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    generation = {"_from_model_config": True, "bos_token_id": eot, "eos_token_id": eot}
    files = {
        ".gitattributes": "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in ("bin", "safetensors")),
        "README.md": "---\nlanguage: en\nlicense: mit\n---\n\n# GPT-2\n",
        "config.json": json.dumps(cfg, indent=2),
        "generation_config.json": json.dumps({**generation, "transformers_version": "4.26.0.dev0"}, indent=2),
        "tokenizer_config.json": json.dumps({"model_max_length": 1024}),
        **text,
        "onnx/config.json": json.dumps({**cfg, "use_cache": True}, indent=2),
        "onnx/generation_config.json": json.dumps(generation),
        "onnx/special_tokens_map.json": json.dumps(special),
        "onnx/tokenizer_config.json": json.dumps({**special, "model_max_length": 1024, "add_prefix_space": False}),
        **{f"onnx/{name}": text[name] for name in ("tokenizer.json", "vocab.json", "merges.txt")},
    }
    os.makedirs(os.path.join(path, "onnx"), exist_ok=True)
    for name in HUB_GPT2_FILES:
        file = os.path.join(path, name)
        if name == "model.safetensors":
            safetensors.numpy.save_file(stored, file, metadata={"format": "pt"})
        elif name in files:
            with open(file, "w") as f:
                f.write(files[name])
        else:  # a weight format minillm never reads: bytes that no reader accepts
            with open(file, "wb") as f:
                f.write(b"\x80\x04 not " + name.encode() + b": minillm must not read this file")
    assert sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs) == sorted(
        HUB_GPT2_FILES
    )
    return cfg, weights
