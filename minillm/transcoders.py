"""Transcoders: a wide, sparse stand-in for each MLP, trained to map the MLP's input to its output.

    tcs = train_transcoders(model, tokens, d_transcoder=256, k=16)   # one per layer; TopK
    tc = tcs[0]
    f = tc.encode(x)                    # [n, d_transcoder] sparse feature activations of MLP inputs x
    y = tc(x)                           # f W_dec + b_dec + x W_skip: the MLP's output, approximated
    evaluate_transcoder(tc, x, mlp_out) # variance of the MLP output explained, L0, dead fraction
    spliced_loss(model, tcs, batch)     # the model's loss with every MLP replaced by its transcoder
    tc.save("tc0.safetensors"); Transcoder.load("tc0.safetensors", model)

A transcoder (Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits") is an SAE
whose decoder writes somewhere else than its encoder reads: f = act(x W_enc + b_enc) and
y = f W_dec + b_dec (+ x W_skip, an optional linear skip path), trained so that y is the MLP's output
given its input. Because the features' activations depend on the input only through the encoder,
attribution through a transcoder is linear in the features (minillm.attribution).

What it reads, `input_name(cfg, layer)`: the MLP's input after LayerNorm's normalisation and before
its weight and bias, `blocks.L.ln2.hook_normalized` (in a model without LayerNorm, where the MLP
reads the residual stream itself, `blocks.L.hook_mlp_in`). The papers' transcoders read the
normalised input too; minillm has no hook after w and b, and none is needed: x * w + b is affine,
so the encoder absorbs it (an exact transcoder of a ReLU MLP, `Transcoder.from_mlp`, has
W_enc = diag(w) W_in). With the LayerNorm's scale frozen, this input is linear in the residual
stream, which is what attribution needs. What it writes: `blocks.L.hook_mlp_out`, b_out included.

Activations, as the papers train them (exactly one of k, l1, l0):
- **TopK** (k): each row's k largest pre-activations (ReLU-ed), the loss the squared error alone;
- **ReLU + L1** (l1): ReLU, and l1 * sum |f| added to the loss (decoder rows have unit norm);
- **JumpReLU** (l0; Rajamanoharan et al. 2024): f = pre where pre > threshold (one learned threshold
  per feature), and l0 * (number of active features) added; the step's gradient with respect to the
  threshold is a straight-through estimate (a rectangle of width `jump_bandwidth` around it).
Training is the SAE's (minillm.sae): inputs and outputs each divided by one scalar so that their
mean squared norm is d_model, unit-norm decoder rows, AuxK revival of features dead for
`dead_after` examples, Adam in compiled chunks. The scales are folded into the weights at the end,
so a Transcoder works in the model's own units (its decoder rows then have the output scale's norm).

A transcoder remembers the model it was trained on: the config (as JSON), the layer and a digest
of that layer's MLP weights (and its ln2 w, b). `tc.check(model)` (called by load with a model, by
spliced_loss and by minillm.attribution) refuses a transcoder of another layer, another config or
other weights. The compute dtype and attention implementation do not count: they change no weight.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minillm.model import GPT, GPTConfig
from minillm.model.checkpoint import CheckpointError, load_tensors, save_tensors, tensors_digest
from minillm.model.losses import cross_entropy, map_in_chunks
from minillm.sae import _topk_relu, along_unit_rows, aux_k_loss, reconstruction_stats, train_in_chunks, unit_rows
from minillm.tasks import Batch

Array = jax.Array
ACTIVATIONS = ("relu", "topk", "jumprelu")
# config fields that change how a model computes, not what it computes: a transcoder ignores them
_NOT_COMPARED = ("dtype", "attn_implementation")


def input_name(cfg: GPTConfig, layer: int) -> str:
    """The hook a transcoder of `layer` reads: the MLP's input, normalised (module docstring)."""
    return (
        f"blocks.{layer}.ln2.hook_normalized" if cfg.normalization_type is not None else f"blocks.{layer}.hook_mlp_in"
    )


