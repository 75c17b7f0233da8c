"""Shared fixtures, made from the configs in tests/helpers.py:

cfg        each of the representative four configs in turn (helpers.DEFAULT): attention-only and
           with an MLP, with and without LayerNorm, GELU and ReLU (the quick run, -m "not slow",
           takes the first three)
every_cfg  each of the nine kinds in turn (helpers.CONFIGS), adding LNPre, bidirectional
           attention, bfloat16, fused attention and attention_rate < 1: for the tests about
           numbers that every kind must get right (a shape test needs only `cfg`)
configs    all nine by name, for a test that needs one kind in particular
model      GPT(cfg)
tokens     random tokens [3, 10] for cfg
"""

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping
from types import MappingProxyType

# One XLA compilation cache for the session, shared with the processes it starts (the CLI's training
# runs, the lesson notebooks' kernels): a program compiled in one is read back, not compiled again,
# in the next. Set before JAX is imported; removed at the end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="minillm-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import gc

import jax
import numpy as np
import pytest
from helpers import CONFIGS, DEFAULT, random_tokens

from minillm import GPT, GPTConfig

# Every program XLA compiles for the CPU lives in its own memory mappings (code, constants, data),
# kept as long as a jit cache holds the program. One process running the whole suite compiles many
# thousands: it reached Linux's limit of mappings per process (vm.max_map_count, 65,530 by default),
# after which the next compile's mmap fails and XLA dies with a segmentation fault (CI did, 82% of
# the way). So when a test module ends with the count past a third of the limit, the caches are
# emptied; what a later module needs again comes back from the compilation cache on disk.
MAPS_LIMIT = 65_530


def mapping_count() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return None


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    yield
    count = mapping_count()
    if count is not None and count > MAPS_LIMIT // 3:
        jax.clear_caches()
        gc.collect()


@pytest.fixture(scope="session")
def configs() -> Mapping[str, GPTConfig]:
    return MappingProxyType(CONFIGS)


# The quick run (-m "not slow") takes the first three; the 3-layer mlp_noln_relu, the costliest to
# compile, joins them in the full run (and is in the quick run's every_cfg tests).
@pytest.fixture(params=[*DEFAULT[:3], pytest.param(DEFAULT[3], marks=pytest.mark.slow)])
def cfg(request) -> GPTConfig:
    return CONFIGS[request.param]


@pytest.fixture(params=list(CONFIGS))
def every_cfg(request) -> GPTConfig:
    return CONFIGS[request.param]


@pytest.fixture
def model(cfg) -> GPT:
    return GPT(cfg)


@pytest.fixture
def tokens(cfg) -> np.ndarray:
    return random_tokens(cfg)
