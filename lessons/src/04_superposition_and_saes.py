# %% [markdown]
# # Lesson 4: Superposition and sparse autoencoders
#
# What does a model represent? Its neurons are the obvious units to look at, but models often store
# **more features than they have dimensions**, each a direction, overlapping: **superposition**
# (Elhage et al. 2022, *Toy Models of Superposition*). A **sparse autoencoder** (SAE) is the field's
# main tool to undo it: a wide dictionary, trained to reconstruct a model's activations from a few
# active features at a time (Bricken et al. 2023, *Towards Monosemanticity*; Gao et al. 2024, TopK
# SAEs). On a language model nobody knows the true features, so an SAE's features can only be looked
# at. On a toy model we do know them, and can check.
#
# 1. Superposition in the smallest model that has it: five features in two dimensions.
# 2. An SAE on lesson 2's grokked modular-addition model, whose MLP computes with a few known
#    frequencies, checked against that ground truth and against an untrained control.
#
# Runs in about two minutes on a laptop CPU: the toy models and the SAEs train here.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from minillm import GPT
from minillm import fourier as F
from minillm.lessons import checkpoint
from minillm.sae import evaluate_sae, gather_activations, spliced_loss, train_sae
from minillm.tasks import make_task

# %% [markdown]
# ## Part 1: a toy model of superposition
#
# `n` features, each active with probability `p` (then uniform in [0, 1]), must pass through `m < n`
# dimensions: `h = W x` with `W` of shape `[m, n]`, and come back out as `x' = ReLU(W^T h + b)`. The
# loss weighs each feature's reconstruction error by its importance, `0.9^i`. Each column of `W` is
# where one feature lives in the 2-D hidden space.
#
# ### Exercise 1: the model and its loss
#
# Write both functions in the next cell, then run the check below it: it says `correct` or what is
# wrong. If you are stuck, open the collapsed solution after the check (running it replaces your
# functions).


# %%
def toy_model(W, b, x):
    """W [m, n], b [n], x [batch, n] -> x' [batch, n]."""
    raise NotImplementedError("your code here")


def importance_weighted_loss(x, x_hat, importance):
    """Mean over the batch of sum_i importance_i * (x_i - x_hat_i)^2."""
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_importance_weighted_loss, check_superposition_model

check_superposition_model(toy_model)
check_importance_weighted_loss(importance_weighted_loss)


# %% tags=["solution"]
def toy_model(W, b, x):
    return jax.nn.relu(x @ W.T @ W + b)


def importance_weighted_loss(x, x_hat, importance):
    return (importance * (x - x_hat) ** 2).sum(-1).mean()


check_superposition_model(toy_model)
check_importance_weighted_loss(importance_weighted_loss)

# %% [markdown]
# Now train 8 independent copies (`jax.vmap` over instances) at three feature probabilities: dense
# (every feature always active), and sparse (active 10% and 3% of the time).

# %%
n_features, m_dims, instances = 5, 2, 8
importance = 0.9 ** jnp.arange(n_features)


def train_toy(p, steps=3000, lr=1e-2, batch=1024, seed=0):
    params = {"W": 0.5 * jax.random.normal(jax.random.key(seed), (instances, m_dims, n_features)),
              "b": jnp.zeros((instances, n_features))}  # fmt: skip
    optimizer = optax.adam(lr)

    def loss(params, x):  # x [instances, batch, n]
        x_hat = jax.vmap(toy_model)(params["W"], params["b"], x)
        return jax.vmap(importance_weighted_loss, in_axes=(0, 0, None))(x, x_hat, importance).sum()

    def step(carry, key):
        params, state = carry
        k1, k2 = jax.random.split(key)
        shape = (instances, batch, n_features)
        x = jax.random.uniform(k1, shape) * (jax.random.uniform(k2, shape) < p)
        grads = jax.grad(loss)(params, x)
        updates, state = optimizer.update(grads, state)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda: jax.lax.scan(step, (params, optimizer.init(params)),
                                                  jax.random.split(jax.random.key(seed + 1), steps)))()  # fmt: skip
    return np.asarray(params["W"])


toy = {p: train_toy(p) for p in (1.0, 0.1, 0.03)}

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for ax, (p, W) in zip(axes, toy.items()):
    for i in range(n_features):
        ax.plot([0, W[0, 0, i]], [0, W[0, 1, i]], "-o", color=f"C{i}", label=f"feature {i}")
    ax.set(title=f"p = {p}", xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), aspect="equal")