def output_name(layer: int) -> str:
    """The hook a transcoder of `layer` writes: the MLP's output."""
    return f"blocks.{layer}.hook_mlp_out"


def mlp_digest(model: GPT, layer: int) -> str:
    """sha256 of the weights of `layer`'s MLP (and its ln2 w, b): what a transcoder was trained on."""
    block = model.blocks[layer]
    tensors = {n: np.asarray(getattr(block.mlp, n)[...], np.float32) for n in ("W_in", "b_in", "W_out", "b_out")}
    if block.ln2 is not None and block.ln2.kind == "LN":
        tensors.update({"ln2.w": np.asarray(block.ln2.w[...], np.float32), "ln2.b": np.asarray(block.ln2.b[...])})
    return tensors_digest(tensors)


def _compared_config(cfg: GPTConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_COMPARED}


def _check_layer(model: GPT, layer: int, what: str) -> None:
    if model.cfg.attn_only:
        raise ValueError(f"{what}: an attention-only model has no MLP, so it has no transcoders")
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"{what}: layer must be an int in 0..{model.cfg.n_layers - 1}, got {layer!r}")


# ---------------------------------------------------------------------------------------------
# The transcoder
# ---------------------------------------------------------------------------------------------
@jax.tree_util.register_pytree_node_class
@dataclass
class Transcoder:
    """A trained transcoder of one MLP: weights, its activation, and the model and layer it fits."""

    W_enc: Array  # [d_model, d_transcoder]
    b_enc: Array  # [d_transcoder]
    W_dec: Array  # [d_transcoder, d_model]
    b_dec: Array  # [d_model]
    W_skip: Array | None  # [d_model, d_model] or None: the linear skip path
    threshold: Array | None  # [d_transcoder], JumpReLU's thresholds (None otherwise)
    activation: str  # "relu", "topk" or "jumprelu"
    k: int | None  # TopK's k
    layer: int
    input_name: str  # the hook it reads (input_name(cfg, layer))
    model_config: str  # the GPTConfig of the model it was trained on, as JSON
    mlp_digest: str  # mlp_digest(model, layer) of that model

    _ARRAYS = ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold")  # the pytree's leaves, in order

    @property
    def d_model(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_transcoder(self) -> int:
        return self.W_enc.shape[1]

    def pre_activations(self, x) -> Array:
        """x W_enc + b_enc: [..., d_transcoder] of MLP inputs x [..., d_model]."""
        return jnp.asarray(x, jnp.float32) @ self.W_enc + self.b_enc

    def activate(self, pre: Array) -> Array:
        """Feature activations from pre-activations."""
        if self.activation == "topk":
            return _topk_relu(pre, self.k)
        if self.activation == "jumprelu":
            return jnp.where(pre > self.threshold, pre, 0.0)
        return jax.nn.relu(pre)

    def encode(self, x) -> Array:
        """Feature activations [..., d_transcoder] of MLP inputs x [..., d_model]."""
        return self.activate(self.pre_activations(x))

    def skip(self, x) -> Array:
        """The skip path's write, x W_skip (0 without one): [..., d_model]."""
        x = jnp.asarray(x, jnp.float32)
        return jnp.zeros_like(x) if self.W_skip is None else x @ self.W_skip

    def decode(self, f, x) -> Array:
        """The MLP output [..., d_model] from feature activations f and the input x (for the skip)."""
        return jnp.asarray(f) @ self.W_dec + self.b_dec + self.skip(x)

    def __call__(self, x) -> Array:
        """The transcoder's estimate of the MLP's output at inputs x."""
        return self.decode(self.encode(x), x)

    # --- which model it fits ------------------------------------------------------------------------
    @classmethod
    def for_model(
        cls,
        model: GPT,
        layer: int,
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        W_skip=None,
        *,
        activation: str = "relu",
        k: int | None = None,
        threshold=None,
    ) -> Transcoder:
        """A transcoder of `model`'s MLP at `layer` from weights (made by hand, or trained elsewhere)."""
        _check_layer(model, layer, "Transcoder.for_model")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Transcoder: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if (activation == "topk") != (k is not None) or (activation == "jumprelu") != (threshold is not None):
            raise ValueError("Transcoder: give k with (and only with) 'topk', threshold with 'jumprelu'")
        d = model.cfg.d_model
        arrays = [jnp.asarray(a, jnp.float32) if a is not None else None for a in (W_enc, b_enc, W_dec, b_dec)]
        W_enc, b_enc, W_dec, b_dec = arrays
        t = W_enc.shape[-1] if W_enc.ndim == 2 else -1
        skip = None if W_skip is None else jnp.asarray(W_skip, jnp.float32)
        thr = None if threshold is None else jnp.asarray(threshold, jnp.float32)
        want = {"W_enc": (d, t), "b_enc": (t,), "W_dec": (t, d), "b_dec": (d,), "W_skip": (d, d), "threshold": (t,)}
        got = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "W_skip": skip, "threshold": thr}
        for name, array in got.items():
            if array is not None and tuple(array.shape) != want[name]:
                raise ValueError(f"Transcoder: {name} must have shape {want[name]} (d_model={d}), got {array.shape}")
        if k is not None and not 0 < k <= t:
            raise ValueError(f"Transcoder: k must be in 1..d_transcoder={t}, got {k}")
        cfg_json = json.dumps(_compared_config(model.cfg), sort_keys=True)
        digest = mlp_digest(model, layer)
        return cls(W_enc, b_enc, W_dec, b_dec, skip, thr, activation, k, int(layer),
                   input_name(model.cfg, layer), cfg_json, digest)  # fmt: skip

    @classmethod
    def from_mlp(cls, model: GPT, layer: int) -> Transcoder:
        """The MLP itself as a transcoder: its neurons are the features. Exact for a ReLU MLP (the
        LayerNorm's w and b folded into the encoder), so its error nodes are zero up to float
        rounding; other activation functions are refused (a neuron's GELU is not a ReLU)."""
        _check_layer(model, layer, "Transcoder.from_mlp")
        if model.cfg.act_fn != "relu":
            raise ValueError(f"Transcoder.from_mlp: only a ReLU MLP is a transcoder, this one is {model.cfg.act_fn!r}")
        block = model.blocks[layer]
        W_in, b_in = jnp.asarray(block.mlp.W_in[...]), jnp.asarray(block.mlp.b_in[...])
        if block.ln2 is not None and block.ln2.kind == "LN":
            w, b = jnp.asarray(block.ln2.w[...]), jnp.asarray(block.ln2.b[...])
            W_in, b_in = w[:, None] * W_in, b @ W_in + b_in
        return cls.for_model(model, layer, W_in, b_in, block.mlp.W_out[...], block.mlp.b_out[...])

    def check(self, model: GPT, layer: int | None = None) -> None:
        """Refuse a model (or layer) this transcoder was not trained on, saying what differs."""
        layer = self.layer if layer is None else layer
        _check_layer(model, layer, "transcoder")
        if layer != self.layer:
            raise ValueError(f"a transcoder of layer {self.layer} was given for layer {layer}")
        mine, theirs = json.loads(self.model_config), _compared_config(model.cfg)
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            pairs = ", ".join(f"{k}: {mine.get(k)!r} here, {theirs.get(k)!r} in the model" for k in differ)
            raise ValueError(f"transcoder of layer {self.layer} was trained on a model with another config ({pairs})")
        if self.mlp_digest != mlp_digest(model, layer):
            raise ValueError(
                f"transcoder of layer {self.layer} was trained on another model: the MLP weights of layer "
                f"{layer} (and its ln2) differ from those it was trained on"
            )

    # --- files ----------------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """A safetensors file (minillm.model.checkpoint) with the model's config and the layer inside."""
        tensors = {n: np.asarray(getattr(self, n)) for n in self._ARRAYS if getattr(self, n) is not None}
        meta = {"kind": "transcoder", "activation": self.activation, "k": "" if self.k is None else str(self.k),
                "layer": str(self.layer), "input_name": self.input_name, "model_config": self.model_config,
                "mlp_digest": self.mlp_digest}  # fmt: skip
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str, model: GPT | None = None) -> Transcoder:
        """A saved transcoder; with `model`, checked to fit it (check)."""
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "transcoder":
            raise CheckpointError(f"{path} is not a transcoder checkpoint (kind={meta.get('kind')!r})")
        missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in tensors]
        if missing or meta.get("activation") not in ACTIVATIONS:
            raise CheckpointError(f"{path}: a transcoder file without {missing or 'a known activation'}")
        arrays = [jnp.asarray(tensors[n]) if n in tensors else None for n in cls._ARRAYS]
        k = int(meta["k"]) if meta.get("k") else None
        tc = cls(*arrays, meta["activation"], k, int(meta["layer"]), meta["input_name"], meta["model_config"],
                 meta["mlp_digest"])  # fmt: skip
        if model is not None:
            tc.check(model)
        return tc

    def tree_flatten(self):
        static = (self.activation, self.k, self.layer, self.input_name, self.model_config, self.mlp_digest)
        return tuple(getattr(self, n) for n in self._ARRAYS), static

    @classmethod
    def tree_unflatten(cls, static, children):
        return cls(*children, *static)


