"""GPTConfig: the sizes and options of a minillm GPT.

Field names follow TransformerLens' `HookedTransformerConfig`, so that a config reads the same in
both libraries. The config is frozen (a model never changes shape), checked when it is built (a bad
value is refused with a message naming the field), and round-trips through JSON, which is how a
checkpoint stores it beside the weights.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

ACT_FNS = ("relu", "gelu", "gelu_new")
NORMALIZATION_TYPES = ("LN", "LNPre", None)
ATTENTION_DIRS = ("causal", "bidirectional")
POSITIONAL_EMBEDDING_TYPES = ("standard",)
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "exact", "fused")


@dataclass(frozen=True)
class GPTConfig:
    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    n_heads: int
    d_head: int | None = None  # defaults to d_model // n_heads
    d_mlp: int | None = None  # defaults to 4 * d_model; ignored when attn_only
    d_vocab_out: int | None = None  # defaults to d_vocab
    act_fn: str = "relu"  # "relu" | "gelu" (exact erf GELU) | "gelu_new" (tanh approximation, GPT-2's); TL's names
    normalization_type: str | None = "LN"  # "LN" | None
    attn_only: bool = False
    positional_embedding_type: str = "standard"
    seed: int = 0
    eps: float = 1e-5  # LayerNorm epsilon
    init_range: float | None = None  # std of weight init; defaults to 0.8 / sqrt(d_model)
    # Zhong et al. 2023's "attention rate": pattern = rate * softmax(scores) + (1 - rate) * uniform
    # over the positions a query may see. 1.0 is ordinary attention; 0.0 is constant attention
    # (their "pizza" models). Not a TransformerLens option.
    attention_rate: float = 1.0
    attention_dir: str = "causal"  # or "bidirectional": every query sees every key (TL's option)
    # The compute dtype: "float32", or "bfloat16" / "float16" for mixed precision. The parameters
    # stay float32 (what the optimizer updates and a checkpoint stores) and are cast where they are
    # used; LayerNorm statistics, attention scores, the softmax and the logits stay float32 (see
    # GPT's docstring for what each hook point holds). TransformerLens' `dtype` casts the weights
    # themselves: the same compute, without float32 master weights.
    dtype: str = "float32"
    # How attention is computed when no hook reads or replaces hook_attn_scores or hook_pattern:
    # "exact" always materialises the pattern (the hooked computation, so a plain call and a cached
    # one give bit-identical numbers); "fused" uses jax.nn.dot_product_attention (cuDNN's fused kernel
    # on a GPU in bfloat16 / float16, XLA's otherwise); "auto" is "fused" on a GPU and "exact"
    # elsewhere (on a CPU the fused call materialises the pattern too, so it gains nothing).
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        # Fill the derived defaults (frozen dataclass, so through object.__setattr__).
        if self.d_head is None and isinstance(self.n_heads, int) and self.n_heads > 0:
            if isinstance(self.d_model, int) and self.d_model % self.n_heads != 0:
                raise ValueError(
                    f"GPTConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "pass d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        if self.d_mlp is None and not self.attn_only and isinstance(self.d_model, int):
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        if self.init_range is None and isinstance(self.d_model, int) and self.d_model > 0:
            object.__setattr__(self, "init_range", 0.8 / self.d_model**0.5)
        self._validate()

    def _validate(self) -> None:
        positive = ["n_layers", "d_model", "n_ctx", "d_vocab", "n_heads", "d_head", "d_vocab_out"]
        if not self.attn_only:
            positive.append("d_mlp")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"GPTConfig: act_fn must be one of {ACT_FNS}, got {self.act_fn!r}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ValueError(
                f"GPTConfig: normalization_type must be 'LN', 'LNPre' or None, got {self.normalization_type!r}"
            )
        if self.attention_dir not in ATTENTION_DIRS:
            raise ValueError(f"GPTConfig: attention_dir must be one of {ATTENTION_DIRS}, got {self.attention_dir!r}")
        if self.positional_embedding_type not in POSITIONAL_EMBEDDING_TYPES:
            raise ValueError(
                f"GPTConfig: positional_embedding_type must be 'standard', got {self.positional_embedding_type!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"GPTConfig: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"GPTConfig: attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
                f"got {self.attn_implementation!r}"
            )
        if not isinstance(self.attn_only, bool):
            raise ValueError(f"GPTConfig: attn_only must be a bool, got {self.attn_only!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"GPTConfig: seed must be an int, got {self.seed!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ValueError(f"GPTConfig: eps must be a positive number, got {self.eps!r}")
        if isinstance(self.attention_rate, bool) or not (
            isinstance(self.attention_rate, (int, float)) and 0.0 <= self.attention_rate <= 1.0
        ):
            raise ValueError(f"GPTConfig: attention_rate must be in [0, 1], got {self.attention_rate!r}")
        if not (isinstance(self.init_range, (int, float)) and self.init_range > 0):
            raise ValueError(f"GPTConfig: init_range must be positive, got {self.init_range!r}")

    # --- JSON round trip (how checkpoints store the config) ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """The config of a dict of its fields (to_dict's, or a HookedTransformerConfig-style dict of the
        fields minillm has). As in TransformerLens, n_heads may be left out (or be None, or -1, its
        default) when d_head is given: it is d_model // d_head. A d_head that does not divide d_model
        is refused there (TransformerLens rounds n_heads down and logs a warning)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown fields {unknown}; valid fields are {sorted(known)}")
        d = dict(d)
        if d.get("n_heads") in (None, -1):
            d_model, d_head = d.get("d_model"), d.get("d_head")
            if d_head is None:
                raise ValueError(f"GPTConfig: n_heads is not given (got {d.get('n_heads')!r}), nor d_head to derive it")
            for name, value in (("d_model", d_model), ("d_head", d_head)):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
            if d_model % d_head:
                raise ValueError(
                    f"GPTConfig: n_heads is not given and d_model={d_model} is not a multiple of d_head={d_head}, "
                    "so it cannot be derived as d_model // d_head (TransformerLens would round it down); pass n_heads"
                )
            d["n_heads"] = d_model // d_head
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> GPTConfig:
        return cls.from_dict(json.loads(text))
