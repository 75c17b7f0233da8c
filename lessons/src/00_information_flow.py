# %% [markdown]
# # Lesson 0: How information travels through a transformer
#
# The first question to ask of a language model is how information travels through it. Where is a
# fact kept? At which layer does the answer become readable? Which position and which component
# carry it to the place where it is used? This lesson answers these questions for a toy model whose
# facts we wrote ourselves, so every picture can be checked against the truth.
#
# The tools are the ones used on real models:
#
# 1. **anatomy**: every tensor of a forward pass has a name, and the residual stream is a *sum* of
#    what each component writes to it;
# 2. the **logit lens** (nostalgebraist 2020): read the answer off the residual stream after each
#    layer;
# 3. **direct logit attribution**: how much each head and MLP adds to the answer's logit;
# 4. the **causal trace** (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"):
#    corrupt the subject, then restore clean activations one layer and position at a time, and see
#    where restoring brings the answer back;
# 5. **knock-outs**: remove what the trace points to and check that recall breaks, and remove
#    something else and check that it does not.
#
# Meng et al. found two sites of factual recall in GPT. The subject is looked up by the MLPs at
# the subject's *last token* in early and middle layers. Attention then carries the result to the
# end of the prompt. Geva et al. 2023 ("Dissecting Recall of Factual Associations") call these two
# steps *subject enrichment* and *attribute extraction*. We grow a miniature of that result and
# take it apart. Every claim is asserted, and if the model did not do what the prose says, the
# notebook stops.
#
# Runs in about a minute on a laptop CPU, from the checkpoints in `checkpoints/factual_recall/` and
# `checkpoints/factual_recall_plain/`. They are made by `minillm-train factual_recall` and
# `minillm-train factual_recall_plain`, and the last cell retrains them.

# %%
import json

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT, act_name
from minillm.decompose import accumulated_resid, decompose_resid, stack_head_results
from minillm.interventions import ablate, add_noise
from minillm.lessons import checkpoint, retrain
from minillm.patching import get_act_patch_block_every
from minillm.plots import plot_attention_patterns, plot_causal_trace, plot_training_curves
from minillm.tasks import make_task
from minillm.weight_processing import fold_layer_norm

model = GPT.load(checkpoint("factual_recall/model.safetensors"))
metrics = [json.loads(line) for line in open(checkpoint("factual_recall/metrics.jsonl"))]
task = make_task("factual_recall")
print(model.cfg)

# %% [markdown]
# ## The task: facts stored in the weights
#
# The world has 300 people. Each is named by a first and a last name, drawn from 24 of each, so every
# name is shared by about a dozen people and neither name alone says who is meant. There are 3
# relations, and each (person, relation) has a fixed attribute, one of 40, drawn at random once.
# These 900 facts are nowhere in the input: the model must store them in its weights.
#
# A sequence is random filler, the person's two names, more filler, then a relation token. The
# model must predict the attribute at the last position. Some fillers are *stray names*
# (distractors), first or last names that belong to nobody in particular. We will see at the end
# why they are there.

# %%
first, last, attribute = task.facts()
for s in range(4):
    print(f"{task.subject_name(s):12s}", "  ".join(f"rel{r} -> attr{attribute[s, r]}" for r in range(3)))

_, test = task.split(0)
predicted = np.asarray(model(test.tokens)[:, -1].argmax(-1))
test_acc = (predicted == np.asarray(test.targets[:, -1])).mean()
for row in np.asarray(test.tokens[:3]):
    print(task.decode(row), "->", task.decode_target(int(model(row[None])[0, -1].argmax())))
print(f"accuracy on {len(predicted)} unseen contexts: {test_acc:.4f}")
assert test_acc > 0.99

plot_training_curves(metrics, title="factual recall: 4 layers, d_model 64")
plt.show()

