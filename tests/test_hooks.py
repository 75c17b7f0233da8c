"""Hook points and the cache (minillm/model/hooks.py) as pure, per-call interventions: caching,
patching, identity hooks, gradients with respect to activations, and composition with jit and vmap;
the cache's layers (negative, out of range, 1-element arrays) as TransformerLens reads them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_tokens

from minillm import act_name, hook_names
from minillm.model.hooks import Hooks, on_request, selected_names


def test_patching_resid_pre_from_a_gives_a_logits(model, cfg):
    tokens_a, tokens_b = random_tokens(cfg, seed=1), random_tokens(cfg, seed=2)
    logits_a, cache_a = model.run_with_cache(tokens_a)
    logits_b = model(tokens_b)
    assert not np.allclose(logits_a, logits_b)
    for l in range(cfg.n_layers):
        name = act_name("resid_pre", l)
        patched = model.run_with_hooks(tokens_b, [(name, lambda x, hook: cache_a[hook.name])])
        # resid_pre of layer l is all that layers l.. read: replacing it replays run A from there
        np.testing.assert_allclose(patched, logits_a, atol=1e-5, err_msg=name)


def test_identity_hook_everywhere_leaves_logits_bit_identical(model, cfg, tokens):
    # a call with hooks runs op by op (minillm/model/compiled.py): compare with the op-by-op plain pass
    base = np.asarray(model.forward(jnp.asarray(tokens), Hooks()))
    for name in hook_names(cfg):
        if name.endswith("hook_result") or on_request(name):
            continue  # these change how the sum is computed (checked below)
        for fn in (lambda x, hook: x, lambda x, hook: None):
            out = np.asarray(model.run_with_hooks(tokens, [(name, fn)]))
            np.testing.assert_array_equal(out, base, err_msg=name)
    # hooking hook_result rebuilds attn_out as a per-head sum; the per-head inputs project per head
    for pick in (lambda n: n.endswith("hook_result"), on_request):
        out = model.run_with_hooks(tokens, [(pick, lambda x, hook: x)])
        np.testing.assert_allclose(out, base, atol=1e-5)


def test_zeroing_hook_result_of_every_head_equals_zeroing_z(model, cfg, tokens):
    """hook_result is each head's write: zeroing all of them must equal zeroing z."""
    for l in range(cfg.n_layers):
        by_result = model.run_with_hooks(tokens, [(act_name("result", l), lambda x, hook: jnp.zeros_like(x))])
        by_z = model.run_with_hooks(tokens, [(act_name("z", l), lambda x, hook: jnp.zeros_like(x))])
        np.testing.assert_allclose(by_result, by_z, atol=1e-5)


def test_hook_predicates_lists_and_order(model, cfg, tokens):
    seen = []
    model.run_with_hooks(tokens, [(lambda n: n.endswith("hook_pattern"), lambda x, hook: seen.append(hook.name))])
    assert seen == [act_name("pattern", l) for l in range(cfg.n_layers)]
    layers = []
    names = [act_name("resid_pre", 0), act_name("attn_out", 1)]
    model.run_with_hooks(tokens, [(names, lambda x, hook: layers.append(hook.layer()))])
    assert layers == [0, 1]
    # two hooks at one point run in the order given, each seeing the previous one's output
    name = act_name("resid_pre", 1)
    doubled_then_added = model.run_with_hooks(tokens, [(name, lambda x, hook: 2 * x), (name, lambda x, hook: x + 1)])
    direct = model.run_with_hooks(tokens, [(name, lambda x, hook: 2 * x + 1)])
    np.testing.assert_array_equal(doubled_then_added, direct)


