"""Shared fixtures: small configs of every kind the model can be (attention-only or with MLPs,
with or without LayerNorm), and random token batches for them."""

import numpy as np
import pytest

from minillm import GPT, GPTConfig

CONFIGS = {
    "attn_only_ln": GPTConfig(n_layers=2, d_model=32, n_ctx=12, d_vocab=23, n_heads=4, attn_only=True, seed=1),
    "attn_only_noln": GPTConfig(
        n_layers=2, d_model=32, n_ctx=12, d_vocab=23, n_heads=4, attn_only=True, normalization_type=None, seed=2
    ),
    "mlp_ln_gelu": GPTConfig(
        n_layers=2, d_model=32, n_ctx=12, d_vocab=23, n_heads=4, d_mlp=48, act_fn="gelu", d_vocab_out=17, seed=3
    ),
    "mlp_noln_relu": GPTConfig(
        n_layers=3, d_model=24, n_ctx=12, d_vocab=23, n_heads=3, d_head=5, d_mlp=40, normalization_type=None, seed=4
    ),
}


@pytest.fixture(params=sorted(CONFIGS))
def cfg(request) -> GPTConfig:
    return CONFIGS[request.param]


@pytest.fixture
def model(cfg) -> GPT:
    return GPT(cfg)


def random_tokens(cfg: GPTConfig, batch: int = 3, pos: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.d_vocab, (batch, pos)).astype(np.int32)


@pytest.fixture
def tokens(cfg) -> np.ndarray:
    return random_tokens(cfg)
