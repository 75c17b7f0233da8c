"""Attribution graphs (minillm.attribution.attribute) against a loop of one VJP per target, against
the floor the hardware allows, and against circuit-tracer 0.5.0 where it imports.

    bash bench/run.sh --attribution                      # in bench/.venv-tl (circuit-tracer too)
    bench/.venv-tl/bin/python bench/attribution.py       # the same, without the install step
    .venv/bin/python bench/attribution.py                # minillm alone (no torch: no circuit-tracer)
    ... --quick                                          # the small model only, fewer repeats
    ... --json attribution.json                          # also the rows as JSON
    ... --breakdown                                      # only: where the vmapped backward's time goes

Two models, one prompt each:
- "factual recall": lesson 0's trained checkpoint (lessons/checkpoints/factual_recall: 4 layers,
  d_model 64, 4 heads, d_mlp 256, GELU, LayerNorm, 82 tokens in, 40 out) and its first prompt of
  lesson 0's batch (16 tokens, the subject after 5 fillers).
- "4L d256": a random GPT, 4 layers, d_model 256, 8 heads, d_mlp 1024, GELU, LayerNorm, 1,024
  tokens, n_ctx 64, and a prompt of 64 random tokens (token 0 first, as a BOS).
Transcoders: one per layer, 4,096 features, TopK with k = 16 and a skip path (W_skip), made with
random weights scaled to the layer's MLP inputs and outputs (not trained: an edge's cost does not
depend on the weights, and TopK fixes the number of active features, k per layer and position, so
the graph has n_layers * p * k feature targets whatever the training).

What is timed (median wall time; compilation apart, the first call):
- `attribute(model, tcs, prompt)` as a user calls it: the clean run, the node lists, the compiled
  graph call (one VJP of the frozen model, vmapped over the targets, `batch_size` (32) at a time
  under lax.map), the dense n x n adjacency in NumPy.
- The naive loop: one jitted call per target in a Python loop, each `jax.vjp` of the same frozen
  replacement model (minillm.attribution._forward with freeze="all": the forward pass and the
  backward pass of one target) and the target's row; the clean run once, outside the timing. Its
  rows must equal attribute's adjacency (features, errors, embeddings as sources; feature and logit
  targets): the max |difference| is printed. It shares _forward with attribute, so the comparison
  checks the batching (vmap, lax.map, the padding to 64 features, the assembly), not the frozen
  model's definition; circuit-tracer below checks that independently.
- The loop, forward once: the same, with the VJP's forward pass done once (a jitted call returning
  the VJP function) and one jitted backward call per target: the loop a careful user writes.
- The floor. F = the matmul FLOPs of one pass of the frozen linear model over the prompt: per layer
  the value and output projections (2 x 2 p d_model^2), the frozen pattern times the values
  (2 p^2 d_model) and the skip (2 p d_model^2), and the unembedding at the last position
  (2 d_model d_vocab_out); the attention scores, softmax, LayerNorm statistics and MLPs are frozen
  (their values are constants of the run) and cost nothing. A backward pass with respect to the
  activations only (no weight gradients) has the same matmul FLOPs as the forward pass. The floor
  of the brief's definition, what the naive loop must do: targets x (F forward + F backward). The
  floor of what attribute does: F (one forward) + targets x F (one backward each). Each over this
  machine's measured float32 matmul peak (bench.common.matmul_peak_flops, the best of 20 square
  matmuls).

--breakdown (the 4L d256 model alone): per-target time of the graph's pieces, on 512 of its targets
spread over them, each variant a Python loop of jitted calls over chunks of 32 targets with the forward
pass done once (forward_vjp): (1) the vmapped VJP alone (the gradients, reduced to a scalar); (2) with
the error and embedding edges; (3) with the feature edges as attribute computed them before it
packed its sources, under vmap g_mlp[source layer, source position] . write (a gather of
[32, n_features, d_model]); (4) the same feature edges as one batched matmul over the (layer,
position) slots, the writes packed into [n_layers * p, k_max, d_model] (k_max: the most features
active at one slot; TopK makes it k), then read out at each feature's slot and rank; (5) as
attribute computes them now (minillm.attribution._pack_sources: rows of 16 writes per slot, a slot
with more features taking more rows; the gradient at each row's slot times its row, under vmap).
(1) against the one-target loop says what batching the backward gains; (3) against (4) and (5)
what the gather costs.

circuit-tracer 0.5.0 (github.com/safety-research/circuit-tracer), where it imports (bench/run.sh
--attribution installs it into bench/.venv-tl with --no-deps; its declared pins, transformers <=
4.57.3 and huggingface-hub < 1.0, would downgrade what transformer-lens 3.9 uses here, and nnsight
is needed only by its other backend): the same model as a TransformerLens HookedTransformer with
minillm's weights (GPT.to_transformer_lens), our transcoders as its SingleLayerTranscoders (reading
blocks.L.ln2.hook_normalized, as minillm's do; writing hook_mlp_out; activation TopK then ReLU, as
minillm's TopK is), `TransformerLensReplacementModel` built as its `from_config` does (the weights
loaded between the constructor and `_configure_replacement_model`, which wraps the MLPs and the
unembedding and so renames their weights), and its `attribute(prompt, model)` with its defaults
(batch_size 512, max_n_logits 10, desired_logit_prob 0.95). Two shims, both outside the package:
`huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER` (removed in huggingface-hub 1.x; circuit-tracer
imports it for its downloads only) is set to False before the import, and the model gets a stub
tokenizer (circuit-tracer decodes the prompt and the logit tokens to strings and checks that the
prompt starts with a special token; the stub names the prompt's first token). What it computes
differs from minillm in two ways, by design: it drops the features and the error at position 0 (its
BOS), and its embedding nodes are the token embeddings W_E[token] alone (gradient at hook_embed),
minillm's the residual stream entering block 0 (token plus position embedding). So its edges are
compared on the nodes both graphs have with the same meaning: feature (position > 0) and logit
targets; feature (position > 0) and error (position > 0) sources.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

warnings.filterwarnings("ignore", category=DeprecationWarning)
# circuit-tracer's backward pass starts from a hooked activation that no input requires a gradient of
warnings.filterwarnings("ignore", message="Full backward hook is firing")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from bench.common import cpu_model, fmt_time, matmul_peak_flops  # noqa: E402
from minillm import GPT, GPTConfig  # noqa: E402
from minillm import attribution as A  # noqa: E402
from minillm.attribution import attribute  # noqa: E402
from minillm.lessons import checkpoint  # noqa: E402
from minillm.tasks import make_task  # noqa: E402
from minillm.transcoders import Transcoder, gather_mlp_io  # noqa: E402

D_TRANSCODER, K = 4096, 16
BIG = GPTConfig(n_layers=4, d_model=256, n_heads=8, d_mlp=1024, n_ctx=64, d_vocab=1024, act_fn="gelu", seed=0)
BIG_PROMPT = 64


def load() -> float:
    return os.getloadavg()[0]


# --- the models, transcoders and prompts -----------------------------------------------------------
def random_transcoders(model: GPT, d_transcoder: int = D_TRANSCODER, k: int = K, seed: int = 0) -> list:
    """Untrained TopK transcoders with a skip path, one per layer, scaled to the layer's MLP inputs
    and outputs (pre-activations about N(0, 1), so each position's top k are positive)."""
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    data = gather_mlp_io(model, np.random.default_rng(seed + 1).integers(0, cfg.d_vocab, (8, cfg.n_ctx)))
    d = cfg.d_model
    out = []
    for layer, (x, y) in enumerate(data):
        x, y = np.asarray(x), np.asarray(y)
        W_enc = (rng.normal(size=(d, d_transcoder)) / np.sqrt((x**2).sum(1).mean())).astype(np.float32)
        W_dec = (rng.normal(size=(d_transcoder, d)) * y.std() / np.sqrt(k * d)).astype(np.float32)
        W_skip = (rng.normal(size=(d, d)) * 0.2 * y.std() / (x.std() * np.sqrt(d))).astype(np.float32)
        b_enc = np.zeros(d_transcoder, np.float32)
        tc = Transcoder.for_model(model, layer, W_enc, b_enc, W_dec, y.mean(0), W_skip, activation="topk", k=k)
        out.append(tc)
    return out


def factual_recall():
    model = GPT.load(checkpoint("factual_recall/model.safetensors"))
    task = make_task("factual_recall")
    prompt = np.asarray(task.prompts(jax.random.key(7), 256, 5).tokens[0])  # lesson 0's first prompt
    return "factual recall (lesson 0, trained)", model, prompt


def big():
    model = GPT(BIG)
    prompt = np.random.default_rng(3).integers(1, BIG.d_vocab, BIG_PROMPT).astype(np.int32)
    prompt[0] = 0
    return "4L d256 (random weights)", model, prompt


def frozen_flops(cfg: GPTConfig, p: int, skip: bool = True) -> float:
    """Matmul FLOPs of one pass of the frozen linear model over p positions (module docstring)."""
    hd = cfg.n_heads * cfg.d_head
    per_layer = 2 * p * cfg.d_model * hd + 2 * cfg.n_heads * p * p * cfg.d_head + 2 * p * hd * cfg.d_model
    if skip:
        per_layer += 2 * p * cfg.d_model * cfg.d_model
    return cfg.n_layers * per_layer + 2 * cfg.d_model * (cfg.d_vocab_out or cfg.d_vocab)


# --- the naive loops ---------------------------------------------------------------------------------
def _frozen(model, tcs, tokens, clean):
    def f(deltas):
        inputs, logits = A._forward(model, tcs, tokens, clean, "all", A._no_features(), *deltas)
        return inputs, logits[-1]

    return f


def _zeros(model, tcs, tokens):
    L, p, d = len(tcs), tokens.shape[1], model.cfg.d_model
    return jnp.zeros((L, p, d)), jnp.zeros((p, d))


def _cotangent(L, p, d, v, layer, pos, column, logit, is_logit):
    """The target's cotangent, as attribute's row() builds it."""
    at_input = jnp.zeros((L, p, d)).at[layer, pos].set(jnp.where(is_logit, 0.0, column))
    at_logit = jnp.where(is_logit, jax.nn.one_hot(logit, v) - 1.0 / v, 0.0)
    return at_input, at_logit


def _row(g_mlp, g_embed, clean, s_layer, s_pos, s_write):
    """[n_f + L p + p]: the target's edges from the features, the errors, the embeddings."""
    return jnp.concatenate(
        [
            (g_mlp[s_layer, s_pos] * s_write).sum(-1),
            (g_mlp * clean.errors).sum(-1).reshape(-1),
            (g_embed * clean.embed).sum(-1),
        ]
    )


@jax.jit
def one_target(model, tcs, tokens, clean, s_layer, s_pos, s_write, layer, pos, column, logit, is_logit):
    """One target's row by one jax.vjp of the frozen model: its forward and backward pass."""
    L, p, d = len(tcs), tokens.shape[1], model.cfg.d_model
    _, vjp = jax.vjp(_frozen(model, tcs, tokens, clean), _zeros(model, tcs, tokens))
    ((g_mlp, g_embed),) = vjp(_cotangent(L, p, d, clean.logits.shape[-1], layer, pos, column, logit, is_logit))
    return _row(g_mlp, g_embed, clean, s_layer, s_pos, s_write)


@jax.jit
def forward_vjp(model, tcs, tokens, clean):
    """The frozen model's forward pass, once: its VJP function (a pytree of the saved residuals)."""
    return jax.vjp(_frozen(model, tcs, tokens, clean), _zeros(model, tcs, tokens))[1]


@jax.jit
def one_backward(vjp, clean, s_layer, s_pos, s_write, layer, pos, column, logit, is_logit):
    L, p, d = clean.inputs.shape
    ((g_mlp, g_embed),) = vjp(_cotangent(L, p, d, clean.logits.shape[-1], layer, pos, column, logit, is_logit))
    return _row(g_mlp, g_embed, clean, s_layer, s_pos, s_write)


def loop_inputs(model, tcs, prompt, graph):
    """The clean run, the sources and the targets of attribute's graph, for the loops."""
    model32, tcs, tokens = A._prepare(model, tcs, prompt, "bench")
    with A._full_float32():
        clean = A._clean_run(model32, tcs, tokens)
    feats = graph.nodes_of("feature")
    f_layer, f_pos, f_id = graph.layer[feats], graph.position[feats], graph.index[feats]
    W_dec = [np.asarray(tc.W_dec) for tc in tcs]
    W_enc = [np.asarray(tc.W_enc) for tc in tcs]
    writes = np.stack([graph.activation[i] * W_dec[l][f] for i, l, f in zip(feats, f_layer, f_id)])
    columns = np.stack([W_enc[l][:, f] for l, f in zip(f_layer, f_id)])
    sources = (jnp.asarray(f_layer), jnp.asarray(f_pos), jnp.asarray(writes))
    logits = graph.nodes_of("logit")
    targets = [(int(l), int(q), columns[j], 0, False) for j, (l, q) in enumerate(zip(f_layer, f_pos))]
    targets += [(0, 0, np.zeros_like(columns[0]), int(graph.index[i]), True) for i in logits]
    targets = [(jnp.int32(l), jnp.int32(q), jnp.asarray(c), jnp.int32(v), jnp.bool_(b)) for l, q, c, v, b in targets]
    return model32, tcs, tokens, clean, sources, targets, np.r_[feats, logits]


def run_loop(model32, tcs, tokens, clean, sources, targets) -> np.ndarray:
    with A._full_float32():
        rows = [one_target(model32, tcs, tokens, clean, *sources, *t) for t in targets]
    return np.asarray(jnp.stack(rows))


def run_loop_forward_once(model32, tcs, tokens, clean, sources, targets) -> np.ndarray:
    with A._full_float32():
        vjp = forward_vjp(model32, tcs, tokens, clean)
        rows = [one_backward(vjp, clean, *sources, *t) for t in targets]
    return np.asarray(jnp.stack(rows))


def timed(fn, repeats: int) -> tuple[float, float, list[float], object]:
    """(first call, median of the next `repeats`, their times, the last result)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), times, out


# --- where the time goes (--breakdown) ---------------------------------------------------------------
def breakdown(model, prompt, n_targets: int = 512, chunk: int = 32) -> dict:
    tcs = random_transcoders(model)
    graph = attribute(model, tcs, prompt)
    model32, tcs32, tokens, clean, sources, targets, _ = loop_inputs(model, tcs, prompt, graph)
    L, p, d = clean.inputs.shape
    v = clean.logits.shape[-1]
    s_layer, s_pos, s_write = (np.asarray(x) for x in sources)
    slot = s_layer * p + s_pos
    counts = np.bincount(slot, minlength=L * p)
    k_max = int(counts.max())
    order = np.argsort(slot, kind="stable")
    rank = np.empty(len(slot), int)
    rank[order] = np.arange(len(slot)) - np.r_[0, np.cumsum(counts)[:-1]][slot[order]]
    packed = np.zeros((L * p, k_max, d), np.float32)
    packed[slot, rank] = s_write
    packed, flat = jnp.asarray(packed), jnp.asarray(slot * k_max + rank)
    packed_rows = A._pack_sources(slot, s_write, L * p, len(slot))  # as attribute packs them: rows of 16 per slot
    pick = np.unique(np.linspace(0, len(targets) - 1, min(n_targets, len(targets))).astype(int))
    chosen = [targets[i] for i in pick]
    chunks = [
        tuple(jnp.stack([t[j] for t in chosen[i : i + chunk]]) for j in range(5)) for i in range(0, len(chosen), chunk)
    ]

    def variant(mode):
        @jax.jit
        def f(vjp, clean, s_layer, s_pos, s_write, packed, flat, rows, layer, pos, column, logit, is_logit):
            def grads(*target):
                ((g_mlp, g_embed),) = vjp(_cotangent(L, p, d, v, *target))
                return g_mlp, g_embed

            g_mlp, g_embed = jax.vmap(grads)(layer, pos, column, logit, is_logit)  # [B, L, p, d], [B, p, d]
            B = g_mlp.shape[0]
            if mode == "vjp":
                return g_mlp.sum((1, 2, 3)) + g_embed.sum((1, 2))
            other = [(g_mlp * clean.errors).sum(-1).reshape(B, -1), (g_embed * clean.embed).sum(-1)]
            if mode == "errors, embeddings":
                return jnp.concatenate(other, 1)
            if mode == "features: gather (attribute before)":
                feats = jax.vmap(lambda g: (g[s_layer, s_pos] * s_write).sum(-1))(g_mlp)
            elif mode == "features: slot matmul":  # one batched matmul over the slots, k_max wide
                feats = jnp.einsum("bjd,jkd->bjk", g_mlp.reshape(B, L * p, d), packed).reshape(B, -1)[:, flat]
            else:  # as attribute now: the gradient at each packed row's slot times the row, under vmap
                g_rows = g_mlp.reshape(B, L * p, d)[:, rows.slot]
                feats = jax.vmap(lambda g: jnp.einsum("rd,rkd->rk", g, rows.packed).reshape(-1)[rows.flat])(g_rows)
            return jnp.concatenate([feats, *other], 1)

        return f

    out = {"targets": len(chosen), "chunk": chunk, "k_max": k_max}
    ref = None
    with A._full_float32():
        vjp = forward_vjp(model32, tcs32, tokens, clean)
        single = lambda: [one_backward(vjp, clean, *sources, *t) for t in chosen]  # noqa: E731
        _, t_single, _, rows = timed(single, 3)
        out["one target per call (forward once)"] = t_single / len(chosen)
        ref = np.asarray(jnp.stack(rows))
        modes = ("vjp", "errors, embeddings", "features: gather (attribute before)", "features: slot matmul",
                 "features: packed rows (as attribute)")  # fmt: skip
        for mode in modes:
            f = variant(mode)
            run = lambda f=f: [f(vjp, clean, *sources, packed, flat, packed_rows, *c) for c in chunks]  # noqa: E731
            load0 = load()
            _, t, _, res = timed(run, 3)
            out[f"{chunk} per call: {mode}"] = t / len(chosen)
            if mode.startswith("features"):
                diff = float(np.abs(np.concatenate([np.asarray(r) for r in res]) - ref).max())
                out[f"{mode}: max |diff| vs one per call"] = diff
            print(
                f"{chunk} targets per call, {mode}: {1e3 * t / len(chosen):.2f} ms per target; "
                f"load {load0:.2f} -> {load():.2f}",
                flush=True,
            )
    print(f"one target per call: {1e3 * t_single / len(chosen):.2f} ms per target", flush=True)
    return out


# --- circuit-tracer -------------------------------------------------------------------------------
def circuit_tracer_status() -> tuple[object | None, str]:
    """(the module, its version) or (None, why not)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "no torch in this environment (run it in bench/.venv-tl: bash bench/run.sh --attribution)"
    try:
        import huggingface_hub.constants as hf_constants

        if not hasattr(hf_constants, "HF_HUB_ENABLE_HF_TRANSFER"):  # removed in huggingface-hub 1.x
            hf_constants.HF_HUB_ENABLE_HF_TRANSFER = False
        import circuit_tracer
        from circuit_tracer.replacement_model.replacement_model_transformerlens import (  # noqa: F401
            TransformerLensReplacementModel,
        )
    except Exception as e:  # an ImportError, or what its import runs into
        return None, f"circuit-tracer does not import: {type(e).__name__}: {e}"
    return circuit_tracer, circuit_tracer.__version__


class _StubTokenizer:
    """What circuit-tracer asks of a tokenizer for a prompt given as token ids."""

    def __init__(self, bos: int, vocab_size: int):
        self.bos_token_id = bos
        self.all_special_ids = [bos]
        self.vocab_size = vocab_size
        self.padding_side = "right"  # HookedTransformer reads it when it runs tokens

    def decode(self, ids) -> str:
        ids = [ids] if isinstance(ids, int) else list(np.asarray(ids).reshape(-1))
        return " ".join(f"<{int(i)}>" for i in ids)


def circuit_tracer_model(model: GPT, tcs: list):
    import torch
    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from circuit_tracer.transcoder.activation_functions import TopK
    from transformer_lens import HookedTransformerConfig

    from bench.tl import TL_BUFFERS

    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    layers = {}
    for tc in tcs:
        act = torch.nn.Sequential(TopK(tc.k), torch.nn.ReLU())  # minillm's TopK keeps the top k, then ReLU
        ct = SingleLayerTranscoder(
            model.cfg.d_model,
            tc.d_transcoder,
            act,
            tc.layer,
            skip_connection=True,
            device=torch.device("cpu"),
            dtype=torch.float32,
        )
        with torch.no_grad():
            ct.W_enc.copy_(t(tc.W_enc).T)  # theirs [d_transcoder, d_model]
            ct.b_enc.copy_(t(tc.b_enc))
            ct.W_dec.copy_(t(tc.W_dec))
            ct.b_dec.copy_(t(tc.b_dec))
            ct.W_skip.copy_(t(tc.W_skip).T)  # theirs: x @ W_skip.T
        layers[tc.layer] = ct
    tset = TranscoderSet(layers, feature_input_hook="ln2.hook_normalized", feature_output_hook="hook_mlp_out")
    weights, cfg = model.to_transformer_lens()
    tl = TransformerLensReplacementModel(HookedTransformerConfig(**{**cfg, "device": "cpu", "dtype": torch.float32}))
    missing, unexpected = tl.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(TL_BUFFERS)]
    if missing or unexpected:
        raise RuntimeError(f"state_dict mismatch: {missing} {unexpected}")
    tl._configure_replacement_model(tset)  # what from_config does after the constructor
    tl.eval()
    return tl