def check_transcoders(model: GPT, transcoders: Sequence[Transcoder | None], what: str) -> None:
    """One transcoder (or None) per layer, each fitting its layer of `model`."""
    if model.cfg.attn_only:
        raise ValueError(f"{what}: an attention-only model has no MLP, so it has no transcoders")
    if len(transcoders) != model.cfg.n_layers:
        raise ValueError(f"{what}: give one transcoder per layer ({model.cfg.n_layers}), got {len(transcoders)}")
    for layer, tc in enumerate(transcoders):
        if tc is not None:
            if not isinstance(tc, Transcoder):
                raise TypeError(f"{what}: transcoders[{layer}] is a {type(tc).__name__}, not a Transcoder")
            tc.check(model, layer)


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
def gather_mlp_io(model: GPT, tokens, layers: Sequence[int] | None = None, *, chunk_size: int = 256):
    """[(inputs, outputs)] for each of `layers` (default all): the transcoder inputs
    (input_name) and the MLP outputs over every position of every sequence, each [n * p, d_model]
    float32, rows ordered by sequence then position. One compiled pass, `chunk_size` sequences at a time."""
    layers = tuple(range(model.cfg.n_layers)) if layers is None else tuple(int(layer) for layer in layers)
    for layer in layers:
        _check_layer(model, layer, "gather_mlp_io")
    tokens = jnp.asarray(np.asarray(tokens), jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"gather_mlp_io: tokens must be [b, p], got shape {tokens.shape}")
    n = tokens.shape[0]
    out = _gather(model, tokens, layers, min(chunk_size, n))
    flat = lambda a: np.asarray(a.reshape(-1, *a.shape[2:])[:n].reshape(-1, a.shape[-1]), np.float32)
    return [(flat(x), flat(y)) for x, y in out]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _gather(model: GPT, tokens: Array, layers: tuple, chunk_size: int):
    names = [(input_name(model.cfg, layer), output_name(layer)) for layer in layers]

    def one(chunk):
        _, cache = model.run_with_cache(chunk, names_filter=[n for pair in names for n in pair])
        return [(cache[x].astype(jnp.float32), cache[y].astype(jnp.float32)) for x, y in names]

    return map_in_chunks(one, tokens, chunk_size)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train_transcoders(model: GPT, tokens, d_transcoder: int, *, layers: Sequence[int] | None = None, **kwargs):
    """One transcoder per layer (or per layer of `layers`), trained on the MLP's inputs and outputs
    at every position of `tokens` [b, p]; keywords as train_transcoder. A list in layer order."""
    layers = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
    data = gather_mlp_io(model, tokens, layers)
    return [_train(model, layer, x, y, d_transcoder, **kwargs) for layer, (x, y) in zip(layers, data)]


