"""Head detectors (minillm/detectors.py) against heads whose behaviour is set by hand, and
TransformerLens' detect_head definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CONFIGS

from minillm import GPT, GPTConfig
from minillm.detectors import head_scores, repeated_random_tokens

N_CTX = 21


def previous_token_model(sharpness: float = 200.0) -> GPT:
    """1 layer, no LN; positions are one-hot in dims 0..20; head 0's query at position i matches the
    key of position i - 1 only, so it attends to the previous token. Head 1 attends uniformly.
    (Its own config: the hand-set weights need room for one-hot positions and tokens.)"""
    cfg = GPTConfig(
        n_layers=1, d_model=48, n_heads=2, d_head=24, n_ctx=N_CTX, d_vocab=10, attn_only=True, normalization_type=None
    )
    model = GPT(cfg)
    w = {k: np.zeros_like(np.asarray(v)) for k, v in model.state_dict().items()}
    w["pos_embed.W_pos"][:, :N_CTX] = np.eye(N_CTX)
    w["embed.W_E"][:, N_CTX : N_CTX + 10] = np.eye(10)  # tokens live in other dims
    w["blocks.0.attn.W_Q"][0, :N_CTX, :N_CTX] = sharpness * np.eye(N_CTX)  # q_i = s e_i
    w["blocks.0.attn.W_K"][0, : N_CTX - 1, 1:N_CTX] = np.eye(N_CTX - 1)  # k_j = e_{j+1}
    model.load_state_dict({k: jnp.asarray(v) for k, v in w.items()})
    return model


@pytest.mark.slow
def test_previous_token_head_set_by_hand_scores_one():
    model = previous_token_model()
    tokens = repeated_random_tokens(jax.random.key(0), 8, 10, 10)
    scores = head_scores(model, tokens)
    assert scores["previous_token"].shape == (1, 2)
    assert scores["previous_token"][0, 0] > 0.99
    assert scores["previous_token"][0, 1] < 0.3  # the uniform head
    assert scores["induction"][0, 0] < 0.05 and scores["duplicate_token"][0, 0] < 0.05


@pytest.mark.slow
def test_duplicate_and_induction_stripes_on_a_hooked_pattern():
    """Replace the pattern with an exact duplicate-token (head 0) / induction (head 1) pattern."""
    model = previous_token_model()
    half = 10
    n = 1 + 2 * half
    dup, ind = np.zeros((n, n), np.float32), np.zeros((n, n), np.float32)
    for q in range(n):
        dup[q, q - half if q > half else 0] = 1.0
        ind[q, q - half + 1 if q > half else 0] = 1.0
    pattern = jnp.stack([jnp.asarray(dup), jnp.asarray(ind)])[None]  # [1, h, q, k]
    tokens = repeated_random_tokens(jax.random.key(1), 4, half, 10)
    hooked = lambda x, hook: jnp.broadcast_to(pattern, x.shape)
    _, cache = model.run_with_cache(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", hooked)])

    class Wrapped:  # head_scores only needs run_with_cache and cfg
        cfg = model.cfg

        def run_with_cache(self, t, names_filter=None):
            return model.run_with_cache(t, names_filter, fwd_hooks=[("blocks.0.attn.hook_pattern", hooked)])

    scores = head_scores(Wrapped(), tokens)
    np.testing.assert_allclose(scores["duplicate_token"][0], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(scores["induction"][0], [0.0, 1.0], atol=1e-6)


def test_repeated_random_tokens_layout():
    t = np.asarray(repeated_random_tokens(jax.random.key(2), 5, 7, 12))
    assert t.shape == (5, 15) and np.all(t[:, 0] == 0) and np.all(t[:, 1:] > 0) and np.all(t < 12)
    np.testing.assert_array_equal(t[:, 1:8], t[:, 8:])


@pytest.mark.slow
def test_detect_head_matches_transformerlens_definitions():
    """ "mul": the share of each head's attention on the pattern's entries; with the previous-token
    pattern that is the previous-token score times (p - 1) / p (row 0 has no previous token).
    "abs": 1 - mean |pattern - detection| * p, rounded to 3 decimals. Unselected heads score -1."""
    from minillm.detectors import detect_head, named_detection_pattern

    model = GPT(CONFIGS["attn_only_ln"])
    tokens = np.asarray(repeated_random_tokens(jax.random.key(0), 1, 5, model.cfg.d_vocab))[0]  # [11]
    p = len(tokens)
    prev = detect_head(model, tokens, "previous_token_head")
    np.testing.assert_allclose(
        prev, np.asarray(head_scores(model, tokens[None])["previous_token"]) * (p - 1) / p, rtol=1e-5
    )
    _, cache = model.run_with_cache(tokens[None])
    pattern = np.asarray(cache["pattern", 1][0, 0], np.float64)
    detect = named_detection_pattern("induction_head", tokens)
    expected = 1 - round(float(np.abs(pattern - detect).mean() * p), 3)
    got = detect_head(model, tokens, detect, error_measure="abs")
    assert got[1, 0] == pytest.approx(expected, abs=1e-9)
    only = detect_head(model, tokens, "duplicate_token_head", heads=[(1, 1)])
    selected = np.zeros(only.shape, bool)
    selected[1, 1] = True
    assert np.all(only[~selected] == -1) and only[1, 1] != -1  # only the selected head is scored
    # the named patterns, by hand: "a b a": duplicate (2 -> 0), induction (2 -> 1)
    toks = np.array([4, 7, 4])
    assert named_detection_pattern("duplicate_token_head", toks)[2].tolist() == [1, 0, 0]
    assert named_detection_pattern("induction_head", toks)[2].tolist() == [0, 1, 0]
    with pytest.raises(TypeError, match="tokenizer"):
        detect_head(model, "some text", "induction_head")
    with pytest.raises(ValueError, match="lower triangular"):
        detect_head(model, tokens, np.ones((p, p)))
    with pytest.raises(IndexError, match="outside"):
        detect_head(model, tokens, "induction_head", heads=[(2, 0)])
