# %% [markdown]
# # Lesson 3: Probing for hidden knowledge: the depth of a bracket string
#
# Is there knowledge inside a model that nobody told it? A **linear probe** asks: if we take the
# activations at some point of the network and fit a linear read-out for a variable, does it
# recover that variable on examples it was not fitted on? If it does, the variable is *linearly
# represented* there (Alain and Bengio 2016; Belinkov 2022).
#
# Probes are easy to fit and easy to over-read. This lesson fits them on a model whose hidden
# variable we know exactly, and keeps them honest three ways:
#
# 1. **controls** (Hewitt and Liang 2019): the same probe on a model of the same shape with its
#    initial, untrained weights, and on shuffled labels. A probe that scores as well on the
#    untrained model is reading the input, not the model's computation;
# 2. **mechanism**: where the variable becomes readable should match how the model computes it;
# 3. **intervention**: a direction the model *uses* changes its prediction when we move along it,
#    and breaks it when we remove it. A direction that only *predicts* the variable need not.
#
# Runs in about a minute on a laptop CPU, from the checkpoint in `checkpoints/bracket_depth/`
# (made by `minillm-train bracket_depth`; the last cell retrains it).

# %%
import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT, act_name
from minillm.lessons import checkpoint, retrain
from minillm.plots import plot_attention_patterns, plot_probe_scores, plot_training_curves
from minillm.probes import fit_probe, mass_mean_direction, probe_sweep
from minillm.tasks import make_task

model = GPT.load(checkpoint("bracket_depth/model.safetensors"))
metrics = [json.loads(line) for line in open(checkpoint("bracket_depth/metrics.jsonl"))]
task = make_task("bracket_depth", n_brackets=24)
print(model.cfg)

# %% [markdown]
# ## The task: the next bracket of a balanced string
#
# Every sequence is `[START]` and then a balanced string of 24 brackets, drawn uniformly from all
# such strings, and the model predicts each next bracket. The next bracket is random, but its
# *probability* is not: it depends on the **depth** (opened minus closed brackets so far) and on how
# many brackets are left. At depth 0 the next one must be `(`; when the depth equals the brackets
# left, every remaining one must be `)`; in between `)` grows likelier with depth.
# `task.close_probability` computes the exact probability by counting completions. The depth is
# never shown to the model: it is the hidden variable a good predictor must track.

# %%
_, test = task.split(0)
tokens = np.asarray(test.tokens)  # [1024, 25]
depth = task.depth(tokens)  # [1024, 25]: the depth after each token
exact = task.close_probability(tokens)  # the best possible P(next is ")")
p_close = np.asarray(jax.nn.softmax(model(tokens), axis=-1)[..., 1])  # the model's P(next is ")")

print(task.decode(tokens[0]))
print("depth      ", " ".join(f"{d:4d}" for d in depth[0, :-1]))
print("exact P())", " ".join(f"{p:4.2f}" for p in exact[0, :-1]))
print("model P())", " ".join(f"{p:4.2f}" for p in p_close[0, :-1]))

scored = slice(0, 24)  # every position that has a next bracket
prob_r2 = (
    1 - ((p_close[:, scored] - exact[:, scored]) ** 2).sum() / ((exact[:, scored] - exact[:, scored].mean()) ** 2).sum()
)
print(f"the model's P(')') matches the exact one: R^2 = {prob_r2:.4f}")
assert prob_r2 > 0.98

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].scatter(exact[:, scored].ravel()[::7], p_close[:, scored].ravel()[::7], s=3, alpha=0.3)
axes[0].plot([0, 1], [0, 1], "k--", lw=1)
axes[0].set(xlabel="exact P(')')", ylabel="model's P(')')", title="the model predicts as well as possible")
for d in range(0, 7, 2):
    rows = depth[:, scored] == d
    by_pos = [p_close[:, scored][:, t][rows[:, t]].mean() if rows[:, t].any() else np.nan for t in range(24)]
    axes[1].plot(range(24), by_pos, label=f"depth {d}")
axes[1].set(xlabel="position", ylabel="mean P(')')", title="it depends on depth and on position")
axes[1].legend(fontsize=8)
fig.tight_layout()

# %%
fig = plot_training_curves(metrics, extra=["prob_r2"], title="bracket_depth")

# %% [markdown]
# ## Exercise 1: fit a ridge probe by hand
#
# A linear probe predicts the label as `acts @ w + b`. Ridge regression picks the `w` and `b` that
# minimise the squared error plus `lam * |w|^2`: centre the activations and the labels, solve
# `(X^T X + lam I) w = X^T y` on the centred data, and recover the bias from the means.
# (`minillm.probes.fit_probe` does this, standardising the activations first and choosing `lam`
# by generalised cross-validation.)
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def ridge_probe(acts, labels, lam):
    """acts [n, d], labels [n] -> (w [d], b)."""
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_ridge_probe