# %% [markdown]
# For the analysis we fix one layout: 5 fillers, the subject at positions 6 and 7, 7 more fillers,
# and the relation at position 15. Then the same position means the same role in every row of a
# batch. `task.prompts` draws such sequences, with other people, fillers and distractors in each row.

# %%
N_BEFORE = 5
FIRST, LAST = task.subject_positions(N_BEFORE)  # 6, 7
END = task.seq_len - 1  # 15, the relation token
batch = task.prompts(jax.random.key(7), 256, N_BEFORE)
tokens, answers = jnp.asarray(batch.tokens), jnp.asarray(batch.targets[:, -1])
roles = ["<bos>"] + ["filler"] * N_BEFORE + ["FIRST", "LAST"] + ["filler"] * (END - LAST - 1) + ["RELATION"]
print(task.decode(tokens[0]), "->", task.decode_target(int(answers[0])))


def p_correct(logits):
    """The mean probability of the right attribute at the last position: the metric of this lesson."""
    probs = jax.nn.softmax(logits[:, -1], axis=-1)
    return jnp.take_along_axis(probs, answers[:, None], axis=1).mean()


def accuracy(logits):
    return (logits[:, -1].argmax(-1) == answers).mean()


logits, cache = model.run_with_cache(tokens)
print(f"p(correct) = {p_correct(logits):.4f}, accuracy = {accuracy(logits):.4f}")

# %% [markdown]
# ## Anatomy of a forward pass
#
# `run_with_cache` returns every intermediate tensor by name. The names are TransformerLens' names,
# and the list below is read from the cache, not typed in. For each block there are:
#
# - the residual stream entering it (`hook_resid_pre`), after attention (`hook_resid_mid`) and
#   leaving it (`hook_resid_post`);
# - attention's queries, keys and values per head, its scores and pattern, each head's output `z`,
#   and the layer's output `attn_out`;
# - the MLP's pre- and post-activation (`pre`, `post`) and its output `mlp_out`;
# - each LayerNorm's scale and normalized input.
#
# Five more hook points per block exist but are left out of "cache everything": the inputs of each
# head's query, key and value and the MLP's input before its LayerNorm (`hook_q_input`, ...), which
# copy the residual stream once per head. A call gets them by naming them; lesson 6 needs them.

# %%
for name in cache:
    if name.startswith("blocks.") and not name.startswith("blocks.0."):
        continue  # the other blocks repeat block 0's names
    print(f"{name:34s} {tuple(cache[name].shape)}")
print(f"... and the same for blocks 1 to {model.cfg.n_layers - 1}: {len(cache)} tensors in all")
on_request = {name.rsplit(".", 1)[1] for name in model.hook_names() if name not in cache}
print("named on request only:", sorted(on_request))
assert on_request == {"hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in"}
assert cache["pattern", 0].shape == (256, model.cfg.n_heads, task.seq_len, task.seq_len)

# %% [markdown]
# **The residual stream is a sum.** Each attention layer and each MLP *reads* the stream, through a
# LayerNorm, and *adds* its output back to it. The stream leaving the last block is therefore the
# token embedding, plus the position embedding, plus every `attn_out` and every `mlp_out`.
# `decompose_resid` returns these parts, and adding them up gives back `resid_post` of the last
# layer.

# %%
parts, part_labels = decompose_resid(model, cache, layer=None, return_labels=True)  # [10, b, p, d]
total = parts.sum(0)
error = float(jnp.abs(total - cache["resid_post", model.cfg.n_layers - 1]).max())
print(part_labels)
print(f"largest difference between the sum of the parts and resid_post: {error:.2e}")
assert error < 1e-4

norms = np.asarray(jnp.linalg.norm(parts, axis=-1).mean(1))  # [part, pos]
fig, ax = plt.subplots(figsize=(9, 3.6))
image = ax.imshow(norms, cmap="viridis", aspect="auto")
ax.set_yticks(range(len(part_labels)), part_labels, fontsize=8)
ax.set_xticks(range(task.seq_len), roles, rotation=60, fontsize=7)
ax.set_title("how much each component writes at each position (mean norm)")
fig.colorbar(image, ax=ax)
plt.show()

