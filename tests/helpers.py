"""What the tests share besides fixtures: the model configs every test draws from, random token
batches, the model that fits a modular-arithmetic task, weights as NumPy arrays, the task variants
the task tests run on (with their splits and samples, made once), and random factored matrices.

A test module imports these as a plain module (`from helpers import CONFIGS`: pytest puts tests/
on sys.path, see pyproject.toml's pythonpath); tests/conftest.py turns them into the fixtures
`cfg`, `every_cfg`, `configs`, `model` and `tokens`. The independent NumPy forward pass is
tests/reference.py.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from minillm import GPTConfig
from minillm import tasks as T

# --- the model configs ---------------------------------------------------------------------------
# Small (a forward pass costs milliseconds), all with n_ctx=12 and d_vocab=23, each with its own seed.
_SIZES = dict(n_ctx=12, d_vocab=23)

# The representative four: the `cfg` fixture runs a test once on each. Between them: attention-only
# and with an MLP, with and without LayerNorm, GELU and ReLU, 2 and 3 layers, d_vocab_out != d_vocab
# (mlp_ln_gelu) and d_head != d_model / n_heads (mlp_noln_relu).
DEFAULT = ("attn_only_ln", "attn_only_noln", "mlp_ln_gelu", "mlp_noln_relu")
_attn_only_ln = GPTConfig(n_layers=2, d_model=32, n_heads=4, attn_only=True, seed=1, **_SIZES)
_mlp_ln_gelu = GPTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=48, act_fn="gelu", d_vocab_out=17, seed=3, **_SIZES)

CONFIGS: dict[str, GPTConfig] = {
    "attn_only_ln": _attn_only_ln,
    "attn_only_noln": dataclasses.replace(_attn_only_ln, normalization_type=None, seed=2),
    "mlp_ln_gelu": _mlp_ln_gelu,
    "mlp_noln_relu": GPTConfig(
        n_layers=3, d_model=24, n_heads=3, d_head=5, d_mlp=40, normalization_type=None, seed=4, **_SIZES
    ),
    # Every other kind of model, one option each (the `every_cfg` fixture runs a test on all nine).
    # TransformerLens' LayerNormPre: LayerNorm without w and b.
    "mlp_lnpre_relu": GPTConfig(
        n_layers=2, d_model=32, n_heads=4, d_mlp=48, normalization_type="LNPre", seed=5, **_SIZES
    ),
    # No causal mask (LayerNorm and a ReLU MLP: the only LN + ReLU model here).
    "mlp_ln_relu_bidirectional": GPTConfig(
        n_layers=2, d_model=32, n_heads=4, d_mlp=48, attention_dir="bidirectional", seed=6, **_SIZES
    ),
    # The next three keep their base's seed, hence its weights: GPT(CONFIGS["mlp_ln_gelu_bfloat16"])
    # has the float32 weights of GPT(CONFIGS["mlp_ln_gelu"]), computed in bfloat16.
    "mlp_ln_gelu_bfloat16": dataclasses.replace(_mlp_ln_gelu, dtype="bfloat16"),
    # jax.nn.dot_product_attention when no hook reads the pattern (a plain call).
    "mlp_ln_gelu_fused": dataclasses.replace(_mlp_ln_gelu, attn_implementation="fused"),
    # Zhong et al.'s attention rate: 0.3 * softmax + 0.7 * uniform attention.
    "attn_only_ln_rate0.3": dataclasses.replace(_attn_only_ln, attention_rate=0.3),
}


def random_tokens(cfg: GPTConfig, batch: int = 3, pos: int = 10, seed: int = 0) -> np.ndarray:
    """int32 tokens [batch, pos], uniform over the config's input vocabulary."""
    return np.random.default_rng(seed).integers(0, cfg.d_vocab, (batch, pos)).astype(np.int32)


