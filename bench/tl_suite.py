"""The cross-library suite: TransformerLens' calls and minillm's, on the same weights, compared.

    bash bench/run.sh --suite        # installs bench/.venv-tl (torch CPU, transformer-lens 3.x) once,
                                     # runs this, writes bench/TL_SUITE.md
    bash bench/run.sh --suite4       # the same checks against TransformerLens 4.x's TransformerBridge
                                     # (bench/.venv-tl4), writes bench/TL4_SUITE.md

Each check runs one call (or a few lines of ARENA-style code) in both libraries on the same model
and inputs, and compares the numbers. A check passes when they agree to float32 tolerance, or, where
minillm differs on purpose, when minillm refuses loudly (the check says which). TransformerLens is
needed only here: it is not a test dependency.

The configs cover what the ARENA toy models use: attention-only with LayerNorm, MLPs with GELU,
no LayerNorm with ReLU, LNPre, bidirectional attention. TransformerLens 3.x builds each as a
HookedTransformer; 4.x, which has none, as a TransformerBridge in compatibility mode, booted two ways
(bench/tl.py's BRIDGE_ROUTES: a Hugging Face GPT-2 where the config is one, and TransformerLens' own
native model), each config and route a row group of its own; a config a route cannot build is
listed with the reason. The checks are the same in both: under 4.x a failing row is labelled with
the kind of difference found (BRIDGE_FAILURES; BRIDGE_DIFFERENCES says what it is).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import sys
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import torch

warnings.filterwarnings("ignore")
import transformer_lens.patching as tlp  # noqa: E402
from transformer_lens import head_detector as tl_heads  # noqa: E402

try:  # 3.x
    import transformer_lens.utils as tl_utils  # noqa: E402
except ModuleNotFoundError:  # 4.x renamed the module ("same names")
    import transformer_lens.utilities as tl_utils  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from bench.tl import BRIDGE, BRIDGE_ROUTES, NotExpressible, rel_diff, sender_outputs, tl_model  # noqa: E402
from minillm import GPT, GPTConfig, hook_names, utils  # noqa: E402
from minillm import decompose as D  # noqa: E402
from minillm import graph as G  # noqa: E402
from minillm import patching as P  # noqa: E402
from minillm.circuits import all_composition_scores, composition_scores  # noqa: E402
from minillm.detectors import _similarity, named_detection_pattern  # noqa: E402

CONFIGS = {
    "attn_only_ln": GPTConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=12, d_vocab=23, attn_only=True, seed=1),
    "mlp_ln_gelu": GPTConfig(
        n_layers=2, d_model=32, n_heads=4, d_mlp=48, n_ctx=12, d_vocab=23, d_vocab_out=23, act_fn="gelu", seed=3
    ),
    "mlp_noln_relu": GPTConfig(
        n_layers=3, d_model=24, n_heads=3, d_head=5, d_mlp=40, n_ctx=12, d_vocab=23, normalization_type=None, seed=4
    ),
    "lnpre": GPTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=48, n_ctx=12, d_vocab=23, normalization_type="LNPre"),
    "bidirectional": GPTConfig(
        n_layers=2, d_model=32, n_heads=4, d_mlp=48, n_ctx=12, d_vocab=23, attention_dir="bidirectional", seed=5
    ),
}
RTOL = 1e-4

# What the 4.x run found, checked by hand against TransformerLens 4.3's source: bench/TL4_SUITE.md
# opens with it. Each kind of failure, per (route, check); a failure not listed here is "unclassified".
BRIDGE_FAILURES = {
    ("gpt2", "weights_round_trip"): "names differ",
    ("native", "weights_round_trip"): "names differ",
    ("gpt2", "on_request_hook_points_cached"): "shapes differ",
    ("gpt2", "on_request_hooks_edited"): "shapes differ",
    ("native", "forward_and_every_activation"): "numbers differ",
    ("native", "on_request_hook_points_cached"): "call missing",
    ("native", "on_request_hooks_edited"): "call missing",
    ("native", "head_k_input_patched"): "call missing",
    ("native", "graph_edges_ablated"): "call missing",
}
BRIDGE_DIFFERENCES = """\
## Where TransformerBridge (4.x) differs from HookedTransformer (3.9)

The same checks pass on every config in 3.9 (bench/TL_SUITE.md). Under 4.x each config is booted
two ways (bench/tl.py, `transformer_bridge`), with minillm's weights and
`enable_compatibility_mode(no_processing=True)` (its default folds LayerNorm and centres weights,
which a HookedTransformer built from a config never did):
**[gpt2]** a Hugging Face `GPT2LMHeadModel` built from the config, wrapped by TransformerLens' GPT-2
adapter (`build_bridge_from_module`); **[native]** `TransformerBridge.boot_native` (TransformerLens'
own small model), weights through its `convert_tl_checkpoint`. Both load every weight strictly and
give minillm's logits (3e-7 to 5e-7 relative; also, measured once outside the checks, with random
biases and LayerNorm weights, which the suite's fresh models leave at 0 and 1). Numbers below that no
check prints were measured the same way, on `mlp_ln_gelu`, in 4.3 and 3.9.