# %% [markdown]
# Every component writes at every position, and the picture alone does not say what any of it
# means. The rest of the lesson works that out.
#
# ### Exercise: rebuild the forward pass from the weights
#
# Write the forward pass yourself from `model.state_dict()`, a dict of arrays with
# TransformerLens' names (`embed.W_E`, `blocks.0.attn.W_Q` of shape [head, d_model, d_head], ...).
# Return the residual stream entering block 0 and the stream leaving each block, and the logits.
# The model is the classic GPT-2 block:
#
# - LayerNorm: subtract the mean, divide by `sqrt(mean(x**2) + eps)`, then apply `w` and `b`;
# - causal attention with scores scaled by `1 / sqrt(d_head)`;
# - an MLP with `cfg.act_fn` (exact GELU, `jax.nn.gelu(x, approximate=False)`, or ReLU);
# - a final LayerNorm before the unembedding.
#
# `check_forward_from_state_dict` runs your function on two fresh models and compares every stream.
#
# **How the exercises work.** Every exercise is three cells. The first is a stub for you to fill in:
# until you do, it raises `NotImplementedError`. The second checks your function: it prints
# `correct`, or raises an error that says what is wrong, or, while the stub is still empty, tells
# you so and lets the notebook go on. The third, collapsed, is a solution: open it if you are
# stuck. Running it replaces your function with the solution and checks that too, so the cells
# after an exercise work either way.


# %%
def my_forward(weights, cfg, tokens):
    """-> (streams [n_layers + 1, b, p, d], logits [b, p, d_vocab_out])"""
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_forward_from_state_dict

check_forward_from_state_dict(my_forward)


# %% tags=["solution"]
def my_forward(weights, cfg, tokens):
    def layer_norm(x, prefix):
        x = x - x.mean(-1, keepdims=True)
        x = x / jnp.sqrt((x * x).mean(-1, keepdims=True) + cfg.eps)
        return x * weights[prefix + ".w"] + weights[prefix + ".b"]

    n_pos = tokens.shape[1]
    resid = weights["embed.W_E"][tokens] + weights["pos_embed.W_pos"][:n_pos]  # [b, p, d]
    streams = [resid]
    causal = jnp.tril(jnp.ones((n_pos, n_pos), bool))
    for l in range(cfg.n_layers):
        w = {k[len(f"blocks.{l}.") :]: v for k, v in weights.items() if k.startswith(f"blocks.{l}.")}
        x = layer_norm(resid, f"blocks.{l}.ln1")
        q = jnp.einsum("bpd,hde->bphe", x, w["attn.W_Q"]) + w["attn.b_Q"]
        k = jnp.einsum("bpd,hde->bphe", x, w["attn.W_K"]) + w["attn.b_K"]
        v = jnp.einsum("bpd,hde->bphe", x, w["attn.W_V"]) + w["attn.b_V"]
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(q.shape[-1])
        pattern = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        z = jnp.einsum("bhqk,bkhe->bqhe", pattern, v)
        resid = resid + jnp.einsum("bqhe,hed->bqd", z, w["attn.W_O"]) + w["attn.b_O"]
        x = layer_norm(resid, f"blocks.{l}.ln2")
        pre = x @ w["mlp.W_in"] + w["mlp.b_in"]
        post = jax.nn.gelu(pre, approximate=False) if cfg.act_fn == "gelu" else jax.nn.relu(pre)
        resid = resid + post @ w["mlp.W_out"] + w["mlp.b_out"]
        streams.append(resid)
    logits = layer_norm(resid, "ln_final") @ weights["unembed.W_U"] + weights["unembed.b_U"]
    return jnp.stack(streams), logits


