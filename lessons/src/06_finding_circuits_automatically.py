# %% [markdown]
# # Lesson 6: Finding the circuit automatically
#
# In every lesson so far we found the circuit by hand: we looked at attention patterns, guessed a
# story, and tested it with ablations and patches. That works when we already suspect the answer.
# *Automatic circuit discovery* asks the model instead. It looks at the transformer as a graph whose
# nodes write to and read from the residual stream (the embeddings, every attention head, every MLP,
# the logits), and asks of every **edge**, one writer to one reader: does the output change when
# this reader stops receiving what this writer wrote?
#
# We meet four ways to answer, each one compiled JAX call in `minillm.discovery`:
#
# - **exact edge patching**: ablate each edge alone and rerun the model (one pass per edge);
# - **EAP**, edge attribution patching (Syed et al. 2023): a first-order estimate of all of those
#   numbers from one forward and one backward pass;
# - **EAP-IG**: the same gradient, integrated along the way from "keep" to "ablate" for every edge at
#   once. (Hanna et al. 2024's EAP-IG integrates along a path between the clean and the corrupted
#   *inputs* instead; the two agree only to first order. minillm's is the edge-mask version.)
# - **ACDC** (Conmy et al. 2023): walk back from the logits, removing each edge for good when that
#   changes the output by less than a threshold.
#
# How do we know they work? We first test them on transformers whose circuit *nobody had to guess*:
# **Tracr** (Lindner et al. 2023) compiles a program into transformer weights, so the circuit is
# known exactly. Then we turn them on the models of lessons 1 and 0 and see whether they rediscover
# what those lessons proved by hand, and finally where they mislead.
#
# Runs in about a minute on a laptop CPU. It uses the shipped Tracr fixtures and the checkpoints of
# lessons 0 and 1 (`minillm-train induction`, `minillm-train factual_recall`).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT
from minillm import discovery as D
from minillm.detectors import repeated_random_tokens
from minillm.graph import Graph
from minillm.lessons import checkpoint, retrain
from minillm.model.losses import cross_entropy
from minillm.plots import plot_circuit
from minillm.tasks import make_task
from minillm.tracr import PUBLISHED_CIRCUITS, load_fixture

# %% [markdown]
# ## 1. A transformer whose circuit we know
#
# Tracr's `frac_prevs` program computes, at every position, the fraction of tokens so far that are
# `"x"`. In RASP, the language Tracr compiles:
#
# ```python
# prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)   # each query sees keys <= it
# frac_prevs = rasp.numerical(rasp.Aggregate(prevs, rasp.numerical(tokens == "x"), default=0))
# ```
#
# Tracr turned this into a 2-layer transformer: an MLP computes `tokens == "x"` as a number, and an
# attention head averages it over the positions each query sees. minillm ships the compiled weights
# as a fixture (made once with `python -m minillm.tracr write-fixtures`, where Tracr is installed), so
# nothing here needs Tracr: `load_fixture` gives a `GPT` plus a codec and the circuit read off the
# compiled program.

# %%
frac = load_fixture("frac_prevs")
print(frac.model.cfg)
word = ["x", "w", "x", "x", "y"]
print(word, "->", frac.run(word))
expected = [np.mean([t == "x" for t in word[: i + 1]]) for i in range(len(word))]
assert np.allclose(frac.run(word)[1:], expected, atol=1e-3), "position 0 is BOS; then the running fraction"

# %% [markdown]
# The graph of this model, in the names circuit-discovery papers use: senders `embed`,
# `blocks.L.attn.headH` and `blocks.L.mlp`; receivers are a head's query, key or value input
# (`blocks.L.attn.headH.q`, `.k`, `.v`), an MLP's input, and the `logits`. An edge joins a sender to
# every receiver that runs after it.

# %%
graph = Graph.of(frac.model.cfg)
print(f"{len(graph)} edges, e.g. {graph.edges[:3]}")
print("the circuit Tracr compiled, and the residual directions each edge carries:")
for edge, labels in frac.edge_labels.items():
    print(f"  {edge:42s} {', '.join(labels)}")
plot_circuit(D.Circuit(graph, graph.mask(frac.circuit)), title="frac_prevs: the compiled circuit")
plt.show()
assert len(frac.circuit) == 5 and len(graph) == 23

