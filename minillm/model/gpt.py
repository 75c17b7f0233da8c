"""GPT: the network with TransformerLens' calls on it. What users, lessons and tools call.

    model = GPT(cfg)                                      # weights drawn from cfg.seed
    logits = model(tokens)                                # int tokens [b, p] -> [b, p, d_vocab_out]
    logits, cache = model.run_with_cache(tokens)          # every activation, by name
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])
    model.W_Q, model.QK, model.state_dict(), model.save(path), GPT.load(path), model.generate(...)
    model = GPT.from_pretrained("path/to/gpt2")           # GPT-2 from local files; then text in and out:
    logits = model("Hello world"); model.to_str_tokens("Hello world"); model.generate("Hello", 10)

`GPT` is `Transformer` (minillm/model/network.py: the blocks and `forward`; the layers in
attention.py and components.py beside it) plus this facade. The
facade checks a call's inputs once (minillm/model/inputs.py), then runs it as one cached compiled
program (compiled.py) or, with hook functions or while tracing, op by op; it hands sampling,
losses, weights on disk and TransformerLens' formats to the modules beside it. Those modules take
the network and never import this file: imports run one way, from here down.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minillm.model import compiled, hugging_face, losses, params, sampling, transformer_lens
from minillm.model.config import GPTConfig
from minillm.model.hook_points import hook_names
from minillm.model.hooks import ActivationCache, FwdHooks, Hooks, NameFilter, selected_names
from minillm.model.inputs import check_forward_input
from minillm.model.network import Transformer
from minillm.model.tokenizer import Tokenizer, has_tokenizer_files
from minillm.model.weight_views import WeightViews

Array = jax.Array
Layer = int | None  # start_at_layer / stop_at_layer: None is the model's first / last
Text = str | list[str]  # what the text calls take besides tokens


def _is_text(input: Any) -> bool:
    return isinstance(input, str) or (isinstance(input, (list, tuple)) and bool(input) and isinstance(input[0], str))


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

    Text: with a `tokenizer` (GPT.from_pretrained sets one), every call that takes tokens also
    takes a string or a list of strings, tokenized by `to_tokens` (BOS prepended, padding on the
    right and masked), as TransformerLens' calls do.
    """

    tokenizer: Tokenizer | None = None  # set by from_pretrained, or by hand: Tokenizer.from_directory(path)

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
        (0 at padding: no query attends to a padding key). The input may be text (a string or a list
        of strings): it is then `to_tokens(input)`, and padding is masked unless attention_mask is given.
        """
        if _is_text(input) and start_at_layer is None:
            input, mask = self._encode(input)
            attention_mask = mask if attention_mask is None and not mask.all() else attention_mask
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
        self,
        prompt: Array | str,
        max_new_tokens: int,
        *,
        key: Array | None = None,
        temperature: float = 1.0,
        stop_at_eos: bool = True,
        prepend_bos: bool = True,
    ) -> Array | str:
        """Sample after `prompt` [b, p]; temperature 0 is greedy. See minillm/model/sampling.py.

        A string prompt gives a string back, as in TransformerLens: the prompt and what follows it
        (without the BOS that to_tokens prepends), ending at the first EOS when stop_at_eos.
        """
        if not _is_text(prompt):
            return sampling.generate(self, prompt, max_new_tokens, key=key, temperature=temperature)
        if not isinstance(prompt, str):
            raise TypeError("generate: text prompts are one string; for a batch, pass to_tokens(...) (equal lengths)")
        tokens = self.to_tokens(prompt, prepend_bos=prepend_bos)
        out = np.asarray(sampling.generate(self, tokens, max_new_tokens, key=key, temperature=temperature))[0]
        new = out[tokens.shape[1] :]
        eos = self._require_tokenizer("generate").eos_token_id
        if stop_at_eos and eos is not None and (new == eos).any():
            new = new[: int(np.argmax(new == eos)) + 1]  # up to and with the first EOS, as TransformerLens
        return self.to_string(np.concatenate([out[int(prepend_bos) : tokens.shape[1]], new]))

    # --- text (minillm/model/tokenizer.py) -------------------------------------------------------------
    def _require_tokenizer(self, call: str) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(
                f"{call}: this model has no tokenizer. GPT.from_pretrained(path) reads one from tokenizer.json; "
                "or set model.tokenizer = minillm.Tokenizer.from_directory(path)"
            )
        return self.tokenizer

    def _encode(
        self, input: Text, prepend_bos: bool = True, padding_side: str | None = None, truncate: bool = True
    ) -> tuple[Array, np.ndarray]:
        tokens, mask = self._require_tokenizer("to_tokens").encode_batch(
            input, prepend_bos=prepend_bos, padding_side=padding_side, max_length=self.cfg.n_ctx if truncate else None
        )
        return jnp.asarray(tokens), mask

    def to_tokens(
        self, input: Text, prepend_bos: bool = True, padding_side: str | None = None, truncate: bool = True
    ) -> Array:
        """Text -> int32 tokens [b, p] (one string: b = 1), as TransformerLens: BOS first unless
        prepend_bos=False, padded to the longest on the right (or padding_side="left"), cut to n_ctx
        unless truncate=False. Texts of different lengths: call the model on the texts themselves,
        which masks the padding, or pass attention_mask (1 at real tokens) with these tokens."""
        return self._encode(input, prepend_bos, padding_side, truncate)[0]

    def to_string(self, tokens: Any) -> str | list[str]:
        """Token ids -> text: an id or [p] ids give a string, [b, p] a list of strings."""
        return self._require_tokenizer("to_string").to_string(tokens)

    def to_str_tokens(
        self, input: Text | Any, prepend_bos: bool = True, padding_side: str | None = None
    ) -> list[str] | list[list[str]]:
        """Each token as a string: of a text (BOS first unless prepend_bos=False), of [p] ids or of
        [1, p] ids; a list of texts gives a list of lists (each unpadded), as in TransformerLens."""
        tok = self._require_tokenizer("to_str_tokens")
        if isinstance(input, (list, tuple)) and input and isinstance(input[0], str):
            return [self.to_str_tokens(text, prepend_bos, padding_side) for text in input]
        if isinstance(input, str):
            input = self.to_tokens(input, prepend_bos, padding_side)
        ids = np.asarray(input)
        if ids.ndim == 2 and ids.shape[0] != 1:
            raise ValueError(f"to_str_tokens: tokens of shape {ids.shape}: pass one sequence, [p] or [1, p]")
        return tok.str_tokens(ids.reshape(-1))

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token; anything else is refused with its tokens."""
        return self._require_tokenizer("to_single_token").single_token(string)

    def get_token_position(
        self,
        single_token: str | int,
        input: str | Any,
        mode: str = "first",
        prepend_bos: bool = True,
        padding_side: str | None = None,
    ) -> int:
        """The position of a token (a string of one token, or an id) in a text or a [p] / [1, p] token
        sequence: its first or last occurrence (mode), as TransformerLens' get_token_position."""
        if mode not in ("first", "last"):
            raise ValueError(f"get_token_position: mode must be 'first' or 'last', got {mode!r}")
        tokens = self.to_tokens(input, prepend_bos, padding_side) if isinstance(input, str) else input
        ids = np.asarray(tokens)
        if ids.ndim > 2 or (ids.ndim == 2 and ids.shape[0] != 1):
            raise ValueError(f"get_token_position: tokens of shape {ids.shape}: pass one sequence, [p] or [1, p]")
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        found = np.flatnonzero(ids.reshape(-1) == token)
        if not found.size:
            raise ValueError(f"get_token_position: token {token} ({single_token!r}) does not occur in the input")
        return int(found[0] if mode == "first" else found[-1])

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
        """Read a model written by `save`; a truncated, corrupt or mismatched file is refused. A
        tokenizer saved in the same directory (tokenizer.json, as training on text writes it) is
        attached as `model.tokenizer`, so that text calls work on the loaded model."""
        model = params.load_model(cls, path)
        directory = os.path.dirname(os.path.abspath(path))
        if has_tokenizer_files(directory):
            model.tokenizer = Tokenizer.from_directory(directory)
        return model

    @classmethod
    def load_seeds(cls, directory: str) -> dict[int, GPT]:
        """{seed: model} from a multi-seed run (`minillm-train ... --seeds N`), in order of seed."""
        return params.load_seeds(cls, directory)

    # --- Hugging Face's files (minillm/model/hugging_face.py) ------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        dtype: Any = "float32",
        float32_weights: bool = False,
    ) -> GPT:
        """A GPT-2-architecture model from a local directory in Hugging Face's layout (config.json,
        model.safetensors, tokenizer.json); nothing is downloaded. As TransformerLens'
        from_pretrained, the weights are processed (minillm.weight_processing) unless each option is
        False (or use from_pretrained_no_processing). dtype="bfloat16" / "float16" computes in that
        dtype and stores the weights in it too, unless float32_weights=True keeps float32 master
        weights (twice the memory)."""
        options = dict(fold_ln=fold_ln, center_writing_weights=center_writing_weights)
        options |= dict(center_unembed=center_unembed, fold_value_biases=fold_value_biases)
        return hugging_face.load_pretrained(cls, path, dtype=dtype, float32_weights=float32_weights, **options)

    @classmethod
    def from_pretrained_no_processing(cls, path: str, **kwargs: Any) -> GPT:
        """from_pretrained with the weights exactly as in the files (no folding, no centring)."""
        options = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
        return cls.from_pretrained(path, **{**options, **kwargs})

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