check_forward_from_state_dict(my_forward)

# %% [markdown]
# Your function (or the solution, whichever ran last) on the trained model, against its own cache:

# %%
streams, my_logits = my_forward(model.state_dict(), model.cfg, tokens)
from_cache = [cache["resid_pre", 0]] + [cache["resid_post", l] for l in range(model.cfg.n_layers)]
worst = max(float(jnp.abs(mine - theirs).max()) for mine, theirs in zip(streams, from_cache))
print(f"your streams against the cache of the trained model: largest difference {worst:.2e}")
assert worst < 1e-3 and float(jnp.abs(my_logits - logits).max()) < 1e-3

# %% [markdown]
# ## The logit lens: when does the answer become readable?
#
# The unembedding reads the stream leaving the last block. The **logit lens** applies the final
# LayerNorm and the unembedding to the stream *earlier*, after each block, as if the model stopped
# there. `accumulated_resid` gives the stream entering each block and the final one at the last
# position, each put through `ln_final` with its own statistics (`apply_ln=True`). We ask how
# likely the right attribute looks after each block, and how often it is the top guess.

# %%
stack, lens_labels = accumulated_resid(model, cache, apply_ln=True, pos_slice=-1, return_labels=True)  # [5, b, d]
lens_logits = stack @ model.unembed.W_U[...] + model.unembed.b_U[...]  # [5, b, attributes]
lens_p = np.asarray(jnp.take_along_axis(jax.nn.softmax(lens_logits, -1), answers[None, :, None], 2)[..., 0].mean(1))
lens_acc = np.asarray((lens_logits.argmax(-1) == answers).mean(1))
after = ["embeddings"] + [f"after block {l}" for l in range(model.cfg.n_layers)]
for label, p, acc in zip(after, lens_p, lens_acc):
    print(f"{label:13s} p(correct) {p:.3f}   top-1 accuracy {acc:.3f}")

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(after, lens_p, "o-", label="p(correct attribute)")
ax.plot(after, lens_acc, "s--", label="top-1 accuracy")
ax.axhline(1 / task.n_attributes, color="grey", lw=0.8, label="chance")
ax.set(ylim=(0, 1.05), title="logit lens at the last position")
ax.legend(fontsize=8)
plt.show()

readable = int(np.argmax(lens_acc > 0.5))  # the first stream where the answer is the top guess in most rows
print(f"the answer becomes readable {after[readable]}")
assert lens_acc[1] < 0.1, "after block 0 the last position knows nothing of the answer"
assert readable == 3 and lens_acc[3] > 0.7 and lens_acc[-1] > 0.99

# %% [markdown]
# After block 0, the last position's stream does not contain the answer at all. It is partly
# readable after block 1 and mostly after block 2. But "readable at the last position" does not
# mean "computed at the last position". The lens looks at one position only. Where was the fact
# found, and how did it get here?
#
# ## Direct logit attribution: who writes the answer?
#
# The logits are linear in the final stream, once we fix the final LayerNorm's scale from the real
# run. So the logit of the right attribute splits exactly into one term per component. Above, the
# final stream was the sum of the components. Here each term is that component's write, dotted
# with the direction that raises the right logit against the mean logit. We first fold the
# LayerNorms' weights into the next matrices (`fold_layer_norm`). This does not change the model's
# outputs, and afterwards the split is exact: the terms add up to the logit difference itself.

# %%
folded = fold_layer_norm(model)
f_logits, f_cache = folded.run_with_cache(tokens)
W_U = folded.unembed.W_U[...]
direction = W_U[:, answers].T - W_U.mean(1)  # [b, d]: raise the right logit against the mean
parts, part_labels = decompose_resid(folded, f_cache, layer=None, pos_slice=-1, apply_ln=True, return_labels=True)
dla = np.asarray((parts * direction).sum(-1).mean(1))  # [part]
heads, head_labels = stack_head_results(folded, f_cache, pos_slice=-1, apply_ln=True, return_labels=True)
head_dla = np.asarray((heads * direction).sum(-1).mean(1)).reshape(model.cfg.n_layers, model.cfg.n_heads)

