"""Linear probes: is a variable the model was never told linearly readable from its activations?

    probe = fit_probe(acts, labels, kind="linear")   # acts [n, d]; labels [n] or [n, k] (floats)
    probe = fit_probe(acts, classes, kind="logistic")  # classes [n] (ints)
    probe.score                                      # held-out R^2 (linear) or accuracy (logistic)
    probe.predict(acts)                              # [n] or [n, k] values; class ids for logistic
    probe.directions                                 # [d] (one target) or [k, d]: the activations' basis

    sweep = probe_sweep(model, tokens, labels)       # every residual-stream hook x every position
    sweep.scores, sweep.untrained, sweep.shuffled    # [hook, pos]: the model, and the two controls
    sweep.selectivity                                # scores - untrained (Hewitt and Liang 2019)
    mass_mean_direction(acts, labels, groups)        # [d]: where the data move as the label grows

A linear probe is ridge regression in closed form; a logistic probe is multinomial logistic
regression trained with optax (Adam, full batch, a fixed number of steps, inside `lax.scan`).
Both standardise the activations for the fit and hand back their weights in the activations' own
basis, so a direction can be added to the residual stream as a steering vector
(`minillm.interventions.steer`). Examples are split into train and held-out rows by `seed`; the
score is always the held-out one.

`probe_sweep` fits one probe per (hook, position), or per hook over all positions pooled, in ONE
compiled call: the activations come from one `run_with_cache`, and the fits are `jax.vmap`-ed over
positions and over hooks of the same width. It also fits the two controls that keep probes honest
(Hewitt and Liang 2019, "Designing and Interpreting Probes with Control Tasks"): the same probe on
a model of the same shape with its initial, untrained weights (a probe that reads the input, not
the model's computation, scores high there too) and on labels shuffled across sequences (what a
probe scores by chance). Positions whose label is the same in every sequence cannot be scored:
their score is NaN.

References: Alain and Bengio 2016, "Understanding intermediate layers using linear classifier
probes"; Belinkov 2022, "Probing Classifiers: Promises, Shortcomings, and Advances".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minillm.model import GPT
from minillm.model.hooks import act_name

Array = jax.Array
KINDS = ("linear", "logistic")


# ---------------------------------------------------------------------------------------------
# One probe
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """A fitted probe: predictions are `acts @ weight + bias` (logits for logistic probes)."""

    kind: str  # "linear" or "logistic"
    weight: np.ndarray  # [d, k]: k targets, or k classes
    bias: np.ndarray  # [k]
    score: float  # held-out R^2 (linear, averaged over targets) or accuracy (logistic)
    train_score: float  # the same on the rows it was fitted on
    single_target: bool  # labels were [n] (linear): predict gives [n], directions [d]

    def predict(self, acts) -> np.ndarray:
        """Values [n] or [n, k] (linear), or class ids [n] (logistic), for acts [n, d]."""
        out = self.logits(acts)
        if self.kind == "logistic":
            return out.argmax(-1)
        return out[:, 0] if self.single_target else out

    def logits(self, acts) -> np.ndarray:
        """acts @ weight + bias [n, k]: for a logistic probe the class logits (softmax them for
        probabilities), for a linear one the predicted values."""
        return np.asarray(acts, np.float32) @ self.weight + self.bias

    @property
    def directions(self) -> np.ndarray:
        """The weight vectors in the activations' basis: [d] for one target, else [k, d]."""
        return self.weight[:, 0] if self.single_target else self.weight.T


def fit_probe(
    acts,
    labels,
    kind: str = "linear",
    *,
    holdout: float = 0.2,
    seed: int = 0,
    alpha: float | None = None,
    steps: int = 500,
    lr: float = 0.05,
    l2: float = 1e-4,
) -> Probe:
    """Fit a probe on acts [n, d] and score it on the held-out fraction `holdout` of the rows.

    linear: ridge regression, labels [n] or [n, k]; `alpha` is the ridge penalty relative to the
    number of rows (on standardised activations), None: chosen by generalised cross-validation.
    logistic: labels [n] integer classes 0..c-1; `steps` of Adam at `lr`, with an L2 penalty `l2`
    on the weights.
    """
    x, y, n_classes = _check(acts, labels, kind, holdout)
    order, n_train = _split(x.shape[0], holdout, seed)
    x, y = x[order], y[order]  # the train rows first, then the held-out ones
    if kind == "linear":
        weight, bias, train_score, score = _fit_linear_jit(x, y, n_train, alpha=alpha)
    else:
        hyper = dict(n_classes=n_classes, steps=steps, lr=lr, l2=l2)
        weight, bias, train_score, score = _fit_logistic_jit(x, y, n_train, **hyper)
    single = kind == "linear" and np.ndim(labels) == 1
    return Probe(kind, np.asarray(weight), np.asarray(bias), float(score), float(train_score), single)