def compare_with_circuit_tracer(graph, ct_graph) -> dict:
    """Max |difference| of the edges both graphs define alike (module docstring), and counts."""
    feats = graph.nodes_of("feature")
    ours = {(int(graph.layer[i]), int(graph.position[i]), int(graph.index[i])): i for i in feats}
    af = ct_graph.active_features.cpu().numpy()
    sel = ct_graph.selected_features.cpu().numpy()
    theirs_f = {tuple(int(x) for x in af[s]): j for j, s in enumerate(sel)}
    p = len(graph.tokens)
    L = graph.cfg.n_layers
    n_sel = len(sel)
    # errors: ours after the features in (layer, position) order; theirs the same after theirs
    ours_err = graph.nodes_of("error")
    pairs = [(ours[k], theirs_f[k]) for k in ours if k in theirs_f]
    err_pairs = [(ours_err[l * p + q], n_sel + l * p + q) for l in range(L) for q in range(1, p)]
    ct_logits = [t.vocab_idx for t in ct_graph.logit_targets]
    our_logits = graph.nodes_of("logit")
    n_ct = ct_graph.adjacency_matrix.shape[0]
    logit_pairs = [
        (i, n_ct - len(ct_logits) + ct_logits.index(int(graph.index[i])))
        for i in our_logits
        if int(graph.index[i]) in ct_logits
    ]
    rows = pairs + logit_pairs
    cols = pairs + err_pairs
    Ao = graph.adjacency[np.ix_([r[0] for r in rows], [c[0] for c in cols])]
    At = ct_graph.adjacency_matrix.cpu().numpy()[np.ix_([r[1] for r in rows], [c[1] for c in cols])]
    return {
        "features_ours": len(feats),
        "features_ours_pos_gt_0": sum(1 for k in ours if k[1] > 0),
        "features_theirs": len(theirs_f),
        "features_matched": len(pairs),
        "logits_ours": [int(graph.index[i]) for i in our_logits],
        "logits_theirs": ct_logits,
        "compared_edges": int(Ao.size),
        "max_abs_diff": float(np.abs(Ao - At).max()) if Ao.size else float("nan"),
        "max_abs_edge": float(np.abs(Ao).max()) if Ao.size else float("nan"),
    }


