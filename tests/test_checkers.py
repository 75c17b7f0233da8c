"""The exercise checkers accept a correct answer and reject a wrong one."""

import jax.numpy as jnp
import numpy as np
import pytest

from minillm.checkers import check_copying_score, check_head_mean_ablation, check_previous_token_scores


def right_prev(cache, n_layers):
    out = []
    for l in range(n_layers):
        p = cache["pattern", l]  # [b, h, q, k]
        n = p.shape[-1]
        out.append(jnp.stack([p[:, :, q, q - 1] for q in range(1, n)], -1).mean((0, 2)))
    return jnp.stack(out)


def wrong_prev(cache, n_layers):  # the diagonal: attention to itself, not to the previous token
    return jnp.stack([jnp.diagonal(cache["pattern", l], axis1=2, axis2=3).mean((0, 2)) for l in range(n_layers)])


def test_previous_token_checker(capsys):
    check_previous_token_scores(right_prev)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="previous-token"):
        check_previous_token_scores(wrong_prev)


def test_mean_ablation_checker():
    check_head_mean_ablation(lambda z, hook, head, ref: z.at[:, :, head].set(ref[:, :, head].mean(0)))
    with pytest.raises(AssertionError, match="mean-ablated"):  # the mean over positions too: wrong
        check_head_mean_ablation(lambda z, hook, head, ref: z.at[:, :, head].set(ref[:, :, head].mean((0, 1))))


def test_copying_score_checker():
    def right(model, layer, head):
        attn = model.blocks[layer].attn
        full = model.embed.W_E[...] @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U[...]
        return float((full.argmax(-1) == jnp.arange(full.shape[0])).mean())

    check_copying_score(right)
    with pytest.raises(AssertionError, match="copying score"):
        check_copying_score(lambda model, layer, head: 1.0)
