# %% [markdown]
# # Lesson 9: Attribution graphs
#
# The earlier lessons asked a model questions one at a time: patch this activation, ablate that
# head, and see what changes. An **attribution graph** tries to draw, for one prompt, the whole
# chain at once: which internal features, at which layers and positions, pushed the model towards
# its answer, and which other features pushed them. Ameisen et al. (2025, "Circuit Tracing:
# Revealing Computational Graphs in Language Models") introduced the method and Lindsey et al.
# (2025, "On the Biology of a Large Language Model") used it on Claude 3.5 Haiku. It rests on
# **transcoders** (Dunefsky et al. 2024, "Transcoders Find Interpretable LLM Feature Circuits").
#
# **Transcoders.** Neurons are hard to read (lesson 4), so each MLP gets a stand-in: a wide layer
# of sparse *features* that reads the MLP's input x and is trained to write the MLP's output,
# f = TopK(x W_enc + b_enc), output ≈ f W_dec + b_dec + x W_skip (an optional linear skip path).
# Whatever the transcoder gets wrong on a given input is that input's **error**. (The papers mostly
# use *cross-layer* transcoders, whose features write into every later layer; minillm trains one
# transcoder per MLP, the per-layer kind they compare them with.)
#
# **The local replacement model.** Take one prompt's forward pass. Freeze every attention pattern
# and every LayerNorm scale at its value in that pass, and replace each MLP by its transcoder's
# active features plus that MLP's error on this prompt, also frozen. With the nonlinear parts
# frozen, everything between one feature and the next is linear: the effect of any node on any
# later node is a sum over the paths between them. Because the error terms make up for the
# transcoders' mistakes, this replacement gives exactly the model's output on this prompt (and
# only on this prompt).
#
# - **Nodes**: the active features (layer, position, feature id); one error node per layer and
#   position; one embedding node per position; and the logits of the most likely outputs at the
#   last position.
# - **Edges**: the direct effect of a source on a target through the frozen model. That is the
#   source's write to the residual stream, carried through frozen attention and the skip paths
#   to the target, which is a feature's encoder input or a logit minus the mean logit. If you
#   double a source's activation in the replacement model, each of its targets moves by exactly
#   the edge weight.
# - **Pruning**: a graph has thousands of edges. A node's **influence** is the share of the
#   output that reaches it along paths of any length, computed on |A| with each row scaled to sum
#   to 1. We keep the fewest features that carry 80% of the features' total influence; then,
#   among the edges left, the fewest that carry 98% of their influence.
# - **Scores**: the **replacement score** is the share of the logits' influence that reaches the
#   embeddings without passing through an error node. The **completeness score** is the share of
#   each node's input that comes from nodes other than errors (and, after pruning, from kept
#   nodes), averaged with influence weights. Both are 1 when the transcoders are exact and
#   nothing is pruned.
#
# In minillm these are `train_transcoders` (minillm.transcoders), `attribute`, `graph.prune`,
# `graph.scores` and `intervene` (minillm.attribution), and `graph_view` (minillm.graph_view). We
# apply them to two models whose circuits earlier lessons have already worked out, so that we can
# check whether the graph finds what we know: lesson 2's grokked modular-addition model and
# lesson 0's factual-recall model. A short note follows on lesson 7's attention-only IOI models.
# Every claim is asserted against the trained models.
#
# Runs in about two minutes on a 2-core CPU, on the shipped checkpoints; the transcoders are
# trained here, with fixed seeds.

# %%
import os
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from minillm import GPT
from minillm import fourier as F
from minillm.attribution import attribute, intervene, normalized_adjacency
from minillm.graph_view import feature_top_logits, graph_view, top_activating_contexts, view_features
from minillm.lessons import checkpoint
from minillm.tasks import make_task
from minillm.transcoders import evaluate_transcoder, gather_mlp_io, spliced_hooks, spliced_loss, train_transcoders

# %% [markdown]
# ## Part 1: the grokked model
#
# Lesson 2's model computes a + b mod 113 from the tokens `a b =`, using a few **key frequencies**
# k. Its embedding writes cos and sin of w_k a and w_k b, its attention and MLP multiply them into
# cos and sin of w_k (a + b), and the unembedding reads off the answer. Each MLP neuron is
# explained almost entirely by one key frequency. The model has one layer, so it needs one
# transcoder. We train it on the MLP at every position of all 113² prompts (38,307 inputs), with
# 256 features, of which the 16 largest fire on each input (TopK). On a CPU this takes about 15 seconds.

# %%
ma_model = GPT.load(checkpoint("modular_addition/model.safetensors"))
ma_task = make_task("modular_arithmetic", p=113, op="add", frac_train=0.3)
p = ma_task.p
pairs = ma_task.all_pairs()  # row a * p + b holds the prompt `a b =`
key_freqs = F.key_frequencies(ma_model)
print("key frequencies (lesson 2):", key_freqs)

ma_tcs = train_transcoders(ma_model, pairs.tokens, 256, k=16, steps=1000, seed=0, progress=False)
((x, y),) = gather_mlp_io(ma_model, pairs.tokens)  # [p * p * 3, d_model]: the MLP's inputs and outputs
at_eq = np.arange(len(x)) % 3 == 2  # the `=` position, where the answer is read
quality = evaluate_transcoder(ma_tcs[0], x[at_eq], y[at_eq])
ma_spliced = spliced_loss(ma_model, ma_tcs, pairs)
spliced_logits = ma_model.run_with_hooks(pairs.tokens, spliced_hooks(ma_tcs))[:, -1]
spliced_acc = float((spliced_logits.argmax(-1) == pairs.targets[:, -1]).mean())
print(f"at `=`: variance of the MLP output explained {quality['variance_explained']:.4f} (threshold 0.98), "
      f"{quality['mean_l0']:.1f} features active per input")  # fmt: skip