axes[0].legend(fontsize=7)
fig.suptitle("where each feature lives in the 2-D hidden space (instance 0)")
fig.tight_layout()

# %% [markdown]
# A feature is *represented* when its column of `W` has norm near 1 (norm 0: the model gave up on
# it). Dense features cannot share: the model keeps the 2 most important, orthogonal, and drops
# the rest. Sparse features rarely collide, so the model packs all 5 into 2 dimensions, as a
# regular **pentagon** (72 degrees apart), accepting some interference for the rare collisions.


# %%
def represented(W):
    return (np.linalg.norm(W, axis=1) > 0.5).sum(-1)  # [instances]


def angle_gaps(W):
    """Angles between neighbouring feature directions, in degrees, per instance [instances, n]."""
    angles = np.sort(np.degrees(np.arctan2(W[:, 1], W[:, 0])) % 360, axis=-1)
    return np.diff(np.concatenate([angles, angles[:, :1] + 360], axis=-1), axis=-1)


for p, W in toy.items():
    print(f"p = {p}: features represented per instance {represented(W)}")
pentagons = [i for i in range(instances) if represented(toy[0.03])[i] == 5]
print("angle gaps at p = 0.03:", np.round(angle_gaps(toy[0.03][pentagons]), 0)[:3])
assert (represented(toy[1.0]) == 2).all()  # dense: only m features
assert (represented(toy[0.03]) == 5).mean() >= 0.75  # sparse: all n, in most instances
assert np.abs(angle_gaps(toy[0.03][pentagons]) - 72).max() < 10  # ... as a pentagon

# %% [markdown]
# ## Part 2: an SAE on a model whose features we know
#
# Lesson 2's model adds `a + b mod 113` by rotating through a few **key frequencies** `k`: its MLP
# neurons at `=` are functions of `(a, b)` built from `cos`/`sin` of `w_k a`, `w_k b` and
# `w_k (a + b)`. That is a ground truth for the MLP's features: each should be explained by one key
# frequency. We train a TopK SAE (d_sae 256, k 16) on the MLP's 512 neurons at `=` over all 12,769
# pairs, and the same SAE on a model of the same shape with its untrained weights: the control.

# %%
task = make_task("modular_arithmetic", p=113, op="add", frac_train=0.3)
model = GPT.load(checkpoint("modular_addition/model.safetensors"))
pairs = task.all_pairs()
key_freqs = F.key_frequencies(model)
name = "blocks.0.mlp.hook_post"
print("key frequencies (lesson 2):", key_freqs)

acts = gather_activations(model, pairs.tokens, name, positions=[-1])  # [12769, 512]
sae = train_sae(acts, d_sae=256, k=16, steps=1000, seed=0)
control_acts = gather_activations(GPT(model.cfg), pairs.tokens, name, positions=[-1])
control_sae = train_sae(control_acts, d_sae=256, k=16, steps=1000, seed=0)

# %% [markdown]
# ### How good is it? The numbers the papers report
#
# Variance explained, the mean number of active features (L0), the fraction of features that never
# fire (dead), and the **loss recovered**: the model's loss with the SAE's reconstruction spliced in
# place of the neurons, between its own loss (1) and the loss with the neurons zeroed (0).

# %%
quality = evaluate_sae(sae, acts)
spliced = spliced_loss(model, sae, pairs, name, positions=[-1])
print({k: round(v, 4) for k, v in quality.items()})
print({k: round(v, 6) for k, v in spliced.items()})
assert quality["variance_explained"] > 0.97 and quality["mean_l0"] <= 17
assert spliced["fraction_recovered"] > 0.99 and spliced["zero_ablation_loss"] > 3.0

# %% [markdown]
# Many features are dead: the neurons span few directions (lesson 2 found that 3 frequencies carry
# most of the embedding), so the SAE needs fewer than 256 features to reconstruct them.
#
# ### Are its features the model's frequencies?
#
# For each live feature we take its activation over all `(a, b)` as a 113 x 113 function and ask
# which frequency explains most of its variance (`fourier.fit_frequencies`, lesson 2's measure for
# neurons), and how much.


# %%
def frequency_fit(sae, acts):
    features = np.asarray(sae.encode(acts))  # [p^2, d_sae]
    live = (features > 0).any(0)
    return F.fit_frequencies(features[:, live].reshape(113, 113, -1)), features, live


