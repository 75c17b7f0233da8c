# %% [markdown]
# # Lesson 5: Do all models learn the same circuit? Seeds, universality, the clock and the pizza
#
# An interpretability result is worth more if it holds beyond one model. Train the same
# architecture on the same data from another random seed: does it learn the same algorithm? Change
# the architecture a little: does it still? This is the question of **universality**. Toy models
# answer it cleanly, because we can train many of them and we know what to look for.
#
# Two papers asked it of modular addition, the task of lesson 2:
#
# - Chughtai, Chan and Nanda 2023 ("A Toy Model of Universality") found that every seed learns a
#   Fourier algorithm, but **which key frequencies** it uses differs from seed to seed.
# - Zhong, Liu, Tegmark and Andreas 2023 ("The Clock and the Pizza") found that the algorithm
#   itself can differ. Models with ordinary attention mostly learn lesson 2's **clock**, which
#   multiplies two rotations. Models whose attention is constant learn a different algorithm, the
#   **pizza**.
#
# We train 8 seeds of each family *as one vmapped program*, which no PyTorch tool does, then compare
# them with the Fourier tools of lesson 2 run on all seeds at once. Zhong et al.'s task: a + b mod
# 59 with 80% of the pairs for training, on lesson 2's one-layer model. The recipes are
# `minillm-train clock` and `minillm-train pizza`, and the checkpoints are shipped in
# `checkpoints/clock/` and `checkpoints/pizza/`. The notebook runs in about a minute on a CPU.

# %%
import json

import jax
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT, map_seeds, stack_models
from minillm import fourier as F
from minillm.clock_pizza import by_sum_and_difference, correct_logits, distance_irrelevance, gradient_symmetricity
from minillm.lessons import checkpoint, retrain
from minillm.plots import plot_training_curves
from minillm.tasks import make_task

task = make_task("modular_arithmetic", p=59, op="add", frac_train=0.8)
p = task.p
clock_models = GPT.load_seeds(checkpoint("clock"))  # {seed: GPT}
pizza_models = GPT.load_seeds(checkpoint("pizza"))
clock = stack_models(list(clock_models.values()))  # one model whose every weight has a leading [8] axis
pizza = stack_models(list(pizza_models.values()))
seeds = list(clock_models)
print(f"seeds {seeds}; the stacked W_E has shape {clock.embed.W_E[...].shape}")
print("the pizza models' attention rate:", pizza_models[0].cfg.attention_rate)

# %% [markdown]
# ## Eight seeds, one program
#
# `train(..., seeds=[0, ..., 7])` (`--seeds 8`, the default of these recipes) stacks the 8 models
# into one and `jax.vmap`s the training step over them. Each seed has its own initialisation (the
# data is the same full batch), and every step of all 8 is one compiled call. On a 2-core CPU this
# saves little (measured: 8 seeds together take about as long as 8 in turn), because one small
# model already fills the cores. On a GPU, which one small model leaves mostly idle, the 8 can run
# side by side.
# Here are the curves of all 8, logged during training:

# %%
clock_metrics = [json.loads(line) for line in open(checkpoint("clock/metrics.jsonl"))]
pizza_metrics = [json.loads(line) for line in open(checkpoint("pizza/metrics.jsonl"))]
plot_training_curves(clock_metrics, title="clock: 8 seeds")
plt.show()

# %% [markdown]
# `map_seeds(fn, stack, ...)` runs a function of one model on every model of the stack, as one
# vmapped call. Here it gives the logits of every seed on all 59² pairs. Every seed of both families
# should get (almost) every pair right, the 20% it never saw included.

# %%
clock_logits = map_seeds(F.pair_logits, clock, task)  # [8, p, p, p]: seed, a, b, answer
pizza_logits = map_seeds(F.pair_logits, pizza, task)
answers = (np.arange(p)[:, None] + np.arange(p)[None, :]) % p
clock_acc = (np.asarray(clock_logits.argmax(-1)) == answers).mean((1, 2))
pizza_acc = (np.asarray(pizza_logits.argmax(-1)) == answers).mean((1, 2))
print("accuracy on all pairs, clock:", clock_acc.round(4))
print("accuracy on all pairs, pizza:", pizza_acc.round(4))
assert clock_acc.min() > 0.99 and pizza_acc.min() > 0.99