def _check(acts, labels, kind: str, holdout: float) -> tuple[Array, Array, int]:
    if kind not in KINDS:
        raise ValueError(f"fit_probe: kind must be 'linear' or 'logistic', got {kind!r}")
    acts, labels = np.asarray(acts), np.asarray(labels)
    if acts.ndim != 2:
        raise ValueError(f"fit_probe: activations must be [n, d], got shape {acts.shape}")
    if labels.shape[:1] != acts.shape[:1]:
        raise ValueError(f"fit_probe: {acts.shape[0]} activations but {labels.shape[0]} labels")
    if not np.isfinite(acts).all():
        raise ValueError(f"fit_probe: the activations hold {int((~np.isfinite(acts)).sum())} NaN or infinite values")
    if not 0 < holdout < 1:
        raise ValueError(f"fit_probe: holdout must be a fraction in (0, 1), got {holdout}")
    n_test = int(round(holdout * acts.shape[0]))
    if n_test < 2 or acts.shape[0] - n_test < 2:
        raise ValueError(
            f"fit_probe: {acts.shape[0]} examples are too few to hold out {holdout:.0%} (need >= 2 on each side)"
        )
    if kind == "logistic":
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError("fit_probe: a logistic probe takes labels [n] of class ids 0, 1, 2, ...")
        if len(np.unique(labels)) < 2:
            raise ValueError(f"fit_probe: every label is class {labels[0]}: a probe needs two classes or more")
        return jnp.asarray(acts, jnp.float32), jnp.asarray(labels, jnp.int32), int(labels.max()) + 1
    if labels.ndim not in (1, 2) or not np.isfinite(labels).all():
        raise ValueError(f"fit_probe: a linear probe takes finite labels [n] or [n, k], got shape {labels.shape}")
    if np.ptp(labels.reshape(len(labels), -1), axis=0).min() == 0:
        raise ValueError("fit_probe: a label is the same for every example: there is nothing to predict")
    y = labels.reshape(len(labels), -1)
    return jnp.asarray(acts, jnp.float32), jnp.asarray(y, jnp.float32), 0


def _split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, int]:
    """(order, n_train): a permutation of the rows 0..n-1 by `seed`; its first n_train are fitted on,
    the rest (the fraction `holdout`) held out. The fits take their rows in this order, so that
    train and held-out rows are slices, not gathers."""
    order = np.random.default_rng(seed).permutation(n)
    return order, n - int(round(holdout * n))


def mass_mean_direction(acts, labels, groups=None) -> np.ndarray:
    """The direction the activations move along as the label grows: [d], in the activations' basis.

    For labels 0/1 it is mean(acts | 1) - mean(acts | 0), the "mass-mean" probe of Marks and
    Tegmark 2023 ("The Geometry of Truth"); for a number it is the least-squares slope of each
    activation on the label, the mean shift per unit of label. With `groups` (e.g. the position
    of each row) both are taken within each group, so that a variable correlated with the group
    (depth with position) is not confused with it. Unlike a regression probe's weights, which may
    point wherever the label is predictable, including directions the model never reads, this
    direction is where the data lie; adding it is the usual steering vector.
    """
    acts, labels = np.asarray(acts, np.float64), np.asarray(labels, np.float64)
    if acts.ndim != 2 or labels.shape != acts.shape[:1]:
        raise ValueError(f"mass_mean_direction: expected acts [n, d] and labels [n], got {acts.shape}, {labels.shape}")
    groups = np.zeros(len(labels), int) if groups is None else np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"mass_mean_direction: groups must be [n] like the labels, got {groups.shape}")
    x, y = acts.copy(), labels.copy()
    for g in np.unique(groups):  # centre within each group
        rows = groups == g
        x[rows] -= x[rows].mean(0)
        y[rows] -= y[rows].mean()
    if not (y**2).sum() > 0:
        raise ValueError("mass_mean_direction: the label never varies (within a group): there is no direction")
    return ((x * y[:, None]).sum(0) / (y**2).sum()).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The fits: pure functions of arrays, so that a sweep can vmap them
# ---------------------------------------------------------------------------------------------
def _standardise(x_train: Array) -> tuple[Array, Array]:
    mean = x_train.mean(0)
    scale = jnp.sqrt(((x_train - mean) ** 2).mean(0) + 1e-8)  # [d]; a constant unit gets ~1e-4
    return mean, scale


