"""minillm: a minimal GPT in JAX and Flax NNX in which every intermediate tensor has a name.

from minillm import GPT, GPTConfig
model = GPT(GPTConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=50, n_heads=4))
logits, cache = model.run_with_cache(tokens)          # tokens: int [batch, pos]
cache["pattern", 0]                                   # blocks.0.attn.hook_pattern [b, h, q, k]
"""

from minillm.checkpoint import CheckpointError
from minillm.config import GPTConfig
from minillm.factored_matrix import FactoredMatrix
from minillm.hook_points import hook_names, hook_shape, hook_shapes
from minillm.hooks import ActivationCache, HookPoint, Hooks, act_name
from minillm.model import GPT

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
]
__version__ = "0.1.0"
