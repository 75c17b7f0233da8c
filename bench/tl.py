"""The same model in TransformerLens, for the benchmarks that compare the two libraries.

    tl = tl_model(model, use_attn_result=True)         # whichever TransformerLens is installed
    tl = hooked_transformer(model, device="cuda")      # 3.x: a HookedTransformer
    tl = transformer_bridge(model)                     # 4.x: a TransformerBridge (compatibility mode)
    err, why = rel_diff(cache["pattern", 0], tl_cache["pattern", 0])      # a torch tensor or any array

All go through the library's own calls: `GPT.to_transformer_lens()` for the weights (in
HookedTransformer's names and shapes) and the config, `minillm.utils.to_numpy` for torch tensors (on
any device). TransformerLens 3.x builds a HookedTransformer from that config; 4.x, which removed
HookedTransformer, boots a TransformerBridge natively from the same config (`boot_native`), loads the
weights through its own `convert_tl_checkpoint`, and switches on `enable_compatibility_mode` without
weight processing (minillm's weights are the unprocessed ones). Imported by bench/vs_transformer_lens.py
and bench/discovery.py (3.x only) and by bench/tl_suite.py (either), which run in bench/.venv-tl
(3.x: bash bench/run.sh, --suite) or bench/.venv-tl4 (4.x: bash bench/run.sh --suite4).
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import torch

from minillm import GPT
from minillm.utils import to_numpy

TL_VERSION = importlib.metadata.version("transformer-lens")
# 4.x removed HookedTransformer (importing it raises): the bridge stands in for it
BRIDGE = int(TL_VERSION.split(".")[0]) >= 4
if not BRIDGE:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

# a HookedTransformer's own buffers (each attention's IGNORE value and causal-mask cache): not weights
TL_BUFFERS = (".IGNORE", ".mask")
# the hook-point flags: HookedTransformerConfig fields in 3.x, set_use_* calls on a 4.x bridge
HOOK_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in")


class NotExpressible(Exception):
    """A minillm config that the installed TransformerLens cannot build (the message says why)."""


def tl_model(model: GPT, device: str = "cpu", route: str | None = None, **overrides):
    """The same model in the installed TransformerLens: a HookedTransformer (3.x; route None) or a
    TransformerBridge in compatibility mode (4.x; route "gpt2" or "native", see transformer_bridge).
    `overrides`: config fields (3.x) or hook flags (HOOK_FLAGS)."""
    if BRIDGE:
        return transformer_bridge(model, device, route or "gpt2", **overrides)
    if route is not None:
        raise ValueError(f"route={route!r}: TransformerLens {TL_VERSION} has no TransformerBridge")
    return hooked_transformer(model, device, **overrides)


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


# the two ways to boot a TransformerBridge from a config, without the Hugging Face hub
BRIDGE_ROUTES = ("gpt2", "native")


def transformer_bridge(model: GPT, device: str = "cpu", route: str = "gpt2", **flags):
    """The same model as a TransformerLens 4.x TransformerBridge on `device`, in eval mode, then
    `enable_compatibility_mode(no_processing=True)`: HookedTransformer's hook names, with the weights
    as given (its default folds LayerNorm and centres the writing weights, which
    HookedTransformer(cfg).load_state_dict never did). `flags`: the hook-point flags (HOOK_FLAGS),
    switched on through the bridge's set_use_* calls. Two routes (BRIDGE_ROUTES):

    - "gpt2": a Hugging Face GPT2LMHeadModel built from the config (no hub), given the weights in
      GPT-2's layout, wrapped by `build_bridge_from_module` with TransformerLens' GPT-2 adapter;
      only GPT-2-shaped configs (NotExpressible says why not);
    - "native": `TransformerBridge.boot_native` (TransformerLens' own small model) from the same
      config, the weights converted by TransformerLens' `convert_tl_checkpoint` and loaded strictly.

    Either raises NotExpressible where the booted bridge's config is not the one asked for."""
    unknown = set(flags) - set(HOOK_FLAGS)
    if unknown:
        raise TypeError(f"transformer_bridge: {sorted(unknown)} are not hook flags {HOOK_FLAGS}")
    weights, cfg = model.to_transformer_lens()
    weights = {k: torch.tensor(v) for k, v in weights.items()}
    boot = {"gpt2": _boot_gpt2, "native": _boot_native}[route]
    tl = boot(weights, cfg, device)
    got = {k: getattr(tl.cfg, k, None) for k in cfg if k != "seed"}
    differ = {k: (cfg[k], v) for k, v in got.items() if v != cfg[k]}
    if differ:  # the bridge would compute another model
        raise NotExpressible(f"the booted bridge's config differs (asked, got): {differ}")
    tl.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    for flag, value in flags.items():
        getattr(tl, f"set_{flag}")(value)
    return tl.eval()


def _boot_native(weights: dict[str, torch.Tensor], cfg: dict, device: str):
    from transformer_lens import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import boot as boot_native
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    try:
        bridge_cfg = TransformerBridgeConfig(**cfg, architecture="TransformerLensNative", dtype=torch.float32)
    except TypeError as e:  # a field the bridge's config lacks
        raise NotExpressible(f"TransformerBridgeConfig refuses {cfg}: {e}") from e
    tl = boot_native(bridge_cfg, device=device, dtype=torch.float32)
    result = tl.load_state_dict(convert_tl_checkpoint(weights, tl.cfg), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"state_dict mismatch: the bridge lacks {result.unexpected_keys}, minillm lacks {result.missing_keys}"
        )
    return tl


def _boot_gpt2(weights: dict[str, torch.Tensor], cfg: dict, device: str):
    import einops
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    why = [
        reason
        for cond, reason in [
            (cfg["attn_only"], "attention-only: every GPT-2 block has an MLP"),
            (cfg["normalization_type"] != "LN", f"normalization_type={cfg['normalization_type']}: GPT-2 has LN only"),
            (cfg["attention_dir"] != "causal", f"attention_dir={cfg['attention_dir']}: GPT-2's attention is causal"),
            (
                cfg["d_head"] * cfg["n_heads"] != cfg["d_model"],
                f"d_head={cfg['d_head']}: GPT-2's head size is n_embd / n_head = {cfg['d_model'] / cfg['n_heads']:g}",
            ),
            (cfg["d_vocab_out"] != cfg["d_vocab"], "d_vocab_out != d_vocab: GPT-2 unembeds to its input vocabulary"),
            (bool(weights["unembed.b_U"].any()), "a nonzero b_U: GPT-2's lm_head has no bias"),
        ]
        if cond
    ]
    if why:
        raise NotExpressible("not a GPT-2: " + "; ".join(why))
    hf_cfg = GPT2Config(
        vocab_size=cfg["d_vocab"],
        n_positions=cfg["n_ctx"],
        n_embd=cfg["d_model"],
        n_layer=cfg["n_layers"],
        n_head=cfg["n_heads"],
        n_inner=cfg["d_mlp"],
        activation_function=cfg["act_fn"],  # relu, gelu (exact erf) and gelu_new mean the same in both
        layer_norm_epsilon=cfg["eps"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
    )
    w = weights
    state = {
        "transformer.wte.weight": w["embed.W_E"],
        "transformer.wpe.weight": w["pos_embed.W_pos"],
        "transformer.ln_f.weight": w["ln_final.w"],
        "transformer.ln_f.bias": w["ln_final.b"],
        "lm_head.weight": w["unembed.W_U"].T,
    }
    for l in range(cfg["n_layers"]):  # GPT-2's Conv1D weights are [in, out]; c_attn is Q, K, V side by side
        tl, hf = f"blocks.{l}.", f"transformer.h.{l}."
        state |= {
            hf + "ln_1.weight": w[tl + "ln1.w"],
            hf + "ln_1.bias": w[tl + "ln1.b"],
            hf + "ln_2.weight": w[tl + "ln2.w"],
            hf + "ln_2.bias": w[tl + "ln2.b"],
            hf + "attn.c_attn.weight": torch.cat(
                [einops.rearrange(w[f"{tl}attn.W_{x}"], "n d h -> d (n h)") for x in "QKV"], dim=1
            ),
            hf + "attn.c_attn.bias": torch.cat([w[f"{tl}attn.b_{x}"].flatten() for x in "QKV"]),
            hf + "attn.c_proj.weight": einops.rearrange(w[tl + "attn.W_O"], "n h d -> (n h) d"),
            hf + "attn.c_proj.bias": w[tl + "attn.b_O"],
            hf + "mlp.c_fc.weight": w[tl + "mlp.W_in"],
            hf + "mlp.c_fc.bias": w[tl + "mlp.b_in"],
            hf + "mlp.c_proj.weight": w[tl + "mlp.W_out"],
            hf + "mlp.c_proj.bias": w[tl + "mlp.b_out"],
        }
    hf_model = GPT2LMHeadModel(hf_cfg).to(device=device, dtype=torch.float32).eval()
    result = hf_model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"state_dict mismatch: GPT-2 lacks {result.unexpected_keys}, has {result.missing_keys} too")
    return build_bridge_from_module(hf_model, "GPT2LMHeadModel", hf_config=hf_cfg, dtype=torch.float32, device=device)


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