def _r2(y: Array, pred: Array) -> Array:
    """R^2 averaged over targets; NaN where a target is constant (nothing to explain)."""
    sse = ((y - pred) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    return jnp.where(sst > 0, 1.0 - sse / jnp.where(sst > 0, sst, 1.0), jnp.nan).mean()


ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))  # the ridge penalties tried, relative to n


def _ridge_gram(x: Array, n_train: int) -> Array:
    """z^T z [d, d] of the standardised train rows: the matrix ridge regression decomposes."""
    z = x[:n_train]
    mean, scale = _standardise(z)
    z = (z - mean) / scale
    return z.T @ z


def _ridge_finish(x: Array, y: Array, n_train: int, s: Array, v: Array, *, alpha: float | None):
    """Ridge regression from the eigendecomposition z^T z = v diag(s) v^T (see _fit_linear)."""
    x_tr, y_tr = x[:n_train], y[:n_train]
    mean, scale = _standardise(x_tr)
    y_mean = y_tr.mean(0)
    yc = y_tr - y_mean
    n = x_tr.shape[0]
    s = jnp.maximum(s, 0.0)
    q = v.T @ (((x_tr - mean) / scale).T @ yc)  # [d, k]: the targets in the eigenbasis, times sqrt(s)
    lambdas = n * (jnp.asarray(ALPHAS) if alpha is None else jnp.asarray([alpha]))  # [g]
    shrink = lambdas[:, None] / (s[None, :] + lambdas[:, None])  # [g, d]: what ridge leaves unfitted
    explained = jnp.where(s > 1e-6 * s.max(), 1.0 / jnp.where(s > 0, s, 1.0), 0.0)[:, None] * q**2  # [d, k]
    # residual sum of squares for every penalty: the part no direction explains, plus what each
    # direction leaves unfitted; and the degrees of freedom, the trace of the hat matrix
    rss = ((yc**2).sum(0) - explained.sum(0))[None] + jnp.einsum("gd,dk->gk", shrink**2, explained)  # [g, k]
    dof = (1.0 - shrink).sum(1) + 1.0  # [g], the intercept included
    gcv = rss.sum(1) / n / (1.0 - dof / n) ** 2  # [g]: generalised cross-validation
    best = jnp.argmin(jnp.where(dof < n - 1, gcv, jnp.inf))
    w_std = v @ (q / (s + lambdas[best])[:, None])  # [d, k]
    weight = w_std / scale[:, None]  # back to the activations' basis
    bias = y_mean - mean @ weight
    return weight, bias, _r2(y_tr, x_tr @ weight + bias), _r2(y[n_train:], x[n_train:] @ weight + bias)


def _fit_linear(x: Array, y: Array, n_train: int, *, alpha: float | None):
    """Ridge regression y ~ x W + b on the first n_train rows -> (W [d, k], b [k], train R^2, held-out R^2).

    On standardised activations z, W = (z^T z + lambda I)^-1 z^T y with lambda = alpha * n_train;
    alpha None picks it from ALPHAS by generalised cross-validation on the train rows (Golub, Heath
    and Wahba 1979: leave-one-out error with the hat matrix's diagonal replaced by its mean), which
    one eigendecomposition gives for every penalty at once.
    """
    s, v = jnp.linalg.eigh(_ridge_gram(x, n_train))
    return _ridge_finish(x, y, n_train, s, v, alpha=alpha)


