# %% [markdown]
# # Lesson 1: Induction heads, from training to proof
#
# A language model that has seen "... Harry Potter ..." predicts "Potter" the next time it sees
# "Harry". The mechanism behind this in-context copying is a two-head circuit (Elhage et al. 2021,
# *A Mathematical Framework for Transformer Circuits*; Olsson et al. 2022, *In-context Learning and
# Induction Heads*):
#
# 1. a **previous-token head** in layer 0 writes, at every position, which token came just before;
# 2. an **induction head** in layer 1 looks for an earlier position whose *previous* token is the
#    current token (its key is built from the previous-token head's output: **K-composition**), and
#    copies the token found there into the prediction (its OV circuit **copies**).
#
# In this lesson we take a 2-layer attention-only transformer trained on random tokens with a
# repeated segment, and check every step of that story against the model: the phase change in
# training, the attention patterns, the head detectors, K-composition, ablations, the OV circuit, and
# generalisation to repeats the model never saw. Each claim is *asserted*: if the model did not have
# the circuit, this notebook would fail. At the end we meet the shortcut that naive training data
# allows, and why it is not an induction head.
#
# Runs in about a minute on a laptop CPU, from the checkpoint shipped in `checkpoints/induction/`
# (made by `minillm-train induction`; the last cell retrains it).

# %%
import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT
from minillm.circuits import all_composition_scores, full_OV, ov_copying_score
from minillm.detectors import head_scores, repeated_random_tokens
from minillm.interventions import ablate_heads
from minillm.lessons import checkpoint, retrain
from minillm.model.losses import cross_entropy, evaluate
from minillm.plots import plot_attention_patterns, plot_head_heatmap, plot_training_curves
from minillm.tasks import make_task
from minillm.weight_processing import process_weights

model = GPT.load(checkpoint("induction/model.safetensors"))
metrics = [json.loads(line) for line in open(checkpoint("induction/metrics.jsonl"))]
print(model.cfg)

# %% [markdown]
# ## The data
#
# Each training sequence is a BOS token (id 0), random tokens, and **one segment of random length (4
# to 31) at a random offset, followed immediately by a copy of itself**. Inside the copy, every next
# token can be predicted by looking back: that is the only structure in the data. The lengths and
# offsets are random on purpose; the end of the lesson shows what a model learns when they are not.

# %%
task = make_task("repeated_tokens", d_vocab=64, seq_len=64, min_len=4, max_len=31)
(train_set, train_repeat), _ = task.split_with_repeat_mask(0)
example, where = train_set.tokens[0], train_repeat[0]
print(task.decode(example))
print("positions whose next token is predictable by copying:", np.flatnonzero(where))

# %% [markdown]
# ## A phase change during training
#
# The training run logged, every 100 steps, the loss on the repeated part of held-out sequences and
# the two detector scores we will meet below (the best previous-token head in layer 0, the best
# induction head in layer 1). For hundreds of steps the loss on the repeat sits near the loss on
# random tokens, ln 63 ≈ 4.14 nats; then, within a few hundred steps, both heads form together and the
# loss on the repeat collapses. That sudden drop is the *phase change* of Olsson et al.

# %%
plot_training_curves(metrics, extra=["repeat_loss", "prev_token_score", "induction_score"], title="induction")
steps = np.array([r["step"] for r in metrics])
repeat_loss = np.array([r["repeat_loss"] for r in metrics])
induction = np.array([r["induction_score"] for r in metrics])
phase_change = int(steps[np.argmax(induction > 0.5)])
print(f"induction score first above 0.5 at step {phase_change}")
print(f"repeat loss: {repeat_loss[steps == 500][0]:.2f} at step 500, {repeat_loss[-1]:.2f} at the end")

assert repeat_loss[steps == 500][0] > 3.5, "before the phase change the repeat is no easier than random tokens"
assert induction[steps == 500][0] < 0.2 and induction[-1] > 0.8
assert repeat_loss[-1] < 0.5, "after it, the repeat is predicted well"
assert 500 < phase_change < 2000