check_ridge_probe(ridge_probe)


# %% tags=["solution"]
def ridge_probe(acts, labels, lam):
    mean_x, mean_y = acts.mean(0), labels.mean()
    x = acts - mean_x
    w = np.linalg.solve(x.T @ x + lam * np.eye(acts.shape[1]), x.T @ (labels - mean_y))
    return w, mean_y - mean_x @ w


check_ridge_probe(ridge_probe)

# %% [markdown]
# ## Exercise 2: score it on held-out data
#
# A probe is judged on examples it was not fitted on, with the coefficient of determination
# `R^2 = 1 - sum((y - prediction)^2) / sum((y - mean(y))^2)`: 1 is perfect, 0 is no better than
# predicting the mean, and it goes negative for a probe that has memorised its training set.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def r2(labels, predictions):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_r2

check_r2(r2)


# %% tags=["solution"]
def r2(labels, predictions):
    return 1 - ((labels - predictions) ** 2).sum() / ((labels - labels.mean()) ** 2).sum()


check_r2(r2)

# %%
# Your probe on the residual stream between the two layers, for the depth at position 12:
train, _ = task.split(0)
name = act_name("resid_pre", 1)
_, train_cache = model.run_with_cache(np.asarray(train.tokens), names_filter=[name])
_, test_cache = model.run_with_cache(tokens, names_filter=[name])
w, b = ridge_probe(np.asarray(train_cache[name][:, 12]), task.depth(train.tokens)[:, 12], lam=1.0)
print("held-out R^2 of your probe:", r2(depth[:, 12], np.asarray(test_cache[name][:, 12]) @ w + b))

# %% [markdown]
# ## Where does the model know the depth? A first sweep, and a trap
#
# `probe_sweep` fits one probe per hook point and position, for the model and for the two controls,
# in one compiled call. Here: the depth at each position, read from the residual stream.

# %%
per_position = probe_sweep(model, tokens, depth)
fig = plot_probe_scores(per_position, title="depth, one probe per position")
mid = slice(2, 23)  # positions whose depth varies (after START the depth is 1; at the end it is 0)
print("mean held-out R^2 over positions 2..22, trained / untrained:")
for i, name in enumerate(per_position.names):
    print(
        f"  {name:26s} {np.nanmean(per_position.scores[i, mid]):.3f} / {np.nanmean(per_position.untrained[i, mid]):.3f}"
    )
assert np.nanmean(per_position.untrained[1:, mid]) > 0.9  # the untrained model "knows" the depth too
assert np.nanmax(per_position.shuffled) < 0.1

# %% [markdown]
# Every layer of the trained model scores near 1, and so does **the untrained model**. The probe is
# not finding the model's knowledge: at a fixed position `t`, the depth is a linear function of the
# fraction of `(` so far (`depth = t * (2 * fraction - 1)`), and an untrained attention layer, whose
# small random weights attend almost uniformly, already averages the token embeddings into that
# fraction. The input, mixed, hands the probe the answer. This is what the untrained control is for.
#
# To ask what the *trained* model computes, the probe must not get the position for free: fit one
# probe per hook over **all positions pooled**. Then the depth must be linear in the activation
# whatever the position, and the fraction of `(` alone no longer suffices: `depth = position x
# (2 x fraction - 1)` is a product, which something has to compute. For comparison we probe the
# fraction itself (as `depth / position`, which is `2 x fraction - 1` up to the START token).

# %%
names = ["hook_embed", act_name("attn_out", 0), act_name("resid_mid", 0), act_name("post", 0),
         act_name("resid_post", 0), act_name("resid_mid", 1), act_name("resid_post", 1)]  # fmt: skip
inner = np.arange(1, 24)  # positions 1..23: the depth varies with the position there
depth_over_pos = (depth[:, inner] / inner).astype(np.float32)
pooled_depth = probe_sweep(model, tokens[:, : inner[-1] + 1], depth[:, : inner[-1] + 1], names, positions="pooled")
fraction = np.zeros(depth.shape, np.float32)
fraction[:, inner] = depth_over_pos
pooled_fraction = probe_sweep(
    model, tokens[:, : inner[-1] + 1], fraction[:, : inner[-1] + 1], names, positions="pooled"
)

