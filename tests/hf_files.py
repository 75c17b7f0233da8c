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
