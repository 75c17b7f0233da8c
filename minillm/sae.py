"""Sparse autoencoders: a wide, sparse dictionary of a model's activations, trained in seconds.

    acts = gather_activations(model, tokens, "blocks.0.mlp.hook_post", positions=[-1])   # [n, d_in]
    sae = train_sae(acts, d_sae=256, k=16)            # TopK (Gao et al. 2024); or l1=... (ReLU + L1)
    f = sae.encode(acts)                              # [n, d_sae] sparse feature activations
    recon = sae.decode(f)                             # [n, d_in]
    sae.W_dec                                         # [d_sae, d_in], unit-norm rows: the features
    evaluate_sae(sae, acts)                           # variance explained, mean L0, dead fraction
    spliced_loss(model, sae, batch, name)             # the model's loss with the SAE spliced in

An SAE maps x to f = act(W_enc^T (x - b_dec) + b_enc) and back to x_hat = f W_dec + b_dec. Two
activations, as the papers train them:
- **TopK** (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): keep each row's k
  largest pre-activations (ReLU-ed), zero the rest; the loss is the reconstruction error alone.
- **ReLU + L1** (Bricken et al. 2023, "Towards Monosemanticity"): f = ReLU(...), and the loss adds
  l1 * sum |f| (with unit-norm decoder rows, the L1 of f is the L1 the paper weights by row norm).
The standard care: activations divided by one scalar so that their mean squared norm is d_in
(stored in the SAE and undone on decode), b_dec started at the median, W_enc started as W_dec^T,
decoder rows renormalised after every step, and an auxiliary loss (Gao et al.'s AuxK) that asks
the features dead for `dead_after` examples to reconstruct what the live ones leave, so that they
come back. Training is minillm's pattern: chunks of Adam steps in one `lax.scan`, compiled once,
with a progress bar over chunks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minillm.model import GPT
from minillm.model.checkpoint import CheckpointError, load_tensors, save_tensors
from minillm.model.hooks import act_name
from minillm.model.losses import cross_entropy, map_in_chunks
from minillm.tasks import Batch

Array = jax.Array


@jax.tree_util.register_pytree_node_class
@dataclass
class SAE:
    """A trained sparse autoencoder: weights, and how it encodes (k for TopK, or ReLU)."""

    W_enc: Array  # [d_in, d_sae]
    b_enc: Array  # [d_sae]
    W_dec: Array  # [d_sae, d_in], rows of unit norm
    b_dec: Array  # [d_in]
    scale: Array  # [] the activations are divided by this before encoding
    k: int | None  # TopK's k, or None for ReLU

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def pre_activations(self, x) -> Array:
        return (jnp.asarray(x) / self.scale - self.b_dec) @ self.W_enc + self.b_enc  # [n, d_sae]

    def encode(self, x) -> Array:
        """Feature activations [n, d_sae] of activations x [n, d_in]."""
        pre = self.pre_activations(x)
        return _topk_relu(pre, self.k) if self.k is not None else jax.nn.relu(pre)

    def decode(self, f) -> Array:
        """Activations [n, d_in] from feature activations f [n, d_sae]."""
        return (f @ self.W_dec + self.b_dec) * self.scale

    def __call__(self, x) -> Array:
        """The reconstruction of x."""
        return self.decode(self.encode(x))

    def save(self, path: str) -> None:
        tensors = {n: np.asarray(getattr(self, n)) for n in ("W_enc", "b_enc", "W_dec", "b_dec", "scale")}
        save_tensors(path, tensors, {"kind": "sae", "k": "" if self.k is None else str(self.k)})

    @classmethod
    def load(cls, path: str) -> SAE:
        tensors, meta = load_tensors(path)
        if meta.get("kind") != "sae":
            raise CheckpointError(f"{path} is not an SAE checkpoint (kind={meta.get('kind')!r})")
        k = int(meta["k"]) if meta.get("k") else None
        return cls(*(jnp.asarray(tensors[n]) for n in ("W_enc", "b_enc", "W_dec", "b_dec", "scale")), k)

    def tree_flatten(self):
        return (self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.scale), self.k

    @classmethod
    def tree_unflatten(cls, k, children):
        return cls(*children, k)


def _topk_relu(pre: Array, k: int) -> Array:
    """Each row's k largest entries (ReLU-ed), the rest 0. The k-th largest value of each row is
    found by bisection on a threshold (24 halvings of its range): on a CPU, jax.lax.top_k over
    wide rows is ten times slower. Ties at the threshold may keep a few more than k."""
    lo, hi = pre.min(-1, keepdims=True), pre.max(-1, keepdims=True)

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        enough = (pre >= mid).sum(-1, keepdims=True) >= k  # the k-th largest is at least mid
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 24, halve, (lo, hi))
    return jnp.where(pre >= lo, jax.nn.relu(pre), 0.0)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train_sae(
    acts,
    d_sae: int,
    *,
    k: int | None = None,
    l1: float | None = None,
    steps: int = 1000,
    lr: float = 2e-3,
    batch_size: int = 1024,
    seed: int = 0,
    aux_k: int | None = None,
    aux_weight: float = 1 / 32,
    dead_after: int = 10_000,
    steps_per_call: int = 100,
    progress: bool = True,
) -> SAE:
    """Train an SAE on acts [n, d_in]: TopK with `k`, or ReLU + L1 with `l1` (exactly one of them).

    l1 weighs the L1 penalty against the squared error of activations scaled to mean squared norm
    d_in (about 1 per dimension): values near 1 give a few active features per example.
    aux_k: how many dead features the auxiliary loss uses (default 2 * k, or 32 for ReLU);
    dead_after: a feature that has not fired for this many training examples counts as dead.
    """
    acts = np.asarray(acts, np.float32)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ValueError(f"train_sae: activations must be [n, d_in] with n >= 2, got shape {acts.shape}")
    if not np.isfinite(acts).all():
        raise ValueError("train_sae: the activations hold NaN or infinite values")
    if (k is None) == (l1 is None):
        raise ValueError("train_sae: give exactly one of k (TopK) or l1 (ReLU + L1)")
    if k is not None and not 0 < k <= d_sae:
        raise ValueError(f"train_sae: k must be in 1..d_sae={d_sae}, got {k}")
    if l1 is not None and not l1 > 0:
        raise ValueError(f"train_sae: l1 must be positive, got {l1}")
    if d_sae < 1 or steps < 1 or batch_size < 1:
        raise ValueError("train_sae: d_sae, steps and batch_size must be positive")
    n, d_in = acts.shape
    scale = np.float32(np.sqrt((acts**2).sum(1).mean() / d_in)) or np.float32(1.0)
    x_all = jnp.asarray(acts / scale)
    key = jax.random.key(seed)
    W_dec = jax.random.normal(key, (d_sae, d_in))
    W_dec = W_dec / jnp.linalg.norm(W_dec, axis=1, keepdims=True)
    params = {
        "W_enc": W_dec.T,
        "b_enc": jnp.zeros(d_sae),
        "W_dec": W_dec,
        "b_dec": jnp.asarray(np.median(acts / scale, 0)),
    }
    aux_k = min(d_sae, aux_k or (2 * k if k is not None else 32))
    optimizer, step_fn = _make_steps(lr, k, l1, aux_k, aux_weight, batch_size, dead_after)
    state = (params, optimizer.init(params), jnp.zeros(d_sae, jnp.int32))

    state = train_in_chunks(step_fn, state, x_all, key, steps, steps_per_call, progress)
    p = state[0]
    return SAE(p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], jnp.asarray(scale), k)


@functools.lru_cache(maxsize=32)
def _make_steps(lr, k, l1, aux_k, aux_weight, batch_size, dead_after):
    """(optimizer, run): run(state, acts, key, start, n) takes n steps in one compiled lax.scan.
    Cached on the hyperparameters, so that a second SAE with the same settings (the untrained
    control, another seed) reuses the compiled program instead of tracing it again."""
    optimizer = optax.adam(lr)

    def encode(params, x):
        pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
        return pre, (_topk_relu(pre, k) if k is not None else jax.nn.relu(pre))

    def loss_fn(params, x, dead):
        pre, f = encode(params, x)
        recon = f @ params["W_dec"] + params["b_dec"]
        error = x - recon
        loss = (error**2).sum(-1).mean()
        if l1 is not None:
            loss = loss + l1 * jnp.abs(f).sum(-1).mean()
        aux = aux_k_loss(pre, error, dead, params["W_dec"], aux_k)
        loss = loss + jnp.where(dead.any(), aux_weight * aux, 0.0)
        return loss, f

    def step(carry, i, x_all, key):
        params, opt_state, since_fired = carry
        idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, x_all.shape[0])
        x = x_all[idx]
        dead = since_fired >= dead_after
        (loss, f), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, dead)
        grads["W_dec"] = along_unit_rows(grads["W_dec"], params["W_dec"])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params["W_dec"] = unit_rows(params["W_dec"])
        fired = (f > 0).any(0)
        since_fired = jnp.where(fired, 0, since_fired + batch_size)
        return (params, opt_state, since_fired), loss

    @functools.partial(jax.jit, static_argnums=(4,), donate_argnums=(0,))
    def run(state, x_all, key, start, n):
        return jax.lax.scan(lambda c, i: step(c, i, x_all, key), state, start + jnp.arange(n))

    return optimizer, run


# The pieces of training that transcoders (minillm.transcoders) share with SAEs.
def aux_k_loss(pre: Array, error: Array, dead: Array, W_dec: Array, aux_k: int) -> Array:
    """Gao et al.'s AuxK: the dead features' top aux_k pre-activations reconstruct the error the
    live ones leave (error [n, d_out], pre [n, d_sae], dead [d_sae] bool)."""
    aux_f = jnp.where(dead, _topk_relu(jnp.where(dead, pre, pre.min() - 1.0), aux_k), 0.0)
    return ((jax.lax.stop_gradient(error) - aux_f @ W_dec) ** 2).sum(-1).mean()


def along_unit_rows(grad: Array, W: Array) -> Array:
    """The gradient of W [n, d], whose rows are unit vectors, without its part along each row: a
    step then turns a row instead of stretching it (unit_rows puts it back on the sphere after)."""
    return grad - (grad * W).sum(1, keepdims=True) * W


def unit_rows(W: Array) -> Array:
    """W [n, d] with each row divided by its norm."""
    return W / jnp.linalg.norm(W, axis=1, keepdims=True)


def train_in_chunks(run, state, data, key: Array, steps: int, steps_per_call: int, progress: bool):
    """`steps` steps of `run(state, data, key, start, n) -> (state, losses)`, n = steps_per_call at a
    time (each chunk one compiled call), with a progress bar over steps. Returns the final state."""
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, disable=not progress, unit="step", dynamic_ncols=True)
    done = 0
    while done < steps:
        chunk = min(steps_per_call, steps - done)
        state, losses = run(state, data, key, done, chunk)
        done += chunk
        bar.update(chunk)
        bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
    bar.close()
    return state


# ---------------------------------------------------------------------------------------------
# Evaluation, as the papers report it
# ---------------------------------------------------------------------------------------------
def evaluate_sae(sae: SAE, acts, chunk_size: int = 4096) -> dict[str, float]:
    """variance_explained (1 - squared error / total variance), mean_l0 (features active per
    example), dead_fraction (features that never fire on these activations) and mse."""
    acts = jnp.asarray(np.asarray(acts, np.float32))
    return reconstruction_stats(_evaluate(sae, acts, min(chunk_size, acts.shape[0])), acts)


def reconstruction_stats(sums: dict[str, Array], target: Array) -> dict[str, float]:
    """The evaluation's figures from its sums over examples (sq_error, l0, fired per feature) and the
    [n, d] target it reconstructed: variance_explained, mse, mean_l0, dead_fraction."""
    n = target.shape[0]
    total = float(((target - target.mean(0)) ** 2).sum())
    return {
        "variance_explained": 1.0 - float(sums["sq_error"]) / total,
        "mse": float(sums["sq_error"]) / n,
        "mean_l0": float(sums["l0"]) / n,
        "dead_fraction": float((np.asarray(sums["fired"]) == 0).mean()),
    }


@functools.partial(jax.jit, static_argnums=(2,))
def _evaluate(sae: SAE, acts: Array, chunk_size: int) -> dict[str, Array]:
    def one(chunk):
        x, ok = chunk
        f = sae.encode(x)
        error = ((x - sae.decode(f)) ** 2).sum(-1) * ok
        return {
            "sq_error": error.sum(),
            "l0": ((f > 0).sum(-1) * ok).sum(),
            "fired": ((f > 0) & (ok[:, None] > 0)).sum(0),
        }

    out = map_in_chunks(one, (acts, jnp.ones(acts.shape[0])), chunk_size)  # padding rows count 0
    return jax.tree.map(lambda a: a.sum(0), out)


def gather_activations(model: GPT, tokens, name: str, *, positions=None, chunk_size: int = 256) -> np.ndarray:
    """The activations of hook `name` (one with positions on axis 1: not patterns or scores) over a
    data set: [n * len(positions), width] (every position if positions is None), rows ordered by
    sequence then position; heads are flattened into width.
    Computed `chunk_size` sequences at a time in one compiled call."""
    name = act_name(name)
    tokens = jnp.asarray(np.asarray(tokens), jnp.int32)
    n, n_pos = tokens.shape
    pos = np.arange(n_pos) if positions is None else np.arange(n_pos)[np.asarray(positions)]
    out = _gather(model, tokens, name, tuple(int(p) for p in pos), min(chunk_size, n))
    return np.asarray(out.reshape(-1, *out.shape[2:])[:n].reshape(n * len(pos), -1))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _gather(model: GPT, tokens: Array, name: str, positions: tuple, chunk_size: int) -> Array:
    def one(chunk):
        return model.run_with_cache(chunk, names_filter=[name])[1][name][:, jnp.asarray(positions)]

    return map_in_chunks(one, tokens, chunk_size)


def spliced_loss(model: GPT, sae: SAE, batch: Batch, name: str, positions=None) -> dict[str, float]:
    """The model's masked loss with the SAE's reconstruction in place of hook `name` (at `positions`,
    default every position), against the clean loss and against zero-ablating the activation there:
    fraction_recovered = (zero - sae) / (zero - clean), 1 when splicing costs nothing."""
    name = act_name(name)
    tokens = jnp.asarray(np.asarray(batch.tokens), jnp.int32)
    n_pos = tokens.shape[1]
    where = np.zeros(n_pos, bool)
    where[np.arange(n_pos) if positions is None else np.asarray(positions)] = True
    where = jnp.asarray(where)[None, :, None]

    def replace(fn):
        def hook(act, hook):
            flat = act.reshape(*act.shape[:2], -1)
            new = fn(flat.reshape(-1, flat.shape[-1])).reshape(flat.shape)
            return jnp.where(where, new, flat).reshape(act.shape).astype(act.dtype)

        return [(name, hook)]

    def loss(fwd_hooks):
        logits = model.run_with_hooks(tokens, fwd_hooks)
        nll = cross_entropy(logits, jnp.asarray(batch.targets))
        mask = jnp.asarray(batch.mask)
        return float((nll * mask).sum() / mask.sum())

    clean, spliced, zero = loss([]), loss(replace(sae)), loss(replace(jnp.zeros_like))
    recovered = (zero - spliced) / (zero - clean) if zero != clean else float("nan")
    return {"clean_loss": clean, "sae_loss": spliced, "zero_ablation_loss": zero, "fraction_recovered": recovered}
