# %% [markdown]
# # Lesson 2: Grokking, and the Fourier circuit of modular addition
#
# Train a one-layer transformer on a + b mod 113 with 30% of all pairs, and it first **memorises**
# its training pairs (perfect train accuracy, chance on the rest), then, long after, **generalises**
# to the pairs it never saw: it *groks*. Nanda, Chan, Lieberum, Smith and Steinhardt (*Progress
# measures for grokking via mechanistic interpretability*, ICLR 2023) read the algorithm it ends with
# off its weights. In their words it is a **Fourier multiplication algorithm**:
#
# 1. the embedding writes, for a handful of *key frequencies* k (w_k = 2πk/p), cos(w_k a), sin(w_k a)
#    and the same for b;
# 2. attention and the MLP multiply them (the ReLU makes the products) into cos(w_k(a+b)) and
#    sin(w_k(a+b)), by the angle-addition formulas;
# 3. the unembedding reads out the logit of each answer c as a sum over k of
#    cos(w_k(a+b−c)) = cos(w_k(a+b))cos(w_k c) + sin(w_k(a+b))sin(w_k c), which peaks exactly when
#    c = a+b mod p.
#
# We check each step on a model trained by `minillm-train modular_addition` (shipped in
# `checkpoints/modular_addition/`), assert what we see, and then watch the *progress measures* of the
# paper, logged during training, show that the circuit forms long before the test accuracy moves.
#
# **Model and data, as in the paper:** tokens `a b =` (`=` is id 113), answer read at the last position;
# 1 layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm; 30% of the 113² pairs for
# training, full batch, AdamW with weight decay 1.0 and betas (0.9, 0.98). **One change:** learning
# rate 8e-3 instead of 1e-3, which groks in several hundred steps instead of several thousand (about
# a minute on a laptop CPU instead of ten); the algorithm is the same (the paper's settings are
# `minillm-train modular_addition_paper`). The run stops 500 steps after the test accuracy first
# passes 99%, which leaves weight decay time to clean the circuit up.

# %%
import json

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT
from minillm import fourier as F
from minillm.lessons import checkpoint, retrain
from minillm.plots import plot_fourier_norms, plot_training_curves
from minillm.tasks import make_task

model = GPT.load(checkpoint("modular_addition/model.safetensors"))
metrics = [json.loads(line) for line in open(checkpoint("modular_addition/metrics.jsonl"))]
run = json.load(open(checkpoint("modular_addition/run.json")))
task = make_task("modular_arithmetic", p=113, op="add", frac_train=0.3)
p = task.p
print(model.cfg)
print("the split is seeded and stored with the run:", run["train_config"]["data_seed"])

# %% [markdown]
# ## Memorisation first, generalisation much later
#
# The losses and accuracies on the training pairs and on the held-out pairs, on log axes. Train
# accuracy reaches 100% within a hundred or so steps while test accuracy stays near chance (1/113);
# test accuracy only climbs much later.

# %%
plot_training_curves(metrics, log_x=True, title="a + b mod 113")
plt.show()
steps = np.array([r["step"] for r in metrics])
train_acc = np.array([r["train_acc"] for r in metrics])
test_acc = np.array([r["test_acc"] for r in metrics])
memorised = int(steps[np.argmax(train_acc > 0.99)])
generalised = int(steps[np.argmax(test_acc > 0.99)])
print(
    f"train accuracy > 99% at step {memorised} (test accuracy then {test_acc[steps == memorised][0]:.2f});",
    f"test accuracy > 99% at step {generalised}",
)

assert train_acc.max() > 0.99 and test_acc[-1] > 0.99
assert test_acc[steps == memorised][0] < 0.3, "when it has memorised, it has not generalised"
assert generalised >= 4 * memorised, "generalisation comes much later than memorisation"

# %% [markdown]
# ## The embedding in the Fourier basis
#
# A function on Z/113 can be written in the Fourier basis: a constant, then cos(w_k x) and sin(w_k x)
# for k = 1 .. 56. We transform each column of the token embedding W_E (rows 0..112) and measure the
# norm carried by each frequency. A trained model's embedding should use only a few frequencies; an
# untrained one spreads over all of them. The **key frequencies** are found from the weights: those
# carrying more than 4 times the mean squared norm per frequency (`minillm.fourier.key_frequencies`).