# %% [markdown]
# ## Loss on the first and the repeated half
#
# The standard probe: a BOS token, 30 random tokens, then the same 30 again. The first half cannot
# be predicted (loss ≈ ln 63); the second half can, by copying.

# %%
probe = repeated_random_tokens(jax.random.key(7), 64, 30, model.cfg.d_vocab)  # [64, 61]
logits, cache = model.run_with_cache(probe)
loss_per_pos = np.asarray(cross_entropy(logits[:, :-1], probe[:, 1:]).mean(0))  # position i predicts i + 1
first_half, second_half = loss_per_pos[1:30].mean(), loss_per_pos[31:].mean()

plt.figure(figsize=(7, 3))
plt.plot(range(1, 61), loss_per_pos)
plt.axvline(30.5, color="grey", ls="--")
plt.xlabel("position (predicting the next token)")
plt.ylabel("loss (nats)")
plt.title("loss per position on [BOS, 30 random tokens, the same 30 again]")
plt.show()
print(f"first half {first_half:.2f} nats, repeated half {second_half:.2f} nats")

assert first_half > 3.8 and second_half < 0.5 and first_half / second_half > 8

# %% [markdown]
# ## Attention patterns
#
# Here is every head on one probe sequence: row = the position attending (query), column = the
# position attended to (key). Look for two shapes: a stripe just below the diagonal (attend to the
# previous token) and, in the second half, a stripe 29 positions back, at the token *after* the
# previous occurrence of the current token.

# %%
labels = [task.vocab[int(t)] for t in probe[0]]
for layer in range(model.cfg.n_layers):
    plot_attention_patterns(cache["pattern", layer][0], labels, title=f"layer {layer}")
plt.show()

# %% [markdown]
# ## Finding the heads with detectors
#
# A detector averages the attention along one stripe over many probe sequences (`minillm.detectors`):
# the **previous-token score** of a head is its mean attention from each position to the one before;
# the **induction score** is its mean attention, in the second half, to the position after the
# earlier occurrence of the current token. A head that does the thing scores close to 1.

# %%
scores = head_scores(model, probe)
plot_head_heatmap(scores["previous_token"], "previous-token score", vmin=0, vmax=1)
plot_head_heatmap(scores["induction"], "induction score", vmin=0, vmax=1)
plt.show()
prev_head = int(np.argmax(scores["previous_token"][0]))
induction_heads = [h for h in range(model.cfg.n_heads) if scores["induction"][1, h] > 0.5]
print(
    f"previous-token head: L0H{prev_head} ({scores['previous_token'][0, prev_head]:.2f});",
    "induction heads:",
    ", ".join(f"L1H{h} ({scores['induction'][1, h]:.2f})" for h in induction_heads),
)

assert scores["previous_token"][0, prev_head] > 0.8
assert scores["induction"][1].max() > 0.8 and len(induction_heads) >= 1
assert scores["induction"][0].max() < 0.1, "layer 0 cannot do induction alone: it has no previous-token information"

# %% [markdown]
# Several layer-1 heads are induction heads: the model has spread the job over them. Keep that in mind
# for the ablations below.
#
# ### Exercise 1: the previous-token score, by hand
#
# Write `previous_token_scores(cache, n_layers)` returning a `[layer, head]` array: for each head, the
# attention from position q to position q - 1, averaged over the batch and over q = 1 .. n-1.
# `cache["pattern", layer]` has shape `[batch, head, query, key]`.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def previous_token_scores(cache, n_layers):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_previous_token_scores

check_previous_token_scores(previous_token_scores)


# %% tags=["solution"]
def previous_token_scores(cache, n_layers):
    scores = []
    for layer in range(n_layers):
        pattern = cache["pattern", layer]  # [b, h, q, k]
        previous = jnp.diagonal(pattern, offset=-1, axis1=2, axis2=3)  # [b, h, q-1]: entries (q, q-1)
        scores.append(previous.mean(axis=(0, 2)))
    return jnp.stack(scores)