print(f"loss over all pairs: model {ma_spliced['clean_loss']:.2e}, with the transcoder in place of the MLP "
      f"{ma_spliced['transcoder_loss']:.2e} (threshold 0.01), "
      f"MLP zeroed {ma_spliced['zero_ablation_loss']:.2f}")  # fmt: skip
print(f"accuracy with the transcoder in place of the MLP: {spliced_acc:.4f} (threshold 0.999)")
assert quality["variance_explained"] > 0.98
assert ma_spliced["transcoder_loss"] < 0.01 and ma_spliced["zero_ablation_loss"] > 3.0
assert spliced_acc > 0.999

# %% [markdown]
# The transcoder is a faithful stand-in: with it in place of the MLP the model still gets every
# pair right, and its loss hardly moves, whereas zeroing the MLP leaves the model at chance.
#
# ### Are its features the key frequencies, like the neurons?
#
# We take each feature's activation at `=` over all (a, b) as a 113 × 113 function and use lesson
# 2's measure: the share of its variance that the terms of frequency k explain. These are cos and
# sin of w_k a and of w_k b and their products, which include cos and sin of w_k (a + b)
# (`fourier.frequency_fractions_2d`). Adding these shares over the key frequencies gives the
# **key share** of the feature. Many features fire only rarely at `=` (the transcoder also serves
# positions 0 and 1), so we rank the features by their variance at `=` and look at those that
# carry 99% of the total variance.

# %%
features = np.asarray(ma_tcs[0].encode(x[at_eq])).reshape(p, p, -1)  # [a, b, feature]
fractions = np.asarray(F.frequency_fractions_2d(features))  # [p // 2, feature]: row k - 1 is frequency k
key_share = fractions[np.array(key_freqs) - 1].sum(0)  # [feature]
best_freq = fractions.argmax(0) + 1
variance = features.reshape(p * p, -1).var(0)
ranked = np.argsort(-variance)
n_main = int(np.searchsorted(np.cumsum(variance[ranked]) / variance.sum(), 0.99) + 1)
main = ranked[:n_main]  # the features that carry 99% of the variance at `=`

neuron_fit = F.neuron_frequency_fractions(ma_model)
neuron_key_share = neuron_fit.fracs[np.array(key_freqs) - 1].sum(0)
live = int((variance > 0).sum())
print(f"{live} features fire at `=`; {n_main} of them carry 99% of the variance there")
print(f"key share of those {n_main}: min {key_share[main].min():.2f} (threshold 0.8), "
      f"median {np.median(key_share[main]):.2f}; "
      f"of the 512 neurons: median {np.median(neuron_key_share):.2f} (threshold 0.9)")  # fmt: skip
print(f"share of their best frequency alone: min {fractions[:, main].max(0).min():.2f} (threshold 0.8); "
      f"neurons: median {np.median(neuron_fit.frac):.2f}")  # fmt: skip
print("features per key frequency:", {k: int((best_freq[main] == k).sum()) for k in key_freqs})
assert key_share[main].min() > 0.8 and np.median(neuron_key_share) > 0.9
assert fractions[:, main].max(0).min() > 0.8, "each one is explained by one frequency"
assert set(best_freq[main].tolist()) == set(key_freqs), "every key frequency has features"

# %% [markdown]
# Yes. Every feature that matters at `=` lives in the key frequencies, and each is explained by a
# single frequency, as the neurons are. In lesson 4 an SAE trained on the *neuron activations*
# learned features localised in phase, most of which no single frequency explains. A
# transcoder's feature is more constrained: like a neuron, it is a thresholded linear function of
# the MLP's input (TopK keeps the 16 largest). Here that constraint seems to keep it close to the
# neurons' own kind of function.
#
# ### The graph of one prompt
#
# Now the graph of `37 58 =`, whose answer is 95. `attribute` runs the prompt, records what the
# replacement model freezes, and computes every edge with one backward pass per target. We prune
# it with the default thresholds (80% of the features' influence, 98% of the edges').

# %%
A_TOKEN, B_TOKEN = 37, 58
answer = (A_TOKEN + B_TOKEN) % p
prompt = np.array([A_TOKEN, B_TOKEN, p])  # `=` is token p
graph = attribute(ma_model, ma_tcs, prompt)
pruned = graph.prune()
is_feature = graph.kind == "feature"
kept_features = np.flatnonzero(pruned.nodes & is_feature)
logit_nodes = graph.nodes_of("logit")
scores, pruned_scores = graph.scores(), graph.scores(pruned)
print(f"nodes: {graph.n_nodes} ({is_feature.sum()} features, 3 errors, 3 embeddings, {len(logit_nodes)} logit), "
      f"edges {(graph.adjacency != 0).sum()}; after pruning {pruned.nodes.sum()} nodes "
      f"({len(kept_features)} features), {pruned.edges.sum()} edges")  # fmt: skip
print(f"top logit: {graph.index[logit_nodes[0]]} with probability {graph.activation[logit_nodes[0]]:.4f} "
      f"(answer {answer})")  # fmt: skip
print(f"whole graph: replacement {scores['replacement']:.3f} (threshold 0.95), completeness "
      f"{scores['completeness']:.3f} (threshold 0.95)")  # fmt: skip
