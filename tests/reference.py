"""An independent forward pass in NumPy: what the model must compute, written from the math.

    logits, acts = reference.forward(weights, cfg, tokens)            # weights: model.state_dict()
    acts["blocks.0.attn.hook_pattern"]                                # [b, h, q, k], float64

It follows TransformerLens' numerics (its HookedTransformer is the specification the hook names come
from): LayerNorm centres, then divides by hook_scale = sqrt(mean(x^2) + eps) and only then applies
w and b ("LNPre" has no w and b); scores of keys a query may not see are -inf before the softmax;
GELU is the exact erf form; attention_rate r mixes the softmax with uniform attention over the
visible keys, r * softmax + (1 - r) * uniform (Zhong et al. 2023); "bidirectional" attention has no
causal mask. With an attention_mask (0 at padding) positions count real tokens only, padding gets no
position embedding, no query sees a padding key, and a query that sees no key attends to nothing.

Everything is float64 whatever cfg.dtype is: a test compares a bfloat16 model against it with a
tolerance of its precision. Nothing here imports minillm: only the config's fields are read, and
the weights are looked up by TransformerLens' names, so the model cannot grade its own homework.

`gpt2_forward(tensors, hf_config, tokens)` is a second pass written against Hugging Face's GPT-2
layout instead (GPT2LMHeadModel's code path: one fused c_attn in Conv1D layout split into heads,
the tanh GELU, the unembedding tied to wte), for GPT.from_pretrained: it shares no name or shape
with minillm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)) (TransformerLens' "gelu")."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def layer_norm(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float) -> tuple[np.ndarray, ...]:
    """(output, hook_scale [.., 1], hook_normalized): centre, divide by the scale, then w and b."""
    x = x - x.mean(-1, keepdims=True)
    scale = np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    normalized = x / scale
    return (normalized if w is None else normalized * w + b), scale, normalized


def softmax_over_visible(scores: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of the visible entries; a row with nothing visible is all 0."""
    any_visible = visible.any(-1, keepdims=True)
    top = np.where(any_visible, np.where(visible, scores, -np.inf).max(-1, keepdims=True), 0.0)
    e = np.where(visible, np.exp(scores - top), 0.0)
    total = e.sum(-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0)


