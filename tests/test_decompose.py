"""Decompositions (minillm/decompose.py) sum back to the residual stream; logit attributions add up
to the logits; out-of-range tokens, empty stacks, batch slices and 1-element arrays behave as in
TransformerLens, and a stack that does not fit the cache is named."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_tokens

from minillm import GPT
from minillm import decompose as D
from minillm.weight_processing import fold_layer_norm


@pytest.fixture(params=["mlp_ln_gelu", "mlp_noln_relu", "attn_only_ln"])
def run(request, configs):
    cfg = configs[request.param]
    model = GPT(cfg)
    tokens = random_tokens(cfg)
    logits, cache = model.run_with_cache(tokens)
    return model, cfg, tokens, logits, cache


def test_decompose_resid_sums_to_the_stream(run):
    model, cfg, tokens, logits, cache = run
    for layer in range(cfg.n_layers + 1):
        stack, labels = D.decompose_resid(model, cache, layer, return_labels=True)
        target = cache["resid_pre", layer] if layer < cfg.n_layers else cache["resid_post", cfg.n_layers - 1]
        np.testing.assert_allclose(stack.sum(0), target, atol=1e-5)
        assert len(labels) == stack.shape[0] and labels[:2] == ["embed", "pos_embed"]


def test_head_results_and_biases_sum_to_attn_out(run):
    model, cfg, tokens, logits, cache = run
    stack, labels = D.stack_head_results(model, cache, return_labels=True)
    assert stack.shape == (cfg.n_layers * cfg.n_heads, *tokens.shape, cfg.d_model)
    assert labels[0] == "L0H0" and labels[-1] == f"L{cfg.n_layers - 1}H{cfg.n_heads - 1}"
    for l in range(cfg.n_layers):
        heads = stack[l * cfg.n_heads : (l + 1) * cfg.n_heads].sum(0)
        np.testing.assert_allclose(heads + model.blocks[l].attn.b_O[...], cache["attn_out", l], atol=1e-5)
    with_rest = D.stack_head_results(model, cache, incl_remainder=True)
    np.testing.assert_allclose(with_rest.sum(0), cache["resid_post", cfg.n_layers - 1], atol=1e-5)
    # without hook_result in the cache, the same results come from z @ W_O
    _, small = model.run_with_cache(tokens, names_filter=lambda n: "hook_z" in n)
    np.testing.assert_allclose(D.stack_head_results(model, small), stack, atol=1e-5)


def test_neuron_results_sum_to_mlp_out(run):
    model, cfg, tokens, logits, cache = run
    if cfg.attn_only:
        with pytest.raises(ValueError, match="no neurons"):
            D.stack_neuron_results(model, cache, 1)
        return
    stack = D.stack_neuron_results(model, cache, 1, pos_slice=-1)
    assert stack.shape == (cfg.d_mlp, tokens.shape[0], cfg.d_model)
    np.testing.assert_allclose(stack.sum(0) + model.blocks[0].mlp.b_out[...], cache["mlp_out", 0][:, -1], atol=1e-5)


def test_accumulated_resid_is_the_stream_at_each_layer(run):
    model, cfg, tokens, logits, cache = run
    stack, labels = D.accumulated_resid(model, cache, incl_mid=True, return_labels=True)
    assert labels[0] == "0_pre" and labels[-1] == "final_post"
    np.testing.assert_allclose(stack[0], cache["resid_pre", 0])
    np.testing.assert_allclose(stack[-1], cache["resid_post", cfg.n_layers - 1])
    # logit lens: the final stream with ln_final applied, through W_U + b_U, gives the logits
    lens = D.accumulated_resid(model, cache, apply_ln=True, pos_slice=-1)
    np.testing.assert_allclose(lens[-1] @ model.unembed.W_U[...] + model.unembed.b_U[...], logits[:, -1], atol=1e-4)


@pytest.mark.slow
def test_logit_attrs_of_the_full_decomposition_add_up_to_the_logit_difference(run):
    model, cfg, tokens, logits, cache = run
    model = fold_layer_norm(model) if cfg.normalization_type else model
    logits, cache = model.run_with_cache(tokens)
    correct, wrong = tokens[:, -1] % cfg.d_vocab_out, (tokens[:, -1] + 1) % cfg.d_vocab_out
    stack = D.decompose_resid(model, cache, pos_slice=-1)  # [c, b, d], raw: logit_attrs scales it (as TL)
    attrs = D.logit_attrs(model, cache, stack, correct, wrong, pos_slice=-1)  # [c, b]
    b = np.arange(tokens.shape[0])
    diff = logits[b, -1, correct] - logits[b, -1, wrong]
    bias = model.unembed.b_U[...][correct] - model.unembed.b_U[...][wrong]
    np.testing.assert_allclose(attrs.sum(0) + bias, diff, atol=1e-4)


def test_apply_ln_to_stack_without_ln_is_identity(configs):
    cfg = configs["mlp_noln_relu"]
    model = GPT(cfg)
    _, cache = model.run_with_cache(random_tokens(cfg))
    stack = D.decompose_resid(model, cache)
    assert D.apply_ln_to_stack(model, cache, stack) is stack


def test_logit_attrs_refuses_mismatched_or_out_of_range_tokens(run):
    model, cfg, tokens, logits, cache = run
    stack = D.decompose_resid(model, cache, pos_slice=-1)
    b = tokens.shape[0]
    with pytest.raises(ValueError, match="same shape"):
        D.logit_attrs(model, cache, stack, np.zeros(b, np.int32), np.zeros(1, np.int32), pos_slice=-1)
    with pytest.raises(ValueError, match="output ids"):
        D.logit_attrs(model, cache, stack, np.full(b, cfg.d_vocab_out), pos_slice=-1)
    with pytest.raises(ValueError, match="directions"):
        D.logit_attrs(model, cache, stack, np.zeros(b + 1, np.int32), pos_slice=-1)


def test_stacks_before_layer_0_are_empty_as_in_transformerlens(run):
    model, cfg, tokens, logits, cache = run
    heads, labels = D.stack_head_results(model, cache, layer=0, return_labels=True)
    assert heads.shape == (0, *cache["hook_embed"].shape) and labels == []
    with_rest = D.stack_head_results(model, cache, layer=0, incl_remainder=True)
    np.testing.assert_allclose(with_rest[0], cache["resid_pre", 0], atol=1e-6)
    if not cfg.attn_only:
        neurons, labels = D.stack_neuron_results(model, cache, 0, pos_slice=-1, return_labels=True)
        assert neurons.shape == (0, tokens.shape[0], cfg.d_model) and labels == []
        with pytest.raises(IndexError, match="neuron"):
            D.stack_neuron_results(model, cache, 1, neuron_slice=np.array([0, cfg.d_mlp]))


@pytest.mark.slow
def test_logit_attrs_batch_slice_and_has_batch_dim_as_in_transformerlens(run):
    """batch_slice slices the cached scale, and the stack too when has_batch_dim=True; a stack of some
    batch elements only takes has_batch_dim=False (TransformerLens' meaning, checked against it by hand)."""
    model, cfg, tokens, logits, cache = run
    stack = D.decompose_resid(model, cache, pos_slice=-1)  # [c, b, d]
    full = D.logit_attrs(model, cache, stack, 3, pos_slice=-1)  # [c, b]
    some = np.array([0, 2])
    np.testing.assert_allclose(D.logit_attrs(model, cache, stack, 3, pos_slice=-1, batch_slice=some), full[:, some])
    np.testing.assert_allclose(D.logit_attrs(model, cache, stack, 3, pos_slice=-1, batch_slice=1), full[:, 1])
    np.testing.assert_allclose(
        D.logit_attrs(model, cache, stack[:, some], 3, pos_slice=-1, batch_slice=some, has_batch_dim=False),
        full[:, some],
        atol=1e-6,
    )
    one = D.logit_attrs(model, cache, stack[:, 1], 3, pos_slice=-1, batch_slice=1, has_batch_dim=False)
    np.testing.assert_allclose(one, full[:, 1], atol=1e-6)
    # per-element tokens are those of the elements kept (not sliced again)
    correct = tokens[:, -1] % cfg.d_vocab_out
    per_token = D.logit_attrs(model, cache, stack, correct, pos_slice=-1)
    sliced = D.logit_attrs(model, cache, stack, correct[some], pos_slice=-1, batch_slice=some)
    np.testing.assert_allclose(sliced, per_token[:, some])
    with pytest.raises(ValueError, match="has_batch_dim=False"):
        D.logit_attrs(model, cache, stack[:, 0, :2], 3, batch_slice=0)  # [c, 2]: no batch axis to slice


def test_a_stack_that_does_not_fit_the_cached_scale_is_named(run):
    """A stack sliced to some batch elements, given without batch_slice, raises naming both shapes
    (JAX would raise an unnamed broadcasting error, or broadcast)."""
    model, cfg, tokens, logits, cache = run
    stack = D.decompose_resid(model, cache, pos_slice=-1)  # [c, 3, d]
    if cfg.normalization_type is None:  # no scale to fit: each element's attribution stands alone
        full = D.logit_attrs(model, cache, stack, 3, pos_slice=-1)
        np.testing.assert_array_equal(D.logit_attrs(model, cache, stack[:, :2], 3, pos_slice=-1), full[:, :2])
        return
    with pytest.raises(ValueError, match="does not fit") as error:
        D.logit_attrs(model, cache, stack[:, :2], 3, pos_slice=-1)
    message = str(error.value)
    assert str(tuple(stack[:, :2].shape)) in message and "(3, 1)" in message and "has_batch_dim=False" in message
    with pytest.raises(ValueError, match="does not fit"):
        D.apply_ln_to_stack(model, cache, stack[:, :2], pos_slice=-1)
    with pytest.raises(IndexError, match="batch_slice"):
        D.logit_attrs(model, cache, stack, 3, pos_slice=-1, batch_slice=3)


def test_one_element_arrays_are_scalars_as_in_transformerlens(run):
    """A 1-element integer array (any shape) is the int it holds: a token of logit_attrs, a layer."""
    model, cfg, tokens, logits, cache = run
    stack = D.decompose_resid(model, cache, pos_slice=-1)
    want = D.logit_attrs(model, cache, stack, 3, 4, pos_slice=-1)
    assert want.shape == (stack.shape[0], tokens.shape[0])
    np.testing.assert_array_equal(
        D.logit_attrs(model, cache, stack, np.array([3]), np.array([[4]]), pos_slice=-1), want
    )
    np.testing.assert_array_equal(D.logit_attrs(model, cache, stack, jnp.array([3]), 4, pos_slice=-1), want)
    for layer in (np.array([1]), jnp.array([[1]]), np.int64(1)):
        np.testing.assert_array_equal(D.stack_head_results(model, cache, layer), D.stack_head_results(model, cache, 1))
        np.testing.assert_array_equal(D.accumulated_resid(model, cache, layer), D.accumulated_resid(model, cache, 1))
        np.testing.assert_array_equal(D.decompose_resid(model, cache, layer), D.decompose_resid(model, cache, 1))
    if not cfg.attn_only:
        np.testing.assert_array_equal(
            D.stack_neuron_results(model, cache, np.array([1]), pos_slice=-1),
            D.stack_neuron_results(model, cache, 1, pos_slice=-1),
        )
    with pytest.raises(TypeError, match="layer"):
        D.stack_head_results(model, cache, np.array([0, 1]))
    with pytest.raises(TypeError, match="layer"):
        D.decompose_resid(model, cache, 1.0)
    with pytest.raises(TypeError, match="integer token ids"):
        D.logit_attrs(model, cache, stack, np.array([3.0]), pos_slice=-1)


def test_the_neuron_stack_before_layer_0_with_its_remainder_is_the_stream_entering_layer_0(run):
    """stack_neuron_results(0, incl_remainder=True): no neurons, only the remainder, as in
    TransformerLens; minillm's remainder is resid_pre 0 (TransformerLens' is the last layer's
    resid_post, as its layer - 1 = -1 wraps around: docs/conventions.md)."""
    model, cfg, tokens, logits, cache = run
    if cfg.attn_only:
        with pytest.raises(ValueError, match="no neurons"):
            D.stack_neuron_results(model, cache, 0, incl_remainder=True)
        return
    stack, labels = D.stack_neuron_results(model, cache, 0, incl_remainder=True, return_labels=True)
    assert stack.shape == (1, *cache["resid_pre", 0].shape) and labels == ["remainder"]
    np.testing.assert_allclose(stack[0], cache["hook_embed"] + cache["hook_pos_embed"], atol=1e-6)
    last = D.stack_neuron_results(model, cache, 0, pos_slice=-1, incl_remainder=True)
    np.testing.assert_allclose(last[0], cache["resid_pre", 0][:, -1], atol=1e-6)


def test_tokens_already_sliced_to_the_positions_are_not_sliced_again(run):
    """TransformerLens expects tokens sliced as the stack is; tokens for every position are sliced here."""
    model, cfg, tokens, logits, cache = run
    positions = [3, 1]  # slicing [b, 2] tokens again with these would fail or swap them
    stack = D.stack_head_results(model, cache, pos_slice=positions)  # [component, b, 2, d]
    answers = np.asarray(tokens) % cfg.d_vocab_out  # [b, p] output ids
    full = D.logit_attrs(model, cache, stack, answers, pos_slice=positions)
    pre_sliced = D.logit_attrs(model, cache, stack, answers[:, positions], pos_slice=positions)
    np.testing.assert_array_equal(pre_sliced, full)
    assert full.shape == (stack.shape[0], tokens.shape[0], 2)
    whole = D.logit_attrs(model, cache, D.stack_head_results(model, cache), answers)  # every position
    np.testing.assert_allclose(full, whole[:, :, positions], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_logit_attrs_batch_slices_exactly_as_transformerlens_own_test(configs):
    """TransformerLens' test_logit_attrs_works_for_all_input_shapes on a minillm model with a batch of 8:
    the stack holds the whole batch, batch_slice picks rows (a list [2, 5, 7], an array, an int), the
    tokens are already those rows' (never sliced again). The reference is TransformerLens' arithmetic
    written out: the stack's rows centred, divided by the cached ln_final scale of the same rows,
    dotted with W_U[:, correct] - W_U[:, incorrect]."""
    model = GPT(configs["mlp_ln_gelu"])
    cfg = model.cfg
    tokens = np.asarray(random_tokens(cfg, batch=8))
    _, cache = model.run_with_cache(tokens)
    stack = D.accumulated_resid(model, cache, layer=-1, incl_mid=True, pos_slice=-1)  # [c, 8, d]
    answers = (tokens[:, :2] + 1) % cfg.d_vocab_out  # [8, 2]: (correct, incorrect) per prompt
    W_U, scale = np.asarray(model.W_U, np.float64), np.asarray(cache["ln_final.hook_scale"][:, -1], np.float64)

    def by_hand(rows, correct, incorrect, stack=stack):
        x = np.asarray(stack, np.float64)
        x = (x - x.mean(-1, keepdims=True)) / scale[rows]
        return (x * (W_U[:, correct] - W_U[:, incorrect]).T).sum(-1)

    every = np.arange(8)
    full = D.logit_attrs(model, cache, stack, answers[:, 0], answers[:, 1], pos_slice=-1)
    np.testing.assert_allclose(full, by_hand(every, answers[:, 0], answers[:, 1]), rtol=1e-4, atol=1e-4)
    for batch in ([2, 5, 7], np.array([2, 5, 7]), [7, 2], -1, 3):  # a list, an array, ints (negative too)
        ref = by_hand(batch, answers[batch, 0], answers[batch, 1], stack[:, batch])
        got = D.logit_attrs(model, cache, stack, answers[batch, 0], answers[batch, 1], pos_slice=-1, batch_slice=batch)
        assert got.shape == ref.shape == ((stack.shape[0], len(batch)) if np.ndim(batch) else (stack.shape[0],))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, full[:, batch], rtol=1e-5, atol=1e-5)
    # an int token, a 1-element array, and a stack without its batch axis (has_batch_dim=False)
    one = D.logit_attrs(model, cache, stack, int(answers[-1, 0]), int(answers[-1, 1]), pos_slice=-1, batch_slice=-1)
    np.testing.assert_allclose(one, full[:, -1], rtol=1e-5, atol=1e-5)
    alone = D.logit_attrs(
        model, cache, stack[:, -1], answers[-1, 0], answers[-1, 1], pos_slice=-1, batch_slice=-1, has_batch_dim=False
    )
    np.testing.assert_allclose(alone, full[:, -1], rtol=1e-5, atol=1e-5)
    rows = [2, 5, 7]  # a stack already of those rows: has_batch_dim=False, as in TransformerLens
    some = D.logit_attrs(
        model,
        cache,
        stack[:, rows],
        answers[rows, 0],
        answers[rows, 1],
        pos_slice=-1,
        batch_slice=rows,
        has_batch_dim=False,
    )
    np.testing.assert_allclose(some, full[:, rows], rtol=1e-5, atol=1e-5)
    # every position: tokens [3, p] of those rows, the stack [c, 8, p, d]
    per_pos = D.decompose_resid(model, cache)
    all_pos = D.logit_attrs(model, cache, per_pos, tokens[rows] % cfg.d_vocab_out, batch_slice=rows)
    want = D.logit_attrs(model, cache, per_pos, tokens % cfg.d_vocab_out)[:, rows]
    assert all_pos.shape == (per_pos.shape[0], 3, tokens.shape[1])
    np.testing.assert_allclose(all_pos, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_tuple_slice_is_a_range_as_in_transformerlens(run):
    """TransformerLens' Slice reads a tuple as slice(*tuple): batch_slice=(2, 5) is rows 2, 3, 4 (JAX
    indexing would take rows 2 and 5); the same for pos_slice."""
    model, cfg, _, _, _ = run
    tokens = random_tokens(cfg, batch=6)
    _, cache = model.run_with_cache(tokens)
    stack = D.decompose_resid(model, cache, pos_slice=-1)
    full = D.logit_attrs(model, cache, stack, 3, pos_slice=-1)
    np.testing.assert_array_equal(D.logit_attrs(model, cache, stack, 3, pos_slice=-1, batch_slice=(2, 5)), full[:, 2:5])
    np.testing.assert_array_equal(
        D.logit_attrs(model, cache, stack, 3, pos_slice=-1, batch_slice=(None, None, 2)), full[:, ::2]
    )
    np.testing.assert_array_equal(
        D.decompose_resid(model, cache, pos_slice=(1, 4)), D.decompose_resid(model, cache)[:, :, 1:4]
    )