# --- the model of a task ---------------------------------------------------------------------------
def modular_config(p: int, **changes) -> GPTConfig:
    """The one-layer model that fits ModularArithmetic(p): p numbers and "=" in, p answers out, three
    positions ("a b ="). Nanda et al.'s grokking model, small: no LayerNorm, a ReLU MLP."""
    sizes = dict(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=3, d_vocab=p + 1, d_vocab_out=p)
    return GPTConfig(**{**sizes, "normalization_type": None, **changes})


def numpy_weights(model) -> dict[str, np.ndarray]:
    """A model's state dict as NumPy arrays (copies: writing to the model later cannot reach them)."""
    return {name: np.array(value) for name, value in model.state_dict().items()}


# --- the tasks -------------------------------------------------------------------------------------
# Each task with its defaults, plus small non-default variants (the tests of each family and the
# common contract of tests/test_tasks.py run on these).
GENERATOR_TASKS = [
    T.RepeatedTokens(),
    T.RepeatedTokens(
        d_vocab=20, seq_len=40, min_len=2, max_len=10, max_gap=6, loss_on="repeat", n_train=200, n_test=100
    ),
    T.BalancedBrackets(),
    T.BracketDepth(),
    T.Sorting(),
    T.Sorting(n=5, n_values=10, n_train=300, n_test=300),
    T.Reversal(),
    T.Reversal(n=3, n_values=50, n_train=200, n_test=100),
    T.AssociativeRecall(),
    T.AssociativeRecall(n_pairs=3, n_keys=3, n_values=4, n_train=200, n_test=100),
    T.AssociativeRecall(n_pairs=6, n_keys=16, n_values=16, n_queries=4, n_train=200, n_test=100),
    T.IndirectObject(n_train=256, n_test=256),
    T.IndirectObject(n_names=5, n_fillers=2, n_slots=5, orders=("ABB", "BAB"), n_train=100, n_test=100),
    T.FactualRecall(n_train=512, n_test=512),
    T.FactualRecall(
        n_subjects=12,
        n_first=4,
        n_last=5,
        n_relations=2,
        n_attributes=3,
        n_fillers=3,
        n_filler_slots=4,
        min_after=0,
        distractor_prob=0.5,
        n_train=200,
        n_test=100,
    ),
]
FINITE_TASKS = [
    T.ModularArithmetic(),
    T.ModularArithmetic(p=7, op="div", frac_train=0.5),
    T.ModularArithmetic(p=10, op="sub", frac_train=0.6),
]
ALL_TASKS = GENERATOR_TASKS + FINITE_TASKS


def task_id(task: T.Task) -> str:
    """A test id that names the task and every field."""
    fields = ",".join(f"{f.name}={getattr(task, f.name)}" for f in dataclasses.fields(task))
    return f"{task.name}({fields})"


@functools.cache
def split(task: T.Task, seed: int) -> tuple[T.Batch, T.Batch]:
    """task.split(seed), made once per test session."""
    return task.split(seed)


def n_total(task: T.Task) -> int:
    """How many examples the split draws."""
    return task.n_train + task.n_test


@functools.cache
def fresh(task: T.Task, seed: int) -> T.Batch:
    """task.sample with the split's batch size, so both share one compilation (fast tests)."""
    return jax.device_get(task.sample(jax.random.key(seed), n_total(task)))


def rows(tokens: np.ndarray) -> set[tuple[int, ...]]:
    """The sequences of a token batch, as a set."""
    return {tuple(int(t) for t in row) for row in np.asarray(tokens)}


# --- factored matrices ---------------------------------------------------------------------------
def random_factors(leading, ldim, mdim, rdim, seed=0):
    """Two float32 factors A [*leading, ldim, mdim] and B [*leading, mdim, rdim] of normal entries."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((*leading, ldim, mdim)).astype(np.float32)
    B = rng.standard_normal((*leading, mdim, rdim)).astype(np.float32)
    return A, B


def dense(A, B):
    """The product a FactoredMatrix(A, B) stands for, in float64."""
    return np.asarray(A, np.float64) @ np.asarray(B, np.float64)