b_U = folded.unembed.b_U[...]
logit_diff = f_logits[:, -1][jnp.arange(len(answers)), answers] - f_logits[:, -1].mean(-1)
bias_part = float((b_U[answers] - b_U.mean()).mean())
print(f"logit difference {float(logit_diff.mean()):.3f} = sum of the parts {dla.sum():.3f} + bias {bias_part:.3f}")
assert abs(float(logit_diff.mean()) - dla.sum() - bias_part) < 1e-2

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), width_ratios=[2, 1])
axes[0].bar(part_labels, dla, color=["C7" if "embed" in n else "C0" if "attn" in n else "C2" for n in part_labels])
axes[0].set_title("direct logit attribution, by component")
axes[0].tick_params(axis="x", rotation=60)
image = axes[1].imshow(head_dla, cmap="RdBu", vmin=-np.abs(head_dla).max(), vmax=np.abs(head_dla).max())
axes[1].set(xlabel="head", ylabel="layer", title="by head")
fig.colorbar(image, ax=axes[1])
fig.tight_layout()
plt.show()

share = dict(zip(part_labels, dla / dla.sum()))
late_mlps = share["1_mlp_out"] + share["2_mlp_out"] + share["3_mlp_out"]
print({k: round(float(v), 3) for k, v in share.items()})
assert late_mlps > 0.5, "the MLPs of blocks 1-3 write most of the answer at the last position"
assert abs(share["embed"] + share["pos_embed"] + share["0_attn_out"] + share["0_mlp_out"]) < 0.05
assert head_dla[1].sum() > 0 and share["1_attn_out"] > 0.03

# %% [markdown]
# Block 0 writes nothing that is directly the answer. The MLPs of the later blocks write most of
# it at the last position. Layer 1's heads add some directly, and we will see below that their
# real job is something else.
#
# DLA only measures *direct* effects. A component that sends information to a later one, which
# then writes the answer, gets no credit. To follow the information itself we need causal
# interventions.
#
# ## The causal trace
#
# Meng et al.'s recipe:
#
# 1. **Clean run.** Run the prompt and keep every activation.
# 2. **Corrupted run.** Run it again with Gaussian noise added to the subject's token embeddings,
#    with a standard deviation of 3 times the embeddings' own, so the model can no longer tell who
#    is meant.
# 3. **Restore.** For every layer and position, rerun the corrupted prompt with that one
#    activation restored to its clean value, and measure how much of the right answer's
#    probability comes back.
#
# The noise is a hook, `add_noise("hook_embed", ...)`, passed to the patching sweep as
# `corruption_hooks`. Each sweep is one compiled call per layer (`jax.lax.map` over the positions),
# not a Python loop of forward passes.

# %%
names = np.concatenate([task.first_ids, task.last_ids])
noise_std = 3 * float(model.embed.W_E[...][names].std())
noise = add_noise("hook_embed", noise_std, jax.random.key(3), positions=[FIRST, LAST])
clean_p = float(p_correct(logits))
corrupted_p = float(p_correct(model.run_with_hooks(tokens, [noise])))
print(f"p(correct): clean {clean_p:.3f}, subject corrupted {corrupted_p:.3f} (chance {1 / task.n_attributes:.3f})")
assert clean_p > 0.99 and corrupted_p < 0.1

trace = np.asarray(get_act_patch_block_every(model, tokens, cache, p_correct, corruption_hooks=[noise]))
resid_trace, attn_trace, mlp_trace = trace  # each [layer, pos]: p(correct) with that one piece restored
plot_causal_trace(trace, roles, baseline=corrupted_p, row_labels=["0", "1", "2", "3"])
plt.show()