fig, ax = plt.subplots(figsize=(8, 3.6))
x = np.arange(len(names))
ax.plot(x, pooled_depth.scores[:, 0], "o-", label="depth, trained")
ax.plot(x, pooled_depth.untrained[:, 0], "o--", label="depth, untrained")
ax.plot(x, pooled_fraction.scores[:, 0], "s-", label="depth / position, trained")
ax.plot(x, pooled_fraction.untrained[:, 0], "s--", label="depth / position, untrained")
ax.set_xticks(x, [n.replace("blocks.", "").replace("hook_", "") for n in names], rotation=30, fontsize=8)
ax.set(ylabel="held-out R^2 (pooled)", title="where each variable becomes linear", ylim=(0, 1.02))
ax.legend(fontsize=8)
fig.tight_layout()
for i, n in enumerate(names):
    print(f"{n:26s} depth {pooled_depth.scores[i, 0]:.3f} (untrained {pooled_depth.untrained[i, 0]:.3f})   "
          f"depth/pos {pooled_fraction.scores[i, 0]:.3f}")  # fmt: skip

# %%
score = {n: (pooled_depth.scores[i, 0], pooled_fraction.scores[i, 0]) for i, n in enumerate(names)}
selectivity = {n: pooled_depth.selectivity[i, 0] for i, n in enumerate(names)}
# 1. right after layer-0 attention the fraction is there, linearly, and the depth is not yet
assert score[act_name("resid_mid", 0)][1] > 0.98
assert score[act_name("resid_mid", 0)][0] < score[act_name("resid_mid", 0)][1] - 0.08
# 2. the layer-0 MLP makes the depth linear: its neurons, and the stream after it
assert score[act_name("post", 0)][0] > 0.97
assert score[act_name("resid_post", 0)][0] > score[act_name("resid_mid", 0)][0] + 0.05
# 3. and that is the trained model's doing: the untrained one falls well short there
assert selectivity[act_name("resid_post", 0)] > 0.15 and selectivity[act_name("post", 0)] > 0.05

# %% [markdown]
# So the depth is computed in two steps, and the pooled probes see both:
#
# - **layer-0 attention averages the brackets**: its output makes the fraction of `(` (depth /
#   position) linearly readable, R^2 near 1 right after it, while the depth itself is not yet;
# - **the layer-0 MLP multiplies by the position**: after it, the depth itself is linear.
#
# The untrained model's near-uniform attention also gets the fraction, but without a trained MLP
# its depth score stays low: the gap is what training added.
#
# ## The mechanism: an attention head that counts
#
# A head that attends equally to every position so far outputs the average of what it reads. Its
# pattern is the lower triangle of `1 / (q + 1)`. We measure each layer-0 head's distance from that.

# %%
_, cache = model.run_with_cache(tokens[:256], names_filter=[act_name("pattern", 0)])
pattern = np.asarray(cache["pattern", 0])  # [b, h, q, k]
n_pos = pattern.shape[-1]
uniform = np.tril(np.ones((n_pos, n_pos))) / np.arange(1, n_pos + 1)[:, None]
distance = np.abs(pattern - uniform).sum(-1)[:, :, 1:].mean(axis=(0, 2))  # [h]: mean L1 distance per row
print("layer-0 heads, mean L1 distance of a row from uniform (0 = uniform, 2 = disjoint):", np.round(distance, 3))
head = int(distance.argmin())
fig = plot_attention_patterns(pattern[0, head], task.decode(tokens[0]).split(), title=f"L0H{head}")
assert distance.min() < 0.3

# %% [markdown]
# ## Does the model *use* what the probe finds? Two directions, two answers
#
# A probe's weights `w` predict the depth; the smallest change of the activation that moves the
# probe's reading by `k` is `k * w / |w|^2`. If the model read the depth along `w`, adding that
# where the depth is 0 should raise P(`)`), which is exactly 0 there; removing the component along
# `w` should break the predictions. We also take a second direction, the **mass-mean direction**
# (Marks and Tegmark 2023): the average change of the activation per unit of depth, at a fixed
# position (`mass_mean_direction`). Both are fitted on the training strings at the stream between
# the layers, and tried on the test strings.

# %%
name = act_name("resid_pre", 1)
train_tokens = np.asarray(train.tokens)
train_depth = task.depth(train_tokens)
_, train_cache = model.run_with_cache(train_tokens, names_filter=[name])
acts = np.asarray(train_cache[name])[:, inner].reshape(-1, model.cfg.d_model)
labels = train_depth[:, inner].ravel().astype(np.float32)
ridge = fit_probe(acts, labels)
w_probe = ridge.directions
w_mass = mass_mean_direction(acts, labels, groups=np.tile(inner, len(train_tokens)))
mean_act = acts.mean(0)
print(f"ridge probe: held-out R^2 {ridge.score:.3f}, |w| {np.linalg.norm(w_probe):.2f}")
print(f"cosine between the ridge weights and the mass-mean direction: "
      f"{w_probe @ w_mass / np.linalg.norm(w_probe) / np.linalg.norm(w_mass):.2f}")  # fmt: skip


def p_close_with(fwd_hooks):
    return np.asarray(jax.nn.softmax(model.run_with_hooks(tokens, fwd_hooks), axis=-1)[..., 1])