check_previous_token_scores(previous_token_scores)

# %% [markdown]
# ## K-composition: the induction head's keys come from the previous-token head
#
# An induction head at a token *A* must find the position whose *previous* token was *A*. Its query
# comes from the current token; its key must carry "my previous token". Only the previous-token head
# writes that into the residual stream, so the induction head's **keys** should read from the
# previous-token head's **output**. Composition scores measure how much one head's output matrix
# W_OV feeds another head's input: for K-composition, ‖W_QK^T W_OV‖ / (‖W_QK‖ ‖W_OV‖), computed from
# the weights alone, after folding LayerNorm into them. A random model gives ~0.13 for these sizes.

# %%
folded = process_weights(model)
k_comp = np.asarray(all_composition_scores(folded, "K"))[0, :, 1, :]  # [layer-0 head, layer-1 head]
baseline = np.asarray(all_composition_scores(process_weights(GPT(model.cfg, seed=123)), "K"))[0, :, 1, :].mean()
plot_head_heatmap(k_comp, "K-composition: layer-0 head (row) into layer-1 head (column)")
plt.gca().set_xlabel("layer-1 head")
plt.gca().set_ylabel("layer-0 head")
plt.show()
print(
    f"K-composition from L0H{prev_head} into the induction heads:",
    np.round(k_comp[prev_head, induction_heads], 3),
    f"(random model: {baseline:.3f})",
)

for h in induction_heads:
    assert np.argmax(k_comp[:, h]) == prev_head, f"L1H{h}'s keys should read most from the previous-token head"
assert k_comp[prev_head, induction_heads].mean() > 1.5 * baseline

# %% [markdown]
# ## Ablations: which heads does in-context copying need?
#
# Mean-ablation replaces a head's output (its `hook_z`) by its average over other inputs, removing
# what it says about *this* input. We measure the loss on the repeated half with heads ablated, one
# at a time and as groups.

# %%
_, reference = model.run_with_cache(repeated_random_tokens(jax.random.key(99), 64, 30, model.cfg.d_vocab))


def repeat_half_loss(heads):
    logits = model.run_with_hooks(probe, ablate_heads(model, heads, "mean", reference))
    return float(cross_entropy(logits[:, :-1], probe[:, 1:])[:, 31:].mean())


clean = repeat_half_loss([])
single = np.array([[repeat_half_loss([(l, h)]) for h in range(model.cfg.n_heads)] for l in range(model.cfg.n_layers)])
group = repeat_half_loss([(1, h) for h in induction_heads])
plot_head_heatmap(single / clean, "repeat-half loss with one head mean-ablated (x clean)", cmap="magma")
plt.show()
print(
    f"clean {clean:.2f} nats; all induction heads ablated together: {group:.2f} nats ({group / clean:.0f}x);",
    f"previous-token head ablated: {single[0, prev_head]:.2f} nats ({single[0, prev_head] / clean:.0f}x)",
)
other_head = max((h for h in range(model.cfg.n_heads) if h != prev_head), key=lambda h: single[0, h])
print(
    f"the layer-0 head that matters most after the previous-token head: L0H{other_head}",
    f"({single[0, other_head] / clean:.1f}x; previous-token score {scores['previous_token'][0, other_head]:.2f})",
)

assert group / clean > 10, "without the induction heads, copying is gone"
assert single[0, prev_head] / clean > 10, "without the previous-token head too: the induction heads need it"
assert single[1].max() / clean < 3, "no single induction head is indispensable: they share the work"
assert (single[0] / clean).min() < 1.5, "and some layer-0 heads play no part"

