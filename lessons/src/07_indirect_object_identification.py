# %% [markdown]
# # Lesson 7: Indirect object identification, in miniature
#
# *"When Mary and John went to the store, John gave a drink to"*: GPT-2 small says **" Mary"**.
# Wang et al. (2022, "Interpretability in the Wild") found the circuit that does it, the first one
# found in a real language model: heads that notice John is repeated (duplicate-token and induction
# heads), heads that pass that on (S-inhibition heads), and heads that copy the remaining name to the
# output (name movers). ARENA teaches it on GPT-2 with **path patching**.
#
# We cannot ship GPT-2 (minillm can read its files if you have them: see the README), but the task's
# logic fits in a toy: a BOS, fillers with three names among them, one name once (the *indirect
# object*, IO) and one twice (the *subject*, S), then `<to>`; the answer is IO. A 2-layer
# attention-only model learns it in about a minute. The honest lesson is richer than a copy of
# Wang's: the toy finds its own circuit, and comparing the two says what two layers can and cannot do.
#
# We will:
# 1. check the task is learned on every order of the names, and meet a twin that learned a shortcut;
# 2. see what each head writes (direct logit attribution) and where it looks;
# 3. patch heads at positions, then **path patching**: which head reaches which other head, and
#    through its query, key or value;
# 4. ablate with Wang's "ABC" means, keep the circuit alone, and watch one ablation where accuracy
#    collapses while the logit difference *rises*: what a metric can hide;
# 5. run lesson 6's automatic methods on it, and put the toy beside GPT-2's circuit.
#
# Runs in about a minute on a laptop CPU, on the shipped checkpoints of `minillm-train ioi` (two
# seeds) and `minillm-train ioi_shortcut`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT, discovery
from minillm import decompose as D
from minillm import patching as P
from minillm.detectors import detect_head
from minillm.graph import Graph, ablated_outputs, run_with_edges
from minillm.lessons import checkpoint, retrain
from minillm.tasks import make_task
from minillm.tasks.ioi import ORDERS

task = make_task("indirect_object")
models = GPT.load_seeds(checkpoint("ioi"))  # {0: GPT, 1: GPT}: the same recipe, two seeds
twin = GPT.load(checkpoint("ioi_shortcut/model.safetensors"))
print(
    models[0].cfg.n_layers,
    "layers,",
    models[0].cfg.n_heads,
    "heads, attention only; vocabulary:",
    task.vocab[:4],
    "...",
)

# %% [markdown]
# ## 1. The task, and a model that learned something else
#
# Each prompt has 16 slots after `<bos>`: 13 fillers (`f0`..`f11`) and three names (`N0`..`N29`) at
# random slots. Which of the three name slots holds IO is the prompt's **order**: `ABB` (IO first,
# like "Mary and John ... John"), `BAB`, or `BBA`. The loss reads only the last position.

# %%
for order in ORDERS:
    batch, info = task.sample_with_info(jax.random.key(1), 1, order)
    print(f"{order}: {task.decode(batch.tokens[0])}  ->  {task.decode_target(batch.targets[0, -1])}")

# %% [markdown]
# Accuracy on 1,000 fresh prompts of each order. The training run drew about 2,000 x 128 prompts
# from a space of about 10^20, so these are prompts the models never saw. `ioi_shortcut` is the same
# model trained on `ABB` and `BAB` only: Wang et al.'s sentences ("ABBA", "BABA") always put the
# repeated name *last*, and so does this twin's data.


# %%
def accuracy(model, order, n=1000, key=2):
    batch, info = task.sample_with_info(jax.random.key(key), n, order)
    guess = model(batch.tokens)[:, -1].argmax(-1)
    return float((guess == info.io).mean()), float((guess == info.s).mean())