# %%
basis, names = F.fourier_basis(p)
norms = F.embedding_fourier_norms(model)  # [p // 2 + 1]: constant, then frequencies 1..56
key_freqs = F.key_frequencies(model)
key_share = F.norm_fraction(norms, key_freqs)
random_keys = F.key_frequencies(GPT(model.cfg, seed=1))
plot_fourier_norms(norms, key_freqs=key_freqs, title="norm of W_E in each frequency (key frequencies in red)")
plt.show()
print(
    f"key frequencies: {key_freqs}, carrying {key_share:.0%} of the embedding's (non-constant) norm;",
    f"an untrained model has {len(random_keys)}",
)

assert 2 <= len(key_freqs) <= 8 and key_share > 0.7
assert random_keys == []

# %% [markdown]
# ### Exercise 1: the Fourier basis
#
# Write `my_fourier_basis(p)` returning a `[p, p]` array whose rows are the constant, then cos(w_1 x),
# sin(w_1 x), cos(w_2 x), sin(w_2 x), ... for x = 0 .. p−1, each row normalised to unit length.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def my_fourier_basis(p):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_fourier_basis

check_fourier_basis(my_fourier_basis)


# %% tags=["solution"]
def my_fourier_basis(p):
    x = np.arange(p)
    rows = [np.ones(p)]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / p))
        if 2 * k != p:  # for even p, sin(pi x) is zero everywhere
            rows.append(np.sin(2 * np.pi * k * x / p))
    basis = np.stack(rows)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


check_fourier_basis(my_fourier_basis)

# %% [markdown]
# ### Exercise 2: find the key frequencies
#
# Write `my_key_frequencies(W_E, p)`: transform `W_E[:p]` into the Fourier basis, add up the squared
# norms of the cos and sin rows of each frequency k = 1 .. p//2, and return the frequencies above 4
# times the mean of those, strongest first.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def my_key_frequencies(W_E, p):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_key_frequencies

check_key_frequencies(my_key_frequencies)


