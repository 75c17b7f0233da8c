"""GPT: the network with TransformerLens' calls on it. What users, lessons and tools call.

    model = GPT(cfg)                                      # weights drawn from cfg.seed
    logits = model(tokens)                                # int tokens [b, p] -> [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens)          # every activation, by name
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])
    model.W_Q, model.QK, model.state_dict(), model.save(path), GPT.load(path), model.generate(...)

`GPT` is `Transformer` (minillm/model/network.py: the layers and `forward`) plus this facade. The
facade checks a call's inputs once (minillm/model/inputs.py), then runs it as one cached compiled
program (compiled.py) or, with hook functions or while tracing, op by op; it hands sampling,
losses, weights on disk and TransformerLens' formats to the modules beside it. Those modules take
the network and never import this file: imports run one way, from here down.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minillm.model import compiled, losses, params, sampling, transformer_lens
from minillm.model.config import GPTConfig
from minillm.model.hook_points import hook_names
from minillm.model.hooks import ActivationCache, FwdHooks, Hooks, NameFilter, selected_names
from minillm.model.inputs import check_forward_input
from minillm.model.network import Transformer
from minillm.model.weight_views import WeightViews

Array = jax.Array
Layer = int | None  # start_at_layer / stop_at_layer: None is the model's first / last


class GPT(WeightViews, Transformer):
    """A GPT whose every activation can be cached or replaced by name.

    model = GPT(cfg)                       # weights drawn from cfg.seed (or seed=..., a key or int)
    logits = model(tokens)                 # int tokens [b, p] (never 1-D) -> logits [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens, names_filter=None)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])

    model.W_Q, model.OV, ...: TransformerLens' stacked weight views (minillm/model/weight_views.py).
    Each call also takes start_at_layer=l (the input is then the residual stream [b, p, d] entering
    block l) and stop_at_layer=l (it returns the residual stream entering block l, not the logits).

    Precision (cfg.dtype): the weights are float32; with "bfloat16" or "float16" every activation
    is in that dtype except hook_scale (LayerNorm statistics), hook_attn_scores and hook_pattern
    (the softmax) and the logits (unembed.hook_out), which are float32, as is every loss.
    """

    def __call__(self, input: Array, return_type: str | None = "logits", **kwargs: Any) -> Any:
        """Logits [b, p, v_out] of tokens [b, p]; return_type="loss" / "both" / None and the other
        keywords as in run_with_cache."""
        return self.run_with_hooks(input, (), return_type=return_type, **kwargs)

    def run_with_hooks(self, input: Array, fwd_hooks: FwdHooks = (), **kwargs: Any) -> Any:
        """Logits of a forward pass in which each `fn(activation, hook)` runs at its hook point(s).

        A name in a pair may be a hook name, a list of names, or a predicate on names. `fn` returns a
        replacement of the same shape and dtype, or None to leave the activation as it is. The
        keywords are run_with_cache's.
        """
        return self.run_with_cache(input, names_filter=False, fwd_hooks=fwd_hooks, **kwargs)[0]

    def run_with_cache(
        self,
        input: Array,
        names_filter: NameFilter = None,
        *,
        fwd_hooks: FwdHooks = (),
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        remove_batch_dim: bool = False,
        start_at_layer: Layer = None,
        stop_at_layer: Layer = None,
        tokens: Array | None = None,
        attention_mask: Array | None = None,
    ) -> tuple[Any, ActivationCache]:
        """Logits and the activations that `names_filter` selects (None: every hook point, False: none).

        With `fwd_hooks`, the cache holds the activations of the hooked run (after each hook). As in
        TransformerLens: return_type "logits", "loss" (next-token loss, [b, p - 1] with
        loss_per_token), "both" (logits, loss) or None; remove_batch_dim (batch 1 only);
        start_at_layer / stop_at_layer (negative counts from the end; with start_at_layer the input
        is the residual stream, and `tokens` gives the loss its targets); attention_mask [b, p]
        (0 at padding: no query attends to a padding key).
        """
        if return_type not in losses.RETURN_TYPES:
            raise ValueError(f"return_type must be one of {losses.RETURN_TYPES}, got {return_type!r}")
        if stop_at_layer is not None and return_type != "logits":
            raise ValueError(f"with stop_at_layer the output is the residual stream, not {return_type!r}")
        layers = dict(start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)
        # the checks at the boundary, once, before choosing how the call runs
        input, attention_mask = check_forward_input(self.cfg, input, attention_mask=attention_mask, **layers)
        targets = None  # the tokens the loss predicts, when the call returns a loss
        if stop_at_layer is None and return_type in ("loss", "both"):
            targets = tokens if tokens is not None else (input if start_at_layer is None else None)
            if targets is None:
                raise ValueError("the loss needs the tokens: with start_at_layer, pass tokens=...")
            targets = jnp.asarray(targets)
            losses.check_next_tokens(targets, self.cfg.d_vocab_out)
        output = dict(return_type=return_type, loss_per_token=loss_per_token, targets=targets)
        split = None if fwd_hooks else compiled.split_if_concrete(self, input, targets, attention_mask)
        if split is not None:  # called from plain Python, no hooks: one cached compiled program
            names = selected_names(names_filter, self.hook_names(), self.cfg.n_layers)
            out, cache = compiled.run(split, input, attention_mask, names, self.hook_names(), **layers, **output)
        else:  # with hook functions, or while tracing: op by op
            hooks = Hooks(fwd_hooks, cache=names_filter, n_layers=self.cfg.n_layers)
            out = self.forward(input, hooks, attention_mask=attention_mask, **layers)
            hooks.check(self.hook_names)
            cache = hooks.activation_cache(self.hook_names())
            if stop_at_layer is None:
                out = losses.model_output(out, attention_mask=attention_mask, **output)
        return out, (cache.remove_batch_dim() if remove_batch_dim else cache)

    def loss_fn(
        self, logits: Array, tokens: Array, attention_mask: Array | None = None, per_token: bool = False
    ) -> Array:
        """TransformerLens' next-token cross-entropy (minillm.model.losses.next_token_loss)."""
        return losses.next_token_loss(logits, jnp.asarray(tokens), attention_mask, per_token)

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order: what one abstract pass reaches."""
        return hook_names(self.cfg)

    def generate(
        self, prompt: Array, max_new_tokens: int, *, key: Array | None = None, temperature: float = 1.0
    ) -> Array:
        """Sample after `prompt` [b, p]; temperature 0 is greedy. See minillm/model/sampling.py."""
        return sampling.generate(self, prompt, max_new_tokens, key=key, temperature=temperature)

    # --- weights (minillm/model/params.py) -----------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """The weights, flat, under TransformerLens' names: {"blocks.0.attn.W_Q": [h, d, e], ...}."""
        return params.state_dict(self)

    def load_state_dict(self, weights: dict[str, Any]) -> None:
        """Replace the weights in place; names, shapes and dtypes must match exactly."""
        params.load_state_dict(self, weights)

    @classmethod
    def from_state_dict(cls, cfg: GPTConfig, weights: dict[str, Any]) -> GPT:
        """A model with these weights; no random weights are drawn (only their shapes are traced)."""
        model = nnx.eval_shape(lambda: cls(cfg))
        params.load_state_dict(model, weights)
        return model

    def save(self, path: str, metadata: dict[str, str] | None = None) -> None:
        """Write weights and config to one safetensors file, atomically (minillm/model/checkpoint.py)."""
        params.save_model(self, path, metadata)

    @classmethod
    def load(cls, path: str) -> GPT:
        """Read a model written by `save`; a truncated, corrupt or mismatched file is refused."""
        return params.load_model(cls, path)

    @classmethod
    def load_seeds(cls, directory: str) -> dict[int, GPT]:
        """{seed: model} from a multi-seed run (`minillm-train ... --seeds N`), in order of seed."""
        return params.load_seeds(cls, directory)

    # --- TransformerLens (minillm/model/transformer_lens.py) -----------------------------------------
    @classmethod
    def from_transformer_lens(cls, state_dict: Any, tl_cfg: Any) -> GPT:
        """A HookedTransformer's weights (its state dict, or a .safetensors file) and config."""
        cfg = transformer_lens.config_from_transformer_lens(tl_cfg)
        return cls.from_state_dict(cfg, transformer_lens.weights_from_transformer_lens(state_dict))

    def to_transformer_lens(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state dict of NumPy arrays, HookedTransformerConfig kwargs) that build this model there."""
        cfg = transformer_lens.config_to_transformer_lens(self.cfg)
        return {k: np.asarray(v) for k, v in self.state_dict().items()}, cfg