fit, features, live = frequency_fit(sae, acts)
control_fit, _, _ = frequency_fit(control_sae, control_acts)
neuron_fit = F.fit_frequencies(acts.reshape(113, 113, -1)[:, :, np.asarray(acts).std(0) > 0])

key_share = np.isin(fit.freq, key_freqs).mean()
control_share = np.isin(control_fit.freq, key_freqs).mean()
coverage = {k: int((fit.freq == k).sum()) for k in key_freqs}
print(f"live features: {live.sum()} of {sae.d_sae}")
print(f"best frequency is a key frequency: {key_share:.0%} of features (untrained control {control_share:.0%}; "
      f"{len(key_freqs)} of {113 // 2} frequencies are key)")  # fmt: skip
print("features per key frequency:", coverage)
print(f"median fraction of variance its best frequency explains: features {np.median(fit.frac):.2f}, "
      f"neurons {np.median(neuron_fit.frac):.2f}")  # fmt: skip
assert key_share > 0.6 and control_share < 0.2
assert min(coverage.values()) >= 10
assert np.median(fit.frac) < 0.5 < np.median(neuron_fit.frac)

# %% [markdown]
# The SAE's features are the model's frequencies, by the measure that matters here: almost all of
# them belong to a key frequency (against a few percent for the untrained control), and every key
# frequency owns many features. But they are **not** the model's units. The neurons are each
# mostly one frequency; a typical SAE feature is not, because it is **localised in phase**: it fires
# only when one frequency's angle falls in a small arc (on the `(a, b)` grid, a lattice of spots),
# and the features of a frequency tile its circle between them. That is a sparse code for the same
# computation, which reconstructs well with 16 active features out of 256, not the model's own
# decomposition. Look at a few:

# %%
order = np.argsort(-fit.frac)
fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
for ax, j in zip(axes, [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]]):
    ax.imshow(features[:, np.flatnonzero(live)[j]].reshape(113, 113), cmap="viridis")
    ax.set(title=f"frequency {fit.freq[j]}: {fit.frac[j]:.0%} of variance", xlabel="b", ylabel="a")
fig.suptitle("four SAE features over all (a, b)")
fig.tight_layout()

# %% [markdown]
# ### Do the features do what their frequency says? A causal check
#
# If the features of frequency `k` carry the model's frequency-`k` computation, removing them (the
# SAE spliced in, with those features zeroed) should remove the `cos`/`sin(w_k (a + b))` part of
# the logits (lesson 2's `key_frequency_logits`) and leave the other key frequencies' parts alone.


# %%
def logits_without(features_to_zero):
    keep = jnp.ones(sae.d_sae).at[jnp.asarray(features_to_zero, int)].set(0.0)

    def hook(act, hook):
        x = act[:, -1]
        return act.at[:, -1].set(sae.decode(sae.encode(x) * keep).astype(act.dtype))

    return model.run_with_hooks(pairs.tokens, [(name, hook)])[:, -1].reshape(113, 113, -1)


def frequency_parts(logits):
    return np.array([float(jnp.linalg.norm(F.key_frequency_logits(logits, [k]))) for k in key_freqs])


base = frequency_parts(logits_without([]))
live_ids = np.flatnonzero(live)
for k in key_freqs:
    after = frequency_parts(logits_without(live_ids[fit.freq == k]))
    print(f"zero the {coverage[k]} features of frequency {k}: the logits' parts at {key_freqs} keep "
          f"{np.round(after / base, 2)}")  # fmt: skip
    own = key_freqs.index(k)
    assert after[own] / base[own] < 0.5  # its own frequency mostly gone
    assert np.delete(after / base, own).min() > 0.7  # the others mostly kept

# %% [markdown]
# ## What we found
#
# - Five sparse features live in two dimensions as a pentagon; dense ones do not share.
# - An SAE reconstructs the grokked model's MLP almost perfectly with 16 of 256 features, and
#   splicing it in costs next to nothing of the loss.
# - Checked against the known algorithm, its features belong to the model's key frequencies (the
#   untrained control's do not), every key frequency owns many of them, and removing one
#   frequency's features removes that frequency from the logits.
# - Yet they are localised in phase, not the model's single-frequency neurons: an SAE gives a sparse
#   basis that reconstructs well, not automatically the model's own units.
