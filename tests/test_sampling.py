"""Sampling (minillm/model/sampling.py, GPT.generate): greedy generation equals argmax step by step,
sampling stays in the vocabulary, and requests the model cannot serve are refused."""

import dataclasses

import jax
import numpy as np
import pytest
from helpers import random_tokens

from minillm import GPT
from minillm.model.sampling import generate


@pytest.mark.slow
def test_generate_greedy_matches_argmax_step_by_step(model, cfg):
    if cfg.d_vocab_out > cfg.d_vocab:
        pytest.skip("outputs are not inputs")
    prompt = random_tokens(cfg, batch=2, pos=3)
    out = np.asarray(model.generate(prompt, 4, temperature=0))
    assert out.shape == (2, 7)
    np.testing.assert_array_equal(out[:, :3], prompt)
    seq = prompt
    for _ in range(4):
        nxt = np.asarray(model(seq))[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None].astype(np.int32)], axis=1)
    np.testing.assert_array_equal(out, seq)
    sampled = model.generate(prompt, 4, key=jax.random.key(0), temperature=1.0)
    new = np.asarray(sampled)[:, 3:]
    assert new.shape == (2, 4) and np.all((new >= 0) & (new < cfg.d_vocab_out))
    with pytest.raises(ValueError, match="n_ctx"):
        model.generate(prompt, cfg.n_ctx, temperature=0)
    with pytest.raises(ValueError, match="key"):
        model.generate(prompt, 2, temperature=1.0)


def test_model_generate_is_sampling_generate(model, cfg):
    prompt = random_tokens(cfg, batch=2, pos=2)
    key = jax.random.key(3)
    np.testing.assert_array_equal(generate(model, prompt, 3, key=key), model.generate(prompt, 3, key=key))
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompt, -1)


def test_a_model_whose_outputs_are_not_inputs_cannot_generate(configs):
    # its own config: one with more outputs than inputs (none of the shared configs has that)
    cfg = dataclasses.replace(configs["attn_only_ln"], d_vocab_out=configs["attn_only_ln"].d_vocab + 5)
    with pytest.raises(ValueError, match="d_vocab_out"):
        generate(GPT(cfg), random_tokens(cfg, batch=1, pos=2), 1, temperature=0)