# %% [markdown]
# Ablating the previous-token head destroys copying as surely as ablating every induction head: the
# induction heads cannot find their target without it. Look at the layer-0 row again: in the shipped
# model one more layer-0 head, which is *not* a previous-token head, matters a lot (printed above as
# `other_head`). The story so far does not explain it; see "To go further" at the end.
#
# ### Exercise 2: a mean-ablation hook
#
# Write `mean_ablate(z, hook, head, reference_z)` returning `z` (shape `[batch, pos, head, d_head]`)
# with head `head` replaced, at every position, by its mean over the *batch* of `reference_z`.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def mean_ablate(z, hook, head, reference_z):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_head_mean_ablation

check_head_mean_ablation(mean_ablate)


# %% tags=["solution"]
def mean_ablate(z, hook, head, reference_z):
    return z.at[:, :, head].set(reference_z[:, :, head].mean(axis=0))


check_head_mean_ablation(mean_ablate)

# %% [markdown]
# ## The OV circuit copies
#
# Once an induction head attends to the right token, its OV circuit decides what it writes. Its
# **full OV circuit** W_E W_V W_O W_U (`[input token, output token]`) says how much attending to
# input token *i* raises the logit of output token *j*. A copying head raises the logit of the token
# it attends to: a large positive diagonal.

# %%
ov = np.asarray(full_OV(folded).AB)  # [layer, head, d_vocab, d_vocab]
h = induction_heads[0]
plt.figure(figsize=(4.5, 4))
plt.imshow(ov[1, h], cmap="RdBu", vmin=-np.abs(ov[1, h]).max(), vmax=np.abs(ov[1, h]).max())
plt.xlabel("output token")
plt.ylabel("attended token")
plt.colorbar()
plt.title(f"full OV circuit of L1H{h}")
plt.show()
top1 = [(ov[1, h].argmax(-1) == np.arange(model.cfg.d_vocab)).mean() for h in induction_heads]
copying = np.asarray(ov_copying_score(folded))[1, induction_heads]
print("fraction of tokens whose largest output is themselves:", np.round(top1, 2))
print("positive-eigenvalue copying score (1 = pure copying):", np.round(copying, 3))

assert min(top1) > 0.85 and min(copying) > 0.9

# %% [markdown]
# ### Exercise 3: the copying score of a head
#
# Write `copying_fraction(model, layer, head)`: the fraction of input tokens whose largest entry in
# the head's full OV circuit is on the diagonal. Use `model.embed.W_E`, `model.blocks[layer].attn.W_V`
# (`[head, d_model, d_head]`), `.W_O` (`[head, d_head, d_model]`) and `model.unembed.W_U`.
#
# Write it in the next cell, then run the check below it: it says `correct` or what is wrong. If you
# are stuck, open the collapsed solution after the check (running it replaces your function).


# %%
def copying_fraction(model, layer, head):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_copying_score

check_copying_score(copying_fraction)


# %% tags=["solution"]
def copying_fraction(model, layer, head):
    attn = model.blocks[layer].attn
    full = model.embed.W_E[...] @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U[...]
    return float((full.argmax(-1) == jnp.arange(full.shape[0])).mean())


check_copying_score(copying_fraction)

# %% [markdown]
# ## It generalises to repeats it never saw
#
# An induction head does not care *where* the earlier occurrence is. Training only ever placed the
# copy right after the segment; here the copy comes after a gap of up to 20 or 30 random tokens.

# %%
results = {}
for name, kw in {
    "as in training": dict(min_len=4, max_len=31, max_gap=0),
    "gap up to 20": dict(min_len=4, max_len=20, max_gap=20),
    "gap up to 30": dict(min_len=8, max_len=16, max_gap=30),
}.items():
    test_task = make_task("repeated_tokens", d_vocab=64, seq_len=64, loss_on="repeat", n_train=8, n_test=512, **kw)
    loss, accuracy = evaluate(model, jax.tree.map(jnp.asarray, test_task.split(5)[1]))
    results[name] = float(accuracy)
    print(f"{name:>15}: loss on the repeat {float(loss):.2f} nats, accuracy {float(accuracy):.3f}")