print(f"pruned graph: replacement {pruned_scores['replacement']:.3f} (threshold 0.7), completeness "
      f"{pruned_scores['completeness']:.3f} (threshold 0.8)")  # fmt: skip
kept_ids = graph.index[kept_features]
print("kept features (id: best frequency, key share):",
      {int(f): (int(best_freq[f]), round(float(key_share[f]), 2)) for f in kept_ids})  # fmt: skip
assert graph.index[logit_nodes[0]] == answer and graph.activation[logit_nodes[0]] > 0.99
assert scores["replacement"] > 0.95 and scores["completeness"] > 0.95
assert pruned_scores["replacement"] > 0.7 and pruned_scores["completeness"] > 0.8
assert (graph.position[kept_features] == 2).all(), "every kept feature sits at `=`"
assert key_share[kept_ids].min() > 0.8, "and each is a key-frequency feature"

# %% [markdown]
# The whole graph is nearly complete: the transcoder is good, so little passes through the error
# nodes. Pruning keeps a handful of features, all of them at `=` and all of them key-frequency
# features. The features at positions 0 and 1 are dropped because in a one-layer model nothing
# reads them: only the last position's residual stream reaches the logits.
#
# What does an edge mean? In the replacement model, doubling a feature's activation changes every
# target by exactly its edge weight. `intervene(..., freeze="all")` runs the replacement model
# itself, so we can check this on the strongest kept feature and the answer's logit (the logit
# minus the mean logit).

# %%
strongest = kept_features[np.argmax(np.abs(graph.adjacency[logit_nodes[0], kept_features]))]
f_id, f_act = int(graph.index[strongest]), float(graph.activation[strongest])
base = intervene(ma_model, ma_tcs, prompt, freeze="all").logits[-1]
doubled = intervene(ma_model, ma_tcs, prompt, [(0, 2, f_id, 2 * f_act)], freeze="all").logits[-1]
change = float((doubled - doubled.mean())[answer] - (base - base.mean())[answer])
edge = float(graph.adjacency[logit_nodes[0], strongest])
print(f"feature {f_id}: edge to logit {answer} = {edge:.4f}; doubling it moves that logit by {change:.4f}")
assert abs(change - edge) < 1e-3 * max(1.0, abs(edge))

# %% [markdown]
# A picture of the pruned graph as a matrix: rows are targets and columns are sources, and each
# cell is an edge weight. The second picture shows what the most influential kept features respond
# to: each one's activation over every (a, b), with this prompt's pair marked. Each is a periodic
# pattern of one key frequency, like lesson 2's neurons, and the prompt falls where it is on.

# %%
sources = np.flatnonzero(pruned.nodes & (graph.kind != "logit"))
targets = np.flatnonzero(pruned.nodes & ((graph.kind == "feature") | (graph.kind == "logit")))
slot_names = ["a", "b", "="]


def node_label(i):
    kind, idx = graph.kind[i], int(graph.index[i])
    if kind == "feature":
        return f"f{idx} (k={best_freq[idx]})"
    if kind == "error":
        return f"error @ {slot_names[graph.position[i]]}"
    if kind == "embedding":
        q = graph.position[i]
        return "embed =" if q == 2 else f"embed {slot_names[q]}={prompt[q]}"
    return f"logit {idx}"


shown = np.where(pruned.edges[np.ix_(targets, sources)], graph.adjacency[np.ix_(targets, sources)], 0.0)
limit = np.abs(shown).max()
fig, ax = plt.subplots(figsize=(8, 4.5))
image = ax.imshow(shown, cmap="RdBu", vmin=-limit, vmax=limit)
ax.set_xticks(range(len(sources)), [node_label(i) for i in sources], rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(len(targets)), [node_label(i) for i in targets], fontsize=8)
ax.set(xlabel="source", ylabel="target", title=f"pruned graph of `{A_TOKEN} {B_TOKEN} =`: kept edges")
fig.colorbar(image, ax=ax)
plt.show()

order = kept_ids[np.argsort(-graph.influence()[kept_features])][:4]
fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.2), layout="constrained")
for ax, f in zip(np.atleast_1d(axes), order):
    ax.imshow(features[:, :, f], cmap="viridis")
    ax.plot(B_TOKEN, A_TOKEN, "r+", markersize=14, markeredgewidth=2)
    ax.set(title=f"feature {f}: k = {best_freq[f]}", xlabel="b", ylabel="a")
fig.suptitle("the most influential kept features over all (a, b); + marks the prompt")
plt.show()

# %% [markdown]
# Where does the answer come from? The influence of the embeddings tells which input positions
# the graph traces the answer to, and the influence of the error node at `=` tells how much the
# transcoder leaves unexplained.

# %%
influence_of = graph.influence()
embed_influence = influence_of[graph.nodes_of("embedding")]
error_influence = influence_of[graph.nodes_of("error")]
print("influence of the embeddings of a, b, =:", embed_influence.round(3))
print("influence of the error nodes at a, b, =:", error_influence.round(3))
assert embed_influence[:2].min() > 2 * embed_influence[2], "a and b carry the answer, not `=`"
assert error_influence[:2].max() == 0 and error_influence[2] < 0.05

# %% [markdown]
# The two numbers carry the answer, and the `=` token adds a little. The error nodes at a and b
# have no influence at all, because in a one-layer model nothing reads the MLP output there; the
# one at `=` has under 5%.
#
# One prompt could be a lucky one. The same checks on 30 random prompts, where each graph takes a
# fraction of a second once compiled:

# %%
rng = np.random.default_rng(0)
rows = []
for a, b in rng.integers(0, p, (30, 2)):
    g = attribute(ma_model, ma_tcs, np.array([a, b, p]))
    kept = g.prune().nodes & (g.kind == "feature")
    top = g.index[g.nodes_of("logit")[0]]
    rows.append((top == (a + b) % p, (g.position[kept] == 2).all(), (key_share[g.index[kept]] > 0.8).mean(),
                 g.scores()["replacement"]))  # fmt: skip
right, at_last, key_kept, replacement = (np.array(c, float) for c in zip(*rows))
print(f"top logit right: {right.mean():.2f}; kept features all at `=`: {at_last.mean():.2f}; "
      f"kept features that are key-frequency features: {key_kept.mean():.3f} (threshold 0.9); "
      f"replacement score: min {replacement.min():.3f} (threshold 0.9)")  # fmt: skip
assert right.all() and at_last.all() and key_kept.mean() > 0.9 and replacement.min() > 0.9

# %% [markdown]
# ### Exercise: influence
#
# Pruning and both scores rest on **influence**. Write `my_influence(A, weights)`. Here `A[target,
# source]` is an acyclic graph's adjacency matrix and `weights` holds each node's weight in the
# output (in a graph, the logits' probabilities; 0 elsewhere). Let N be |A| with each row divided
# by its sum (a row of zeros stays zero). Return w (N + N² + N³ + ...): for each node, the share
# of the output that reaches it along paths of any length. The sum is finite because N is
# nilpotent: an acyclic graph has no path longer than its number of nodes.
#
# `check_node_influence` compares your function with `minillm.attribution.influence` on random
# acyclic graphs and on one laid out like minillm's graphs.


# %%
def my_influence(A, weights):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_node_influence

check_node_influence(my_influence)


# %% tags=["solution"]
def my_influence(A, weights):
    A = np.abs(np.asarray(A, np.float64))
    sums = A.sum(1, keepdims=True)
    N = np.divide(A, sums, out=np.zeros_like(A), where=sums > 0)
    reach = np.asarray(weights, np.float64)  # what arrives at each node along paths of the current length
    total = np.zeros_like(reach)
    while reach.any():
        reach = reach @ N  # one step further from the output
        total += reach
    return total


check_node_influence(my_influence)

# %% [markdown]
# Your function (or the solution, whichever ran last) on the real graph:

# %%
mine = my_influence(graph.adjacency, graph.logit_weights)
worst = float(np.abs(mine + graph.logit_weights - graph.influence()).max())
print(f"largest difference from graph.influence() on the graph of `{A_TOKEN} {B_TOKEN} =`: {worst:.1e}")
assert worst < 1e-6

# %% [markdown]
# ## Part 2: the factual-recall model
#
# In lesson 0 a four-layer model recalled 900 made-up facts such as "the attribute of person
# (first, last) under relation r". The causal trace and the knock-outs found two sites. First,
# **MLP 0 and attention 0 at the subject's last token** combine the two names and look the person
# up there. Second, **layer 1's attention** carries the result from that token to the last
# position, where the later MLPs write the answer. Does an attribution graph find the same path?
#
# We train one transcoder per layer on the training split (2,048 sequences, every position), with
# 256 features and k = 16. We evaluate them on lesson 0's prompts: the subject at positions 6 and
# 7 (FIRST and LAST) and the relation at position 15 (END).

# %%
fr_model = GPT.load(checkpoint("factual_recall/model.safetensors"))
fr_task = make_task("factual_recall")
train, test = fr_task.split(0)
fr_tcs = train_transcoders(fr_model, train.tokens, 256, k=16, steps=1000, seed=0, progress=False)

N_BEFORE = 5
FIRST, LAST = fr_task.subject_positions(N_BEFORE)  # 6, 7
END = fr_task.seq_len - 1  # 15
prompts = fr_task.prompts(jax.random.key(7), 256, N_BEFORE)  # lesson 0's batch
fr_quality = [evaluate_transcoder(tc, x, y) for tc, (x, y) in zip(fr_tcs, gather_mlp_io(fr_model, test.tokens))]
alone = [spliced_loss(fr_model, [tc if l == tc.layer else None for l in range(4)], test) for tc in fr_tcs]
together = spliced_loss(fr_model, fr_tcs, test)
together_acc = float(
    (fr_model.run_with_hooks(test.tokens, spliced_hooks(fr_tcs))[:, -1].argmax(-1) == test.targets[:, -1]).mean()
)
for l, (q, s) in enumerate(zip(fr_quality, alone)):
    print(f"layer {l}: variance explained {q['variance_explained']:.3f} (threshold 0.88), L0 {q['mean_l0']:.1f}, "
          f"loss with this MLP replaced {s['transcoder_loss']:.4f} (threshold 0.1; "
          f"zeroed {s['zero_ablation_loss']:.2f})")  # fmt: skip
print(f"all four replaced at once: loss {together['transcoder_loss']:.3f} (threshold 1.5; model "
      f"{together['clean_loss']:.1e}, all zeroed {together['zero_ablation_loss']:.2f}), "
      f"accuracy {together_acc:.3f} (threshold 0.7)")  # fmt: skip
assert min(q["variance_explained"] for q in fr_quality) > 0.88
assert max(s["transcoder_loss"] for s in alone) < 0.1
assert together["transcoder_loss"] < 1.5 and together_acc > 0.7

# %% [markdown]
# Each transcoder on its own costs the model almost nothing. Replacing all four at once costs
# more, because each one's mistakes feed the next. An attribution graph does not suffer from this
# compounding: the error nodes keep each layer's output exact, and the scores report how much of
# the answer passes through those errors.
#
# The graph of lesson 0's first prompt:

# %%
fr_prompt = np.asarray(prompts.tokens[0])
fr_answer = int(prompts.targets[0, -1])
words = fr_task.decode(fr_prompt).split()
fr_graph = attribute(fr_model, fr_tcs, fr_prompt)
fr_pruned = fr_graph.prune()
fr_feature = fr_graph.kind == "feature"
fr_logits = fr_graph.nodes_of("logit")
fr_scores, fr_pruned_scores = fr_graph.scores(), fr_graph.scores(fr_pruned)
print(" ".join(words), "->", fr_task.decode_target(fr_answer))
print(f"nodes: {fr_graph.n_nodes} ({fr_feature.sum()} features), edges {(fr_graph.adjacency != 0).sum()}; "
      f"after pruning {fr_pruned.nodes.sum()} nodes ({(fr_pruned.nodes & fr_feature).sum()} features), "
      f"{fr_pruned.edges.sum()} edges")  # fmt: skip
print(f"top logit {fr_task.decode_target(fr_graph.index[fr_logits[0]])}, probability "
      f"{fr_graph.activation[fr_logits[0]]:.4f}")  # fmt: skip
print(f"whole graph: replacement {fr_scores['replacement']:.3f} (threshold 0.6), completeness "
      f"{fr_scores['completeness']:.3f} (threshold 0.8)")  # fmt: skip
print(f"pruned graph: replacement {fr_pruned_scores['replacement']:.3f} (threshold 0.4), completeness "
      f"{fr_pruned_scores['completeness']:.3f} (threshold 0.65)")  # fmt: skip
assert fr_graph.index[fr_logits[0]] == fr_answer and fr_graph.activation[fr_logits[0]] > 0.99
assert fr_scores["replacement"] > 0.6 and fr_scores["completeness"] > 0.8
assert fr_pruned_scores["replacement"] > 0.4 and fr_pruned_scores["completeness"] > 0.65

# %% [markdown]
# The scores are lower than for the grokked model. Four imperfect transcoders leave more of the
# answer in their errors, and pruning cuts more: a thousand features against fifty. We add up the
# influence of the features, the error nodes and the embeddings by layer and position. The result
# is a map of where this graph says the answer came from, to set beside lesson 0's causal trace.


# %%
def influence_map(g):
    """[embeddings + 4 layers of features + 4 layers of errors, positions]: summed influence."""
    infl = g.influence()
    out = np.zeros((9, len(g.tokens)))
    emb, err = g.nodes_of("embedding"), g.nodes_of("error")
    out[0] = infl[emb]
    f = g.kind == "feature"
    np.add.at(out, (1 + g.layer[f], g.position[f]), infl[f])
    out[5 + g.layer[err], g.position[err]] = infl[err]
    return out


fr_map = influence_map(fr_graph)
labels = [f"{w}\n{'FIRST' if q == FIRST else 'LAST' if q == LAST else ''}" for q, w in enumerate(words)]
fig, ax = plt.subplots(figsize=(11, 4))
image = ax.imshow(fr_map, cmap="Purples", aspect="auto")
ax.set_yticks(range(9), ["embeddings"] + [f"features L{l}" for l in range(4)] + [f"errors L{l}" for l in range(4)])
ax.set_xticks(range(len(words)), labels, fontsize=7)
ax.set_title("influence on the answer, by layer and position")
fig.colorbar(image, ax=ax)
plt.show()

features_map = fr_map[1:5]
off_end = features_map.copy()
off_end[:, END] = 0  # every position but the last
first_cell = np.unravel_index(off_end.argmax(), off_end.shape)
second = np.sort(off_end.ravel())[-2]
print(f"features outside END: the most influential cell is layer {first_cell[0]}, position {first_cell[1]} "
      f"(LAST = {LAST}) with {off_end.max():.3f}, next {second:.3f} (asserted at least 2x)")  # fmt: skip
print(f"features at LAST: {features_map[:, LAST].sum():.3f}; at FIRST: {features_map[:, FIRST].sum():.3f}; "
      f"embeddings of FIRST and LAST: {fr_map[0, [FIRST, LAST]].round(3)}")  # fmt: skip
kept_positions = fr_graph.position[fr_pruned.nodes & fr_feature]
at_sites = np.isin(kept_positions, [LAST, END]).mean()
print(f"kept features at LAST or END: {at_sites:.2f} (threshold 0.9)")
assert first_cell == (0, LAST) and off_end.max() > 2 * second
assert features_map[:, LAST].sum() > 10 * features_map[:, FIRST].sum()
assert at_sites > 0.9

# %% [markdown]
# The graph finds lesson 0's path. Outside the last position, the features with the most influence
# sit in **layer 0 at the subject's last token**, with more than twice the influence of any other
# cell. The first name's position has almost no influential features; its influence runs through
# its embedding instead. Nearly every feature that pruning keeps is at LAST or at END.
#
# The graph also shows how the pieces connect. In a layer-0 feature's input, attention is frozen
# into the edges, so the edges from the embeddings tell where that feature read from. The edges
# out of the layer-0 features at LAST tell where their effect goes.