table = {
    name: {o: accuracy(m, o) for o in ORDERS}
    for name, m in [("seed 0", models[0]), ("seed 1", models[1]), ("shortcut", twin)]
}
print("          " + "".join(f"{o:>16}" for o in ORDERS) + "   (fraction answering IO, S)")
for name, row in table.items():
    print(f"{name:>9} " + "".join(f"   {io:5.3f}, {s:5.3f}" for io, s in row.values()))

for seed in (0, 1):
    assert min(table[f"seed {seed}"][o][0] for o in ORDERS) > 0.98
assert table["shortcut"]["ABB"][0] > 0.98 and table["shortcut"]["BAB"][0] > 0.98
assert table["shortcut"]["BBA"][0] < 0.05 and table["shortcut"]["BBA"][1] > 0.9

# %% [markdown]
# The twin is perfect on the orders it saw and answers **S** on `BBA`, the order it never saw. It
# learned "answer the name that is not the last one", which is right for every prompt it was
# trained on. A model that does the task and a model that does a shortcut look the same on the
# training distribution; only the unseen order tells them apart. Wang et al. could not have run
# this test on GPT-2 with their ABBA / BABA templates, and the toy shows why it matters. From here
# on, the models trained on all three orders.
#
# ## 2. What each head writes, and where it looks
#
# A *template*: the three names always at positions 4, 9 and 13, in the order `ABB`, so IO is at 4,
# S1 at 9, S2 at 13, and the end (END, `<to>`) at 17. A position now means a role.
#
# The **logit difference** logit(IO) - logit(S) measures how sure the model is; **direct logit
# attribution** splits it among the heads: what each head's output at END, through the final
# LayerNorm, adds to it (lesson 0).

# %%
IO, S1, S2, END = 4, 9, 13, 17
batch, info = task.sample_with_info(jax.random.key(3), 128, "ABB", positions=(IO, S1, S2))
tokens, io, s = jnp.asarray(batch.tokens), info.io, info.s
rows = jnp.arange(len(io))


def logit_diff(logits):
    return (logits[rows, -1, io] - logits[rows, -1, s]).mean()