# %% [markdown]
# ## Different seeds, different frequencies
#
# Lesson 2 read the key frequencies off the embedding: the few frequencies k at which the Fourier
# transform of W_E over the number tokens is large. First an exercise: compute the per-frequency
# norms of *every seed's* embedding in one call.
#
# ### Exercise: Fourier norms of a stack of seeds
#
# Write `stacked_frequency_norms(W_E_stack, p)`. W_E_stack has shape [n_seeds, d_vocab, d_model]
# and the result has shape [n_seeds, p//2 + 1]: for each seed, the norm of W_E[:p] at each frequency
# (index 0 the constant), as `fourier.frequency_norms(W_E[:p], p)` gives for one seed. Use `jax.vmap`
# rather than a Python loop.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def stacked_frequency_norms(W_E_stack, p):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_stacked_frequency_norms

check_stacked_frequency_norms(stacked_frequency_norms)


# %% tags=["solution"]
def stacked_frequency_norms(W_E_stack, p):
    return jax.vmap(lambda W_E: F.frequency_norms(W_E[:p], p))(W_E_stack)


check_stacked_frequency_norms(stacked_frequency_norms)

# %% [markdown]
# Your function (or the solution, whichever ran last) on the 8 seeds of each family:

# %%
clock_norms = np.asarray(stacked_frequency_norms(clock.embed.W_E[...], p))  # [8, 30]
pizza_norms = np.asarray(stacked_frequency_norms(pizza.embed.W_E[...], p))
clock_keys = [sorted(F.select_key_frequencies(norms)) for norms in clock_norms]
pizza_keys = [sorted(F.select_key_frequencies(norms)) for norms in pizza_norms]
for seed, keys in zip(seeds, clock_keys):
    print(f"clock seed {seed}: key frequencies {keys}")