for label, values in [("residual stream", resid_trace), ("attention out", attn_trace), ("MLP out", mlp_trace)]:
    print(f"restore {label:15s} at LAST:", values[:, LAST].round(2), "  at RELATION:", values[:, END].round(2))

# %% [markdown]
# Read the pictures row by row. The residual-stream panel restores `resid_pre`, the stream
# *entering* each block, so layer 1 is the stream leaving block 0. Two places bring the answer back:
#
# - **The last subject token, after block 0.** Restoring the stream there recovers almost all of
#   the answer. Restoring MLP 0 or attention 0 there recovers a good part each. This is the early
#   site: the first block combines the two names, and the model looks the person up right where
#   the name ends. Restoring the *first* name's position recovers little at any layer, because one
#   name alone does not identify the person.
# - **The last position, from layer 1's attention on.** Restoring attention 1's output there
#   recovers the answer, and so does the stream from layer 2 on. This is the late site: layer 1's
#   attention reads the subject's enriched stream and carries it to the relation token, where the
#   later MLPs turn it into the attribute's logit (the DLA above).
#
# Restoring the last subject token's stream from layer 2 on does nothing, because by then the only
# read of it, layer 1's attention, is over. Now the same reading as assertions:

# %%
elsewhere = np.delete(resid_trace, [LAST, END], axis=1)  # every other position, every layer
assert resid_trace[1, LAST] > 0.8, "the stream at the last subject token after block 0 carries the fact"
assert mlp_trace[0, LAST] > 0.3 and attn_trace[0, LAST] > 0.2, "MLP 0 and attention 0 there build it"
assert resid_trace[2:, LAST].max() < 0.3, "after layer 1 restoring the subject no longer helps"
assert attn_trace[1, END] > 0.7 and resid_trace[2:, END].min() > 0.7, "layer-1 attention brings it to the end"
assert attn_trace[2:, END].max() < 0.3 and attn_trace[0, END] < 0.2, "no other attention layer does"
assert elsewhere.max() < 0.3, "no other position matters (the first name alone least of all)"

# %% [markdown]
# ## Where does layer 1 look?
#
# If layer 1's attention carries the fact from the last subject token to the end, its heads should
# look from the last position at that token. First an interactive view of one sequence: hover a
# token to see where it attends, and pick the head with the buttons. Then the heatmaps, and below
# them the mean over the batch.

# %%
from minillm.attention_view import attention_view

attention_view(cache["pattern", 1][0], task.decode(tokens[0]).split(), title="layer 1:")

# %%
plot_attention_patterns(cache["pattern", 1][0], task.decode(tokens[0]).split(), title="layer 1, one sequence")
plt.show()
to_last = np.asarray(jnp.stack([cache["pattern", l][:, :, END, LAST].mean(0) for l in range(model.cfg.n_layers)]))
to_first = np.asarray(jnp.stack([cache["pattern", l][:, :, END, FIRST].mean(0) for l in range(model.cfg.n_layers)]))
print("attention from the last position to LAST  [layer, head]:\n", to_last.round(2))
print("attention from the last position to FIRST [layer, head]:\n", to_first.round(2))
assert (to_last[1] > 0.5).sum() >= 3, "most layer-1 heads look at the last subject token"
assert to_first[1].max() < 0.1, "and not at the first one"

# %% [markdown]
# ## Knock-outs: each claim, broken on purpose
#
# A causal trace shows where restoring *helps*. The converse check removes a piece from the clean
# run and checks that recall breaks, and removes other pieces and checks that it does not.
# "Remove" means mean-ablation here: the activation is replaced by its mean over other prompts, so
# what is removed is the information particular to this prompt. To cut an attention *edge*, we
# zero one entry of the pattern (layer l, from the last position, to the last subject token).

# %%
reference = model.run_with_cache(jnp.asarray(task.prompts(jax.random.key(8), 512, N_BEFORE).tokens))[1]
FILLERS = [p for p, role in enumerate(roles) if role == "filler"]


