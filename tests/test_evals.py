"""TransformerLens' induction_loss and utils under their names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import GPT, GPTConfig, act_name, utils
from minillm.evals import induction_loss

CFG = GPTConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=12, d_vocab=9, seed=1)


def test_induction_loss_is_the_loss_on_the_second_copy():
    model = GPT(CFG)
    key = jax.random.key(4)
    first = jax.random.randint(key, (5, 6), 0, CFG.d_vocab)
    tokens = jnp.concatenate([first, first], axis=1).at[:, 0].set(0)
    per_token = np.asarray(model(tokens, return_type="loss", loss_per_token=True))
    got = float(induction_loss(model, batch_size=5, key=key))
    assert got == pytest.approx(per_token[:, 7:].mean(), rel=1e-5)
    with pytest.raises(TypeError, match="tokenizer"):
        induction_loss(model, tokenizer=object())
    with pytest.raises(ValueError, match="n_ctx"):
        induction_loss(model, subseq_len=7)


def test_utils_carry_transformerlens_names():
    assert utils.get_act_name("pattern", 0) == act_name("pattern", 0) == "blocks.0.attn.hook_pattern"
    array = utils.to_numpy(jnp.ones((2, 3)))
    assert isinstance(array, np.ndarray) and array.shape == (2, 3)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 9)), jnp.float32)
    tokens = jnp.asarray([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert utils.lm_cross_entropy_loss(logits, tokens, per_token=True).shape == (2, 3)