# %%
N = normalized_adjacency(fr_graph.adjacency)
infl = fr_graph.influence()
site = np.flatnonzero(fr_feature & (fr_graph.layer == 0) & (fr_graph.position == LAST))
reads = (infl[site, None] * N[site]).sum(0) / infl[site].sum()  # their inputs, weighted by their influence
from_names = reads[fr_graph.nodes_of("embedding")[[FIRST, LAST]]]
sends = (N[:, site] * infl[:, None]).sum(1)  # what their outgoing edges carry, by target
to_end = sends[fr_graph.position == END].sum() / sends.sum()
print(f"layer-0 features at LAST read {from_names.sum():.2f} of their input from the embeddings of FIRST "
      f"({from_names[0]:.2f}) and LAST ({from_names[1]:.2f}) (threshold 0.8); "
      f"{to_end:.2f} of what they send goes to nodes at END (threshold 0.6)")  # fmt: skip
assert from_names.sum() > 0.8 and from_names.min() > 0.15
assert to_end > 0.6

# %% [markdown]
# These features read both names, through attention 0, which is frozen into their edges. This is
# where the first and last name are bound together. Most of what they send goes to the last
# position, through the later layers' attention.
#
# A graph is a hypothesis about the real model. To test it, we intervene on the real model
# (`freeze="none"`, nothing frozen): we set the active layer-0 features at LAST to zero and see
# whether the answer survives. As a control we zero the layer-0 features at FIRST instead.