def train_transcoder(model: GPT, layer: int, tokens, d_transcoder: int, **kwargs) -> Transcoder:
    """A transcoder of `layer`'s MLP, trained on its inputs and outputs at every position of tokens.

    Exactly one of k (TopK), l1 (ReLU + L1) or l0 (JumpReLU + L0). skip=True (the default) learns
    a linear skip path W_skip beside the features. The other keywords are train_sae's: steps, lr,
    batch_size, seed, aux_k, aux_weight, dead_after, steps_per_call, progress; and for JumpReLU,
    init_threshold (0.1) and jump_bandwidth (0.1), in units of the scaled pre-activations (about 1).
    """
    (x, y), = gather_mlp_io(model, tokens, [layer])  # fmt: skip
    return _train(model, layer, x, y, d_transcoder, **kwargs)


def _train(
    model: GPT,
    layer: int,
    inputs: np.ndarray,
    outputs: np.ndarray,
    d_transcoder: int,
    *,
    k: int | None = None,
    l1: float | None = None,
    l0: float | None = None,
    skip: bool = True,
    steps: int = 1000,
    lr: float = 2e-3,
    batch_size: int = 1024,
    seed: int = 0,
    aux_k: int | None = None,
    aux_weight: float = 1 / 32,
    dead_after: int = 10_000,
    steps_per_call: int = 100,
    init_threshold: float = 0.1,
    jump_bandwidth: float = 0.1,
    progress: bool = True,
) -> Transcoder:
    if sum(v is not None for v in (k, l1, l0)) != 1:
        raise ValueError("train_transcoder: give exactly one of k (TopK), l1 (ReLU + L1) or l0 (JumpReLU)")
    if k is not None and not 0 < k <= d_transcoder:
        raise ValueError(f"train_transcoder: k must be in 1..d_transcoder={d_transcoder}, got {k}")
    for name, value in (("l1", l1), ("l0", l0), ("init_threshold", init_threshold), ("jump_bandwidth", jump_bandwidth)):
        if value is not None and not value > 0:
            raise ValueError(f"train_transcoder: {name} must be positive, got {value}")
    if d_transcoder < 1 or steps < 1 or batch_size < 1:
        raise ValueError("train_transcoder: d_transcoder, steps and batch_size must be positive")
    if not (np.isfinite(inputs).all() and np.isfinite(outputs).all()):
        raise ValueError("train_transcoder: the activations hold NaN or infinite values")
    d = inputs.shape[1]
    scale_in, scale_out = (np.float32(np.sqrt((a**2).sum(1).mean() / d)) or np.float32(1.0) for a in (inputs, outputs))
    x_all, y_all = jnp.asarray(inputs / scale_in), jnp.asarray(outputs / scale_out)
    key = jax.random.key(seed)
    k_dec, k_enc = jax.random.split(key)
    params = {
        "W_enc": unit_rows(jax.random.normal(k_enc, (d_transcoder, d))).T,
        "b_enc": jnp.zeros(d_transcoder),
        "W_dec": unit_rows(jax.random.normal(k_dec, (d_transcoder, d))),
        "b_dec": y_all.mean(0),
    }
    if skip:
        params["W_skip"] = jnp.zeros((d, d))
    if l0 is not None:
        params["log_threshold"] = jnp.full(d_transcoder, np.log(init_threshold), jnp.float32)
    kind = "topk" if k is not None else "relu" if l1 is not None else "jumprelu"
    aux_k = min(d_transcoder, aux_k or (2 * k if k is not None else 32))
    settings = (lr, kind, k, l1 if l1 is not None else l0, jump_bandwidth, aux_k, aux_weight, batch_size, dead_after)
    optimizer, run = _make_steps(*settings)
    state = (params, optimizer.init(params), jnp.zeros(d_transcoder, jnp.int32))
    p = train_in_chunks(run, state, (x_all, y_all), key, steps, steps_per_call, progress)[0]
    # fold the scales in: x / s_in in, s_out * y out
    return Transcoder.for_model(
        model,
        layer,
        p["W_enc"] / scale_in,
        p["b_enc"],
        p["W_dec"] * scale_out,
        p["b_dec"] * scale_out,
        p["W_skip"] * (scale_out / scale_in) if skip else None,
        activation=kind,
        k=k,
        threshold=jnp.exp(p["log_threshold"]) if l0 is not None else None,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _step(pre: Array, threshold: Array, bandwidth: float) -> Array:
    """1 where pre > threshold, else 0. Its gradient with respect to the threshold is the
    straight-through estimate -rect((pre - threshold) / bandwidth) / bandwidth, summed over rows;
    with respect to pre it is 0 (Rajamanoharan et al. 2024's JumpReLU)."""
    return (pre > threshold).astype(pre.dtype)


def _step_fwd(pre, threshold, bandwidth):
    return _step(pre, threshold, bandwidth), (pre, threshold)


def _step_bwd(bandwidth, saved, g):
    pre, threshold = saved
    near = (jnp.abs(pre - threshold) < bandwidth / 2).astype(pre.dtype) / bandwidth
    rows = tuple(range(pre.ndim - threshold.ndim))
    return jnp.zeros_like(pre), -(g * near).sum(rows)


_step.defvjp(_step_fwd, _step_bwd)


@functools.lru_cache(maxsize=32)
def _make_steps(lr, kind, k, penalty, bandwidth, aux_k, aux_weight, batch_size, dead_after):
    """(optimizer, run): run(state, (x, y), key, start, n) takes n steps in one compiled lax.scan,
    as minillm.sae's steps; cached on the settings so that equal settings reuse the program."""
    optimizer = optax.adam(lr)

    def forward(params, x):
        pre = x @ params["W_enc"] + params["b_enc"]
        if kind == "topk":
            f, active = _topk_relu(pre, k), None
        elif kind == "relu":
            f, active = jax.nn.relu(pre), None
        else:
            active = _step(pre, jnp.exp(params["log_threshold"]), bandwidth)
            f = pre * active
        y = f @ params["W_dec"] + params["b_dec"]
        if "W_skip" in params:
            y = y + x @ params["W_skip"]
        return pre, f, active, y

    def loss_fn(params, x, y, dead):
        pre, f, active, y_hat = forward(params, x)
        error = y - y_hat
        loss = (error**2).sum(-1).mean()
        if kind == "relu":
            loss = loss + penalty * jnp.abs(f).sum(-1).mean()
        elif kind == "jumprelu":
            loss = loss + penalty * active.sum(-1).mean()
        aux = aux_k_loss(pre, error, dead, params["W_dec"], aux_k)
        return loss + jnp.where(dead.any(), aux_weight * aux, 0.0), f

    def step(carry, i, data, key):
        params, opt_state, since_fired = carry
        x_all, y_all = data
        idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, x_all.shape[0])
        dead = since_fired >= dead_after
        (loss, f), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x_all[idx], y_all[idx], dead)
        grads["W_dec"] = along_unit_rows(grads["W_dec"], params["W_dec"])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params["W_dec"] = unit_rows(params["W_dec"])
        since_fired = jnp.where((f > 0).any(0), 0, since_fired + batch_size)
        return (params, opt_state, since_fired), loss

    @functools.partial(jax.jit, static_argnums=(4,), donate_argnums=(0,))
    def run(state, data, key, start, n):
        return jax.lax.scan(lambda c, i: step(c, i, data, key), state, start + jnp.arange(n))

    return optimizer, run


