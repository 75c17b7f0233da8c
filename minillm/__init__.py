"""minillm: a minimal, fully introspectable GPT in JAX and Flax NNX."""