def _fit_logistic(x: Array, y: Array, n_train: int, *, n_classes: int, steps: int, lr: float, l2: float):
    """Softmax regression on the first n_train rows -> (W [d, c], b [c], train accuracy, held-out accuracy)."""
    x_tr, y_tr = x[:n_train], y[:n_train]
    mean, scale = _standardise(x_tr)
    z = (x_tr - mean) / scale
    params = (jnp.zeros((x.shape[1], n_classes)), jnp.zeros(n_classes))
    optimizer = optax.adam(lr)

    def loss(params):
        w, b = params
        logits = z @ w + b
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y_tr).mean()
        return nll + l2 * (w**2).sum()

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state)
        return (optax.apply_updates(params, updates), state), None

    ((w_std, b_std), _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    weight = w_std / scale[:, None]
    bias = b_std - mean @ weight
    accuracy = lambda x, y: ((x @ weight + bias).argmax(-1) == y).mean()
    return weight, bias, accuracy(x_tr, y_tr), accuracy(x[n_train:], y[n_train:])


_fit_linear_jit = jax.jit(_fit_linear, static_argnames=("n_train", "alpha"))  # compiled once per shape, then reused
_fit_logistic_jit = jax.jit(_fit_logistic, static_argnames=("n_train", "n_classes", "steps", "lr", "l2"))


# ---------------------------------------------------------------------------------------------
# The sweep: every hook and position in one compiled call
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeSweep:
    """Held-out probe scores per hook point (rows) and position (columns; one column if pooled)."""

    names: list[str]
    positions: list[int] | None  # None: pooled over positions
    kind: str
    scores: np.ndarray  # [hook, pos] the model's activations
    untrained: np.ndarray  # [hook, pos] the same probe on the model's shape with its initial weights
    shuffled: np.ndarray  # [hook, pos] the model's activations, labels shuffled across sequences
    directions: dict[str, np.ndarray]  # name -> [pos, d] (one target) or [pos, k, d]

    @property
    def selectivity(self) -> np.ndarray:
        """scores - untrained: what the model's computation adds over what its input already gives."""
        return self.scores - self.untrained

    def score(self, name: str, pos: int | None = None) -> float:
        """The score at one hook (a short name such as ("resid_post", 0) works too) and position."""
        row = self.names.index(act_name(*name) if isinstance(name, tuple) else act_name(name))
        col = 0 if self.positions is None else self.positions.index(pos)
        return float(self.scores[row, col])


def residual_stream_names(model: GPT) -> list[str]:
    """The residual stream at every stage: hook_resid_pre of each block, resid_mid after each
    attention (models with MLPs), and the final hook_resid_post, in forward order."""
    names = [n for n in model.hook_names() if n.endswith(("hook_resid_pre", "hook_resid_mid"))]
    return names + [act_name("resid_post", model.cfg.n_layers - 1)]


def probe_sweep(
    model: GPT,
    tokens,
    labels,
    names: Sequence[str] | None = None,
    *,
    kind: str = "linear",
    positions: str | Sequence[int] = "each",
    control_model: GPT | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    alpha: float | None = None,
    steps: int = 500,
    lr: float = 0.05,
    l2: float = 1e-4,
) -> ProbeSweep:
    """Fit a probe at every hook in `names` (default: residual_stream_names) and position.

    tokens [n, p]; labels [n, p] (a label per position) or [n] (one per sequence). positions:
    "each" (every position), a list of positions, or "pooled" (one probe per hook over every
    position's activations; the held-out rows are whole sequences). Hook activations wider than
    [n, p, d] (q, k, v, z: [n, p, h, e]) are flattened per position. `control_model` is the
    untrained control (default: GPT(model.cfg), the initial weights its seed gives).
    """
    names = [act_name(n) for n in (residual_stream_names(model) if names is None else names)]
    tokens = np.asarray(tokens)
    labels = np.asarray(labels)
    n, n_pos = tokens.shape
    if kind not in KINDS:
        raise ValueError(f"probe_sweep: kind must be 'linear' or 'logistic', got {kind!r}")
    if labels.shape[0] != n or labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != n_pos):
        raise ValueError(f"probe_sweep: labels must be [n] or [n, pos] for tokens {tokens.shape}, got {labels.shape}")
    if labels.ndim == 1:
        labels = np.broadcast_to(labels[:, None], (n, n_pos))
    if positions == "pooled":
        pos_list = None
    else:
        pos_list = list(range(n_pos)) if positions == "each" else [int(p) for p in positions]
        bad = [p for p in pos_list if not 0 <= p < n_pos]
        if bad:
            raise ValueError(f"probe_sweep: positions {bad} are outside [0, {n_pos})")
    n_test = int(round(holdout * n))
    if not 0 < holdout < 1 or n_test < 2 or n - n_test < 2:
        raise ValueError(f"probe_sweep: {n} sequences are too few to hold out {holdout} (need >= 2 on each side)")
    if kind == "logistic" and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError("probe_sweep: a logistic probe takes integer class ids 0, 1, 2, ... as labels")
    if kind == "linear" and not np.isfinite(labels).all():
        raise ValueError("probe_sweep: the labels hold NaN or infinite values")
    n_classes = int(labels.max()) + 1 if kind == "logistic" else 0
    order, n_train = _split(n, holdout, seed)  # the sequences reordered: train ones first
    tokens, labels = tokens[order], labels[order]
    shuffle = jnp.asarray(np.random.default_rng(seed + 1).permutation(n))
    control_model = GPT(model.cfg) if control_model is None else control_model
    hyper = dict(alpha=alpha) if kind == "linear" else dict(steps=steps, lr=lr, l2=l2, n_classes=n_classes)
    out = _sweep(
        model, control_model, jnp.asarray(tokens, jnp.int32), jnp.asarray(labels), n_train, shuffle,
        names=tuple(names), positions=None if pos_list is None else tuple(pos_list), kind=kind,
        hyper=tuple(sorted(hyper.items())),
    )  # fmt: skip
    scores, untrained, shuffled, directions = jax.device_get(out)
    return ProbeSweep(
        names, pos_list, kind, np.stack(scores), np.stack(untrained), np.stack(shuffled),
        {name: d for name, d in zip(names, directions)},
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("n_train", "names", "positions", "kind", "hyper"))
def _sweep(model, control_model, tokens, labels, n_train, shuffle, *, names, positions, kind, hyper):
    """Per name: scores [pos] for the model, the untrained control and shuffled labels, and the
    model's probe weights. The fits of all hooks of one width (x 3 variants x positions) are one
    batch, vmapped; for linear probes only the eigendecompositions run one at a time (lax.map):
    batched LAPACK calls that run side by side can deadlock XLA's CPU thread pool (jax 0.10.2,
    seen here with two cores), one matrix per call cannot."""
    labels = labels.astype(jnp.float32 if kind == "linear" else jnp.int32)
    n, n_pos = tokens.shape
    _, cache = model.run_with_cache(tokens, names_filter=list(names))
    trained = [cache[name].reshape(n, n_pos, -1) for name in names]
    _, cache = control_model.run_with_cache(tokens, names_filter=list(names))
    control = [cache[name].reshape(n, n_pos, -1) for name in names]
    ys = jnp.stack([labels, labels, labels[shuffle]])  # the model, the untrained model, shuffled labels

    if positions is None:  # one probe over all positions: rows are (sequence, position) pairs
        fit_train = n_train * n_pos  # the train sequences come first, so their rows do too
        as_rows = lambda a: a.reshape(a.shape[0], 1, n * n_pos, -1)  # [F, 1, rows, w]
        y_rows = ys.reshape(3, 1, n * n_pos)
    else:
        fit_train = n_train
        as_rows = lambda a: a[:, :, positions].swapaxes(1, 2)  # [F, pos, n, w]
        y_rows = ys[:, :, positions].swapaxes(1, 2)  # [3, pos, n]
    constant = y_rows.min(-1) == y_rows.max(-1)  # [3, pos]: a label that never varies cannot be scored

    out = [None] * len(names)
    for width in sorted({a.shape[-1] for a in trained}):
        group = [i for i, a in enumerate(trained) if a.shape[-1] == width]
        h = len(group)
        acts = jnp.stack([trained[i] for i in group] + [control[i] for i in group] + [trained[i] for i in group])
        x = as_rows(acts)  # [3h, pos, rows, w]
        y = jnp.repeat(y_rows, h, axis=0)  # [3h, pos, rows]
        x, y = x.reshape(-1, *x.shape[2:]), y.reshape(-1, y.shape[-1])  # [F, rows, w], [F, rows]
        if kind == "linear":
            decomposed = 2 * len(x) // 3  # the model's and the untrained model's activations
            grams = jax.vmap(lambda a: _ridge_gram(a, fit_train))(x[:decomposed])
            s, v = jax.lax.map(jnp.linalg.eigh, grams)  # one matrix per LAPACK call (see above)
            s, v = (jnp.concatenate([a, a[: decomposed // 2]]) for a in (s, v))  # shuffled labels: same acts
            finish = functools.partial(_ridge_finish, **dict(hyper))
            w, _, _, score = jax.vmap(lambda a, b, s, v: finish(a, b, fit_train, s, v))(x, y[..., None], s, v)
        else:
            fit = functools.partial(_fit_logistic, **dict(hyper))
            w, _, _, score = jax.vmap(lambda a, b: fit(a, b, fit_train))(x, y)
        score = score.reshape(3, h, -1)  # [variant, hook, pos]
        score = jnp.where(jnp.repeat(constant[:, None], h, axis=1), jnp.nan, score)
        w = w.reshape(3, h, score.shape[-1], *w.shape[1:]).swapaxes(-1, -2)  # [variant, hook, pos, k, w]
        for j, i in enumerate(group):
            out[i] = (score[0, j], score[1, j], score[2, j], w[0, j, :, 0] if kind == "linear" else w[0, j])
    return tuple(list(x) for x in zip(*out))