assert all(acc > 0.9 for acc in results.values())

# %% [markdown]
# ## Why the naive data fail: a positional shortcut
#
# The classic probe, a random half repeated once, is a poor *training* set: the copy is always 31
# positions back, so a head can attend by **position** (to q - 30) instead of by content, and never
# needs an induction circuit. `minillm-train induction_shortcut` trains the same model, with the
# same settings, on exactly that layout. It learns the repeat perfectly, and the induction detector,
# run on the training layout, even scores its layer-0 heads high: the stripe at q - 30 *is* the
# induction stripe when the period is 31. Change the period to 30, or move the copy, and the head still
# looks 30 back: it was never an induction head.

# %%
shortcut = GPT.load(checkpoint("induction_shortcut/model.safetensors"))
same_layout = repeated_random_tokens(jax.random.key(7), 64, 31, 64)  # period 31, as in its training
other_period = repeated_random_tokens(jax.random.key(7), 64, 30, 64)
on_training_layout = head_scores(shortcut, same_layout)["induction"]
on_other_period = head_scores(shortcut, other_period)["induction"]
gapped = make_task(
    "repeated_tokens",
    d_vocab=64,
    seq_len=63,
    min_len=4,
    max_len=20,
    max_gap=20,
    loss_on="repeat",
    n_train=8,
    n_test=512,
)
shortcut_acc = float(evaluate(shortcut, jax.tree.map(jnp.asarray, gapped.split(5)[1]))[1])
_, shortcut_cache = shortcut.run_with_cache(other_period)
pattern = np.asarray(shortcut_cache["pattern", 0]).mean(0)  # [h, q, k]
at_offset_30 = np.array([[pattern[h, q, q - 30] for q in range(31, 61)] for h in range(4)]).mean(1)
print(
    "shortcut model, best induction score on its training layout:",
    f"{on_training_layout.max():.2f};",
    f"on period 30: {on_other_period.max():.2f}",
)
print("layer-0 attention at q - 30 on period 30 (where the induction target is q - 29):", np.round(at_offset_30, 2))
print(f"accuracy on the repeat with gaps: shortcut {shortcut_acc:.2f}, induction model {results['gap up to 20']:.2f}")
plot_attention_patterns(shortcut_cache["pattern", 0][0], title="shortcut model, layer 0, period 30")
plt.show()

assert on_training_layout.max() > 0.8, "on its own layout the detector is fooled"
assert on_other_period.max() < 0.1, "with another period there is no induction at all"
assert at_offset_30.max() > 0.8, "a layer-0 head attends by position"
assert shortcut_acc < 0.2 < 0.9 < results["gap up to 20"]

# %% [markdown]
# ## What we showed
#
# - Training shows a phase change: the previous-token head and the induction heads form together,
#   and only then does the loss on repeated tokens fall.
# - A layer-0 head attends to the previous token; the layer-1 heads attend to the token after the
#   earlier occurrence of the current one, and their keys K-compose with the previous-token head.
# - Ablating the induction heads as a group, or the previous-token head alone, destroys in-context
#   copying; one induction head alone is not indispensable, and some heads do not matter.
# - The induction heads' OV circuits copy, and the circuit works for repeats it never saw.
# - Data with a fixed period grow a positional shortcut that fools a detector run on the same data.
#
# **To go further.** The layer-0 head `other_head` is not a previous-token head, yet ablating it hurts
# copying. In the shipped model its V-composition into the layer-1 heads
# (`all_composition_scores(folded, "V")[0, other_head, 1]`) is the highest of the layer-0 heads. What does
# it attend to, and what do the induction heads read from it?
#
# **Retrain the model yourself** (a minute or two on a CPU) by setting `RETRAIN = True`; every cell
# above then works on your model if you point `GPT.load` at `checkpoints_retrained/induction/`
# (`retrain` prints where the model is and how to load it).

# %%
RETRAIN = False
if RETRAIN:
    retrain("induction")