# %% [markdown]
# Read it: the embedding feeds the MLP (which turns the token into the number `tokens == "x"`) and
# the head's query and key (the indices its selector compares); the MLP's output is the head's value;
# the head writes the answer to the logits. Five edges of 23.
#
# ## 2. What ablating one edge means
#
# Ablating the edge `A -> B.k` means: B's key input receives A's output from *another* run (a
# corrupted input, or zeros, or the batch mean), while every other reader of A, and every other input
# of B, still receives A's real output. A receiver's input is the sum of what its senders wrote, so
# this is one subtraction at one hook point: minillm has TransformerLens' per-head input hooks
# `blocks.L.hook_q_input`, `hook_k_input`, `hook_v_input` (shape `[batch, pos, head, d_model]`,
# before LayerNorm), and a head's output is `blocks.L.attn.hook_result[:, :, head]`.
#
# ### Exercise 1: ablate one edge by hand
#
# Write `ablate_edge(model, clean, corrupted, sender, receiver)`: the logits of the clean run in
# which the head `sender = (layer, head)` sends its *corrupted-run* output to one input of one later
# head, `receiver = (layer, head, "q" | "k" | "v")`, and its clean output everywhere else. Take the
# two heads' outputs from `run_with_cache` (ask for the `hook_result` names), and subtract the
# difference at `blocks.{layer}.hook_{part}_input`, only for the receiving head. The check compares
# your logits with `minillm.graph.run_with_edges`.


# %%
def ablate_edge(model, clean, corrupted, sender, receiver):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_ablate_edge_by_hand

check_ablate_edge_by_hand(ablate_edge)


# %% tags=["solution"]
def ablate_edge(model, clean, corrupted, sender, receiver):
    name = f"blocks.{sender[0]}.attn.hook_result"
    _, clean_cache = model.run_with_cache(clean, names_filter=[name])
    _, corrupted_cache = model.run_with_cache(corrupted, names_filter=[name])
    delta = clean_cache[name][:, :, sender[1]] - corrupted_cache[name][:, :, sender[1]]  # [b, p, d]
    layer, head, part = receiver

    def swap(inputs, hook):  # inputs [b, p, h, d]: this head's input gets the corrupted output instead
        return inputs.at[:, :, head].add(-delta)

    return model.run_with_hooks(clean, [(f"blocks.{layer}.hook_{part}_input", swap)])


check_ablate_edge_by_hand(ablate_edge)

# %% [markdown]
# `minillm.graph.run_with_edges` does this for every edge at once: it takes a mask with one number
# per edge (1 keeps the edge, 0 ablates it, anything between mixes the two), so a mask is an array
# that `jax.vmap` sweeps and `jax.grad` differentiates. All four methods are that one function under
# different transformations.
#
# ## 3. Four methods, checked against the compiled circuits
#
# We follow ACDC's setup for Tracr: **zero ablation** (an ablated edge carries zeros), and as the
# metric the distance from the full model's output: the KL divergence for a categorical output, the
# mean squared error for a numerical one like `frac_prevs`. The inputs are sequences one shorter than
# the longest the program accepts: at full length, a zeroed "length" head happens to give the right
# length, and its edges would look useless.
#
# EAP needs a metric whose gradient is not zero at the full model, which a distance from the full
# model never has; it gets the output itself (for `frac_prevs`) or the log-probability of the full
# model's answer (for `reverse`), and we rank edges by the size of their scores.


# %%
def tracr_problem(tm, batch=8):
    length = tm.max_seq_len - 1
    rng = np.random.default_rng(0)
    tokens = np.concatenate([tm.encode(list(rng.choice(tm.input_space, length))) for _ in range(batch)])
    clean = tm.model(tokens)
    answer = tuple(range(1, length + 1))  # every position but BOS
    if tm.is_numerical:
        distance = D.mse(clean, answer)
        signal = lambda logits: logits[:, 1:, 0].mean()  # noqa: E731
    else:
        distance = D.kl_divergence(clean, answer)
        signal = D.mean_log_prob(jnp.argmax(clean[:, 1:], -1), answer)
    return tokens, distance, signal


def four_methods(tm):
    tokens, distance, signal = tracr_problem(tm)
    return {
        "edge patching": D.edge_patching(tm.model, tokens, distance, ablation="zero"),
        "EAP": D.eap(tm.model, tokens, signal, ablation="zero"),
        "EAP-IG": D.eap_ig(tm.model, tokens, signal, ablation="zero", steps=16),
        "ACDC": D.acdc_sweep(tm.model, tokens, np.geomspace(1e-6, 10, 12), distance, ablation="zero"),
    }


