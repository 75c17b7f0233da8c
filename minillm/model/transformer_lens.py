"""Weights to and from TransformerLens: study a HookedTransformer's model here, and ours there.

    model = GPT.from_transformer_lens(tl_model.state_dict(), tl_model.cfg)     # or a .safetensors path
    weights, cfg_dict = model.to_transformer_lens()                              # NumPy arrays, a plain dict
    tl = HookedTransformer(HookedTransformerConfig(**cfg_dict))
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)

The weight names and shapes are the same in both libraries (docs/conventions.md); a
HookedTransformer's state dict also holds two buffers per attention layer (`IGNORE`, `mask`),
which are dropped here and rebuilt by TransformerLens (hence strict=False above). The config is read
from a `HookedTransformerConfig`, its `to_dict()`, or any dict with its field names. Anything in it
that would make the same weights compute different numbers here (rotary positions, RMSNorm, gated
MLPs, GELU variants other than the exact one and GPT-2's, local attention, grouped-query heads, a custom
attention scale...) is refused with the field named, never dropped quietly.

No torch is imported: tensors are converted with their own `.detach().cpu().numpy()`. Nothing is
unpickled: a file must be safetensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import safetensors.numpy

from minillm.model.config import GPTConfig

# TransformerLens config fields read into GPTConfig (same names, same meaning).
_SAME = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "eps", "attn_only")
# Fields whose value must be the one given (minillm computes only that); anything else is refused.
_REQUIRED = {
    "positional_embedding_type": ("standard",),
    "gated_mlp": (False, None),
    "final_rms": (False, None),
    "parallel_attn_mlp": (False, None),
    "use_local_attn": (False, None),
    "attn_only_rotary": (False, None),
    "scale_attn_by_inverse_layer_idx": (False, None),
    "use_attn_scale": (True, None),
    "n_key_value_heads": (None,),
    "attn_types": (None,),
    "num_experts": (None,),
    "use_qk_norm": (False, None),
    "output_logits_soft_cap": (-1.0, 0.0, None),
    "attn_scores_soft_cap": (-1.0, 0.0, None),
    "use_normalization_before_and_after": (False, None),
    "relative_attention_max_distance": (None,),
    "relative_attention_num_buckets": (None,),
    "rotary_dim": (None,),
    "decoder_start_token_id": (None,),
}
# gelu: exact (erf) in both; gelu_new: the tanh approximation (GPT-2's) in both
_ACT_FNS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new"}
_BUFFERS = (".IGNORE", ".mask")


def _as_dict(tl_cfg: Any) -> dict[str, Any]:
    if isinstance(tl_cfg, dict):
        return dict(tl_cfg)
    if hasattr(tl_cfg, "to_dict"):
        return dict(tl_cfg.to_dict())
    return dict(vars(tl_cfg))


def _n_heads(d: dict[str, Any]) -> int:
    """n_heads, or, when it is not given (None, or HookedTransformerConfig's default -1), d_model // d_head
    as TransformerLens derives it, refusing a d_model that d_head does not divide as it does."""
    n_heads = d.get("n_heads")
    if n_heads is not None and n_heads != -1:
        return int(n_heads)
    d_model, d_head = int(d["d_model"]), int(d["d_head"])
    if d_head <= 0 or d_model % d_head:
        raise ValueError(
            f"from_transformer_lens: n_heads is not given (got {n_heads!r}) and d_model={d_model} is not a multiple "
            f"of d_head={d_head}, so it cannot be derived as d_model // d_head"
        )
    return d_model // d_head


def config_from_transformer_lens(tl_cfg: Any) -> GPTConfig:
    """A GPTConfig from a HookedTransformerConfig (or its to_dict()); refuses what minillm does not compute."""
    d = _as_dict(tl_cfg)
    missing = [k for k in ("n_layers", "d_model", "n_ctx", "d_head", "d_vocab") if d.get(k) is None]
    if missing:
        raise ValueError(f"from_transformer_lens: the config lacks {missing}")
    for name, allowed in _REQUIRED.items():
        if name in d and d[name] not in allowed:
            raise ValueError(
                f"from_transformer_lens: {name}={d[name]!r} is not supported (minillm computes only {allowed[0]!r})"
            )
    act_fn = d.get("act_fn")
    if not d.get("attn_only") and act_fn not in _ACT_FNS:
        raise ValueError(
            f"from_transformer_lens: act_fn={act_fn!r} is not supported: minillm has 'relu', 'gelu' "
            "(the exact erf GELU) and 'gelu_new' (the tanh approximation); 'gelu_fast' and others differ"
        )
    norm = d.get("normalization_type")
    if norm not in ("LN", "LNPre", None):
        raise ValueError(f"from_transformer_lens: normalization_type={norm!r} is not supported (LN, LNPre or None)")
    scale = d.get("attn_scale")
    if scale not in (None, -1.0) and not math.isclose(float(scale), math.sqrt(d["d_head"]), rel_tol=1e-6):
        raise ValueError(f"from_transformer_lens: attn_scale={scale} (minillm divides scores by sqrt(d_head))")
    direction = d.get("attention_dir", "causal")
    if direction not in ("causal", "bidirectional"):
        raise ValueError(f"from_transformer_lens: attention_dir={direction!r} is not supported")
    fields = {k: d[k] for k in _SAME if d.get(k) is not None}
    fields["attn_only"] = bool(fields.get("attn_only", False))
    fields["n_heads"] = _n_heads(d)
    fields["d_vocab_out"] = int(d.get("d_vocab_out") or d["d_vocab"])
    if d.get("d_vocab_out") == -1:
        fields["d_vocab_out"] = int(d["d_vocab"])
    if not fields["attn_only"]:
        fields["d_mlp"] = int(d["d_mlp"])
        fields["act_fn"] = _ACT_FNS[act_fn]
    seed = d.get("seed")
    return GPTConfig(
        **fields,
        normalization_type=norm,
        attention_dir=direction,
        positional_embedding_type="standard",
        seed=int(seed) if seed is not None else 0,
    )


def config_to_transformer_lens(cfg: GPTConfig) -> dict[str, Any]:
    """HookedTransformerConfig(**this) builds the same model in TransformerLens."""
    if cfg.attention_rate != 1.0:
        raise ValueError(
            f"to_transformer_lens: attention_rate={cfg.attention_rate} has no TransformerLens equivalent "
            "(it mixes the pattern with uniform attention)"
        )
    if cfg.dtype != "float32":
        raise ValueError(
            f"to_transformer_lens: dtype={cfg.dtype!r} computes in {cfg.dtype} with float32 weights, softmax and "
            "logits; TransformerLens' dtype casts the weights themselves, which computes other numbers. Export "
            "GPT.from_state_dict(dataclasses.replace(cfg, dtype='float32'), model.state_dict()) instead"
        )
    out = {
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_ctx": cfg.n_ctx,
        "d_head": cfg.d_head,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "d_vocab_out": cfg.d_vocab_out,
        "act_fn": cfg.act_fn,
        "normalization_type": cfg.normalization_type,
        "attn_only": cfg.attn_only,
        "positional_embedding_type": "standard",
        "attention_dir": cfg.attention_dir,
        "eps": cfg.eps,
        "seed": cfg.seed,
    }
    if not cfg.attn_only:
        out["d_mlp"] = cfg.d_mlp
    return out


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy copy of an array, a JAX array, a torch tensor (on any device; bfloat16, which NumPy
    lacks, as float32; torch is never imported), a list or a number. minillm.utils.to_numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.array(value)


def weights_from_transformer_lens(state_dict: Any) -> dict[str, np.ndarray]:
    """A HookedTransformer state dict (tensors, arrays, or a .safetensors path) as float32 NumPy
    arrays, without TransformerLens' attention buffers."""
    if isinstance(state_dict, str):
        try:
            state_dict = safetensors.numpy.load_file(state_dict)
        except Exception as e:
            raise ValueError(f"from_transformer_lens: cannot read {state_dict!r} as safetensors: {e}") from e
    return {k: to_numpy(v).astype(np.float32) for k, v in state_dict.items() if not k.endswith(_BUFFERS)}