# ---------------------------------------------------------------------------------------------
# Evaluation, as lesson 4 reports it for SAEs
# ---------------------------------------------------------------------------------------------
def evaluate_transcoder(tc: Transcoder, inputs, outputs, chunk_size: int = 4096) -> dict[str, float]:
    """variance_explained (1 - squared error / the MLP output's total variance), mse, mean_l0
    (features active per example) and dead_fraction (features that never fire on these inputs)."""
    x = jnp.asarray(np.asarray(inputs, np.float32))
    y = jnp.asarray(np.asarray(outputs, np.float32))
    if x.ndim != 2 or x.shape != y.shape or x.shape[1] != tc.d_model:
        raise ValueError(f"evaluate_transcoder: inputs and outputs [n, {tc.d_model}], got {x.shape} and {y.shape}")
    return reconstruction_stats(_evaluate(tc, x, y, min(chunk_size, x.shape[0])), y)


@functools.partial(jax.jit, static_argnums=(3,))
def _evaluate(tc: Transcoder, x: Array, y: Array, chunk_size: int) -> dict[str, Array]:
    def one(chunk):
        x, y, ok = chunk
        f = tc.encode(x)
        return {
            "sq_error": (((y - tc.decode(f, x)) ** 2).sum(-1) * ok).sum(),
            "l0": ((f > 0).sum(-1) * ok).sum(),
            "fired": ((f > 0) & (ok[:, None] > 0)).sum(0),
        }

    out = map_in_chunks(one, (x, y, jnp.ones(x.shape[0])), chunk_size)  # padding rows count 0
    return jax.tree.map(lambda a: a.sum(0), out)