def mean_ablated(kind, layer, positions):
    name = act_name(kind, layer)
    return ablate(name, "mean", reference=reference[name], positions=positions)


def cut_edge(layer, src):
    return act_name("pattern", layer), lambda pattern, hook: pattern.at[:, :, END, src].set(0.0)


def acc_with(hooks):
    return float(accuracy(model.run_with_hooks(tokens, hooks)))


claims = {  # name: (hooks, should recall break?)
    "MLP 0 at LAST": ([mean_ablated("mlp_out", 0, [LAST])], True),
    "attention 0 at LAST": ([mean_ablated("attn_out", 0, [LAST])], True),
    "attention 1 at the end": ([mean_ablated("attn_out", 1, [END])], True),
    "layer-1 edges end -> LAST": ([cut_edge(1, LAST)], True),
    "MLP 0 at FIRST": ([mean_ablated("mlp_out", 0, [FIRST])], False),
    "MLP 0 at the fillers": ([mean_ablated("mlp_out", 0, FILLERS)], False),
    "attention 0 at the end": ([mean_ablated("attn_out", 0, [END])], False),
    "attention 2 at the end": ([mean_ablated("attn_out", 2, [END])], False),
    "attention 3 at the end": ([mean_ablated("attn_out", 3, [END])], False),
    "layer-2 edges end -> LAST": ([cut_edge(2, LAST)], False),
    "layer-3 edges end -> LAST": ([cut_edge(3, LAST)], False),
}
results = {name: acc_with(hooks) for name, (hooks, _) in claims.items()}
for name, acc in results.items():
    print(f"{name:32s} accuracy {acc:.3f}   ({'should break' if claims[name][1] else 'should not matter'})")
for name, (_, breaks) in claims.items():
    assert (results[name] < 0.4) if breaks else (results[name] > 0.95), name

late_edges = acc_with([cut_edge(2, LAST), cut_edge(3, LAST)])
late_attention = acc_with([mean_ablated("attn_out", 2, [END]), mean_ablated("attn_out", 3, [END])])
print(f"layers 2 and 3 together: edges cut {late_edges:.3f}, attention ablated {late_attention:.3f}")
assert 0.7 < min(late_edges, late_attention) < 0.99, "a small backup, far from layer 1's role"

# %% [markdown]
# The two sites are necessary. Without MLP 0 or attention 0 at the last subject token, or without
# layer 1's attention from the end to that token, accuracy falls from 100% to chance or close to
# it. The same ablations elsewhere leave the facts intact.
#
# Layers 2 and 3 are not quite idle. Their heads also look at the last subject token (0.3 to 0.6 of
# their attention, printed above), and removing both layers' reads at once costs a few points of
# accuracy. They act as a small backup to layer 1: either one alone can go.
#
# (The end position's own MLPs matter too: the DLA above showed that they write the answer. The
# trace gives them less credit because restoring one of them alone cannot undo a corrupted input
# to it.)
#
# ## A cautionary twin: the model without distractors
#
# Why the stray names among the fillers? `minillm-train factual_recall_plain` trains the same
# model on the same facts with plain filler, where the only names in a sequence are the subject's.
# Its accuracy is as good, but the same causal trace tells a different story.