runs = {seed: models[seed].run_with_cache(tokens) for seed in (0, 1)}
dla, writes = {}, {}
for seed, (logits, cache) in runs.items():
    model = models[seed]
    heads = D.stack_head_results(model, cache, pos_slice=-1)  # [layer * head, batch, d_model]
    dla[seed] = np.asarray(D.logit_attrs(model, cache, heads, io, s, pos_slice=-1).mean(-1)).reshape(2, 4)
    writes[seed] = [
        np.asarray(D.logit_attrs(model, cache, heads, t, pos_slice=-1).mean(-1)).reshape(2, 4) for t in (io, s)
    ]
    print(f"seed {seed}: logit difference {float(logit_diff(logits)):.1f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
for ax, seed in zip(axes, (0, 1)):
    im = ax.imshow(dla[seed], cmap="RdBu", vmin=-6, vmax=6)
    ax.set(
        title=f"seed {seed}: DLA to logit(IO) - logit(S)",
        xlabel="head",
        ylabel="layer",
        xticks=range(4),
        yticks=range(2),
    )
    for (l, h), v in np.ndenumerate(dla[seed]):
        ax.text(h, l, f"{v:+.1f}", ha="center", va="center", fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# The difference is written in layer 1. Layer 0's heads write almost nothing *to the difference*;
# but look at what they write to each name on its own:

# %%
for seed in (0, 1):
    to_io, to_s = writes[seed]
    print(f"seed {seed}, layer 0 heads at END: to logit(IO) {to_io[0].round(1)}, to logit(S) {to_s[0].round(1)}")
    total = float(logit_diff(runs[seed][0]))
    assert dla[seed][1].max() > 2.0, "a layer-1 head writes a large part of the difference"
    assert abs(dla[seed][0].sum()) < 0.1 * total, "layer 0 adds (almost) nothing to the difference"
    assert to_io[0].sum() > 2.0 and to_s[0].sum() > 2.0, "... yet it writes both names"

# %% [markdown]
# Layer 0's heads at END raise *both* names, IO and S alike: a **bag of names**, every name in the
# prompt a candidate. Then layer 1 must decide between them. Where do the heads look? From END, and
# from S2:


# %%
def attention(cache, layer, q, k):
    return np.asarray(cache["pattern", layer][:, :, q, k].mean(0))  # [head]


fig, axes = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
for ax, seed in zip(axes, (0, 1)):
    cache = runs[seed][1]
    bars = {
        "L0: S2 -> S1": attention(cache, 0, S2, S1),
        "L1: END -> S2": attention(cache, 1, END, S2),
        "L1: END -> S1": attention(cache, 1, END, S1),
        "L1: END -> IO": attention(cache, 1, END, IO),
    }
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(np.arange(4) + 0.2 * i - 0.3, values, width=0.2, label=label)
    ax.set(title=f"seed {seed}", xlabel="head", xticks=range(4), ylabel="attention (mean)")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# In layer 1, some heads look from END at **S2**, the *second* occurrence of the subject, and at
# nothing else: call them **suppressors** (their DLA above is positive: attending to S and writing
# the difference up means they write *minus* S). In layer 0, some heads look from S2 back at **S1**,
# the earlier copy of the same name: **duplicate-token heads**. TransformerLens' head detector finds
# them too, on prompts made of names only (eight names, then the same names shuffled):


# %%
def names_twice(rng):
    """<bos>, eight names, the same eight shuffled, <to>: every name repeated, nothing else."""
    names = rng.permutation(task.n_names)[:8] + task.first_name
    return [0, *names, *rng.permutation(names), 1]


rng = np.random.default_rng(0)
names_only = np.array([names_twice(rng) for _ in range(100)])
suppressors = {}
for seed in (0, 1):
    cache = runs[seed][1]
    scores = detect_head(models[seed], names_only, "duplicate_token_head")
    s2_to_s1, end_to_s2 = attention(cache, 0, S2, S1), attention(cache, 1, END, S2)
    suppressors[seed] = [h for h in range(4) if end_to_s2[h] > 0.35]
    print(f"seed {seed}: duplicate-token scores, layer 0 {scores[0].round(2)}, layer 1 {scores[1].round(2)}")
    print(
        f"   layer 0, S2 -> S1 attention {s2_to_s1.round(2)}; "
        f"suppressors (layer 1, END -> S2 > 0.35): {suppressors[seed]}"
    )
    assert scores[0].max() > 2 * scores[1].max(), "the duplicate-token heads are in layer 0"
    assert s2_to_s1[int(scores[0].argmax())] > 0.4, "detect_head's top head is one whose S2 attends to S1"
    assert end_to_s2.max() > 0.75 and suppressors[seed]

# %% [markdown]
# Two seeds, one algorithm, on different heads: seed 0 spreads suppression over heads 0, 1, 2 of
# layer 1; seed 1 does most of it with head 0. A hypothesis: *layer 0 marks the repeated name at
# S2; layer 1 at END finds the marked name and writes it down negatively, so that of the bag of
# names layer 0 raised, the one left on top is IO.* Now test it causally.
#
# ## 3. Patching: which heads, at which positions, and along which paths
#
# **Activation patching** (Wang's corruption for it): run the prompts with IO and S *swapped*, so the
# answer flips, and copy one head's clean output at one position into that run. The metric is 1 when
# the clean logit difference comes back, 0 when it stays corrupted. `get_act_patch_attn_head_out_by_pos`
# runs every (layer, position, head) in one compiled call per layer.

# %%
swapped = jnp.asarray(task.swap_names(batch, info).tokens)
patched = {}
for seed in (0, 1):
    model, (logits, cache) = models[seed], runs[seed]
    clean_ld, corrupt_ld = logit_diff(logits), logit_diff(model(swapped))

    def restored(logits, clean_ld=clean_ld, corrupt_ld=corrupt_ld):
        return (logit_diff(logits) - corrupt_ld) / (clean_ld - corrupt_ld)

    patched[seed] = np.asarray(
        P.get_act_patch_attn_head_out_by_pos(model, swapped, cache, restored)
    )  # [layer, pos, head]

fig, axes = plt.subplots(2, 2, figsize=(10, 4.5))
labels = {IO: "IO", S1: "S1", S2: "S2", END: "END"}
for c, seed in enumerate((0, 1)):
    for l in range(2):
        ax = axes[l, c]
        ax.imshow(patched[seed][l].T, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        ax.set(
            title=f"seed {seed}, layer {l}",
            ylabel="head",
            yticks=range(4),
            xticks=list(labels),
            xticklabels=list(labels.values()),
        )
plt.tight_layout()
plt.show()
for seed in (0, 1):
    big = [(l, p, h, round(float(v), 2)) for (l, p, h), v in np.ndenumerate(patched[seed]) if v > 0.1]
    print(f"seed {seed}: (layer, position, head, restored) above 0.1: {big}")
    assert all((l, p) in [(0, S2), (1, END)] for l, p, _, _ in big), "only layer 0 at S2 and layer 1 at END matter"
    l, p, h = np.unravel_index(patched[seed].argmax(), patched[seed].shape)
    assert (l, p) == (1, END) and h in suppressors[seed], "the largest is a suppressor at END"

# %% [markdown]
# Exactly two places matter: layer-0 heads **at S2** and layer-1 heads **at END**, and they are the
# duplicate heads and the suppressors. Activation patching says *where*; it does not say that the
# layer-0 heads act *through* the suppressors, nor how.
#
# **Path patching** asks about one path at a time. The corrupted prompts are Wang's **ABC** prompts:
# three different names in the same slots, so no name is repeated. For a sender head and a receiver
# head's input (query, key or value), the clean run is repeated with only that input changed, and
# changed as the sender alone would change it: Wang's recipe is to run with every other head frozen
# to its clean output and the sender taking its ABC output, record the receiver's input, and patch
# it in. The MLPs are *not* frozen in that run: on a model with MLPs, a sender's change that reaches
# the receiver through an MLP in between counts as part of the path. (This lesson's models are
# attention-only, so here a path is exactly lesson 6's edge from one head to another's input;
# `get_path_patch_head_to_heads_frozen_mlps` is the edge on any model.)
# `get_path_patch_head_to_heads` does this for every sender in one compiled call.
#
# ### Exercise 1: path patching by hand
#
# Write `path_patch(model, clean, corrupted, metric, sender, receiver)`, Wang's three steps for one
# sender head `(layer, head)` and one receiver `(layer, head, "q" | "k" | "v")`:
# 1. cache the clean and the corrupted runs (`hook_z` of every head);
# 2. run the clean tokens with every head's `hook_z` replaced by its clean value, except the
#    sender's, which gets its corrupted value (leave the MLPs alone: they recompute); record the
#    receiver's `hook_q` / `hook_k` / `hook_v`;
# 3. run the clean tokens with only the receiver head's q / k / v replaced by the recorded one, and
#    return `metric(logits)`.
#
# The check compares your number with `get_path_patch_head_to_heads` on a 3-layer model with MLPs
# and LayerNorm.


# %%
def path_patch(model, clean, corrupted, metric, sender, receiver):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_path_patch_by_hand

check_path_patch_by_hand(path_patch)


# %% tags=["solution"]
def path_patch(model, clean, corrupted, metric, sender, receiver):
    (sl, sh), (rl, rh, part) = sender, receiver
    _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
    _, corrupted_cache = model.run_with_cache(corrupted, names_filter=lambda n: n.endswith("hook_z"))

    def freeze(z, hook):  # step 2: every head clean, the sender corrupted
        layer = int(hook.name.split(".")[1])
        z = clean_cache["z", layer]
        return z.at[:, :, sh].set(corrupted_cache["z", sl][:, :, sh]) if layer == sl else z

    name = f"blocks.{rl}.attn.hook_{part}"
    _, frozen = model.run_with_cache(clean, names_filter=[name], fwd_hooks=[(lambda n: n.endswith("hook_z"), freeze)])

    def patch(x, hook):  # step 3: the receiver's input as the sender alone changed it
        return x.at[:, :, rh].set(frozen[name][:, :, rh])

    return metric(model.run_with_hooks(clean, [(name, patch)]))


check_path_patch_by_hand(path_patch)

# %% [markdown]
# Now every layer-0 head as sender, the suppressors as receivers, and each input in turn. The
# metric is the logit difference as a fraction of the clean one (1: the path changes nothing), and
# the senders' change is taken at S2 only, where the duplicate heads act.

# %%
abc = jnp.asarray(task.abc_names(batch, info, jax.random.key(4)).tokens)
paths = {}
for seed in (0, 1):
    model, clean_ld = models[seed], logit_diff(runs[seed][0])

    def fraction(logits, clean_ld=clean_ld):
        return logit_diff(logits) / clean_ld

    receivers = [(1, h) for h in suppressors[seed]]
    paths[seed] = {
        x: np.asarray(
            P.get_path_patch_head_to_heads(model, tokens, abc, fraction, receivers, x, sender_positions=[S2])
        )[0]
        for x in "qkv"
    }
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
for ax, seed in zip(axes, (0, 1)):
    for i, x in enumerate("qkv"):
        ax.bar(np.arange(4) + 0.25 * i - 0.25, 1 - paths[seed][x], width=0.25, label=f"into the suppressors' {x}")
    ax.set(
        title=f"seed {seed}: layer-0 head -> suppressors",
        xlabel="layer-0 head (at S2)",
        xticks=range(4),
        ylabel="logit difference lost",
    )
axes[0].legend(fontsize=8)
plt.show()
for seed in (0, 1):
    print(
        f"seed {seed}: logit difference lost through q {(1 - paths[seed]['q']).round(2)}, "
        f"k {(1 - paths[seed]['k']).round(2)}, v {(1 - paths[seed]['v']).round(2)}"
    )
    assert (1 - paths[seed]["q"]).max() < 0.02, "nothing at S2 reaches the suppressors' queries (the query is at END)"
    assert (1 - paths[seed]["k"]).max() > 0.05 and (1 - paths[seed]["v"]).max() > 0.05, "keys and values both carry it"

# %% [markdown]
# The queries get nothing: a query is read at END, and the senders changed only S2. The **keys**
# and the **values** both carry something from the duplicate heads, and each single head's share is
# modest: the marking is spread over several heads (seed 0) or two (seed 1). To see what each path
# does, cut all of layer 0's edges into the suppressors' keys at once, then all into their values,
# with lesson 6's `run_with_edges`, and look at the suppressors' attention to S2:


# %%
def cut(seed, part):
    """Logits, and the suppressors' END -> S2 attention, with every layer-0 -> suppressor edge into
    `part` ("k" or "v") carrying the ABC run's output."""
    model, graph = models[seed], Graph.of(models[seed].cfg)
    edges = [f"blocks.0.attn.head{d} -> blocks.1.attn.head{h}.{part}" for d in range(4) for h in suppressors[seed]]
    keep = np.ones(len(graph), np.float32)
    keep[[graph.index(e) for e in edges]] = 0.0
    logits = run_with_edges(model, tokens, keep, ablated_outputs(model, tokens, "corrupted", abc))
    # the same cut with hooks, to read the pattern: each suppressor's input loses layer 0's change
    clean_out, abc_out = (model.run_with_cache(t, names_filter=["blocks.0.attn.hook_result"])[1] for t in (tokens, abc))
    change = (clean_out["result", 0] - abc_out["result", 0]).sum(2)  # [b, p, d]
    hook = (
        f"blocks.1.hook_{part}_input",
        lambda x, hook: x.at[:, :, jnp.asarray(suppressors[seed])].add(-change[:, :, None]),
    )
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern"], fwd_hooks=[hook])
    return logits, attention(cache, 1, END, S2)[suppressors[seed]]


key_cut_loss = {}  # the logit difference lost when every layer-0 edge into the suppressors' keys is cut
for seed in (0, 1):
    clean_att = attention(runs[seed][1], 1, END, S2)[suppressors[seed]]
    results = {part: cut(seed, part) for part in "kv"}
    print(f"seed {seed}, suppressors {suppressors[seed]}: END -> S2 attention clean {clean_att.round(2)}")
    for part, (logits, att) in results.items():
        acc, kept = (
            float((logits[:, -1].argmax(-1) == io).mean()),
            float(logit_diff(logits) / logit_diff(runs[seed][0])),
        )
        print(
            f"   layer 0 -> their {part}: attention {att.round(2)}, "
            f"logit difference {kept:.2f} of clean, accuracy {acc:.2f}"
        )
    key_cut_loss[seed] = float(logit_diff(runs[seed][0]) - logit_diff(results["k"][0]))
    assert (results["k"][1] < 0.5 * clean_att).all(), "through the keys, layer 0 tells the suppressors where to look"
    assert np.allclose(results["v"][1], clean_att, atol=1e-4), "the values do not move the attention"

# %% [markdown]
# The two paths do different jobs. Through the **keys**, layer 0 tells each suppressor *where* to
# look: without it, their attention to S2 falls by more than half (this is K-composition, as the
# induction heads of lesson 1 use). Through the **values**, layer 0 adds to *what* is read there:
# the duplicate heads at S2 have attended to S1 and copied S's identity, so S2 carries S twice over;
# replacing it with an ABC name leaves the attention where it was but suppresses the wrong name, and
# the logit difference suffers even more. In GPT-2, Wang et al. found the duplicate-token and
# induction heads reach the S-inhibition heads through their values (those heads carry "S is
# repeated" from S2 to END), and the S-inhibition heads reach the name movers through their
# queries. The toy's suppressors are reached through both inputs: the keys decide where, the values
# what.
#
# ## 4. Ablation, faithfulness, and what a metric can hide
#
# **Mean ablation** replaces a head's output by its mean over a reference distribution. Wang et al.
# took the mean over ABC prompts: what a head outputs when no name is repeated. We ablate at chosen
# (layer, head, position) entries.
#
# ### Exercise 2: mean-ablate heads at positions
#
# Write `mean_ablate(model, tokens, means, entries)`: the logits with each head's `hook_z` at each
# `(layer, head, position)` of `entries` replaced by `means[layer][position, head]` (`means[layer]`
# is `[pos, head, d_head]`). One hook on every layer's `hook_z` does it.


# %%
def mean_ablate(model, tokens, means, entries):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_mean_ablate_at_positions

check_mean_ablate_at_positions(mean_ablate)


# %% tags=["solution"]
def mean_ablate(model, tokens, means, entries):
    def hook(z, hook):
        layer = int(hook.name.split(".")[1])
        for l, h, p in entries:
            if l == layer:
                z = z.at[:, p, h].set(means[l][p, h])
        return z

    return model.run_with_hooks(tokens, [(lambda n: n.endswith("attn.hook_z"), hook)])


check_mean_ablate_at_positions(mean_ablate)

# %% [markdown]
# Five ablations on each seed: layer 0 at S2, where it marks the repeat; layer 0 at END, the bag of names; then
# **faithfulness**, the circuit kept alone: every (head, position) ablated except the duplicate
# heads at S2 and the suppressors at END; and the same with the name bag kept too.


# %%
def report(seed, entries):
    logits = mean_ablate(models[seed], tokens, abc_means[seed], entries)
    return float((logits[:, -1].argmax(-1) == io).mean()), float(logit_diff(logits))


abc_means = {}  # {seed: {layer: [pos, head, d_head]}}: each head's mean output over the ABC prompts
for seed in (0, 1):
    _, abc_cache = models[seed].run_with_cache(abc, names_filter=lambda n: n.endswith("hook_z"))
    abc_means[seed] = {l: abc_cache["z", l].mean(0) for l in range(2)}

everything = [(l, h, p) for l in range(2) for h in range(4) for p in range(task.seq_len)]
marking, bag = [(0, h, S2) for h in range(4)], [(0, h, END) for h in range(4)]
outcomes = {}
for seed in (0, 1):
    circuit = marking + [(1, h, END) for h in suppressors[seed]]
    outcomes[seed] = {
        "nothing ablated": report(seed, []),
        "layer 0 at S2 (the marking)": report(seed, marking),
        "name bag (layer 0 at END)": report(seed, bag),
        "circuit alone": report(seed, [e for e in everything if e not in circuit]),
        "circuit + name bag": report(seed, [e for e in everything if e not in circuit + bag]),
    }
print(f"{'':>30}" + "".join(f"{'seed ' + str(s) + ': accuracy, logit diff':>32}" for s in (0, 1)))
for what in outcomes[0]:
    print(f"{what:>30}" + "".join(f"{outcomes[s][what][0]:>22.2f}, {outcomes[s][what][1]:8.1f}" for s in (0, 1)))

for seed in (0, 1):
    o = outcomes[seed]
    full_acc, full_ld = o["nothing ablated"]
    assert o["layer 0 at S2 (the marking)"][1] < 0.5 * full_ld and o["layer 0 at S2 (the marking)"][0] < 0.9
    assert o["name bag (layer 0 at END)"][0] < 0.4 and abs(o["name bag (layer 0 at END)"][1] - full_ld) < 0.1 * full_ld
    assert o["circuit alone"][1] > 0.95 * full_ld and o["circuit alone"][0] < 0.2
    assert o["circuit + name bag"][0] > 0.6 and o["circuit + name bag"][1] > 0.8 * full_ld

# %% [markdown]
# Read the table twice.
#
# - Without layer 0 at S2, the logit difference falls to about a fifth, and a quarter to a third
#   of the prompts go wrong: the marking is needed.
# - Without the **name bag** at END, the logit difference hardly moves, yet accuracy **collapses**.
#   The bag raised IO and S alike, so removing it leaves logit(IO) - logit(S) as it was; but it also
#   raised both above the other 28 names, and without it some other name wins. By the logit
#   difference, the name bag does not exist.
# - The "circuit" that patching with the logit difference found, kept alone, keeps the full logit
#   difference and gets almost every prompt wrong. Add the name bag and it is a circuit: most of the
#   accuracy and of the logit difference, from 10 or 11 of the 144 (layer, head, position) entries.
#
# **A metric is a question.** The logit difference asks "IO or S?", and it cannot see a component
# that helps both. Wang et al. measured the same difference on GPT-2, where the name movers both
# raise IO and, by being S-inhibited, do not raise S; the toy splits those two jobs across layers,
# and one of them is invisible to the metric.
#
# ## 5. Lesson 6's automatic methods on this model
#
# Edge patching with the ABC corruption, once with the logit difference as the metric, once with
# the KL divergence from the clean outputs (ACDC's metric), on seed 0:

# %%
model, graph = models[0], Graph.of(models[0].cfg)
exact_ld = discovery.edge_patching(model, tokens, lambda lg: -logit_diff(lg), corrupted=abc)
exact_kl = discovery.edge_patching(model, tokens, discovery.kl_divergence(runs[0][0], positions=[-1]), corrupted=abc)
bag_edges = [f"blocks.0.attn.head{h} -> logits" for h in range(4)]
key_edges = [f"blocks.0.attn.head{d} -> blocks.1.attn.head{h}.k" for d in range(4) for h in suppressors[0]]


def rank(scores, edge):
    return int((np.abs(scores.scores) > abs(scores.scores[graph.index(edge)])).sum()) + 1


for label, scores in [("logit difference", exact_ld), ("KL divergence", exact_kl)]:
    print(f"{label}: top edges {[e for e, _ in scores.top(6)]}")
    print(f"   ranks of layer 0 -> logits (the name bag): {[rank(scores, e) for e in bag_edges]} of {len(graph)}")
    print(f"   ranks of duplicate -> suppressor keys: {sorted(rank(scores, e) for e in key_edges)}")
assert min(rank(exact_kl, e) for e in bag_edges) <= 5, "KL sees the name bag near the top"
assert min(rank(exact_kl, e) for e in bag_edges) < min(rank(exact_ld, e) for e in bag_edges)
single_key = max(float(exact_ld.scores[graph.index(e)]) for e in key_edges)
print(
    f"the largest single key edge loses {single_key:.2f} of the logit difference; "
    f"all of them cut together {key_cut_loss[0]:.2f}"
)
assert single_key < 0.5 * key_cut_loss[0], "no single key edge carries the marking: it is spread"

# %% [markdown]
# With the logit difference, the name bag's edges to the logits rank low: the metric cannot see
# them, as in section 4. With the KL divergence they are among the first. Neither ranks a single
# layer-0 -> suppressor key edge high, though cutting them all together cost half the logit
# difference in section 3: the marking is spread over several heads, and an edge scored alone
# changes little (ACDC, which removes edges one at a time, meets the same redundancy). And both
# rank many `embed -> layer 0` edges first: with ABC prompts every name changes, so everything that
# reads a name changes. An automatic method inherits the question its metric asks, the corruption
# it is given, and the one-edge-at-a-time view.
#
# ## 6. Beside GPT-2's circuit
#
# | GPT-2's role (Wang et al.) | what it does there | in the toy |
# | --- | --- | --- |
# | duplicate-token heads | at S2, attend to S1: "this name is repeated" | **yes**: layer 0 at S2 |
# | previous-token + induction heads | a second way to detect the repeat | no: no layer to build them in |
# | S-inhibition heads | at END, attend to S2; stop the name movers copying S | merged into the suppressors |
# | name movers | at END, attend to IO and copy it to the output | **no**: nothing attends to IO and copies it |
# | negative name movers | attend to IO and write minus IO, a hedge | no; the suppressors write minus *S* |
# | backup name movers | take over when the name movers are ablated | not tested here |
# | (none) | | a **bag of names**: layer 0 at END raises every name present |
#
# **Why two layers cannot hold Wang's circuit.** In GPT-2, S-inhibition reaches the name movers'
# *queries*: the name movers at END attend to the name that is *not* inhibited, and copy it. That is
# three steps in series at two positions (mark the repeat at S2; at END, read the mark; at END,
# attend to the other name), and each step that crosses positions needs an attention layer after
# the last one. A 2-layer model has one attention step after the marking. It cannot first read the
# mark and then attend accordingly, so it does the one thing that fits: it attends to the marked
# name and subtracts it, from a bag that layer 0 has already filled with every name. And nothing in
# layer 0 can mark S1 instead of S2: the first S cannot know it will be repeated, as causal attention
# only looks back.
#
# The toy does the task with a different algorithm from GPT-2's, found by the same tools. Wang et
# al.'s circuit is one solution among those the training data allows, and the architecture decides
# which: in lesson 5 two attention types gave two algorithms, here depth does.
#
# **Retrain the models yourself** with `retrain("ioi")` or `retrain("ioi_shortcut")` (set
# `RETRAIN = True`; about 2 minutes for both seeds on a laptop CPU). A fresh seed may put the
# duplicate heads and the suppressors on other heads, as seeds 0 and 1 do; the asserts above look
# them up by what they do, not by their numbers.

# %%
RETRAIN = False
if RETRAIN:
    retrain("ioi")
