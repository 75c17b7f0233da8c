"""Activation patching (minillm/patching.py): the vectorised sweeps equal a naive loop of
run_with_hooks calls; attribution patching equals the exact patch where the metric is linear in the
patched activation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT, GPTConfig, act_name
from minillm import patching as P

CFG = CONFIGS["mlp_ln_gelu"]
LINEAR_TAIL = CONFIGS["attn_only_noln"]  # no LayerNorm, no MLP: the logits are linear in the last layer
L, H = CFG.n_layers, CFG.n_heads


def setup(cfg):
    model = GPT(cfg)
    rng = np.random.default_rng(0)
    clean = rng.integers(0, cfg.d_vocab, (2, 6)).astype(np.int32)
    corrupted = clean.copy()
    corrupted[:, 2] = (corrupted[:, 2] + 3) % cfg.d_vocab
    corrupted[:, 4] = (corrupted[:, 4] + 5) % cfg.d_vocab
    _, clean_cache = model.run_with_cache(clean)
    answers = jnp.asarray([3, 7])

    def metric(logits):  # a logit difference at the last position, linear in the logits
        return (logits[:, -1, answers[0]] - logits[:, -1, answers[1]]).mean()

    return model, clean, corrupted, clean_cache, metric


def naive_sweep(model, corrupted, clean_cache, metric, activation_name, axes, setter):
    sizes = P._axis_sizes(model, corrupted.shape[1])
    out = np.zeros([sizes[a] for a in axes])
    for layer in range(model.cfg.n_layers):
        name = act_name(activation_name, layer)
        for index in itertools.product(*[range(sizes[a]) for a in axes[1:]]):
            hook = lambda act, hook, index=index: setter(act, index, clean_cache[name])
            out[(layer, *index)] = float(metric(model.run_with_hooks(corrupted, [(name, hook)])))
    return out


SWEEPS = [
    (P.get_act_patch_resid_pre, "resid_pre", ("layer", "pos"), P.layer_pos_patch_setter),
    (P.get_act_patch_resid_mid, "resid_mid", ("layer", "pos"), P.layer_pos_patch_setter),
    (P.get_act_patch_attn_out, "attn_out", ("layer", "pos"), P.layer_pos_patch_setter),
    (P.get_act_patch_mlp_out, "mlp_out", ("layer", "pos"), P.layer_pos_patch_setter),
    (P.get_act_patch_attn_head_out_by_pos, "z", ("layer", "pos", "head"), P.layer_pos_head_vector_patch_setter),
    (P.get_act_patch_attn_head_q_by_pos, "q", ("layer", "pos", "head"), P.layer_pos_head_vector_patch_setter),
    (P.get_act_patch_attn_head_k_by_pos, "k", ("layer", "pos", "head"), P.layer_pos_head_vector_patch_setter),
    (P.get_act_patch_attn_head_v_by_pos, "v", ("layer", "pos", "head"), P.layer_pos_head_vector_patch_setter),
    (
        P.get_act_patch_attn_head_pattern_by_pos,
        "pattern",
        ("layer", "head_index", "dest_pos"),
        P.layer_head_pos_pattern_patch_setter,
    ),
    (P.get_act_patch_attn_head_out_all_pos, "z", ("layer", "head"), P.layer_head_vector_patch_setter),
    (P.get_act_patch_attn_head_pattern_all_pos, "pattern", ("layer", "head_index"), P.layer_head_pattern_patch_setter),
]


@pytest.mark.slow
@pytest.mark.parametrize("sweep, activation, axes, setter", SWEEPS, ids=[s[0].__name__ for s in SWEEPS])
def test_vectorised_sweep_equals_naive_loop(sweep, activation, axes, setter):
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    fast = np.asarray(sweep(model, corrupted, clean_cache, metric, chunk_size=3))  # chunks with a remainder
    slow = naive_sweep(model, corrupted, clean_cache, metric, activation, axes, setter)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert np.ptp(fast) > 1e-3  # the sweep found something to vary


@pytest.mark.slow
def test_sweep_values_make_sense():
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    result = np.asarray(P.get_act_patch_resid_pre(model, corrupted, clean_cache, metric))
    clean_metric, corrupted_metric = float(metric(model(clean))), float(metric(model(corrupted)))
    # at layer 0 the residual stream holds only the token and position embeddings: patching a
    # position whose token is the same in both runs changes nothing; a changed position does
    for pos in (0, 1, 3, 5):
        np.testing.assert_allclose(result[0, pos], corrupted_metric, atol=1e-5)
    assert max(abs(result[0, 2] - corrupted_metric), abs(result[0, 4] - corrupted_metric)) > 1e-3
    assert abs(clean_metric - corrupted_metric) > 1e-3


@pytest.mark.slow
def test_every_variants_stack_the_single_sweeps():
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    block = P.get_act_patch_block_every(model, corrupted, clean_cache, metric)
    assert block.shape == (3, L, 6)
    np.testing.assert_allclose(block[1], P.get_act_patch_attn_out(model, corrupted, clean_cache, metric), atol=1e-6)
    heads = P.get_act_patch_attn_head_all_pos_every(model, corrupted, clean_cache, metric)
    assert heads.shape == (5, L, H)
    by_pos = P.get_act_patch_attn_head_by_pos_every(model, corrupted, clean_cache, metric)
    assert by_pos.shape == (5, L, 6, H)
    np.testing.assert_allclose(
        by_pos[4],
        P.get_act_patch_attn_head_pattern_by_pos(model, corrupted, clean_cache, metric).transpose(0, 2, 1),
        atol=1e-6,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "exact, attr, n_axes",
    [
        (P.get_act_patch_attn_out, P.get_attr_patch_attn_out, 2),
        (P.get_act_patch_attn_head_out_by_pos, P.get_attr_patch_attn_head_out_by_pos, 3),
        (P.get_act_patch_attn_head_out_all_pos, P.get_attr_patch_attn_head_out_all_pos, 2),
    ],
)
def test_attribution_equals_exact_patch_where_the_model_is_linear(exact, attr, n_axes):
    """With no LayerNorm, the logits are linear in the last layer's z and attn_out: there the first-
    order estimate is exact. Earlier layers pass through a softmax and only approximately agree."""
    model, clean, corrupted, clean_cache, metric = setup(LINEAR_TAIL)
    corrupted_metric = float(metric(model(corrupted)))
    effect_exact = np.asarray(exact(model, corrupted, clean_cache, metric)) - corrupted_metric
    effect_attr = np.asarray(attr(model, corrupted, clean_cache, metric))
    assert effect_attr.shape == effect_exact.shape and effect_attr.ndim == n_axes
    np.testing.assert_allclose(effect_attr[-1], effect_exact[-1], atol=1e-5)
    assert np.abs(effect_exact[-1]).max() > 1e-3
    corr = np.corrcoef(effect_attr.ravel(), effect_exact.ravel())[0, 1]
    assert corr > 0.5  # and the earlier layer is approximated, not garbage


@pytest.mark.slow
def test_attribution_of_resid_pre_and_pattern_shapes():
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    assert P.get_attr_patch_resid_pre(model, corrupted, clean_cache, metric).shape == (L, 6)
    assert P.get_attr_patch_attn_head_pattern_all_pos(model, corrupted, clean_cache, metric).shape == (L, H)
    assert P.get_attr_patch_attn_head_pattern_by_pos(model, corrupted, clean_cache, metric).shape == (L, H, 6)


@pytest.mark.slow
def test_activation_gradients_match_finite_differences():
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    name = act_name("resid_mid", 1)
    value, grads, cache = P.activation_gradients(model, corrupted, metric, [name])
    np.testing.assert_allclose(float(value), float(metric(model(corrupted))), atol=1e-6)
    direction = np.random.default_rng(1).normal(size=cache[name].shape).astype(np.float32)
    eps = 1e-2
    f = lambda s: float(metric(model.run_with_hooks(corrupted, [(name, lambda a, h: a + s * direction)])))
    fd = (f(eps) - f(-eps)) / (2 * eps)
    np.testing.assert_allclose(fd, float((grads[name] * direction).sum()), rtol=1e-2, atol=1e-4)


def test_bad_axes_are_refused():
    model, clean, corrupted, clean_cache, metric = setup(CFG)
    with pytest.raises(ValueError, match="first index axis"):
        P.generic_activation_patch(
            model, corrupted, clean_cache, metric, P.layer_pos_patch_setter, "resid_pre", ("pos", "layer")
        )
    with pytest.raises(ValueError, match="unknown index axes"):
        P.generic_activation_patch(
            model, corrupted, clean_cache, metric, P.layer_pos_patch_setter, "resid_pre", ("layer", "position")
        )


@pytest.mark.slow
def test_corruption_hooks_make_the_corrupted_run_of_a_sweep():
    """A causal trace (Meng et al. 2022): noise on two positions' embeddings, clean activations
    restored one at a time. Each value equals a naive run with the noise hook and the patch hook."""
    from minillm.interventions import add_noise

    model, clean, _, clean_cache, metric = setup(CFG)
    noise = add_noise("hook_embed", 2.0, jax.random.key(0), positions=[1, 2])
    later = (act_name("z", 1), lambda z, hook: z * 0.5)  # a corruption inside a later block, too
    for sweep, name in [(P.get_act_patch_resid_pre, "resid_pre"), (P.get_act_patch_mlp_out, "mlp_out")]:
        fast = np.asarray(sweep(model, clean, clean_cache, metric, corruption_hooks=[noise, later]))
        for layer, pos in itertools.product(range(CFG.n_layers), range(6)):
            hook_name = act_name(name, layer)
            patch = lambda act, hook: P.layer_pos_patch_setter(act, (pos,), clean_cache[hook_name])
            slow = float(metric(model.run_with_hooks(clean, [noise, later, (hook_name, patch)])))
            np.testing.assert_allclose(fast[layer, pos], slow, atol=1e-5)
    corrupted = float(metric(model.run_with_hooks(clean, [noise, later])))
    assert abs(corrupted - float(metric(model(clean)))) > 1e-3
    # positions after the noise restore nothing at layer 0 (the embeddings there are clean)
    np.testing.assert_allclose(fast[0, 0], corrupted, atol=1e-5)
    with pytest.raises(TypeError, match="corruption_hooks"):
        P.get_act_patch_resid_pre(model, clean, clean_cache, metric, corruption_hooks=[noise[1]])


# --- path patching -------------------------------------------------------------------------------
def naive_path_patch(
    model, clean, corrupted, metric, receivers, sender_positions=None, freeze_mlps=False, senders=None
):
    """Wang et al.'s three steps with hooks, one sender at a time: (1) cache the clean and corrupted
    runs; (2) run the clean tokens with every head's hook_z frozen to the clean run, except the
    sender's z, which takes the corrupted one (at sender_positions), the MLPs recomputing, and record
    the receivers' q/k/v (or the logits, for receivers=None); (3) run the clean tokens with the
    receivers' inputs patched from step 2 and take the metric. With freeze_mlps, step 2 also freezes
    every MLP's output to the clean run (the direct path only: the _frozen_mlps variants). Only the
    (layer, head) pairs in `senders` (default: every head) are computed; the rest stay NaN."""
    cfg = model.cfg
    _, clean_cache = model.run_with_cache(clean)
    _, corrupted_cache = model.run_with_cache(corrupted)
    out = np.full((cfg.n_layers, cfg.n_heads), np.nan)
    for sl, sh in senders or itertools.product(range(cfg.n_layers), range(cfg.n_heads)):
        if receivers is not None and all(rl <= sl for rl, _, _ in receivers):
            continue  # no path

        def freeze_z(z, hook, sl=sl, sh=sh):
            layer = int(hook.name.split(".")[1])
            frozen = clean_cache["z", layer]
            if layer == sl:
                new = corrupted_cache["z", sl][:, :, sh]
                if sender_positions is not None:
                    at = np.isin(np.arange(z.shape[1]), sender_positions)[None, :, None]
                    new = jnp.where(at, new, frozen[:, :, sh])
                frozen = frozen.at[:, :, sh].set(new)
            return frozen

        freeze = [(lambda n: n.endswith("attn.hook_z"), freeze_z)]
        if freeze_mlps and not cfg.attn_only:
            freeze += [(lambda n: n.endswith("hook_mlp_out"), lambda x, hook: clean_cache[hook.name])]
        if receivers is None:
            out[sl, sh] = metric(model.run_with_hooks(clean, freeze))
            continue
        names = sorted({act_name(x, rl) for rl, _, x in receivers})
        _, step2 = model.run_with_cache(clean, names_filter=names, fwd_hooks=freeze)

        def patch(act, hook):
            for rl, rh, x in receivers:
                if hook.name == act_name(x, rl):
                    act = act.at[:, :, rh].set(step2[hook.name][:, :, rh])
            return act

        out[sl, sh] = metric(model.run_with_hooks(clean, [(names, patch)]))
    return out


PATH_CFG = GPTConfig(n_layers=3, d_model=32, n_heads=2, n_ctx=12, d_vocab=23, attn_only=True, seed=11)
PATH_CONFIGS = {
    "attn_only_3_layers": PATH_CFG,
    "mlp_ln_gelu": CFG,
    "mlp_noln_relu_3_layers": CONFIGS["mlp_noln_relu"],
    "mlp_lnpre_relu": CONFIGS["mlp_lnpre_relu"],
}
SLOW_PATH_CONFIGS = ("attn_only_3_layers", "mlp_noln_relu_3_layers", "mlp_lnpre_relu")  # ~20 s each


@pytest.mark.parametrize(
    "cfg",
    [pytest.param(c, marks=[pytest.mark.slow] if k in SLOW_PATH_CONFIGS else []) for k, c in PATH_CONFIGS.items()],
    ids=PATH_CONFIGS.keys(),
)
def test_path_patching_equals_wangs_three_steps_with_hooks(cfg):
    model, clean, corrupted, _, metric = setup(cfg)
    last = cfg.n_layers - 1
    cases = [
        ([(last, 1, "k")], [(last, 1)], "k", None)
    ]  # (receivers as (layer, head, input), heads, inputs, positions)
    if cfg.n_layers == 3:  # receivers in two layers: one never sees the other's change
        cases.append(([(2, 0, "q"), (2, 0, "v"), (1, 1, "q"), (1, 1, "v")], [(2, 0), (1, 1)], ("q", "v"), [2, 4]))
    # the reference runs op by op: it checks three senders (the first head, the last before the last
    # layer, and one of the last layer), the fast call computes all of them
    senders = [(0, 0), (last - 1, cfg.n_heads - 1), (last, 0)]
    checked = np.zeros((cfg.n_layers, cfg.n_heads), bool)
    checked[tuple(np.array(senders).T)] = True
    for receivers, heads, inputs, positions in cases:
        for freeze_mlps, fn in [
            (False, P.get_path_patch_head_to_heads),
            (True, P.get_path_patch_head_to_heads_frozen_mlps),
        ]:
            fast = np.asarray(fn(model, clean, corrupted, metric, heads, inputs, sender_positions=positions))
            naive = naive_path_patch(model, clean, corrupted, metric, receivers, positions, freeze_mlps, senders)
            np.testing.assert_allclose(fast[checked], naive[checked], rtol=1e-4, atol=1e-5, equal_nan=True)
            assert np.isnan(fast[last]).all() and not np.isnan(fast[0]).any()  # no path from the receivers' layer
    for freeze_mlps, fn in [
        (False, P.get_path_patch_head_to_final_resid_post),
        (True, P.get_path_patch_head_to_final_resid_post_frozen_mlps),
    ]:
        fast = np.asarray(fn(model, clean, corrupted, metric))
        naive = naive_path_patch(model, clean, corrupted, metric, None, None, freeze_mlps, senders)
        np.testing.assert_allclose(fast[checked], naive[checked], rtol=1e-4, atol=1e-5)
    clean_value = metric(model(clean))
    assert np.abs(np.asarray(fast) - clean_value).max() > 1e-3  # the corruption reaches the logits


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [CFG, CONFIGS["mlp_noln_relu"]], ids=["mlp_ln_gelu", "mlp_noln_relu"])
def test_path_patching_lets_the_mlps_recompute(cfg):
    """On a model with MLPs, Wang's path patching carries the sender's change through the MLPs
    between it and the receiver; the frozen-MLP variant does not. The two must differ (by more than
    float error), and agree on an attention-only model."""
    model, clean, corrupted, _, metric = setup(cfg)
    last = cfg.n_layers - 1
    clean_value = float(metric(model(clean)))
    wang = np.asarray(P.get_path_patch_head_to_heads(model, clean, corrupted, metric, [(last, 0)], "v"))
    frozen = np.asarray(P.get_path_patch_head_to_heads_frozen_mlps(model, clean, corrupted, metric, [(last, 0)], "v"))
    assert np.nanmax(np.abs(wang - frozen)) > 0.05 * np.nanmax(np.abs(wang - clean_value)) > 1e-6
    wang = np.asarray(P.get_path_patch_head_to_final_resid_post(model, clean, corrupted, metric))
    frozen = np.asarray(P.get_path_patch_head_to_final_resid_post_frozen_mlps(model, clean, corrupted, metric))
    assert np.abs(wang - frozen).max() > 0.05 * np.abs(wang - clean_value).max() > 1e-6
    model, clean, corrupted, _, metric = setup(PATH_CFG)
    np.testing.assert_allclose(
        P.get_path_patch_head_to_heads(model, clean, corrupted, metric, [(2, 0)], "v"),
        P.get_path_patch_head_to_heads_frozen_mlps(model, clean, corrupted, metric, [(2, 0)], "v"),
        rtol=1e-5,
        atol=1e-6,
    )


def test_path_patching_refuses_bad_receivers():
    model, clean, corrupted, _, metric = setup(PATH_CFG)
    for heads, inputs, error, match in [
        ([(1, 2)], "q", IndexError, "receiver head"),
        ([(3, 0)], "q", IndexError, "receiver layer"),
        ([(1, 0)], "z", ValueError, "receiver_input"),
        ([1], "q", ValueError, r"\(layer, head\) pairs"),
        ([], "q", ValueError, "empty"),
    ]:
        with pytest.raises(error, match=match):
            P.get_path_patch_head_to_heads(model, clean, corrupted, metric, heads, inputs)
    with pytest.raises(ValueError, match="same shape"):
        P.get_path_patch_head_to_heads(model, clean, corrupted[:1], metric, [(1, 0)])
    with pytest.raises(IndexError, match="sender_positions"):
        P.get_path_patch_head_to_heads(model, clean, corrupted, metric, [(1, 0)], sender_positions=[6])