for seed, keys in zip(seeds, pizza_keys):
    print(f"pizza seed {seed}: key frequencies {keys}")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, norms, keys, name in [(axes[0], clock_norms, clock_keys, "clock"), (axes[1], pizza_norms, pizza_keys, "pizza")]:
    image = ax.imshow(norms[:, 1:], aspect="auto", cmap="viridis")
    for row, ks in enumerate(keys):
        ax.scatter([k - 1 for k in ks], [row] * len(ks), marker="x", color="red", s=20)
    ax.set(xlabel="frequency k", ylabel="seed", title=f"{name}: Fourier norms of W_E (x: key frequencies)")
    ax.set_xticks(range(0, p // 2, 5), range(1, p // 2 + 1, 5))
    fig.colorbar(image, ax=ax)
fig.tight_layout()
plt.show()

distinct = {tuple(k) for k in clock_keys}
print(f"{len(distinct)} distinct sets of key frequencies among the 8 clock seeds")
assert all(1 <= len(k) <= 6 for k in clock_keys + pizza_keys), "every seed uses a handful of frequencies"
assert len(distinct) >= 4, "the seeds do not agree on which frequencies to use"

# %% [markdown]
# Every seed uses a handful of frequencies, and different seeds use different ones. That is
# Chughtai et al.'s finding: the *algorithm* is universal, and the *frequencies* are an accident.
#
# An accident of what? Seed s of the pizza family starts from exactly the same weights as seed s
# of the clock family, because only the attention differs and attention has no weights of its
# own to draw. Compare the two lists above seed by seed.

# %%
same_seed = [len(set(c) & set(z)) > 0 for c, z in zip(clock_keys, pizza_keys)]
pairs = [(i, j) for i in range(8) for j in range(8) if i < j]
other_seeds = np.mean([len(set(clock_keys[i]) & set(clock_keys[j])) > 0 for i, j in pairs])
print(f"same seed, clock and pizza share a key frequency: {sum(same_seed)} of 8 seeds")
print(f"two different clock seeds share one: {other_seeds:.0%} of the {len(pairs)} pairs")
assert all(same_seed) and other_seeds < 0.5

# %% [markdown]
# The same seed picks overlapping frequencies in both families, while different seeds mostly do
# not. So the frequencies are set by the random initial embedding, long before either algorithm
# forms, and the architecture does not choose them.
#
# Is it the same algorithm, though? Lesson 2's progress measures ask how much of each seed's
# performance comes from its key frequencies. The **restricted loss** keeps only the part of the
# logits that is cos or sin of w_k(a + b) for the seed's key frequencies, and should stay low. The
# **excluded loss** removes exactly that part, and should go up to chance or worse.
# As a control, each clock seed is also restricted to the *next* seed's frequencies.


# %%
def restricted_and_excluded(logits, keys):
    logits = np.asarray(logits)
    return (
        F.loss_on_pairs(F.restricted_logits(logits, keys)),
        F.loss_on_pairs(F.excluded_logits(logits, keys)),
    )


clock_losses = np.array([restricted_and_excluded(l, k) for l, k in zip(clock_logits, clock_keys)])
pizza_losses = np.array([restricted_and_excluded(l, k) for l, k in zip(pizza_logits, pizza_keys)])
borrowed = np.array(
    [restricted_and_excluded(clock_logits[i], clock_keys[(i + 1) % 8])[0] for i in range(8)]
)  # restricted to another seed's frequencies
print("clock restricted loss (own keys):  ", clock_losses[:, 0].round(4))
print("clock restricted loss (next seed's):", borrowed.round(2))
print("clock excluded loss:               ", clock_losses[:, 1].round(2))
print("pizza restricted / excluded loss:  ", pizza_losses[:, 0].round(4), pizza_losses[:, 1].round(2))
print(f"chance: log {p} = {np.log(p):.2f}")
assert clock_losses[:, 0].max() < 0.1 and pizza_losses[:, 0].max() < 0.1
assert clock_losses[:, 1].min() > np.log(p) and pizza_losses[:, 1].min() > np.log(p)
differs = [clock_keys[i] != clock_keys[(i + 1) % 8] for i in range(8)]
assert all(borrowed[i] > 1.0 for i in range(8) if differs[i]), "another seed's frequencies do not work"

# %% [markdown]
# For every seed of both families, the key frequencies of a + b carry everything: restricted to
# them the loss stays near zero, and without them it is worse than chance. Another seed's
# frequencies do not work. So within the clock family the seeds agree on the algorithm and differ
# only in the frequencies.
#
# But notice that the pizzas pass the same test. These measures only ask whether the answer comes
# from waves in a + b, and both algorithms produce waves in a + b. To tell the algorithms apart we
# need to look at how the two inputs are combined.
#
# ## The clock and the pizza
#
# Both algorithms place each number on circles, one per key frequency: the point
# (cos w_k a, sin w_k a).
#
# - The **clock** *rotates*: it multiplies the two points, as complex numbers, into the point of
#   a + b, and reads the answer off that angle. The logit of the right answer is the same for every
#   pair with the same sum. It does not care how far apart a and b are.
# - The **pizza** *averages*: it adds the two points. Their midpoint lies in the direction of
#   (a + b)/2, and its length is |cos(w_k (a − b)/2)|, shorter when a and b are far apart on the
#   circle. Reading the answer off the midpoint's direction is right, but the margin depends on
#   a − b.
#
# Zhong et al. turned this into two numbers:
#
# - **distance irrelevance**: how little the right logit depends on a − b (near 1 for a clock);
# - **gradient symmetricity**: how alike the gradients with respect to a's and b's embeddings are
#   (near 1 for a pizza, which only ever sees their sum).
#
# First the numbers, both for all 16 models, each family in one vmapped call, and then the picture:
# the right answer's logit of a typical seed of each family (the one with the median distance
# irrelevance), arranged by a + b (rows) and a − b (columns). A clock's shows no pattern in a − b
# (what varies is small and scattered); a pizza's shows vertical stripes: it depends on a − b.

# %%
families = {"clock": clock, "pizza": pizza}
di = {name: np.asarray(map_seeds(distance_irrelevance, m, task)) for name, m in families.items()}
gs = {name: np.asarray(map_seeds(gradient_symmetricity, m, task)) for name, m in families.items()}
for name in families:
    print(f"{name}: distance irrelevance {di[name].round(3)}")
    print(f"{name}: gradient symmetricity {gs[name].round(3)}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (name, models) in zip(axes, [("clock", clock_models), ("pizza", pizza_models)]):
    typical = seeds[int(np.argsort(di[name])[len(seeds) // 2])]
    table = np.asarray(by_sum_and_difference(correct_logits(models[typical], task)))
    image = ax.imshow(table, aspect="auto", cmap="viridis")
    ax.set(xlabel="a - b (mod p)", ylabel="a + b (mod p)")
    ax.set_title(f"{name}, seed {typical}: the right logit (DI {di[name][seeds.index(typical)]:.2f})", fontsize=9)
    fig.colorbar(image, ax=ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise: distance irrelevance
#
# Write `my_distance_irrelevance(correct)`. `correct` is the right answer's logit at every pair,
# [p, p] indexed [a, b]. Arrange it by s = a + b and d = a − b (mod p). For each d, take the
# standard deviation over s, then average over d. Divide by the standard deviation over all
# pairs. Use population standard deviations, NumPy's default.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def my_distance_irrelevance(correct):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_distance_irrelevance

check_distance_irrelevance(my_distance_irrelevance)


# %% tags=["solution"]
def my_distance_irrelevance(correct):
    correct = np.asarray(correct)
    p = correct.shape[0]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    table = np.zeros_like(correct)
    table[(a + b) % p, (a - b) % p] = correct  # [s, d]
    return table.std(axis=0).mean() / table.std()


check_distance_irrelevance(my_distance_irrelevance)

# %% [markdown]
# Both diagnostics, one dot per seed:

# %%
fig, ax = plt.subplots(figsize=(5, 4))
for name, color in [("clock", "C0"), ("pizza", "C3")]:
    ax.scatter(di[name], gs[name], color=color, label=name, s=40)
ax.set(xlabel="distance irrelevance", ylabel="gradient symmetricity", xlim=(0, 1), ylim=(-0.1, 1.05))
ax.set_title("each dot one seed")
ax.legend()
plt.show()

GS_CUT = 0.9
clock_di, pizza_di = di["clock"], di["pizza"]
print(f"mean distance irrelevance: clock {clock_di.mean():.2f}, pizza {pizza_di.mean():.2f}")
print(
    f"most pizza-like clock: seed {seeds[clock_di.argmin()]} ({clock_di.min():.2f}); "
    f"most clock-like pizza: seed {seeds[pizza_di.argmax()]} ({pizza_di.max():.2f})"
)
assert gs["clock"].max() < GS_CUT < gs["pizza"].min(), "gradient symmetricity separates the families"
assert clock_di.mean() - pizza_di.mean() > 0.15, "on average the clocks' right logit ignores a - b, the pizzas' not"
assert np.median(clock_di) > 0.7 and np.median(pizza_di) < 0.65

# %% [markdown]
# Gradient symmetricity splits the families cleanly. The clocks are low, because each input
# multiplies the other. The pizzas are at exactly 1.
#
# That 1 comes with a caution. Here the answer is read at the `=` token, and with constant
# attention `=` sees a and b only through the sum of their embeddings. So the two gradients are
# equal *by construction*, whatever the weights. In Zhong et al.'s models the answer is read at b,
# whose own embedding also enters directly, and they measure about 0.99. Here gradient
# symmetricity tells the architectures apart, not necessarily the algorithms.
#
# Distance irrelevance reads the algorithm off the behaviour, and it tells a subtler story. On
# average the clocks' right logit ignores a − b and the pizzas' does not. But the families
# overlap: some clock seeds are more pizza-like than some pizza seeds. Zhong et al. saw the same
# spread (their pizzas range from 0.17 to 0.74) and found mixtures of both algorithms in one
# model. The architecture tilts the outcome, and the seed decides the rest. That is the honest
# answer to the universality question here: the family is a strong tendency, not a law.
#
# ## What we showed
#
# - 8 seeds of each family train as one vmapped program, every one of them groks, and the Fourier
#   tools run on all of them in one call each (`map_seeds`).
# - Different seeds choose different key frequencies (Chughtai et al.). Within each seed those
#   frequencies carry the whole answer, and another seed's do not: the same algorithm with
#   different parameters.
# - A small change to the architecture, constant attention, tilts the models towards another
#   algorithm, the pizza (Zhong et al.). Lesson 2's progress measures cannot tell it from the
#   clock. Gradient symmetricity separates the two families completely, but by construction here.
#   Distance irrelevance separates them on average, and single seeds cross over.
#
# So "the model learns the Fourier multiplication algorithm" is true of *these* models trained
# *this* way, not of modular-addition models in general. Zhong et al. also found that between the
# two extremes, at intermediate attention rates, models can mix both algorithms
# (`GPTConfig(attention_rate=0.5)`).
#
# **Retrain the models yourself** by setting `RETRAIN = True`. Each family takes about 25 minutes
# on a 2-core CPU. Then point `GPT.load_seeds` at the `checkpoints_retrained` directories
# (`retrain` prints where the models are and how to load them).

# %%
RETRAIN = False
if RETRAIN:
    for recipe in ("clock", "pizza"):
        retrain(recipe)