def spliced_hooks(transcoders: Sequence[Transcoder | None], zero: bool = False) -> list:
    """fwd_hooks that put each transcoder's output in place of its MLP's (zero=True: 0 instead),
    reading its input in the same pass. Layers whose entry is None keep their MLP."""
    hooks = []
    for layer, tc in enumerate(transcoders):
        if tc is None:
            continue
        seen = {}

        def read(x, hook, seen=seen):
            seen["x"] = x

        def write(out, hook, tc=tc, seen=seen):
            return (jnp.zeros_like(out) if zero else tc(seen["x"])).astype(out.dtype)

        hooks += [(tc.input_name, read), (output_name(layer), write)]
    return hooks


def spliced_loss(model: GPT, transcoders, batch: Batch) -> dict[str, float]:
    """The model's masked loss with the MLPs replaced by their transcoders (a list with one per layer,
    None to keep a layer's MLP; or one Transcoder for its layer alone), against the clean loss and
    against zero-ablating the same MLPs: fraction_recovered = (zero - spliced) / (zero - clean),
    1 when splicing costs nothing. Each later transcoder reads what the earlier ones wrote."""
    if isinstance(transcoders, Transcoder):
        transcoders = [transcoders if layer == transcoders.layer else None for layer in range(model.cfg.n_layers)]
    check_transcoders(model, transcoders, "spliced_loss")
    tokens = jnp.asarray(np.asarray(batch.tokens), jnp.int32)
    losses = _spliced_losses(model, tuple(transcoders), tokens, jnp.asarray(batch.targets), jnp.asarray(batch.mask))
    clean, spliced, zero = (float(v) for v in losses)
    recovered = (zero - spliced) / (zero - clean) if zero != clean else float("nan")
    return {
        "clean_loss": clean,
        "transcoder_loss": spliced,
        "zero_ablation_loss": zero,
        "fraction_recovered": recovered,
    }


@jax.jit
def _spliced_losses(model: GPT, transcoders: tuple, tokens: Array, targets: Array, mask: Array) -> Array:
    def loss(fwd_hooks):
        nll = cross_entropy(model.run_with_hooks(tokens, fwd_hooks), targets)
        return (nll * mask).sum() / mask.sum()

    return jnp.stack([loss(h) for h in ([], spliced_hooks(transcoders), spliced_hooks(transcoders, True))])