reverse = load_fixture("reverse")
results = {"frac_prevs": four_methods(frac), "reverse": four_methods(reverse)}
# the circuits compiled into the weights: no circuit-finding method had a hand in them
truths = {"frac_prevs": frac.circuit, "reverse": reverse.circuit}

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
auc = {}
for ax, (program, found) in zip(axes, results.items()):
    for method, scores in found.items():
        roc = D.roc(scores, truths[program])
        auc[program, method] = roc.auc
        ax.plot(roc.fpr, roc.tpr, marker=".", label=f"{method} (AUC {roc.auc:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set(title=f"{program}: against the compiled circuit", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=8)
plt.show()
published = {  # the circuits Conmy et al. published with ACDC's code: made by running ACDC
    (program, method): D.roc(scores, PUBLISHED_CIRCUITS[program]["acdc"]).auc
    for program, found in results.items()
    for method, scores in found.items()
}
print("AUC against:          the compiled circuit   ACDC's published circuit")
for (program, method), value in auc.items():
    print(f"{program:11s} {method:14s} {value:.3f}                  {published[program, method]:.3f}")

assert all(auc["frac_prevs", method] == 1.0 for method in ("edge patching", "ACDC"))
assert min(auc["frac_prevs", "EAP"], auc["frac_prevs", "EAP-IG"]) > 0.9
assert 0.8 < auc["reverse", "edge patching"] < 1.0 and auc["reverse", "ACDC"] < 1.0
assert published["reverse", "edge patching"] == 1.0  # exact patching is independent of ACDC

# %% [markdown]
# The honest ground truth is the circuit **compiled** into the weights: minillm reads it off them
# (`tm.circuit`), and no circuit-finding method had a hand in it. On `frac_prevs` every method ranks
# its five edges above all the others. On `reverse` none is perfect: exact patching and ACDC rank
# three of the 13 compiled edges at the bottom, and the next section shows why no ablation could see
# them. The gradient methods, a first-order estimate, also misjudge edges whose effect is not linear.
#
# Conmy et al. (2023) published ground truths for these programs with ACDC's code, and the paper
# reports ACDC recovering them perfectly. That figure is circular: the published circuit was made by
# running ACDC, so ACDC scoring 1.0 against it (the right column) says only that minillm's ACDC
# agrees with theirs. Exact edge patching owes nothing to ACDC and also scores 1.0 against it: the
# published circuit is the part of the compiled one that ablation can see.
#
# ### Exercise 2: the area under the ROC curve
#
# An ROC curve ranks the edges by how large their score is and asks, at every cut, what fraction of
# the true edges and of the false ones are above it. Its area is the chance that a randomly chosen
# true edge scores higher (in absolute value) than a randomly chosen false one, counting ties as a
# half. Write `roc_auc(scores, is_true)` for an array of scores and a boolean array of the same length.


# %%
def roc_auc(scores, is_true):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_roc_auc

check_roc_auc(roc_auc)


# %% tags=["solution"]
def roc_auc(scores, is_true):
    size = np.abs(np.asarray(scores))
    is_true = np.asarray(is_true, bool)
    true, false = size[is_true][:, None], size[~is_true][None, :]
    return float((true > false).mean() + 0.5 * (true == false).mean())


check_roc_auc(roc_auc)

# %% [markdown]
# ### What a compiled circuit is, and what an ablation can see
#
# minillm also reads a circuit straight off the compiled weights (`tm.circuit`): an edge wherever a
# writer's residual directions meet a reader's. For `reverse` that gives 13 edges where ACDC's ground
# truth has 10. The three extra edges are real reads that no ablation can detect: the first head's
# query and key read the tokens, but its selector (`Select(tokens, tokens, TRUE)`) scores every key
# the same whatever they are, and the last head's query reads a constant that is never needed. A
# circuit found by ablation is a *functional* circuit: what the output depends on for these inputs.

# %%
exact = results["reverse"]["edge patching"]
extra = sorted(set(reverse.circuit) - set(PUBLISHED_CIRCUITS["reverse"]["acdc"]))
for edge in extra:
    print(f"{edge:38s} exact score {exact[edge]:+.1e}")
assert len(extra) == 3 and all(abs(exact[e]) < 1e-5 for e in extra)
assert D.roc(exact, reverse.circuit).auc < 1.0

# %% [markdown]
# ## 4. Lesson 1's induction model
#
# Now a model nobody compiled. Lesson 1 showed by hand that its layer-0 head 0 is a previous-token
# head whose output the layer-1 induction heads read through their **keys** (K-composition). The
# metric: the loss on the repeated half of `[BOS, 20 random tokens, the same 20 again]`. The
# ablation: the mean over the batch (each sender's output, averaged over sequences).

# %%
induction = GPT.load(checkpoint("induction/model.safetensors"))
probe = repeated_random_tokens(jax.random.key(7), 32, 20, induction.cfg.d_vocab)  # [32, 41]


def repeat_loss(logits):
    return cross_entropy(logits[:, 21:-1], probe[:, 22:]).mean()


found = D.acdc(induction, probe, 0.01, repeat_loss, ablation="mean")
faith = D.faithfulness(induction, probe, found, repeat_loss, ablation="mean")
print(found)
print(
    f"loss on the repeat: full model {faith.full:.3f}, circuit {faith.circuit:.3f} "
    f"({faith.n_edges} of {len(Graph.of(induction.cfg))} edges), nothing {faith.empty:.2f}"
)
plot_circuit(found, title="induction model: ACDC's circuit (mean ablation)")
plt.show()

prev_to_keys = [e for e in found.edges if e.startswith("blocks.0.attn.head0 -> blocks.1.") and e.endswith(".k")]
print("previous-token head -> induction heads' keys:", prev_to_keys)
assert len(prev_to_keys) >= 3, "ACDC finds the K-composition of lesson 1"
assert faith.circuit < 1.1 * faith.full, "the circuit keeps the loss within 10% of the full model's"
assert faith.fraction_of_edges < 0.35

# %% [markdown]
# And the gradient methods on the same model: EAP's estimates agree only loosely with the exact
# numbers; integrating the gradient (EAP-IG) brings them much closer.

# %%
exact = D.edge_patching(induction, probe, repeat_loss, ablation="mean")
eap = D.eap(induction, probe, repeat_loss, ablation="mean")
eap_ig = D.eap_ig(induction, probe, repeat_loss, ablation="mean", steps=16)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, (name, scores) in zip(axes, [("EAP", eap), ("EAP-IG", eap_ig)]):
    r = np.corrcoef(exact.scores, scores.scores)[0, 1]
    ax.scatter(scores.scores, exact.scores, s=10)
    ax.set(xlabel=f"{name} estimate", title=f"{name}: correlation {r:.2f}")
axes[0].set_ylabel("exact effect of ablating the edge")
plt.show()
r_eap, r_ig = (np.corrcoef(exact.scores, s.scores)[0, 1] for s in (eap, eap_ig))
assert r_ig > r_eap + 0.1 and r_ig > 0.7

# %% [markdown]
# ## 5. Lesson 0's factual-recall model, and where attribution misleads
#
# Lesson 0 found by causal tracing that the first layer builds the fact at the subject's last token
# (MLP 0 there), that layer-1 heads move it to the final position, and that the later MLPs write the
# answer. Here the corrupted run swaps the subject for another prompt's subject; the metric is the
# log-probability of the right attribute. The graph has 479 edges; we keep the 80 that exact patching
# ranks highest (a circuit can come from any scores: `EdgeScores.circuit(top=...)`) and check it.

# %%
recall = GPT.load(checkpoint("factual_recall/model.safetensors"))
task = make_task("factual_recall")
FIRST, LAST = task.subject_positions(5)
batch = task.prompts(jax.random.key(7), 16, 5)
tokens, answers = jnp.asarray(batch.tokens), jnp.asarray(batch.targets[:, -1])
other = tokens.at[:, [FIRST, LAST]].set(jnp.roll(tokens[:, [FIRST, LAST]], 1, axis=0))


def log_p_answer(logits):
    return jnp.take_along_axis(jax.nn.log_softmax(logits[:, -1]), answers[:, None], -1).mean()


recall_exact = D.edge_patching(recall, tokens, log_p_answer, corrupted=other)
recall_eap = D.eap(recall, tokens, log_p_answer, corrupted=other)
recall_found = recall_exact.circuit(top=80)
recall_faith = D.faithfulness(recall, tokens, recall_found, log_p_answer, corrupted=other)
print(
    f"{len(recall_found)} of {len(Graph.of(recall.cfg))} edges; log p(answer): full {recall_faith.full:.3f}, "
    f"circuit {recall_faith.circuit:.3f}, nothing {recall_faith.empty:.2f} (recovered {recall_faith.recovered:.2f})"
)
print("top edges by exact patching:", [e for e, _ in recall_exact.top(6)])
moves = [e for e in recall_found.edges if e.startswith("blocks.0.mlp -> blocks.1.attn") and e.endswith(".v")]
print("MLP 0 -> layer-1 heads' values:", moves)
assert len(moves) >= 3, "layer-1 heads carry MLP 0's output (the fact) through their values"
assert recall_faith.recovered > 0.85 and recall_faith.fraction_of_edges < 0.2

# %% [markdown]
# Now compare EAP. The model is sure of its answers (p ≈ 1), so the log-probability sits on the flat
# top of the softmax and its gradient is almost zero: EAP, a first-order method, sees nothing, while
# ablating an edge really does change the answer. A method that looks only at a gradient cannot see
# effects that appear only after a large change.

# %%
largest_exact, largest_eap = np.abs(recall_exact.scores).max(), np.abs(recall_eap.scores).max()
print(f"largest |exact| {largest_exact:.2f} nats, largest |EAP| {largest_eap:.2e}")
assert largest_eap < 0.01 * largest_exact

# %% [markdown]
# ## 6. The ablation is part of the question
#
# Which edges matter depends on what an ablated edge carries instead (Miller et al. 2024 make this
# point about every benchmark). Back to the induction model: corrupt only the second half (the first
# 20 tokens stay, the repeat is replaced by new random tokens). The previous-token head's output at
# the first-half positions, where the induction heads' keys read it, is then the same in both runs,
# so its edges into the keys carry no difference and look useless, although the mean ablation above
# showed they are essential.

# %%
fresh = repeated_random_tokens(jax.random.key(8), 32, 20, induction.cfg.d_vocab)
second_half_only = jnp.concatenate([probe[:, :21], fresh[:, 21:]], axis=1)
by_corruption = D.edge_patching(induction, probe, repeat_loss, corrupted=second_half_only)
keys = [f"blocks.0.attn.head0 -> blocks.1.attn.head{h}.k" for h in range(induction.cfg.n_heads)]
for edge in keys:
    print(f"{edge}: mean ablation {exact[edge]:+.3f}, second-half corruption {by_corruption[edge]:+.3f}")
assert max(exact[e] for e in keys) > 1.0 and max(abs(by_corruption[e]) for e in keys) < 0.05

# %% [markdown]
# ## What we showed
#
# - A circuit is a set of edges of a graph (embeddings, heads with their q, k, v inputs, MLPs,
#   logits), and ablating an edge is one subtraction at one per-head input hook.
# - On Tracr's compiled `frac_prevs`, all four methods recover the compiled circuit (ROC AUC 1.0);
#   on `reverse`, exact patching and ACDC miss exactly the three compiled reads that change nothing,
#   and recover the rest. A ground truth made by running ACDC cannot test ACDC.
# - Ablation finds *functional* circuits: reads that change nothing (a selector that is always true)
#   are invisible to it.
# - On lesson 1's model ACDC finds the previous-token head feeding the induction heads' keys, in a
#   circuit of under a third of the edges that keeps the loss within 10%; on lesson 0's model the
#   edges exact patching ranks highest carry MLP 0's output through layer-1 heads' values.
# - Gradients mislead where the metric is saturated (EAP sees nothing in the factual-recall model),
#   and the choice of ablation decides which edges can be seen at all.
#
# **To go further.** `D.acdc_sweep` runs many thresholds in one compiled call: plot the circuit's
# size against its loss for the induction model. Which edges does ACDC keep that exact patching ranks
# low, and why might that be? Run ACDC on lesson 0's model (`D.acdc(recall, tokens, 0.1, lambda
# logits: -log_p_answer(logits), corrupted=other)`): does it agree with the top 80 edges?
#
# **Retrain the models yourself** with `retrain("induction")` or `retrain("factual_recall")` (set
# `RETRAIN = True`); the Tracr fixtures are compiled again with `python -m minillm.tracr
# write-fixtures DIR` where Tracr is installed (`pip install -e ".[tracr]"`).

# %%
RETRAIN = False
if RETRAIN:
    retrain("induction")