# %%
def p_answer(intervention):
    logits = intervention.logits[-1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return float(probs[fr_answer] / probs.sum())


def zeroed(layer, position):
    nodes = np.flatnonzero(fr_feature & (fr_graph.layer == layer) & (fr_graph.position == position))
    return [(layer, position, int(fr_graph.index[i]), 0.0) for i in nodes]


clean_p = p_answer(intervene(fr_model, fr_tcs, fr_prompt, freeze="none"))
without_last = p_answer(intervene(fr_model, fr_tcs, fr_prompt, zeroed(0, LAST), freeze="none"))
without_first = p_answer(intervene(fr_model, fr_tcs, fr_prompt, zeroed(0, FIRST), freeze="none"))
print(f"p(answer): clean {clean_p:.3f}; the {len(zeroed(0, LAST))} layer-0 features at LAST zeroed "
      f"{without_last:.3f} (threshold 0.2); the {len(zeroed(0, FIRST))} at FIRST zeroed {without_first:.3f} "
      f"(threshold 0.95)")  # fmt: skip
assert clean_p > 0.99 and without_last < 0.2 and without_first > 0.95

# %% [markdown]
# Zeroing the handful of features active at one layer and one position removes the fact, and
# zeroing as many at the first name changes nothing. The graph agrees with the causal trace, and the knock-out
# confirms it.
#
# Next, the same reading on the first eight of lesson 0's prompts: other people, other fillers,
# other relations.

# %%
checks = []
for i in range(8):
    tokens_i = np.asarray(prompts.tokens[i])
    g = attribute(fr_model, fr_tcs, tokens_i)
    m = influence_map(g)[1:5]
    m[:, END] = 0
    cell = np.unravel_index(m.argmax(), m.shape)
    kept_pos = g.position[g.prune().nodes & (g.kind == "feature")]
    checks.append((g.index[g.nodes_of("logit")[0]] == int(prompts.targets[i, -1]), cell == (0, LAST),
                   np.isin(kept_pos, [LAST, END]).mean()))  # fmt: skip
right, at_site, kept_at = (np.array(c, float) for c in zip(*checks))
print(f"8 prompts: top logit right {right.mean():.2f}; top cell outside END is (layer 0, LAST) in "
      f"{at_site.mean():.2f}; kept features at LAST or END: min {kept_at.min():.2f} (threshold 0.85)")  # fmt: skip
assert right.all() and at_site.all() and kept_at.min() > 0.85

# %% [markdown]
# ### The graph in the browser, here
#
# `graph_view` draws the pruned graph as a page with no outside dependencies. The rows are the
# embeddings, then layers 0 to 3, then the logits, and the columns are positions. Click a node to
# see its edges and, for a feature, its top logits and the contexts in the training set where it
# fires most. The page is written to a temporary file and also shown inline below.

# %%
keys = view_features(fr_graph, fr_pruned)
contexts = top_activating_contexts(fr_model, fr_tcs, train.tokens, keys, token_text=fr_task.vocab)
top_logits = feature_top_logits(fr_tcs, fr_model, keys, output_text=fr_task.vocab_out)
page = os.path.join(tempfile.gettempdir(), "minillm_lesson9_graph.html")
view = graph_view(fr_graph, words, pruned=fr_pruned, feature_contexts=contexts, feature_logits=top_logits,
                  output_text=fr_task.vocab_out, title=f"{' '.join(words)} -> {fr_task.decode_target(fr_answer)}",
                  path=page)  # fmt: skip
print(f"{view.n_nodes} nodes and {view.n_edges} edges drawn; the page is {page}")
assert view.n_nodes == fr_pruned.nodes.sum() and view.n_edges == (fr_pruned.edges & (fr_graph.adjacency != 0)).sum()
display(view)

# %% [markdown]
# ## A note on lesson 7's IOI models: no MLP, no transcoder
#
# Lesson 7's models are attention-only, so there is no MLP to replace and no transcoder to train.
# With `transcoders=[]` the graph has only embeddings and logits. With every attention pattern
# frozen the model is linear, so each edge is a **direct attribution**: how much one position's
# embedding, carried through the frozen attention of both layers, adds to a logit. The graph is
# complete by construction, because there is no error node.

# %%
ioi_task = make_task("indirect_object")
ioi_model = GPT.load_seeds(checkpoint("ioi"))[0]
IO, S1, S2 = 4, 9, 13
ioi_batch, ioi_info = ioi_task.sample_with_info(jax.random.key(3), 1, "ABB", positions=(IO, S1, S2))
ioi_graph = attribute(ioi_model, [], ioi_batch.tokens[0])
ioi_logit = ioi_graph.nodes_of("logit")[0]
edges = ioi_graph.adjacency[ioi_logit, ioi_graph.nodes_of("embedding")]
ioi_scores = ioi_graph.scores()
share_io = abs(edges[IO]) / np.abs(edges).sum()
print(ioi_task.decode(ioi_batch.tokens[0]), "->", ioi_task.decode_target(int(ioi_graph.index[ioi_logit])))
print("edges from each position's embedding to that logit:", " ".join(f"{e:+.2f}" for e in edges))
print(f"the IO position carries {share_io:.2f} of the |edges| (threshold 0.5); scores {ioi_scores}")
assert ioi_graph.index[ioi_logit] == int(ioi_info.io[0])
assert np.argmax(edges) == IO and share_io > 0.5
assert min(ioi_scores.values()) > 0.999

# %% [markdown]
# The graph credits the answer to the IO name's own position. As far as it goes that is true: the
# IO logit is written from what attention reads there. But it misses the interesting part. In
# lesson 7, the suppressors at END look at S2 and write minus S, and layer 0 tells them where to
# look through their keys. That decision lives in the attention patterns, and an attribution graph
# freezes them. A graph shows what attention carried, not why it looked where it did. The same
# limit holds for the graphs of models with MLPs, and Ameisen et al. name it among the method's
# main limitations.
#
# ## Part 3: a prediction of the Shakespeare model
#
# Lesson 8's model with MLPs has two layers, so two transcoders. We train them on 64 windows of 128
# tokens of the training plays (256 features each, k = 16, 600 steps: under a minute) and measure
# them on windows of the held-out plays. Then we take the prediction lesson 8 singled out: a
# speaker's name at a heading, in a play the model never saw, where the same speaker spoke earlier
# in the context. Lesson 8 found that two heads of layer 1 carry earlier names. What does the graph
# say?

# %%
from minillm.tasks import Batch
from minillm.tasks.corpus import load_corpus, speeches

sh_model = GPT.load(checkpoint("shakespeare/model.safetensors"))
sh_tok = sh_model.tokenizer
corpus = load_corpus("shakespeare")


def sh_windows(text, n, length, seed):
    ids = np.asarray(sh_tok.encode(text), np.int32)
    starts = np.random.default_rng(seed).integers(0, len(ids) - length, n)
    return np.stack([np.concatenate([[sh_tok.bos_token_id], ids[s : s + length - 1]]) for s in starts])


sh_train, sh_held = sh_windows(corpus.text("train"), 64, 128, 0), sh_windows(corpus.text("validation"), 32, 128, 1)
sh_tcs = train_transcoders(sh_model, sh_train, 256, k=16, steps=600, seed=0, progress=False)
sh_quality = [evaluate_transcoder(tc, x, y) for tc, (x, y) in zip(sh_tcs, gather_mlp_io(sh_model, sh_held))]
held_batch = Batch(sh_held[:, :-1], sh_held[:, 1:], np.ones(sh_held[:, 1:].shape, np.float32))
sh_spliced = spliced_loss(sh_model, sh_tcs, held_batch)
for l, q in enumerate(sh_quality):
    print(f"layer {l}: variance explained on held-out plays {q['variance_explained']:.3f} (threshold 0.75)")
print(f"both MLPs replaced: loss {sh_spliced['transcoder_loss']:.3f} against {sh_spliced['clean_loss']:.3f} "
      f"(zeroed {sh_spliced['zero_ablation_loss']:.3f}); fraction recovered {sh_spliced['fraction_recovered']:.3f} "
      "(threshold 0.8)")  # fmt: skip
assert min(q["variance_explained"] for q in sh_quality) > 0.75
assert sh_spliced["fraction_recovered"] > 0.8

# %% [markdown]
# Real text is harder on transcoders than a toy task: with 256 features, a fifth of each MLP's output
# variance is left to the error nodes. The graph will account for it.
#
# The prompt: in The Tempest, the 48 tokens up to the first token of a heading whose speaker spoke
# earlier in those tokens, the one the model is surest of.

# %%
tempest = corpus.works["tempest"]
t_ids = np.asarray(sh_tok.encode(tempest), np.int32)
t_offsets = np.concatenate([[0], np.cumsum([len(sh_tok.decode([int(i)])) for i in t_ids])[:-1]])


@jax.jit
def next_probs(m, tokens):
    return jax.nn.softmax(m(tokens)[0, -1])


candidates = []
for speech in speeches(tempest)[100:400]:
    j = int(np.searchsorted(t_offsets, speech.start))
    context = t_ids[max(0, j - 47) : j + 1]  # up to the heading's first token
    if t_offsets[j] != speech.start or speech.speaker + ".\n" not in sh_tok.decode(context[:-1].tolist()):
        continue
    prompt = np.concatenate([[sh_tok.bos_token_id], context])
    candidates.append(
        (float(next_probs(sh_model, prompt[None])[t_ids[j + 1]]), speech.speaker, prompt, int(t_ids[j + 1]))
    )
p_answer, speaker, sh_prompt, sh_answer = max(candidates, key=lambda c: c[0])
print(repr(sh_tok.decode(sh_prompt[1:].tolist())), "->", repr(sh_tok.decode([sh_answer])), f"p = {p_answer:.2f}")

sh_graph = attribute(sh_model, sh_tcs, sh_prompt)
sh_pruned = sh_graph.prune()
sh_scores, sh_pruned_scores = sh_graph.scores(), sh_graph.scores(sh_pruned)
sh_feature = sh_graph.kind == "feature"
print(f"nodes: {sh_graph.n_nodes} ({sh_feature.sum()} features); after pruning {sh_pruned.nodes.sum()} nodes "
      f"({(sh_pruned.nodes & sh_feature).sum()} features), {sh_pruned.edges.sum()} edges")  # fmt: skip
print(f"whole graph: replacement {sh_scores['replacement']:.3f} (threshold 0.6), completeness "
      f"{sh_scores['completeness']:.3f} (threshold 0.75)")  # fmt: skip
print(f"pruned graph: replacement {sh_pruned_scores['replacement']:.3f} (threshold 0.5), completeness "
      f"{sh_pruned_scores['completeness']:.3f} (threshold 0.65)")  # fmt: skip
top_logit = sh_graph.nodes_of("logit")[0]
assert sh_graph.index[top_logit] == sh_answer and sh_graph.activation[top_logit] > 0.9
assert sh_scores["replacement"] > 0.6 and sh_scores["completeness"] > 0.75
assert sh_pruned_scores["replacement"] > 0.5 and sh_pruned_scores["completeness"] > 0.65

# %% [markdown]
# Where does the answer come from? We add up the influence of each position's embedding, features
# and errors, and mark the tokens of the speakers' headings in the context.

# %%
sh_infl = sh_graph.influence()
last = len(sh_prompt) - 1
by_position = np.zeros(len(sh_prompt))
for i in np.flatnonzero(sh_graph.kind != "logit"):
    by_position[sh_graph.position[i]] += sh_infl[i]
prompt_text = sh_tok.decode(sh_prompt[1:].tolist())
p_offsets = np.concatenate([[0], np.cumsum([len(sh_tok.decode([int(i)])) for i in sh_prompt[1:]])[:-1]])
in_heading = np.zeros(len(sh_prompt), bool)  # a token of a speaker's name in a heading, before the last
same_speaker = np.zeros(len(sh_prompt), bool)
for speech in speeches(prompt_text):
    name = (p_offsets >= speech.start) & (p_offsets < speech.body - 2)
    in_heading[1:] |= name
    same_speaker[1:] |= name & (speech.speaker == speaker)
strings = ["BOS"] + [sh_tok.decode([int(t)]) for t in sh_prompt[1:]]
colors = np.where(same_speaker, "tab:red", np.where(in_heading, "tab:orange", "tab:blue"))
fig, ax = plt.subplots(figsize=(11, 3))
ax.bar(range(len(sh_prompt)), by_position, color=colors)
ax.set_xticks(range(len(sh_prompt)), [repr(t)[1:-1] for t in strings], rotation=90, fontsize=7)
ax.set(ylabel="influence on the answer", title=f"where {speaker}'s name comes from (red: {speaker}'s earlier "
       "heading; orange: other headings)")  # fmt: skip
fig.tight_layout()
earlier = np.arange(len(sh_prompt)) < last - 2  # before the heading's own line break
per_heading_token = by_position[earlier & in_heading].mean()
per_other_token = by_position[earlier & ~in_heading].mean()
print(f"influence at the last token {by_position[last]:.3f}")
print(f"before the heading, per token: in a speaker's heading {per_heading_token:.4f}, elsewhere "
      f"{per_other_token:.4f} (ratio {per_heading_token / per_other_token:.1f}, threshold 2)")  # fmt: skip
print(f"{speaker}'s earlier heading: {by_position[same_speaker].sum():.3f} of the influence")
assert np.argmax(by_position) == last  # the heading's own first token matters most
assert per_heading_token > 2 * per_other_token  # and, before it, the speakers' headings

# %% [markdown]
# The graph says what lesson 8's ablations said, and where. Most of the answer comes from the
# current token itself, through layer-0 and layer-1 features at the last position: the first token
# of a heading already narrows the name down, the n-gram part of the job. Before it, the influence
# sits on the speakers' names in earlier headings, three times more per token than on the
# speeches' words: the speaker's own earlier heading, and the heading of the speech just before
# (speakers take turns, so who spoke last says who may speak next). Those tokens reach the last
# position through attention (frozen in the graph, so what we see is what attention carried): the
# long-range part that no n-gram has.
#
# ## What we showed
#
# - A transcoder stands in well for the grokked model's MLP. Its important features are, like the
#   neurons, each a single key frequency, and the pruned graph of a prompt keeps a handful of them
#   at `=`.
# - An edge is exactly the change of its target when its source doubles in the replacement model.
# - Influence, computed from the row-normalised |A| summed over all path lengths, drives pruning
#   and both scores. You wrote it.
# - On the factual-recall model, the graph finds lesson 0's path without being told where to look:
#   layer-0 features at the subject's last token that read both names, feeding the last position.
#   Zeroing them removes the fact.
# - With frozen attention, a graph shows what attention moves but not why. In an attention-only
#   model it reduces to direct attribution per position.
# - On the Shakespeare model, the graph of a speaker's name in a play it never saw draws most of
#   the answer from the heading's own first token and, before it, from the speakers' names in
#   earlier headings: the long-range path lesson 8's ablations found.
#
# **To go further.** (1) Train the factual-recall transcoders with more features or a larger k:
# how do the replacement and completeness scores and the number of kept features change? (2) Try
# `Transcoder.from_mlp` on the grokked model (its MLP is a ReLU MLP, so the transcoder is exact and
# its features are the neurons) and compare that graph with the trained transcoder's. (3) Prune with
# other thresholds (`graph.prune(0.6, 0.95)`) and watch the scores trade against the graph's size.