def forward(
    weights: Mapping[str, Any], cfg: Any, tokens: Any, attention_mask: Any = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(logits [b, p, d_vocab_out], {hook name: activation}) of int tokens [b, p], in float64.

    weights: a state dict under TransformerLens' names (model.state_dict(), NumPy or JAX arrays);
    cfg: anything with GPTConfig's fields; attention_mask: [b, p] of 0 and 1, or None. The
    activations are those of every hook point, in the order the forward pass reaches them
    (hook_result included: each head's write, [b, p, h, d])."""
    W = {name: np.asarray(value, np.float64) for name, value in weights.items()}
    tokens = np.asarray(tokens)
    n_batch, n_pos = tokens.shape
    acts: dict[str, np.ndarray] = {}

    def hook(name: str, x: np.ndarray) -> np.ndarray:
        acts[name] = x
        return x

    def norm(prefix: str, x: np.ndarray) -> np.ndarray:
        if cfg.normalization_type is None:
            return x
        w, b = (W[f"{prefix}.w"], W[f"{prefix}.b"]) if cfg.normalization_type == "LN" else (None, None)
        out, scale, normalized = layer_norm(x, w, b, cfg.eps)
        hook(f"{prefix}.hook_scale", scale)
        hook(f"{prefix}.hook_normalized", normalized)
        return out

    # the keys each query may see: [b, 1, q, k]
    visible = np.ones((n_batch, 1, n_pos, n_pos), bool)
    if cfg.attention_dir == "causal":
        visible &= np.tril(np.ones((n_pos, n_pos), bool))
    if attention_mask is None:
        position = np.broadcast_to(np.arange(n_pos), (n_batch, n_pos))
        pos_embed = W["pos_embed.W_pos"][position]
    else:
        mask = np.asarray(attention_mask) > 0
        visible &= mask[:, None, None, :]
        position = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # left padding: real tokens start at 0
        pos_embed = W["pos_embed.W_pos"][position] * mask[..., None]

    resid = hook("hook_embed", W["embed.W_E"][tokens]) + hook("hook_pos_embed", pos_embed)
    for l in range(cfg.n_layers):
        blk = f"blocks.{l}"
        resid_pre = hook(f"{blk}.hook_resid_pre", resid)
        x = norm(f"{blk}.ln1", resid_pre)
        q = hook(f"{blk}.attn.hook_q", np.einsum("bpd,hde->bphe", x, W[f"{blk}.attn.W_Q"]) + W[f"{blk}.attn.b_Q"])
        k = hook(f"{blk}.attn.hook_k", np.einsum("bpd,hde->bphe", x, W[f"{blk}.attn.W_K"]) + W[f"{blk}.attn.b_K"])
        v = hook(f"{blk}.attn.hook_v", np.einsum("bpd,hde->bphe", x, W[f"{blk}.attn.W_V"]) + W[f"{blk}.attn.b_V"])
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        hook(f"{blk}.attn.hook_attn_scores", np.where(visible, scores, -np.inf))
        pattern = softmax_over_visible(scores, visible)
        if cfg.attention_rate != 1.0:
            uniform = visible / np.maximum(visible.sum(-1, keepdims=True), 1)
            pattern = cfg.attention_rate * pattern + (1.0 - cfg.attention_rate) * uniform
        pattern = hook(f"{blk}.attn.hook_pattern", pattern)
        z = hook(f"{blk}.attn.hook_z", np.einsum("bhqk,bkhe->bqhe", pattern, v))
        result = hook(f"{blk}.attn.hook_result", np.einsum("bqhe,hed->bqhd", z, W[f"{blk}.attn.W_O"]))
        attn_out = hook(f"{blk}.hook_attn_out", result.sum(2) + W[f"{blk}.attn.b_O"])
        if cfg.attn_only:
            resid = hook(f"{blk}.hook_resid_post", resid_pre + attn_out)
            continue
        resid_mid = hook(f"{blk}.hook_resid_mid", resid_pre + attn_out)
        x = norm(f"{blk}.ln2", resid_mid)
        pre = hook(f"{blk}.mlp.hook_pre", x @ W[f"{blk}.mlp.W_in"] + W[f"{blk}.mlp.b_in"])
        post = hook(f"{blk}.mlp.hook_post", gelu(pre) if cfg.act_fn == "gelu" else relu(pre))
        mlp_out = hook(f"{blk}.hook_mlp_out", post @ W[f"{blk}.mlp.W_out"] + W[f"{blk}.mlp.b_out"])
        resid = hook(f"{blk}.hook_resid_post", resid_mid + mlp_out)
    x = hook("unembed.hook_in", norm("ln_final", resid))
    logits = hook("unembed.hook_out", x @ W["unembed.W_U"] + W["unembed.b_U"])
    return logits, acts


def gelu_new(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, the tanh approximation: x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gpt2_forward(tensors: Mapping[str, Any], hf_config: Mapping[str, Any], tokens: Any) -> tuple[np.ndarray, dict]:
    """(logits [b, p, vocab], {"hidden.L": the residual stream after block L, "attn.L": [b, h, q, k]})
    of a GPT-2 checkpoint's tensors (Hugging Face's names, "transformer." prefix optional), float64."""
    T = {k.removeprefix("transformer."): np.asarray(v, np.float64) for k, v in tensors.items()}
    n_head, eps = hf_config["n_head"], hf_config["layer_norm_epsilon"]
    tokens = np.asarray(tokens)
    b, p = tokens.shape
    out: dict[str, np.ndarray] = {}

    def ln(x, name):
        return layer_norm(x, T[f"{name}.weight"], T[f"{name}.bias"], eps)[0]

    x = T["wte.weight"][tokens] + T["wpe.weight"][np.arange(p)]
    for l in range(hf_config["n_layer"]):
        h = f"h.{l}"
        qkv = ln(x, f"{h}.ln_1") @ T[f"{h}.attn.c_attn.weight"] + T[f"{h}.attn.c_attn.bias"]  # [b, p, 3d]
        q, k, v = (a.reshape(b, p, n_head, -1).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])  # [b, h, q, k]
        causal = np.tril(np.ones((p, p), bool))
        attn = softmax_over_visible(scores, np.broadcast_to(causal, scores.shape))
        out[f"attn.{l}"] = attn
        merged = (attn @ v).transpose(0, 2, 1, 3).reshape(b, p, -1)  # [b, p, h * e]
        x = x + merged @ T[f"{h}.attn.c_proj.weight"] + T[f"{h}.attn.c_proj.bias"]
        hidden = gelu_new(ln(x, f"{h}.ln_2") @ T[f"{h}.mlp.c_fc.weight"] + T[f"{h}.mlp.c_fc.bias"])
        x = x + hidden @ T[f"{h}.mlp.c_proj.weight"] + T[f"{h}.mlp.c_proj.bias"]
        out[f"hidden.{l}"] = x
    lm_head = T.get("lm_head.weight", T["wte.weight"])  # tied unless the file has its own
    return ln(x, "ln_f") @ lm_head.T, out
