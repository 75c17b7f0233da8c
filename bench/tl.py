"""The same model in TransformerLens, for the benchmarks that compare the two libraries.

    tl = hooked_transformer(model, device="cuda", use_attn_result=True)   # minillm's weights and config
    err, why = rel_diff(cache["pattern", 0], tl_cache["pattern", 0])      # a torch tensor or any array

Both go through the library's own calls: `GPT.to_transformer_lens()` for the weights and the
HookedTransformerConfig, `minillm.utils.to_numpy` for torch tensors (on any device). Imported by
bench/vs_transformer_lens.py and bench/tl_suite.py, which run in bench/.venv-tl (bash bench/run.sh).
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from minillm import GPT
from minillm.utils import to_numpy

# a HookedTransformer's own buffers (each attention's IGNORE value and causal-mask cache): not weights
TL_BUFFERS = (".IGNORE", ".mask")


def hooked_transformer(model: GPT, device: str = "cpu", **overrides) -> HookedTransformer:
    """The same model as a HookedTransformer on `device`, in eval mode: the config and weights of
    `model.to_transformer_lens()`, float32 unless `overrides` (any HookedTransformerConfig field, e.g.
    use_attn_result=True) say otherwise. Every weight must load: a name one library lacks is an error."""
    weights, cfg = model.to_transformer_lens()
    tl = HookedTransformer(HookedTransformerConfig(**{**cfg, "device": device, "dtype": torch.float32, **overrides}))
    missing, unexpected = tl.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(TL_BUFFERS)]
    if unexpected or missing:
        raise RuntimeError(f"state_dict mismatch: TransformerLens lacks {unexpected}, minillm lacks {missing}")
    return tl.eval()


def rel_diff(ours, theirs, scale: float = 0.0) -> tuple[float, str | None]:
    """(max |ours - theirs| / max(max |theirs|, scale) over the finite entries, None); or (inf, why)
    when the shapes differ or the non-finite entries do (their places and values must be equal: the
    masked -inf attention scores). Either side: a JAX or NumPy array, or a torch tensor."""
    a, b = to_numpy(ours).astype(np.float64), to_numpy(theirs).astype(np.float64)
    if a.shape != b.shape:
        return float("inf"), f"shapes differ: minillm {a.shape}, TransformerLens {b.shape}"
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not (fa == fb).all() or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return float("inf"), "the non-finite entries differ"
    if not fb.any():
        return 0.0, None
    return float(np.abs(a[fa] - b[fb]).max() / max(np.abs(b[fb]).max(), scale, 1e-30)), None


def sender_outputs(tl, cache) -> dict[str, torch.Tensor]:
    """Each sender's output [b, p, d] from a TransformerLens cache."""
    out = {"embed": cache["hook_embed"] + cache["hook_pos_embed"]}
    for l in range(tl.cfg.n_layers):
        for h in range(tl.cfg.n_heads):
            out[f"blocks.{l}.attn.head{h}"] = cache[f"blocks.{l}.attn.hook_result"][:, :, h]
        if not tl.cfg.attn_only:
            out[f"blocks.{l}.mlp"] = cache[f"blocks.{l}.hook_mlp_out"]
    return out