def run_circuit_tracer(model, tcs, prompt, graph, repeats: int) -> dict:
    import torch
    from circuit_tracer import attribute as ct_attribute

    tl = circuit_tracer_model(model, tcs)
    tl.tokenizer = _StubTokenizer(int(prompt[0]), model.cfg.d_vocab)
    tokens = torch.tensor(np.asarray(prompt), dtype=torch.long)
    load0 = load()
    first, steady, times, ct_graph = timed(lambda: ct_attribute(tokens, tl), repeats)
    out = {"first": first, "steady": steady, "times": times, "torch_threads": torch.get_num_threads()}
    out.update(compare_with_circuit_tracer(graph, ct_graph))
    out["load"] = (load0, load())
    return out


# --- one model ---------------------------------------------------------------------------------------
def bench_model(name, model, prompt, repeats: int, loop_repeats: int, peak: float, ct) -> dict:
    print(f"\n## {name}: building transcoders", flush=True)
    tcs = random_transcoders(model)
    cfg = model.cfg
    r = {"model": name, "config": cfg.to_dict(), "prompt_len": len(prompt), "d_transcoder": D_TRANSCODER, "k": K}
    load0 = load()
    first, steady, times, graph = timed(lambda: attribute(model, tcs, prompt), repeats)
    r["attribute"] = {"first": first, "steady": steady, "times": times, "load": (load0, load())}
    n_f, n_l = len(graph.nodes_of("feature")), len(graph.nodes_of("logit"))
    r.update(
        nodes=graph.n_nodes,
        features=n_f,
        logits=n_l,
        targets=n_f + n_l,
        edges=int((graph.adjacency != 0).sum()),
        edge_entries=int((n_f + n_l) * (graph.n_nodes - n_l)),
    )
    print(
        f"attribute: first call {fmt_time(first)}, then {fmt_time(steady)} (median of {repeats}); "
        f"{graph.n_nodes} nodes, {n_f + n_l} targets ({n_f} features, {n_l} logits), {r['edges']} edges "
        f"non-zero; load {load0:.2f} -> {load():.2f}",
        flush=True,
    )

    model32, tcs32, tokens, clean, sources, targets, target_rows = loop_inputs(model, tcs, prompt, graph)
    n_s = n_f + cfg.n_layers * len(prompt) + len(prompt)
    expected = graph.adjacency[target_rows][:, :n_s]
    for key, fn in (("loop", run_loop), ("loop_forward_once", run_loop_forward_once)):
        load0 = load()
        first, steady, times, rows = timed(
            lambda fn=fn: fn(model32, tcs32, tokens, clean, sources, targets), loop_repeats
        )
        diff = float(np.abs(rows - expected).max())
        r[key] = {
            "first": first,
            "steady": steady,
            "times": times,
            "max_abs_diff": diff,
            "max_abs_edge": float(np.abs(expected).max()),
            "load": (load0, load()),
        }
        print(
            f"{key}: first {fmt_time(first)}, then {fmt_time(steady)} (median of {loop_repeats}); "
            f"max |diff| vs attribute {diff:.2e} (edges up to {np.abs(expected).max():.2e}); "
            f"load {load0:.2f} -> {load():.2f}",
            flush=True,
        )

    F = frozen_flops(cfg, len(prompt))
    t = n_f + n_l
    r["flops_frozen_pass"] = F
    r["floor_loop"] = t * 2 * F / peak
    r["floor_attribute"] = (t + 1) * F / peak
    print(
        f"floor: F = {F / 1e6:.2f} MFLOP per pass; targets x 2F = {t * 2 * F / 1e9:.2f} GFLOP -> "
        f"{fmt_time(r['floor_loop'])}; (targets + 1) x F -> {fmt_time(r['floor_attribute'])}",
        flush=True,
    )

    if ct is not None:
        print("circuit-tracer ...", flush=True)
        try:
            r["circuit_tracer"] = run_circuit_tracer(model, tcs, prompt, graph, repeats)
            c = r["circuit_tracer"]
            print(
                f"circuit-tracer: first {fmt_time(c['first'])}, then {fmt_time(c['steady'])}; "
                f"{c['features_theirs']} features (ours {c['features_ours']}, at positions > 0 "
                f"{c['features_ours_pos_gt_0']}, matched {c['features_matched']}), logits {c['logits_theirs']} "
                f"(ours {c['logits_ours']}); max |diff| {c['max_abs_diff']:.2e} over {c['compared_edges']} "
                f"edges (up to {c['max_abs_edge']:.2e})",
                flush=True,
            )
        except Exception as e:
            r["circuit_tracer"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"circuit-tracer failed: {type(e).__name__}: {e}", flush=True)
    return r