**Names**

- `state_dict()` is in the bridge's names and `nn.Linear` shapes (`blocks.0.attn.q.weight`
  [n_heads * d_head, d_model], `embed.weight`, `unembed.weight`), not HookedTransformer's
  (`blocks.0.attn.W_Q` [n_heads, d_model, d_head], `embed.W_E`), so
  `GPT.from_transformer_lens(tl.state_dict(), tl.cfg)` finds none of its weights.
  *weights_round_trip*, both routes. (`tl.tl_named_parameters()` has 3.9's names: loading that
  gives minillm's logits exactly.)
- `transformer_lens.utils` is now `transformer_lens.utilities` (same functions); the bridge also has
  hook points 3.9 lacks (`embed.hook_in`, `blocks.0.ln1.hook_in`, `blocks.0.attn.q.hook_out`, ...).
  Neither fails a check.

**Shapes**

- Under `use_split_qkv_input` or `use_attn_in`, ln1's `hook_scale` and `hook_normalized` fire once,
  on the whole residual ([batch, pos, 1], [batch, pos, d_model]), where 3.9 fires them per head and
  input ([batch, pos, n_heads, 1], [batch, pos, n_heads, d_model]): the bridge normalizes the per-head
  copies through the raw LayerNorm module, without its hooks (`AttentionBridge._apply_ln1_per_head`,
  "deliberate divergence"). An edit there then changes nothing: scaling `blocks.1.ln1.hook_scale`
  by 3 under split inputs moves the bridge's logits by 4e-7, 3.9's and minillm's by 0.53.
  *on_request_hook_points_cached* [gpt2] (the shapes), *on_request_hooks_edited* [gpt2] (its ln1
  cases; the edits of `hook_attn_in`, `hook_{q,k,v}_input` and `hook_mlp_in` give 3.9's logits).

**Numbers**

- [native] `attn.hook_attn_scores` is the attention pattern, equal to `hook_pattern` (masked entries
  0, not -inf; every entry a probability, not a scaled pre-softmax score): the plain
  `AttentionBridge` fires it after the fact on the weights the module returns ("Most HF
  implementations return post-softmax weights"), and an edit there changes nothing (x2: the logits
  move by 0; by 0.29 in 3.9 and minillm). *forward_and_every_activation* [native]: "the non-finite
  entries differ" (causal), 4.9 relative (bidirectional). The [gpt2] route's scores are 3.9's.

**Calls missing or refused**

- [native] no per-head hook points: `set_use_attn_result`, `set_use_split_qkv_input` and
  `set_use_attn_in` raise NotImplementedError (only `JointQKVAttentionBridge` and
  `PositionEmbeddingsAttentionBridge` support them; `boot_native` uses `AttentionBridge`), so there is
  no `attn.hook_result`, `hook_attn_in` or `hook_{q,k,v}_input`. *on_request_hook_points_cached*,
  *on_request_hooks_edited*, *head_k_input_patched* [native]: NotImplementedError;
  *graph_edges_ablated* [native]: no `blocks.0.attn.hook_result` (the model is built without
  use_attn_result, see the notes after the table). `hook_mlp_in` works; `stack_head_results` and the
  head patching sweeps work from `hook_z`.
- `use_attn_in` and `use_split_qkv_input` are mutually exclusive (`set_use_split_qkv_input` raises
  ValueError); 3.9 takes both (the "all" mode of *on_request_hook_points_cached*, which [gpt2] does
  not reach: it fails first on ln1's shapes).
- The GPT-2 route takes only GPT-2-shaped configs (LayerNorm, causal, MLPs, d_head = d_model /
  n_heads, no unembedding bias): of the five, `mlp_ln_gelu`. The native route boots all five
  (LN, LNPre and no normalization, attention-only, bidirectional, d_head 5 with d_model 24 and 3 heads).

Everything else passes on both routes: logits, losses and return types, stop/start at layer,
remove_batch_dim, the stacked weights, QK/OV FactoredMatrix, composition scores, the cache
decompositions and logit attributions, head detectors, patching sweeps, attention masks, hooks on
unreached points, `unembed.hook_in`; on [gpt2] also the per-head hooks' values, edge ablation and
key-input patching."""


def close(ours, theirs, rtol: float = RTOL) -> None:
    err, why = rel_diff(ours, theirs)
    if why is not None:
        raise AssertionError(why)
    if err > rtol:
        raise AssertionError(f"max relative difference {err:.2e} > {rtol}")


def raises(call: Callable, kind=Exception) -> None:
    try:
        call()
    except kind:
        return
    raise AssertionError("minillm did not refuse")


# ---------------------------------------------------------------------------------------------
# The checks: each takes (model, tl, tokens) and raises AssertionError on a difference
# ---------------------------------------------------------------------------------------------
def forward_and_every_activation(m, tl, t):
    logits, cache = m.run_with_cache(t)
    tl_logits, tl_cache = tl.run_with_cache(torch.tensor(t))
    close(logits, tl_logits)
    common = [n for n in cache if n in tl_cache.keys()]
    assert len(common) >= len(cache) - 4, f"few common hook names: {len(common)} of {len(cache)}"
    for n in common:
        close(cache[n], tl_cache[n])


def return_types_and_loss(m, tl, t):
    tt = torch.tensor(t)
    close(m(t, return_type="loss"), tl(tt, return_type="loss"))
    close(m(t, return_type="loss", loss_per_token=True), tl(tt, return_type="loss", loss_per_token=True))
    logits, loss = m(t, return_type="both")
    tl_logits, tl_loss = tl(tt, return_type="both")
    close(logits, tl_logits)
    close(loss, tl_loss)
    assert m(t, return_type=None) is None and tl(tt, return_type=None) is None
    close(m.loss_fn(logits, t, per_token=True), tl.loss_fn(tl_logits, tt, per_token=True))
    close(utils.lm_cross_entropy_loss(logits, t), tl_utils.lm_cross_entropy_loss(tl_logits, tt))


def remove_batch_dim_and_negative_layers(m, tl, t):
    _, cache = m.run_with_cache(t[:1], remove_batch_dim=True)
    _, tl_cache = tl.run_with_cache(torch.tensor(t[:1]), remove_batch_dim=True)
    for key in [("resid_post", -1), ("pattern", -1), ("resid_pre", 0), ("attn_out", -2)]:
        close(cache[key], tl_cache[key])


def start_and_stop_at_layer(m, tl, t):
    tt = torch.tensor(t)
    for stop in (1, -1):
        close(m(t, stop_at_layer=stop), tl(tt, stop_at_layer=stop))
    resid = np.asarray(m(t, stop_at_layer=1))
    for start in (1, -1):
        if start == -1:
            resid = np.asarray(m(t, stop_at_layer=-1))
        close(m(resid, start_at_layer=start), tl(torch.tensor(resid), start_at_layer=start))


def stacked_weights(m, tl, t):
    names = ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_E", "W_pos", "W_U", "b_U", "W_E_pos"]
    if not m.cfg.attn_only:
        names += ["W_in", "b_in", "W_out", "b_out"]
    for name in names:
        close(getattr(m, name), getattr(tl, name))


def factored_circuits(m, tl, t):
    for ours, theirs in [(m.QK, tl.QK), (m.OV, tl.OV)]:
        close(ours.AB, theirs.AB)
        close(ours[1, 0].AB, theirs[1, 0].AB)
        close(ours.S, theirs.S)
        U, S, V = ours.svd()
        tU, tS, tV = theirs.svd()
        close(np.asarray(U) * np.asarray(S)[..., None, :] @ np.swapaxes(np.asarray(V), -1, -2), theirs.AB)
        close(np.abs(np.asarray(V)), tV.abs())  # the same V (columns), up to the sign of each
        close(ours.norm(), theirs.norm())
        raises(lambda: ours[m.cfg.n_layers], IndexError)  # TL's torch raises too


def composition(m, tl, t):
    for mode in ("Q", "K", "V"):
        close(all_composition_scores(m, mode), tl.all_composition_scores(mode))
    close(composition_scores(m.OV[0], m.QK[1]), tl_utils.composition_scores(tl.OV[0], tl.QK[1]))
    raises(lambda: composition_scores(m, "K"), TypeError)  # the model-level call is all_composition_scores


def cache_decompositions(m, tl, t):
    _, cache = m.run_with_cache(t)
    _, tl_cache = tl.run_with_cache(torch.tensor(t))
    for kw in [dict(), dict(apply_ln=True), dict(pos_slice=-1), dict(layer=1, mlp_input=True)]:
        if m.cfg.attn_only and kw.get("mlp_input"):  # no MLP input: TL raises a KeyError, minillm a ValueError
            raises(lambda: D.accumulated_resid(m, cache, **kw), ValueError)
            continue
        close(D.decompose_resid(m, cache, **kw), tl_cache.decompose_resid(**kw))
        close(D.accumulated_resid(m, cache, **kw), tl_cache.accumulated_resid(**kw))
    for kw in [dict(), dict(layer=1), dict(incl_remainder=True), dict(pos_slice=-1, apply_ln=True), dict(layer=0)]:
        close(D.stack_head_results(m, cache, **kw), tl_cache.stack_head_results(**kw))
    if not m.cfg.attn_only:
        for kw in [dict(layer=1), dict(layer=2, pos_slice=-1), dict(layer=0)]:
            if kw["layer"] <= m.cfg.n_layers:
                close(D.stack_neuron_results(m, cache, **kw), tl_cache.stack_neuron_results(**kw))
    stack = D.decompose_resid(m, cache, pos_slice=-1)
    tl_stack = tl_cache.decompose_resid(pos_slice=-1)
    correct, wrong = t[:, -1] % m.cfg.d_vocab_out, (t[:, -1] + 1) % m.cfg.d_vocab_out
    close(
        D.logit_attrs(m, cache, stack, correct, wrong, pos_slice=-1),
        tl_cache.logit_attrs(tl_stack, torch.tensor(correct), torch.tensor(wrong), pos_slice=-1),
    )
    raises(lambda: D.logit_attrs(m, cache, stack, correct, wrong[:1], pos_slice=-1), ValueError)
    close(D.apply_ln_to_stack(m, cache, stack, pos_slice=-1), tl_cache.apply_ln_to_stack(tl_stack, pos_slice=-1))


def head_detection(m, tl, t):
    if m.cfg.attention_dir == "bidirectional":
        return  # TransformerLens' detector asserts causal (lower-triangular) patterns: nothing to compare
    row = t[0]
    for name in ("previous_token_head", "duplicate_token_head", "induction_head"):
        ours = named_detection_pattern(name, row)
        theirs = getattr(tl_heads, f"get_{name}_detection_pattern")(torch.tensor(row)[None])
        close(ours, theirs)
        _, cache = m.run_with_cache(t[:1])
        patterns = np.stack([np.asarray(cache["pattern", l][0]) for l in range(m.cfg.n_layers)])
        for measure in ("mul", "abs"):
            for bos, current in [(False, False), (True, True)]:
                got = _similarity(patterns, ours, bos, current, measure)
                want = [
                    [
                        tl_heads.compute_head_attention_similarity_score(
                            torch.tensor(patterns[l, h]),
                            theirs,
                            exclude_bos=bos,
                            exclude_current_token=current,
                            error_measure=measure,
                        )
                        for h in range(m.cfg.n_heads)
                    ]
                    for l in range(m.cfg.n_layers)
                ]
                close(got, np.array(want), rtol=1e-3)


def patching_sweeps(m, tl, t):
    corrupted = t.copy()
    corrupted[:, 2] = (corrupted[:, 2] + 3) % m.cfg.d_vocab
    _, cache = m.run_with_cache(t)
    _, tl_cache = tl.run_with_cache(torch.tensor(t))
    answer = int(t[0, -1] % m.cfg.d_vocab_out)
    metric = lambda logits: logits[:, -1, answer].mean()
    sweeps = [
        (P.get_act_patch_resid_pre, tlp.get_act_patch_resid_pre),
        (P.get_act_patch_attn_out, tlp.get_act_patch_attn_out),
        (P.get_act_patch_attn_head_out_all_pos, tlp.get_act_patch_attn_head_out_all_pos),
        (P.get_act_patch_attn_head_pattern_all_pos, tlp.get_act_patch_attn_head_pattern_all_pos),
    ]
    for ours, theirs in sweeps:
        close(ours(m, corrupted, cache, metric), theirs(tl, torch.tensor(corrupted), tl_cache, metric))


def attention_mask(m, tl, t):
    mask = np.ones(t.shape, np.int64)
    mask[:, :3] = 0
    if m.cfg.attention_dir == "bidirectional":  # TL then ignores the mask in attention: minillm refuses
        raises(lambda: m(t, attention_mask=mask), ValueError)
        return
    ours = np.asarray(m(t, attention_mask=mask))[:, 3:]
    theirs = tl(torch.tensor(t), attention_mask=torch.tensor(mask))[:, 3:]
    close(ours, theirs)


def weights_round_trip(m, tl, t):
    back = GPT.from_transformer_lens(tl.state_dict(), tl.cfg)
    close(back(t), tl(torch.tensor(t)))
    close(back(t), m(t))


def hooks_on_unreached_points_and_unembed(m, tl, t):
    tt = torch.tensor(t)
    resid = np.asarray(m(t, stop_at_layer=1))
    never = lambda x, hook: x * 0
    ours = m.run_with_hooks(resid, [("hook_embed", never)], start_at_layer=1)
    theirs = tl.run_with_hooks(torch.tensor(resid), fwd_hooks=[("hook_embed", never)], start_at_layer=1)
    close(ours, theirs)
    if "unembed.hook_in" in tl.hook_dict:  # present in newer TransformerLens only
        _, tl_cache = tl.run_with_cache(tt)
        _, cache = m.run_with_cache(t)
        close(cache["unembed.hook_in"], tl_cache["unembed.hook_in"])


# --- the on-request hook points: TransformerLens' use_attn_in, use_split_qkv_input, use_hook_mlp_in --
G_ON_REQUEST = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")


@contextlib.contextmanager
def tl_flags(tl, **flags):
    """TransformerLens with some of its hook-point flags switched on (through its own set_use_* calls),
    restored afterwards (on a 4.x bridge, setting its cfg's flag goes through the same set_use_* call).
    minillm needs no flag: a call that names the hook point gets it."""
    old = {k: getattr(tl.cfg, k) for k in flags}
    try:
        for k, v in flags.items():
            getattr(tl, f"set_{k}")(v)
        yield tl
    finally:
        for k, v in old.items():
            setattr(tl.cfg, k, v)


def _modes(cfg: GPTConfig) -> dict[str, tuple[dict, list[str]]]:
    """TransformerLens' flags and the on-request hook names (per block) that they stand for."""
    modes = {
        "attn_in": (dict(use_attn_in=True), ["hook_attn_in"]),
        "split_qkv": (dict(use_split_qkv_input=True), ["hook_q_input", "hook_k_input", "hook_v_input"]),
    }
    if not cfg.attn_only:
        modes["mlp_in"] = (dict(use_hook_mlp_in=True), ["hook_mlp_in"])
        modes["all"] = (
            dict(use_attn_in=True, use_split_qkv_input=True, use_hook_mlp_in=True),
            ["hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in"],
        )
    else:
        modes["all"] = (dict(use_attn_in=True, use_split_qkv_input=True), modes["split_qkv"][1] + ["hook_attn_in"])
    return modes


def on_request_hook_points_cached(m, tl, t):
    """Each TransformerLens flag against minillm's names: every activation both cache, the on-request
    points included, and ln1's hooks, which then fire per head ([b, p, h, 1] / [b, p, h, d]; both
    caches keep the last firing, ln1 of the value input)."""
    tt = torch.tensor(t)
    usual = [n for n in hook_names(m.cfg) if not n.endswith(G_ON_REQUEST)]
    for mode, (flags, points) in _modes(m.cfg).items():
        asked = [f"blocks.{l}.{p}" for l in range(m.cfg.n_layers) for p in points]
        # "all" asks by a predicate (everything): the other modes by a list of names
        names = (lambda n: True) if mode == "all" else usual + asked
        logits, cache = m.run_with_cache(t, names_filter=names)
        with tl_flags(tl, **flags):
            tl_logits, tl_cache = tl.run_with_cache(tt)
        close(logits, tl_logits)
        assert all(n in cache for n in asked), f"{mode}: minillm did not cache {[n for n in asked if n not in cache]}"
        missing = [n for n in cache if n not in tl_cache.keys()]
        assert len(missing) <= 1, f"{mode}: TransformerLens lacks {missing}"  # at most unembed.hook_in (older TL)
        for n in cache:
            if n in tl_cache.keys():
                try:
                    close(cache[n], tl_cache[n])
                except AssertionError as e:
                    raise AssertionError(f"{mode}: {n}: {e}") from None
        if m.cfg.normalization_type is not None and mode != "mlp_in":  # ln1 ran per head
            assert cache["blocks.0.ln1.hook_scale"].shape == (*t.shape, m.cfg.n_heads, 1)
    _, plain = m.run_with_cache(t)  # names_filter=None: never the on-request points
    assert not any(n.endswith(G_ON_REQUEST) for n in plain), "names_filter=None cached an on-request point"


def _edit_head(x, h, scale, shift):
    """x [b, p, h, d] with head h's slice replaced by scale * x + shift * a fixed direction (not a
    constant: LayerNorm would remove that), in either library's arrays."""
    direction = np.cos(np.arange(x.shape[-1]) * 1.3).astype(np.float32) * shift
    if isinstance(x, torch.Tensor):
        x = x.clone()
        x[:, :, h] = x[:, :, h] * scale + torch.tensor(direction)
        return x
    return x.at[:, :, h].set(x[:, :, h] * scale + direction)


def on_request_hooks_edited(m, tl, t):
    """Hooks that change one head's input (hook_attn_in, hook_{q,k,v}_input), ln1's scale under split
    inputs (it fires three times, once per input, in both), and hook_mlp_in: the same logits. Each
    edit must move the logits, so that no check passes by the hook not running."""
    tt = torch.tensor(t)
    L, H = m.cfg.n_layers - 1, m.cfg.n_heads - 1
    clean = np.asarray(m(t))
    cases = [
        (dict(use_attn_in=True), [(f"blocks.{L}.hook_attn_in", lambda x, hook: _edit_head(x, 1, 0.5, 0.3))]),
        (dict(use_split_qkv_input=True), [(f"blocks.{L}.hook_q_input", lambda x, hook: _edit_head(x, 0, -1.0, 0.0))]),
        (dict(use_split_qkv_input=True), [(f"blocks.{L}.hook_k_input", lambda x, hook: _edit_head(x, H, 2.0, 3.0))]),
        (dict(use_split_qkv_input=True), [("blocks.0.hook_v_input", lambda x, hook: _edit_head(x, 1, 0.0, 1.0))]),
        (
            dict(use_split_qkv_input=True),
            [
                (f"blocks.{L}.hook_q_input", lambda x, hook: _edit_head(x, 0, -1.0, 0.0)),
                (f"blocks.{L}.hook_k_input", lambda x, hook: _edit_head(x, 1, 0.5, 1.0)),
                (f"blocks.{L}.hook_v_input", lambda x, hook: _edit_head(x, H, 3.0, 1.0)),
            ],
        ),
    ]
    if m.cfg.normalization_type is not None:  # ln1 under split inputs: [b, p, h, 1], once per q, k, v input
        cases.append(
            (
                dict(use_split_qkv_input=True),
                [
                    (f"blocks.{L}.hook_k_input", lambda x, hook: x),
                    (f"blocks.{L}.ln1.hook_scale", lambda x, hook: _edit_head(x, 1, 3.0, 0.0)),
                ],
            )
        )
        cases.append(
            (
                dict(use_split_qkv_input=True),
                [
                    ("blocks.0.hook_q_input", lambda x, hook: x),
                    ("blocks.0.ln1.hook_normalized", lambda x, hook: _edit_head(x, 0, -1.0, 0.0)),
                ],
            )
        )
    if not m.cfg.attn_only:
        cases.append((dict(use_hook_mlp_in=True), [("blocks.0.hook_mlp_in", lambda x, hook: x + 0.5 * x[:1, :1])]))
    for i, (flags, hooks) in enumerate(cases):
        ours = np.asarray(m.run_with_hooks(t, hooks))
        with tl_flags(tl, **flags):
            theirs = tl.run_with_hooks(tt, fwd_hooks=hooks)
        try:
            close(ours, theirs)
        except AssertionError as e:
            raise AssertionError(f"case {i} ({[n for n, _ in hooks]}): {e}") from None
        assert rel_diff(ours, clean)[0] > 1e-3, f"case {i}: the edit did not change the logits"


def head_k_input_patched(m, tl, t):
    """Activation patching of one head's key input: the corrupted run's hook_k_input at head h only,
    into the clean run. The same logits (and the other heads' patterns unchanged)."""
    tt = torch.tensor(t)
    corrupted = t.copy()
    corrupted[:, :4] = (corrupted[:, :4] + 5) % m.cfg.d_vocab
    name = f"blocks.{m.cfg.n_layers - 1}.hook_k_input"
    pattern = f"blocks.{m.cfg.n_layers - 1}.attn.hook_pattern"
    _, cache = m.run_with_cache(corrupted, names_filter=[name])
    with tl_flags(tl, use_split_qkv_input=True):
        _, tl_cache = tl.run_with_cache(torch.tensor(corrupted), names_filter=[name])
        close(cache[name], tl_cache[name])
        for h in range(m.cfg.n_heads):

            def patch(x, hook, h=h, src=cache[name]):
                return x.at[:, :, h].set(src[:, :, h])

            def tl_patch(x, hook, h=h, src=tl_cache[name]):
                x = x.clone()
                x[:, :, h] = src[:, :, h]
                return x

            logits, patched = m.run_with_cache(t, names_filter=[pattern], fwd_hooks=[(name, patch)])
            with tl.hooks(fwd_hooks=[(name, tl_patch)]):
                tl_logits, tl_patched = tl.run_with_cache(tt, names_filter=[pattern])
            close(logits, tl_logits)
            close(patched[pattern], tl_patched[pattern])
            others = [g for g in range(m.cfg.n_heads) if g != h]
            _, clean = m.run_with_cache(t, names_filter=[pattern])
            close(patched[pattern][:, others], clean[pattern][:, others], rtol=1e-6)


# --- minillm.graph's edges against the same ablation done by hand with TransformerLens' hooks ------
def tl_run_with_edges(tl, tokens, edges: list[str], ablated: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """TransformerLens' logits with `edges` ablated, written from minillm.graph's docstring alone: each
    receiver's input minus, for each ablated edge into it, (its sender's output in this pass - the
    sender's ablated output). Sender outputs: hook_embed + hook_pos_embed, attn.hook_result[:, :, h],
    hook_mlp_out; receivers: hook_{q,k,v}_input[:, :, h], hook_mlp_in, the last hook_resid_post.
    ablated: {sender: output on the corrupted tokens}; None: zero ablation."""
    n_layers = tl.cfg.n_layers
    outputs: dict[str, torch.Tensor] = {}
    by_receiver: dict[str, list[str]] = {}
    for edge in edges:
        sender, receiver = edge.split(" -> ")
        by_receiver.setdefault(receiver, []).append(sender)

    def delta(receiver):
        return sum(outputs[s] - (0.0 if ablated is None else ablated[s]) for s in by_receiver.get(receiver, []))

    def rec_embed(x, hook):
        outputs["embed"] = x

    def rec_pos(x, hook):
        outputs["embed"] = outputs["embed"] + x

    hooks = [("hook_embed", rec_embed), ("hook_pos_embed", rec_pos)]
    for l in range(n_layers):
        for x in "qkv":

            def receive(act, hook, l=l, x=x):
                act = act.clone()
                for h in range(tl.cfg.n_heads):
                    act[:, :, h] = act[:, :, h] - delta(f"blocks.{l}.attn.head{h}.{x}")
                return act

            hooks.append((f"blocks.{l}.hook_{x}_input", receive))

        def rec_heads(act, hook, l=l):
            for h in range(tl.cfg.n_heads):
                outputs[f"blocks.{l}.attn.head{h}"] = act[:, :, h]

        hooks.append((f"blocks.{l}.attn.hook_result", rec_heads))
        if not tl.cfg.attn_only:

            def rec_mlp(act, hook, l=l):
                outputs[f"blocks.{l}.mlp"] = act

            hooks.append((f"blocks.{l}.hook_mlp_in", lambda act, hook, l=l: act - delta(f"blocks.{l}.mlp")))
            hooks.append((f"blocks.{l}.hook_mlp_out", rec_mlp))
    hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", lambda act, hook: act - delta("logits")))
    flags = dict(use_split_qkv_input=True, use_attn_result=True)
    if not tl.cfg.attn_only:
        flags["use_hook_mlp_in"] = True
    with tl_flags(tl, **flags):
        return tl.run_with_hooks(tokens, fwd_hooks=hooks)


def tl_sender_outputs(tl, tokens) -> dict[str, torch.Tensor]:
    _, cache = tl.run_with_cache(tokens)
    return sender_outputs(tl, cache)


def graph_edges_ablated(m, tl, t):
    """minillm.graph.run_with_edges against the same ablation by hand in TransformerLens: single edges
    of every kind (head -> head's q/k/v, embed -> head, head/MLP -> MLP, -> logits), then sets of
    edges (whose senders' outputs change in the same pass), with corrupted and with zero ablation."""
    g = G.Graph.of(m.cfg)
    corrupted = t.copy()
    corrupted[:, :5] = (corrupted[:, :5] + 7) % m.cfg.d_vocab
    tt = torch.tensor(t)
    ablated = G.ablated_outputs(m, t, "corrupted", corrupted)
    tl_ablated = tl_sender_outputs(tl, torch.tensor(corrupted))
    for i, s in enumerate(g.senders):
        close(ablated[i], tl_ablated[s])
    zeros = G.ablated_outputs(m, t, "zero")
    H, L = m.cfg.n_heads - 1, m.cfg.n_layers - 1
    single = [
        "blocks.0.attn.head1 -> blocks.1.attn.head0.k",
        f"blocks.0.attn.head0 -> blocks.{L}.attn.head{H}.q",
        "blocks.0.attn.head2 -> blocks.1.attn.head1.v",
        "embed -> blocks.1.attn.head2.v",
        "embed -> blocks.0.attn.head0.k",
        f"blocks.{L}.attn.head1 -> logits",
        "embed -> logits",
    ]
    if not m.cfg.attn_only:
        single += [
            "blocks.0.mlp -> blocks.1.mlp",
            "blocks.0.attn.head1 -> blocks.0.mlp",
            "blocks.0.mlp -> blocks.1.attn.head0.k",
            f"blocks.{L}.mlp -> logits",
        ]
    rng = np.random.default_rng(0)
    third = list(rng.choice(g.edges, len(g) // 3, replace=False))
    sets = [single, [e for e in g.edges if e.startswith("blocks.0.")], third]
    clean = np.asarray(m(t))
    for edges, (ours_ablated, theirs_ablated) in [([e], (ablated, tl_ablated)) for e in single] + [
        (edges, pair) for edges in sets for pair in [(ablated, tl_ablated), (zeros, None)]
    ]:
        keep = ~g.mask(edges)
        ours = np.asarray(G.run_with_edges(m, t, keep, ours_ablated))
        theirs = tl_run_with_edges(tl, tt, edges, theirs_ablated)
        what = edges[0] if len(edges) == 1 else f"{len(edges)} edges ({'corrupted' if theirs_ablated else 'zero'})"
        err, why = rel_diff(ours, theirs)
        if why is not None or err > RTOL:
            raise AssertionError(f"{what}: {why or f'max relative difference {err:.2e}'}")
        assert rel_diff(ours, clean)[0] > 1e-5, f"{what}: ablating changed nothing"


CHECKS = [
    forward_and_every_activation,
    return_types_and_loss,
    remove_batch_dim_and_negative_layers,
    start_and_stop_at_layer,
    stacked_weights,
    factored_circuits,
    composition,
    cache_decompositions,
    head_detection,
    patching_sweeps,
    attention_mask,
    weights_round_trip,
    hooks_on_unreached_points_and_unembed,
    on_request_hook_points_cached,
    on_request_hooks_edited,
    head_k_input_patched,
    graph_edges_ablated,
]


def run_checks(label: str, model: GPT, tl, tokens: np.ndarray) -> list[tuple[str, str, str, str]]:
    """Every check on one model: (config, check, pass/FAIL, detail) rows."""
    rows = []
    for check in CHECKS:
        try:
            check(model, tl, tokens.copy())
            rows.append((label, check.__name__, "pass", ""))
        except Exception as e:  # a difference, or a call one library lacks: report it, go on
            rows.append((label, check.__name__, "FAIL", f"{type(e).__name__}: {e}".splitlines()[0][:160]))
            traceback.print_exc(limit=2)
    return rows


def build_bridge(model: GPT, route: str) -> tuple[object, list[tuple[str, str, str, str]]]:
    """The TransformerBridge for a route, with use_attn_result=True like the HookedTransformer; where
    the bridge refuses that flag, without it, and a row that says so (the checks that need per-head
    results then fail on their own)."""
    try:
        return tl_model(model, route=route, use_attn_result=True), []
    except NotImplementedError as e:
        refused = f"call missing: set_use_attn_result(True) raises {type(e).__name__}: {e}".splitlines()[0][:200]
        return tl_model(model, route=route), [("", "(build) use_attn_result=True", "refused", refused)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "TL4_SUITE.md" if BRIDGE else "TL_SUITE.md"))
    args = parser.parse_args()
    rows, notes = [], []
    torch.set_grad_enabled(False)
    for cfg_name, cfg in CONFIGS.items():
        model = GPT(cfg)
        tokens = np.random.default_rng(0).integers(0, cfg.d_vocab, (4, cfg.n_ctx)).astype(np.int64)
        tokens[:, 6:] = tokens[:, : cfg.n_ctx - 6]  # a repeat, so that head detectors have something
        if not BRIDGE:
            rows += run_checks(cfg_name, model, tl_model(model, use_attn_result=True), tokens)
            continue
        for route in BRIDGE_ROUTES:
            label = f"{cfg_name} [{route}]"
            try:
                tl, build_rows = build_bridge(model, route)
            except NotExpressible as e:  # not silently dropped: the config's row says why
                notes.append((label, "(all checks)", "not expressible in 4.x", str(e)[:200]))
                continue
            notes += [(label, *r[1:]) for r in build_rows]
            rows += [
                (c, n, r, d if r == "pass" else f"{BRIDGE_FAILURES.get((route, n), 'unclassified')}: {d}")
                for c, n, r, d in run_checks(label, model, tl, tokens)
            ]
    passed = sum(r[2] == "pass" for r in rows)
    failed = len(rows) - passed
    versions = {p: importlib.metadata.version(p) for p in ("transformer-lens", "torch", "jax")}
    if BRIDGE:
        versions["transformers"] = importlib.metadata.version("transformers")
        head = [
            "# minillm against TransformerLens 4.x's TransformerBridge, call by call",
            "",
            f"`bash bench/run.sh --suite4` on {datetime.date.today()}; {versions}.",
            f"**{passed} passed, {failed} failed** ({len(CHECKS)} checks x {len(rows) // len(CHECKS)} bridges of "
            f"{len(CONFIGS)} configs; {sum(n[2] == 'not expressible in 4.x' for n in notes)} config/route pairs "
            "not expressible, listed after the table).",
            "",
            BRIDGE_DIFFERENCES,
            "",
            "## The checks",
            "",
            "Each config through each route ([gpt2], [native]; above). A failing row's detail opens with the kind "
            "of difference found (names, shapes or numbers differ, call missing; `BRIDGE_FAILURES` in "
            "bench/tl_suite.py), then the error.",
            "",
        ]
    else:
        head = [
            "# minillm against TransformerLens, call by call",
            "",
            f"`bash bench/run.sh --suite` on {datetime.date.today()}; {versions}.",
            f"**{passed} passed, {failed} failed** ({len(CHECKS)} checks x {len(CONFIGS)} configs).",
            "",
        ]
    table = ["| config | check | result | detail |", "| --- | --- | --- | --- |"]
    lines = head + table + [f"| {c} | {n} | {r} | {d.replace('|', '/')} |" for c, n, r, d in rows]
    if notes:
        lines += ["", "Not run, or run without a flag:", ""] + table
        lines += [f"| {c} | {n} | {r} | {d.replace('|', '/')} |" for c, n, r, d in notes]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