@pytest.mark.slow
def test_names_filter_caches_only_what_is_asked(model, cfg, tokens):
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert list(cache.keys()) == ["blocks.0.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("resid_post"))
    assert list(cache.keys()) == [f"blocks.{l}.hook_resid_post" for l in range(cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=["hook_embed", "blocks.1.hook_attn_out"])
    assert set(cache.keys()) == {"hook_embed", "blocks.1.hook_attn_out"}
    with pytest.raises(KeyError, match="not cached"):
        cache["pattern", 0]


def test_cache_shorthand_matches_full_names(model, cfg, tokens):
    _, cache = model.run_with_cache(tokens)
    assert cache["pattern", 0] is cache["blocks.0.attn.hook_pattern"]
    assert cache["resid_pre", 1] is cache["blocks.1.hook_resid_pre"]
    assert cache["embed"] is cache["hook_embed"]
    assert cache["q", 1] is cache["blocks.1.attn.hook_q"]
    if cfg.normalization_type == "LN":
        assert cache["scale", 0, "ln1"] is cache["blocks.0.ln1.hook_scale"]
        assert cache["scale"] is cache["ln_final.hook_scale"]
    if not cfg.attn_only:
        assert cache["post", 0] is cache["blocks.0.mlp.hook_post"]
    assert ("pattern", 0) in cache and "hook_embed" in cache


@pytest.mark.parametrize(
    "short, full",
    [
        (("pattern", 0), "blocks.0.attn.hook_pattern"),
        (("attn_scores", 2), "blocks.2.attn.hook_attn_scores"),
        (("resid_pre", 1), "blocks.1.hook_resid_pre"),
        (("resid_mid", 0), "blocks.0.hook_resid_mid"),
        (("attn_out", 0), "blocks.0.hook_attn_out"),
        (("mlp_out", 3), "blocks.3.hook_mlp_out"),
        (("pre", 2), "blocks.2.mlp.hook_pre"),
        (("post", 0), "blocks.0.mlp.hook_post"),
        (("scale", 4, "ln1"), "blocks.4.ln1.hook_scale"),
        (("normalized", 1, "ln2"), "blocks.1.ln2.hook_normalized"),
        (("scale",), "ln_final.hook_scale"),
        (("embed",), "hook_embed"),
        (("pos_embed",), "hook_pos_embed"),
        (("k6",), "blocks.6.attn.hook_k"),
        (("scale4ln1",), "blocks.4.ln1.hook_scale"),
        (("result", 1), "blocks.1.attn.hook_result"),
        (("blocks.0.hook_resid_pre",), "blocks.0.hook_resid_pre"),
    ],
)
def test_act_name_follows_transformerlens(short, full):
    assert act_name(*short) == full


@pytest.mark.slow
def test_grad_wrt_zero_probe_equals_finite_difference(model, cfg, tokens):
    """d metric / d activation via a zero additive probe, checked against central differences."""
    name = act_name("resid_mid" if not cfg.attn_only else "attn_out", 0)
    shape = model.run_with_cache(tokens, names_filter=name)[1][name].shape

    def metric(probe):
        logits = model.run_with_hooks(tokens, [(name, lambda x, hook: x + probe)])
        return jax.nn.log_softmax(logits[:, -1])[:, 3].sum()

    metric64 = jax.jit(metric)
    grad = np.asarray(jax.grad(metric)(jnp.zeros(shape)))
    rng = np.random.default_rng(0)
    for _ in range(4):
        idx = tuple(int(rng.integers(0, s)) for s in shape)
        e = np.zeros(shape, np.float32)
        eps = 1e-2
        e[idx] = eps
        fd = (float(metric64(jnp.asarray(e))) - float(metric64(jnp.asarray(-e)))) / (2 * eps)
        assert abs(fd - grad[idx]) < 2e-3 + 2e-2 * abs(grad[idx]), (idx, fd, grad[idx])
    # and a direction: the directional derivative equals <grad, v>
    v = rng.normal(size=shape).astype(np.float32)
    eps = 1e-3
    fd = (float(metric64(jnp.asarray(eps * v))) - float(metric64(jnp.asarray(-eps * v)))) / (2 * eps)
    np.testing.assert_allclose(fd, float((grad * v).sum()), rtol=2e-2, atol=2e-3)


@pytest.mark.slow
def test_vmap_over_patch_position_with_traced_index(model, cfg):
    """A hook that closes over a traced index: one vmapped call patches every position."""
    tokens_a, tokens_b = random_tokens(cfg, seed=5), random_tokens(cfg, seed=6)
    _, cache_a = model.run_with_cache(tokens_a, names_filter=act_name("resid_pre", 1))
    clean = cache_a["resid_pre", 1]
    name = act_name("resid_pre", 1)

    def patch_at(pos):
        def hook(x, hook):
            return x.at[:, pos].set(clean[:, pos])

        return model.run_with_hooks(tokens_b, [(name, hook)])[:, -1]

    n_pos = tokens_b.shape[1]
    swept = jax.jit(jax.vmap(patch_at))(jnp.arange(n_pos))
    for pos in range(n_pos):
        np.testing.assert_allclose(swept[pos], patch_at(pos), atol=1e-5)
    assert not np.allclose(swept[0], swept[-1])  # the patch index really varied inside vmap


def test_a_hook_that_raises_leaves_nothing_behind(model, tokens):
    base = np.asarray(model(tokens))

    def broken(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, [("blocks.0.hook_resid_pre", broken)])
    np.testing.assert_array_equal(np.asarray(model(tokens)), base)
    # a program that also returns every activation may round differently in the last bit
    np.testing.assert_allclose(np.asarray(model.run_with_cache(tokens)[0]), base, rtol=1e-5, atol=1e-6)


def test_unknown_hook_names_name_the_nearest_valid_ones(model, tokens):
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.hook_pattern"):
        model.run_with_hooks(tokens, [("blocks.0.attn.hook_patern", lambda x, hook: x)])
    with pytest.raises(KeyError, match=r"hook_resid_pre"):
        model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_pr"])
    with pytest.raises(KeyError, match="Unknown hook point"):
        model.run_with_hooks(tokens, [("blocks.9.hook_resid_pre", lambda x, hook: x)])
    with pytest.raises(ValueError, match="matches no hook point"):
        model.run_with_hooks(tokens, [(lambda n: n.endswith("nothing"), lambda x, hook: x)])
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(KeyError, match="hook_pattern"):
        cache["blocks.0.attn.hook_patern"]


def test_hooks_returning_wrong_shape_or_dtype_are_named(model, tokens):
    name = "blocks.1.hook_resid_pre"
    with pytest.raises(ValueError, match=r"blocks\.1\.hook_resid_pre.*shape"):
        model.run_with_hooks(tokens, [(name, lambda x, hook: x[:, :-1])])
    with pytest.raises(TypeError, match=r"blocks\.1\.hook_resid_pre.*dtype"):
        model.run_with_hooks(tokens, [(name, lambda x, hook: x.astype(jnp.int32))])
    with pytest.raises(TypeError, match=r"blocks\.1\.hook_resid_pre"):
        model.run_with_hooks(tokens, [(name, lambda x, hook: 3.0)])
    # the shape check also holds under jit (shapes are static)
    with pytest.raises(ValueError, match=r"blocks\.1\.hook_resid_pre"):
        jax.jit(lambda t: model.run_with_hooks(t, [(name, lambda x, hook: x[:, :1])]))(tokens)
    with pytest.raises(TypeError, match="pair"):
        model.run_with_hooks(tokens, [name])


@pytest.mark.slow
def test_cache_is_a_pytree_and_leaves_jit(model, tokens):
    f = jax.jit(lambda m, t: m.run_with_cache(t, names_filter=lambda n: "pattern" in n)[1])
    cache = f(model, tokens)
    assert cache["pattern", 0].shape[1] == model.cfg.n_heads
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, cache)
    np.testing.assert_allclose(doubled["pattern", 0], 2 * cache["pattern", 0])


def test_negative_layers_count_from_the_end_in_cache_keys_and_hook_names(model, cfg, tokens):
    """As in TransformerLens: cache["resid_post", -1] is the last layer's, and a hook named with
    blocks.-1 runs at the last block; a negative layer past the first is unknown."""
    last = cfg.n_layers - 1
    _, cache = model.run_with_cache(tokens)
    np.testing.assert_array_equal(cache["resid_post", -1], cache["resid_post", last])
    np.testing.assert_array_equal(cache["blocks.-1.hook_resid_post"], cache[f"blocks.{last}.hook_resid_post"])
    assert ("resid_post", -1) in cache
    seen = []
    model.run_with_hooks(tokens, [(act_name("resid_pre", -1), lambda x, hook: seen.append(hook.name))])
    assert seen == [f"blocks.{last}.hook_resid_pre"]
    _, one = model.run_with_cache(tokens, names_filter=act_name("resid_pre", -1))
    assert list(one) == [f"blocks.{last}.hook_resid_pre"]
    with pytest.raises(KeyError):
        cache["resid_post", -cfg.n_layers - 1]
    with pytest.raises(KeyError, match="Unknown hook point"):
        model.run_with_hooks(tokens, [(act_name("resid_pre", -cfg.n_layers - 1), lambda x, hook: x)])


def test_cache_layers_resolve_against_the_model_and_out_of_range_ones_are_named(model, cfg, tokens):
    """Every way a layer reaches the cache (a tuple, a full name, act_name) counts a negative one from
    the end of the model's layers, also in a cache that holds only some of them, as TransformerLens
    does; a layer outside [-n_layers, n_layers) raises a KeyError saying so (not "unknown name")."""
    n, last = cfg.n_layers, cfg.n_layers - 1
    _, cache = model.run_with_cache(tokens)
    assert cache["attn_out", -n] is cache["attn_out", 0]
    assert cache["blocks.-1.attn.hook_pattern"] is cache[f"blocks.{last}.attn.hook_pattern"]
    assert cache[act_name("q", -1)] is cache["q", last]
    if cfg.normalization_type == "LN":
        assert cache["scale", -1, "ln1"] is cache[f"blocks.{last}.ln1.hook_scale"]
    for key in [("resid_pre", n), ("resid_pre", -n - 1), f"blocks.{n}.hook_resid_pre", ("pattern", -n - 3)]:
        with pytest.raises(KeyError, match=f"out of range: the model has n_layers={n}"):
            cache[key]
        assert key not in cache
    _, first = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    with pytest.raises(KeyError, match="not cached"):  # -1 is the model's last layer, not the cache's
        first["resid_post", -1]


def test_a_one_element_array_is_the_layer_it_holds(model, cfg, tokens):
    """A 1-element integer array (any shape) names a layer as the int it holds (TransformerLens takes
    a 1-element tensor as its item); any other array, or a float, is refused by name."""
    assert act_name("resid_pre", np.array([1])) == "blocks.1.hook_resid_pre"
    assert act_name("scale", jnp.array([[0]]), "ln1") == "blocks.0.ln1.hook_scale"
    _, cache = model.run_with_cache(tokens)
    assert cache["resid_post", np.array([-1])] is cache["resid_post", cfg.n_layers - 1]
    assert cache["pattern", jnp.array([0])] is cache["pattern", 0]
    for bad in (np.array([0, 1]), np.array([1.0]), 1.0, True):
        with pytest.raises(TypeError, match="act_name: layer"):
            act_name("resid_pre", bad)


@pytest.mark.slow
def test_remove_batch_dim_drops_the_batch_axis_of_a_batch_of_one(model, tokens):
    _, full = model.run_with_cache(tokens[:1])
    _, single = model.run_with_cache(tokens[:1], remove_batch_dim=True)
    for name in full:
        np.testing.assert_array_equal(single[name], full[name][0])
    with pytest.raises(ValueError, match="batch of one"):
        model.run_with_cache(tokens[:2], remove_batch_dim=True)


def test_unembed_hooks_see_the_final_stream_and_the_logits(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    np.testing.assert_array_equal(cache["unembed.hook_out"], logits)
    np.testing.assert_allclose(
        cache["unembed.hook_in"] @ model.unembed.W_U[...] + model.unembed.b_U[...], logits, atol=1e-5
    )
    doubled = model.run_with_hooks(tokens, [("unembed.hook_out", lambda x, hook: 2 * x)])
    np.testing.assert_allclose(doubled, 2 * logits, atol=1e-5)


def test_selected_names_resolve_a_filter_in_forward_order(cfg):
    names = hook_names(cfg)
    assert selected_names(None, names, cfg.n_layers) == tuple(n for n in names if not on_request(n))
    assert any(on_request(n) for n in names)  # listed, but "everything" leaves them out
    assert selected_names(False, names, cfg.n_layers) is False
    last = f"blocks.{cfg.n_layers - 1}.hook_resid_post"
    assert selected_names(["blocks.-1.hook_resid_post", "hook_embed"], names, cfg.n_layers) == ("hook_embed", last)
    assert selected_names(lambda n: n.endswith("resid_pre"), names, cfg.n_layers) == tuple(
        f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)
    )
    with pytest.raises(KeyError, match="hook_embed"):
        selected_names("hook_embd", names, cfg.n_layers)