def markdown(rows: list[dict], peak: float, ct_note: str) -> str:
    out = [
        "| model | prompt | nodes (features + errors + embeddings + logits) | targets | edges (non-zero) | "
        "attribute() first call | attribute() steady | naive loop (VJP per target) | speed-up | "
        "loop, forward once | speed-up | floor: targets x (fwd + bwd) | floor: (targets + 1) x pass | "
        "attribute % of its floor | max \\|loop - attribute\\| (edges up to) | circuit-tracer |",
        "|" + "---|" * 16,
    ]
    for r in rows:
        a, lp, lf = r["attribute"], r["loop"], r["loop_forward_once"]
        L, p = r["config"]["n_layers"], r["prompt_len"]
        c = r.get("circuit_tracer")
        ct = "-" if c is None else (c["error"] if "error" in c else f"{fmt_time(c['steady'])}")
        out.append(
            f"| {r['model']} | {p} tokens | {r['nodes']} ({r['features']} + {L * p} + {p} + {r['logits']}) | "
            f"{r['targets']} | {r['edges']:,} | {fmt_time(a['first'])} | {fmt_time(a['steady'])} | "
            f"{fmt_time(lp['steady'])} | {lp['steady'] / a['steady']:.2f}x | {fmt_time(lf['steady'])} | "
            f"{lf['steady'] / a['steady']:.2f}x | {fmt_time(r['floor_loop'])} | {fmt_time(r['floor_attribute'])} | "
            f"{100 * r['floor_attribute'] / a['steady']:.0f}% | "
            f"{max(lp['max_abs_diff'], lf['max_abs_diff']):.1e} ({lp['max_abs_edge']:.1e}) | {ct} |"
        )
    out.append("")
    out.append(f"Float32 matmul peak (JAX): {peak / 1e9:.1f} GFLOP/s. {ct_note}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small model only, fewer repeats")
    ap.add_argument("--no-circuit-tracer", action="store_true")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--breakdown", action="store_true", help="only: where the time goes (module docstring)")
    args = ap.parse_args()
    if args.breakdown:
        print(
            f"# breakdown: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load {load():.2f}",
            flush=True,
        )
        name, model, prompt = big()
        out = breakdown(model, prompt)
        print(json.dumps(out, indent=1))
        return
    t_start = time.time()
    print(
        f"# attribution graphs: {cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load {load():.2f}",
        flush=True,
    )
    ct, ct_version = (None, "not asked for") if args.no_circuit_tracer else circuit_tracer_status()
    print(f"circuit-tracer: {ct_version}", flush=True)
    peak = matmul_peak_flops()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (load {load():.2f})", flush=True)
    repeats, loop_repeats = (3, 1) if args.quick else (5, 3)
    models = [factual_recall()] + ([] if args.quick else [big()])
    rows = [bench_model(name, m, prompt, repeats, loop_repeats, peak, ct) for name, m, prompt in models]
    versions = f"jax {jax.__version__}"
    if ct is not None:
        import torch

        versions += (
            f", torch {torch.__version__} ({torch.get_num_threads()} threads), transformer-lens "
            f"{importlib.metadata.version('transformer-lens')}, circuit-tracer {ct_version}"
        )
    note = f"Versions: {versions}. Whole run {time.time() - t_start:.0f} s; load at the end {load():.2f}."
    print("\n" + markdown(rows, peak, note))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak": peak, "rows": rows, "circuit_tracer": ct_version}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
