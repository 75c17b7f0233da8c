"""minillm: a minimal GPT in JAX and Flax NNX in which every intermediate tensor has a name.

from minillm import GPT, GPTConfig
model = GPT(GPTConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=50, n_heads=4))
logits, cache = model.run_with_cache(tokens)          # tokens: int [batch, pos]
cache["pattern", 0]                                   # blocks.0.attn.hook_pattern [b, h, q, k]

The rooms, bottom to top (docs/architecture.md): minillm.model and minillm.tasks; the toolkit
(minillm.patching, minillm.decompose, minillm.circuits, ...); minillm.training; minillm.lessons.
"""

from minillm.model.checkpoint import CheckpointError
from minillm.model.config import GPTConfig
from minillm.model.factored_matrix import FactoredMatrix
from minillm.model.gpt import GPT
from minillm.model.hook_points import hook_names, hook_shape, hook_shapes
from minillm.model.hooks import ActivationCache, HookPoint, Hooks, act_name
from minillm.model.params import map_seeds, stack_models, unstack_models
from minillm.model.tokenizer import Tokenizer

__all__ = [
    "GPT",
    "GPTConfig",
    "ActivationCache",
    "HookPoint",
    "Hooks",
    "act_name",
    "hook_names",
    "hook_shape",
    "hook_shapes",
    "CheckpointError",
    "FactoredMatrix",
    "stack_models",
    "unstack_models",
    "map_seeds",
    "Tokenizer",
]
__version__ = "0.1.0"