def add(vector):
    return lambda resid, hook: resid + jnp.asarray(vector, resid.dtype)


def remove(direction):
    """Mean-ablate one direction: every activation gets the average component along it."""
    u = jnp.asarray(direction / np.linalg.norm(direction))
    mu = jnp.asarray(mean_act)
    return lambda resid, hook: resid - ((resid - mu) @ u)[..., None] * u


def fit_to_exact(p):
    t, q = exact[:, scored], p[:, scored]
    return 1 - ((q - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()


at_zero = (depth == 0) & (np.arange(25) > 0) & (np.arange(25) < 24)  # inside the string, depth 0
results = {}
for label, w in [("ridge probe", w_probe), ("mass-mean", w_mass)]:
    steer = w / (w @ w) if label == "ridge probe" else w  # "+1 depth" by each direction's own measure
    results[label] = {
        "steered": p_close_with([(name, add(2 * steer))])[at_zero].mean(),
        "ablated": fit_to_exact(p_close_with([(name, remove(w))])),
    }
    print(f"{label:12s}: P(')') at depth 0 {p_close[at_zero].mean():.3f} -> {results[label]['steered']:.3f} "
          f"after adding +2 depth; match to the exact probability {prob_r2:.3f} -> "
          f"{results[label]['ablated']:.3f} after removing the direction")  # fmt: skip

# %%
# The mass-mean direction is the one the model reads: moving along it raises P(")") where the depth
# is 0, and removing it breaks the predictions. The ridge probe's direction predicts the depth just
# as well, but the model ignores it.
assert results["mass-mean"]["steered"] > 0.2 and p_close[at_zero].mean() < 0.01
assert results["mass-mean"]["ablated"] < 0.6
assert results["ridge probe"]["steered"] < 0.05
assert results["ridge probe"]["ablated"] > 0.95

# %% [markdown]
# Why? Ridge regression finds *some* `w` with `w . x` ~ depth. Along directions where the
# activations barely vary, a tiny change moves such a read-out a lot, so the fitted `w` leans on
# small, consistent signals that the rest of the network does not read: `k * w / |w|^2` is a small
# nudge that moves the probe's reading and nothing else. The mass-mean direction is where the data
# actually move as the depth changes, the direction the next layers were trained to read.
#
# ## Where probes mislead: decodable is not used
#
# Much is linearly decodable from the final residual stream that the model has no use for. The
# current bracket, for example: the embedding put it there and it was never removed, so a probe
# reads it almost perfectly. But the best prediction depends only on the depth and the position
# (the strings are uniform: how the depth was reached does not matter), so once those are known
# the current bracket tells the model nothing more. We take its mass-mean direction *within
# strings of equal position and depth* (so that it is not the depth direction again) and remove it.

# %%
name = act_name("resid_post", 1)
_, train_cache = model.run_with_cache(train_tokens, names_filter=[name])
acts = np.asarray(train_cache[name])[:, inner].reshape(-1, model.cfg.d_model)
mean_act = acts.mean(0)
is_open = (train_tokens[:, inner] == task.OPEN).ravel().astype(np.float32)
same_place = np.tile(inner, len(train_tokens)) * 100 + train_depth[:, inner].ravel()  # position and depth
bracket_probe = fit_probe(acts, is_open)
bracket_direction = mass_mean_direction(acts, is_open, groups=same_place)
change = np.abs(p_close_with([(name, remove(bracket_direction))]) - p_close)[:, scored].mean()
print(f"the current bracket from the final stream: held-out R^2 {bracket_probe.score:.3f}; "
      f"removing its direction changes P(')') by {change:.4f} on average")  # fmt: skip
assert bracket_probe.score > 0.9 and change < 0.02

# %% [markdown]
# ## What we found
#
# - A probe per position said every layer "knows" the depth, and so did the untrained model: at a
#   fixed position the input's fraction of `(` already gives it away.
# - Pooled over positions, the probes trace the computation: layer-0 attention averages the
#   brackets (the fraction is linear after it), the layer-0 MLP turns the fraction into the depth.
# - The model reads the depth along its mass-mean direction: steering along it changes the
#   prediction as depth would, removing it breaks the prediction. The ridge probe's direction
#   predicts the depth as well and is ignored by the model.
# - The current bracket is decodable at the end (from the input itself) and unused.
#
# ## Retrain the model
#
# The checkpoint came from `minillm-train bracket_depth --out lessons/checkpoints/bracket_depth`
# (under a minute on a laptop CPU). Set `RETRAIN = True` to run the same recipe here; every cell
# above then works on your model if you point `GPT.load` at `checkpoints_retrained/bracket_depth`
# (`retrain` prints where the model is and how to load it).

# %%
RETRAIN = False
if RETRAIN:
    retrain("bracket_depth")