# %% tags=["solution"]
def my_key_frequencies(W_E, p):
    coeffs = my_fourier_basis(p) @ np.asarray(W_E[:p])  # [p, d_model]
    sq = (coeffs**2).sum(1)
    per_freq = np.array([sq[2 * k - 1] + (sq[2 * k] if 2 * k < p else 0.0) for k in range(1, p // 2 + 1)])
    keys = [k for k in np.argsort(-per_freq) + 1 if per_freq[k - 1] > 4 * per_freq.mean()]
    return keys


check_key_frequencies(my_key_frequencies)

# %% [markdown]
# ## Neurons and attention are periodic in a and b
#
# Run the model on all 113² pairs and look at one MLP neuron's activation at the `=` position as a
# function of (a, b): a clean periodic pattern. For each neuron, the fraction of its variance
# explained by the terms of one frequency k (cos and sin of w_k a, of w_k b, and their products, which
# include cos(w_k(a+b))) tells how well one frequency explains it. The paper counts a neuron as
# explained above 0.85.

# %%
fit = F.neuron_frequency_fractions(model)  # best frequency and its fraction, per neuron
attention_fit = F.attention_frequency_fractions(model)
well = fit.frac > F.WELL_EXPLAINED
tokens = jnp.asarray(task.all_pairs().tokens)
_, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
post = np.asarray(cache["post", 0][:, -1]).reshape(p, p, -1)  # [a, b, neuron]

fig, axes = plt.subplots(1, 4, figsize=(13, 3), layout="constrained")
for ax, n in zip(axes, np.flatnonzero(well)[:4]):
    ax.imshow(post[:, :, n], cmap="viridis")
    ax.set_title(f"neuron {n}: k = {fit.freq[n]}, {fit.frac[n]:.2f}", fontsize=9)
    ax.set_xlabel("b")
    ax.set_ylabel("a")
plt.show()
clusters = {k: int((fit.freq[well] == k).sum()) for k in sorted(set(fit.freq[well].tolist()))}
plt.figure(figsize=(6, 2.8))
plt.bar([str(k) for k in clusters], list(clusters.values()))
plt.xlabel("best frequency")
plt.ylabel("neurons explained > 0.85")
plt.title("neurons cluster by frequency")
plt.show()
print(f"{well.mean():.0%} of neurons are explained by one frequency; by frequency: {clusters}")
print(
    "attention heads: best frequency",
    attention_fit.freq.tolist(),
    "fraction",
    [round(float(f), 2) for f in attention_fit.frac],
)

assert well.mean() > 0.6
assert sum(clusters.get(k, 0) for k in key_freqs) > 0.95 * well.sum(), "the neurons use the key frequencies"
assert attention_fit.frac.min() > 0.6 and set(attention_fit.freq.tolist()) <= set(key_freqs), "heads too"

# %% [markdown]
# ## The logits are a sum of cos(w_k(a + b − c))
#
# If the model computes what the algorithm says, its logit for answer c, as a function of (a, b),
# depends only on a + b, through cos(w_k(a+b)) and sin(w_k(a+b)) at the key frequencies. The paper
# tests this with two ablations of the logits over all pairs:
#
# - **restricted loss**: keep only those components (plus each answer's mean logit): the loss should
#   stay as low as the model's own;
# - **excluded loss**: remove them: on the *training* pairs, which the model could in principle have
#   memorised another way, the loss should become large (larger than guessing, log 113 ≈ 4.73).
#
# And a test on the input side: project the embedding onto the key frequencies (plus the constant)
# and the model should keep its accuracy; remove one key frequency and it should lose some of it.
# How much differs from frequency to frequency: the logit of the right answer is a *sum* over the key
# frequencies, each adding margin, so losing a strong one is fatal while losing a weak one costs only
# the pairs where the margin was thin. (Which frequencies are strong changes from run to run: an
# earlier version of this recipe, with learning rate 6e-3, needed every one of them.)

# %%
logits = F.pair_logits(model, task)  # [a, b, c]
full = F.full_loss(model, task)
restricted = F.restricted_loss(model, task, key_freqs)
excluded = F.excluded_loss(model, task, key_freqs, on="train")
c = 0  # with a = 0, b = 0..112 runs through every value of a + b
plt.figure(figsize=(6, 3))
plt.plot(range(p), np.asarray(logits[0, :, c]), ".", label=f"logit of answer c = {c}")
plt.plot(range(p), np.asarray(F.restricted_logits(logits, key_freqs)[0, :, c]), label="key frequencies only (+ mean)")
plt.xlabel("a + b (a = 0)")
plt.legend(fontsize=8)
plt.title("one answer's logit is a sum of cosines of a + b")
plt.show()
projected = F.projected_embedding_accuracy(model, task, key_freqs)
without = {k: F.projected_embedding_accuracy(model, task, [f for f in key_freqs if f != k]) for k in key_freqs}
print(f"loss on all pairs: model {full:.2e}, restricted {restricted:.2e}; excluded loss on train pairs {excluded:.2f}")
print(
    f"test accuracy with W_E projected on the key frequencies: {projected:.3f};",
    "without one of them:",
    {k: round(v, 3) for k, v in without.items()},
)

assert restricted < max(2 * full, 1e-3), "the key-frequency part of the logits does the whole job"
assert excluded > np.log(p), "and without it the training pairs are worse than a guess"
drops = {k: projected - acc for k, acc in without.items()}
assert projected > 0.97, "the key frequencies carry (nearly) all of the embedding's work"
assert min(drops.values()) > 0.02, "each key frequency adds something"
assert max(drops.values()) > 0.3, "and losing the strongest one breaks the model"

# %% [markdown]
# ### Exercise 3: excluded logits
#
# Write `my_excluded_logits(logits, freqs)` for a logit tensor `[p, p, c]` indexed `[a, b, c]`:
# remove, for each k in `freqs`, the components of each answer's logits (as a function of (a, b))
# along cos(w_k(a+b)) and sin(w_k(a+b)), and return the rest. Hint: those two functions of (a, b),
# normalised, are orthogonal to each other and to every other frequency's, so you can subtract the
# projection onto each in turn.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def my_excluded_logits(logits, freqs):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_excluded_logits

check_excluded_logits(my_excluded_logits)


# %% tags=["solution"]
def my_excluded_logits(logits, freqs):
    p = logits.shape[0]
    s = (np.arange(p)[:, None] + np.arange(p)[None, :]) % p  # a + b
    out = np.asarray(logits, np.float64)
    for k in freqs:
        for wave in (np.cos(2 * np.pi * k * s / p), np.sin(2 * np.pi * k * s / p)):
            direction = wave / np.linalg.norm(wave)  # [p, p]
            out = out - np.einsum("ab,abc->c", direction, out)[None, None, :] * direction[:, :, None]
    return out


check_excluded_logits(my_excluded_logits)

# %% [markdown]
# ## Progress measures: the circuit forms before the test accuracy moves
#
# The training run logged, every 50 steps, the paper's progress measures (`minillm.fourier.
# grokking_metrics`, passed to the training loop as a metric callback): restricted loss and excluded
# loss with the key frequencies of that moment, the sum of squared weights, and the Gini coefficient
# of the embedding's Fourier norms (0: spread over all frequencies; near 1: a few). They show the
# paper's three phases:
#
# 1. **memorisation**: train loss falls; excluded loss falls with it (the model does not use
#    the key frequencies yet) and the weights grow;
# 2. **circuit formation**: excluded loss *rises* on the very pairs the model already fits: the
#    model now relies on the Fourier circuit, while the test loss barely moves;
# 3. **cleanup**: weight decay removes the memorising components: the sum of squared weights falls,
#    the embedding becomes sparse in frequency (Gini up), and the test loss collapses.

# %%
keys = ["train_loss", "test_loss", "restricted_loss", "excluded_loss"]
fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.5))
for k in keys:
    ax1.plot(steps, [r[k] for r in metrics], label=k)
ax1.set_yscale("log")
ax1.set_xlabel("step")
ax1.legend(fontsize=8)
ax1.set_title("losses")
ax2.plot(steps, [r["sum_sq_weights"] for r in metrics])
ax2.set_title("sum of squared weights")
ax2.set_xlabel("step")
ax3.plot(steps, [r["embed_fourier_gini"] for r in metrics])
ax3.set_title("Gini of W_E's Fourier norms")
ax3.set_xlabel("step")
for ax in (ax1, ax2, ax3):
    ax.axvline(memorised, color="grey", ls=":")
    ax.axvline(generalised, color="grey", ls="--")
plt.show()

excluded_t = np.array([r["excluded_loss"] for r in metrics])
train_loss = np.array([r["train_loss"] for r in metrics])
weights_t = np.array([r["sum_sq_weights"] for r in metrics])
gini_t = np.array([r["embed_fourier_gini"] for r in metrics])
circuit = int(steps[np.argmax((excluded_t > 1.0) & (steps > memorised))])
half_test = int(steps[np.argmax(test_acc > 0.5)])
print(
    f"memorised at {memorised}; excluded loss above 1 nat (circuit in use) from step {circuit};",
    f"test accuracy above 50% at {half_test}, above 99% at {generalised}",
)
print(
    f"sum of squared weights: peak {weights_t.max():.0f} at step {steps[weights_t.argmax()]}, end {weights_t[-1]:.0f};",
    f"Gini {gini_t[steps == memorised][0]:.2f} at memorisation, {gini_t[-1]:.2f} at the end",
)

assert excluded_t[steps == memorised][0] < 0.5, "phase 1: memorising does not use the key frequencies"
assert memorised < circuit < half_test, "phase 2: the circuit is in use before the test accuracy rises"
assert test_acc[steps == circuit][0] < 0.5
assert weights_t[-1] < 0.8 * weights_t.max(), "phase 3: weight decay cleans up"
assert gini_t[-1] > gini_t[steps == memorised][0] + 0.2, "and the embedding becomes sparse in frequency"

# %% [markdown]
# ## What we showed
#
# - The model memorises its training pairs long before it generalises to the rest.
# - Its embedding lives on a few key frequencies, found from the weights alone; its neurons and heads
#   are periodic in a and b, each neuron explained by one key frequency.
# - Its logits are a sum of cos(w_k(a+b−c)) over the key frequencies: keeping only that part keeps the
#   loss, removing it destroys the fit even on the training pairs; projecting the embedding on the key
#   frequencies keeps the accuracy, and each frequency adds to it (the strongest are indispensable).
# - The progress measures show the circuit forming and being cleaned up while the test accuracy
#   still looks like memorisation.
#
# **Retrain** (about a minute and a half on a 2-core CPU) by setting `RETRAIN = True` and pointing
# `GPT.load` above at `checkpoints_retrained/modular_addition` (`retrain` prints where the model is
# and how to load it).

# %%
RETRAIN = False
if RETRAIN:
    retrain("modular_addition")
