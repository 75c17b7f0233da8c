"""The model: the network, the calls made on it, and its weights in files and in other formats.

Bottom to top (a file imports only files listed before it):

    config.py, hooks.py, checkpoint.py,    GPTConfig; hook points and the cache; safe tensor files;
    tokenizer.py                           text to tokens and back (the `tokenizers` package)
    inputs.py, kernels.py                  the checks at the boundary (token ids, layers, masks)
    components.py, attention.py,           the network: LayerNorm, MLP, the embeddings; Attention;
    network.py                             Block and Transformer.forward
    losses.py, sampling.py, compiled.py,   services that take the network: next-token loss,
    hook_points.py, params.py,             generation, compiled calls, the catalogue of hook points,
    factored_matrix.py, weight_views.py,   weights by name and on disk, TransformerLens' stacked
    transformer_lens.py, processing.py,    weight views and its config and state dict, weight
    hugging_face.py                        processing on a state dict, GPT-2 from Hugging Face's files
    gpt.py                                 GPT: the network plus TransformerLens' calls, the facade
"""

from minillm.model.config import GPTConfig
from minillm.model.gpt import GPT
from minillm.model.network import Transformer

__all__ = ["GPT", "GPTConfig", "Transformer"]