# %%
plain = GPT.load(checkpoint("factual_recall_plain/model.safetensors"))
plain_task = make_task("factual_recall", distractor_prob=0.0)
plain_tokens = jnp.asarray(plain_task.prompts(jax.random.key(7), 256, N_BEFORE).tokens)
plain_answers = jnp.asarray(plain_task.prompts(jax.random.key(7), 256, N_BEFORE).targets[:, -1])
assert bool((plain_answers == answers).all()), "the same people and relations as above, other fillers"
plain_logits, plain_cache = plain.run_with_cache(plain_tokens)
plain_noise_std = 3 * float(plain.embed.W_E[...][names].std())
plain_noise = add_noise("hook_embed", plain_noise_std, jax.random.key(3), positions=[FIRST, LAST])
plain_trace = np.asarray(
    get_act_patch_block_every(plain, plain_tokens, plain_cache, p_correct, corruption_hooks=[plain_noise])
)
plain_corrupted = float(p_correct(plain.run_with_hooks(plain_tokens, [plain_noise])))
print(f"plain model: p(correct) clean {float(p_correct(plain_logits)):.3f}, corrupted {plain_corrupted:.3f}")
plot_causal_trace(plain_trace, roles, baseline=plain_corrupted, row_labels=["0", "1", "2", "3"])
plt.show()
print("restore the stream at LAST, by layer:      ", plain_trace[0][:, LAST].round(2))
print("restore attention 0's output at the end:   ", plain_trace[1][0, END].round(2))
assert float(accuracy(plain_logits)) > 0.99
assert plain_trace[0][1:, LAST].max() < 0.3, "no early site: the last subject token does not hold the fact"
assert plain_trace[1][0, END] > 0.5, "layer-0 attention at the end reads both raw names"

# %% [markdown]
# Without distractors, a token's *type* tells where the names are. Layer-0 attention at the last
# position simply gathers every first and last name in the sequence, and the later blocks do the
# lookup at the end. There is no early site. The model is equally accurate, but its circuit is
# not the one Meng et al. found in GPT. The distractors make "which first name goes with which
# last name" depend on where the names stand, so the model has to bind them in place, at the last
# subject token, as large models do.
#
# The lesson is a general one: what a model learns depends on what its data let it get away with,
# and the same tools tell the two models apart.
#
# ## What we showed
#
# - A forward pass is a set of named tensors, and the residual stream is exactly the sum of the
#   embeddings and every component's output.
# - The logit lens reads the answer at the last position only from block 2 on.
# - Direct logit attribution: the late MLPs at the last position write most of the answer.
# - The causal trace finds two sites, as in GPT. MLP 0 and attention 0 at the last subject token
#   enrich the subject (subject enrichment), and layer 1's attention moves the result to the end
#   (attribute extraction), where its heads look at the last subject token.
# - Knocking out either site breaks recall, while knocking out other pieces does not.
# - Without distractors the same model learns another circuit with no early site.
#
# Unlike GPT, our early site is one layer deep, not spread over many middle layers: a model this
# small needs only one MLP to look up 300 people. Meng et al. restore a *window* of ten layers at a
# time in a 48-layer model. With four layers a window of one is enough.
#
# **To go further.** (1) Trace a prompt with the subject at another position (`N_BEFORE`). Do the
# sites move with it? (2) Corrupt by *replacing* the subject with another person
# (`task.prompts` with a different key gives other people), and use the logit difference between
# the two people's attributes as the metric. (3) What does layer 1 move: the attribute of all three
# relations, or the person? Probe the stream at the last subject token (lesson 3's tools) for each
# relation's attribute.
#
# **Where the course meets a model of language.** This model, like lessons 1 to 7's, was trained on
# a task we built, so we knew what to look for. Lesson 8 asks the same three questions (are its
# abilities real, how does information travel, is there hidden knowledge inside) of a small model of
# real text, Shakespeare's plays, with the tools met here: the logit lens, direct logit
# attribution, ablations and probes. Lesson 9 draws the finest map of the flow: an attribution
# graph over transcoder features, first of this very model.
#
# **Retrain the models yourself** (about two minutes each on a CPU) by setting `RETRAIN = True`;
# point `GPT.load` at the `checkpoints_retrained` directories to repeat the lesson on them
# (`retrain` prints where each model is and how to load it).

# %%
RETRAIN = False
if RETRAIN:
    for recipe in ("factual_recall", "factual_recall_plain"):
        retrain(recipe)
