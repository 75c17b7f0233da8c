"""Checkers for the lessons' exercises: call one on your own function, and it compares your
answer with minillm's on a fresh model and inputs, then says what is wrong, if anything.

    from minillm.lessons.checkers import check_previous_token_scores
    check_previous_token_scores(previous_token_scores)

An exercise is three cells: the stub, whose body is `raise NotImplementedError("your code here")`
until the student writes it; the check, which runs the student's function; and the solution
(collapsed), which defines the function again and runs the same check on it. Every checker is an
`@exercise`: on a stub that is still empty it prints where to go on (write it, or open the
solution) and returns, so that running the notebook in order does not stop there; on a wrong
answer it raises an AssertionError that says what is wrong; on a right one it prints "correct".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from minillm import discovery, patching
from minillm.detectors import head_scores, repeated_random_tokens
from minillm.fourier import excluded_logits, fourier_basis
from minillm.graph import Graph, ablated_outputs, run_with_edges
from minillm.interventions import ablate_heads
from minillm.model import GPT
from minillm.model.config import GPTConfig


def _unwritten(error: NotImplementedError, fn: Callable) -> str | None:
    """The name of the student's function that raised `error` (fn itself, or a function fn calls
    that sits beside it, e.g. an earlier exercise), or None when the error came from elsewhere."""
    tb, innermost = error.__traceback__, None
    while tb is not None:
        innermost, tb = tb.tb_frame, tb.tb_next
    code = getattr(fn, "__code__", None)
    if innermost is None or not (innermost.f_code is code or innermost.f_globals is getattr(fn, "__globals__", None)):
        return None
    return innermost.f_code.co_name


def exercise(check: Callable[[Callable], None]) -> Callable[[Callable], None]:
    """Make `check(fn)` an exercise checker: a stub that still raises NotImplementedError gets a
    message instead of a traceback, and a function that returns None is wrong (a missing `return`)."""

    @functools.wraps(check)
    def run(fn: Callable) -> None:
        name = getattr(fn, "__name__", "your function")

        @functools.wraps(fn)
        def answer(*args, **kwargs):
            result = fn(*args, **kwargs)
            if result is None:
                raise AssertionError(f"`{name}` returned None: is its `return` missing?")
            return result

        try:
            check(answer)
        except NotImplementedError as error:
            missing = _unwritten(error, fn)
            if missing is None:
                raise
            if missing == name:
                print(
                    f"`{name}` is not written yet: write it above and run this cell again, "
                    "or open the solution in the next cell."
                )
            else:
                print(
                    f"`{missing}`, which `{name}` calls, is not written yet: write it (or run its solution), "
                    "then run this cell again."
                )

    return run


def _test_model(seed: int = 0) -> GPT:
    return GPT(GPTConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=32, d_vocab=20, attn_only=True, seed=seed))


def _compare(name: str, got, expected, atol: float = 1e-4) -> None:
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise AssertionError(f"{name}: your result has shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got, expected, atol=atol):
        worst = np.unravel_index(np.abs(got - expected).argmax(), got.shape)
        raise AssertionError(
            f"{name}: at index {tuple(int(i) for i in worst)} you have {got[worst]:.4f}, expected {expected[worst]:.4f}"
        )
    print(f"{name}: correct.")


@exercise
def check_previous_token_scores(fn: Callable) -> None:
    """fn(cache, n_layers) -> [layer, head]: the mean attention from each position to the one before."""
    for seed in (0, 1):
        model = _test_model(seed)
        tokens = repeated_random_tokens(jax.random.key(seed), 4, 10, 20)
        _, cache = model.run_with_cache(tokens)
        _compare("previous-token scores", fn(cache, model.cfg.n_layers), head_scores(model, tokens)["previous_token"])


@exercise
def check_head_mean_ablation(fn: Callable) -> None:
    """fn(activation_z, hook, head, reference_z) -> the z with `head` replaced by its mean over
    the reference batch (and over nothing else)."""
    model = _test_model(2)
    tokens = repeated_random_tokens(jax.random.key(3), 4, 10, 20)
    reference_tokens = repeated_random_tokens(jax.random.key(4), 6, 10, 20)
    _, reference = model.run_with_cache(reference_tokens)
    for layer, head in [(0, 1), (1, 3)]:
        name = f"blocks.{layer}.attn.hook_z"
        theirs = model.run_with_hooks(tokens, [(name, lambda z, hook: fn(z, hook, head, reference[name]))])
        ours = model.run_with_hooks(tokens, ablate_heads(model, [(layer, head)], "mean", reference))
        _compare(f"logits with L{layer}H{head} mean-ablated", theirs, ours)


@exercise
def check_copying_score(fn: Callable) -> None:
    """fn(model, layer, head) -> the fraction of input tokens whose largest entry in the head's
    full OV circuit W_E W_V W_O W_U (rows: input token, columns: output token) is on the diagonal."""
    for seed in (5, 6):
        model = _test_model(seed)
        W_E, W_U = model.embed.W_E[...], model.unembed.W_U[...]
        for layer, head in [(1, 2), (0, 0), (1, 0)]:
            attn = model.blocks[layer].attn
            full = W_E @ attn.W_V[head] @ attn.W_O[head] @ W_U  # [d_vocab, d_vocab_out]
            expected = float((full.argmax(-1) == jnp.arange(full.shape[0])).mean())
            _compare(f"copying score of L{layer}H{head}", fn(model, layer, head), expected)


@exercise
def check_fourier_basis(fn: Callable) -> None:
    """fn(p) -> [p, p] array whose rows are const, cos 1, sin 1, cos 2, sin 2, ... over x = 0..p-1,
    each normalised to unit length."""
    for p in (7, 13, 113):
        _compare(f"Fourier basis for p = {p}", fn(p), fourier_basis(p)[0], atol=1e-5)


@exercise
def check_key_frequencies(fn: Callable) -> None:
    """fn(W_E, p) -> the key frequencies, most important first: those whose (cos + sin) squared norm in
    W_E[:p] is above 4 times the mean over frequencies 1..p//2."""
    rng = np.random.default_rng(0)
    for p, freqs in [(113, [35, 14, 41]), (97, [30, 5])]:  # strongest first, not in numeric order
        basis = fourier_basis(p)[0]
        W_E = rng.normal(size=(p + 1, 16)) * 0.05
        for i, k in enumerate(freqs):  # plant frequencies, decreasing strength
            direction = rng.normal(size=16)
            W_E[:p] += (12 - 2 * i) * np.outer(basis[2 * k - 1], direction / np.linalg.norm(direction))
        got = [int(k) for k in fn(jnp.asarray(W_E, jnp.float32), p)]
        if got != freqs:
            raise AssertionError(f"key frequencies for p = {p}: you found {got}, expected {freqs}")
        print(f"key frequencies for p = {p}: correct.")


@exercise
def check_excluded_logits(fn: Callable) -> None:
    """fn(logits [p, p, c], freqs) -> the logits with their cos(w_k (a + b)) and sin(w_k (a + b))
    components removed for each k in freqs (the constant over (a, b) kept)."""
    rng = np.random.default_rng(1)
    for p, freqs in [(11, [2]), (23, [3, 7])]:
        logits = jnp.asarray(rng.normal(size=(p, p, p)), jnp.float32)
        _compare(f"excluded logits for p = {p}", fn(logits, freqs), excluded_logits(logits, freqs), atol=1e-4)


@exercise
def check_ridge_probe(fn: Callable) -> None:
    """fn(acts [n, d], labels [n], lam) -> (w [d], b): the ridge regression that minimises
    sum((acts @ w + b - labels)^2) + lam * |w|^2 (the bias b is not penalised)."""
    rng = np.random.default_rng(7)
    for n, d, lam in [(50, 4, 0.0), (200, 16, 3.0), (30, 40, 10.0)]:
        acts = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d) + rng.normal(size=d)
        labels = acts @ rng.normal(size=d) + 0.1 * rng.normal(size=n) + 2.0
        mean_x, mean_y = acts.mean(0), labels.mean()
        centred = acts - mean_x
        w = np.linalg.solve(centred.T @ centred + lam * np.eye(d), centred.T @ (labels - mean_y))
        got_w, got_b = fn(acts, labels, lam)
        _compare(f"ridge weights (n={n}, d={d}, lam={lam})", got_w, w, atol=1e-3)
        _compare(f"ridge bias (n={n}, d={d}, lam={lam})", np.float64(got_b), mean_y - mean_x @ w, atol=1e-3)


@exercise
def check_r2(fn: Callable) -> None:
    """fn(labels [n], predictions [n]) -> R^2 = 1 - sum((labels - predictions)^2) / sum((labels - mean)^2)."""
    rng = np.random.default_rng(8)
    labels = rng.normal(size=100)
    for name, pred in [
        ("perfect", labels),
        ("the mean", np.full(100, labels.mean())),
        ("noisy", labels + 0.5 * rng.normal(size=100)),
        ("worse than the mean", -labels),
    ]:
        expected = 1.0 - ((labels - pred) ** 2).sum() / ((labels - labels.mean()) ** 2).sum()
        _compare(f"R^2 of {name} predictions", np.float64(fn(labels, pred)), expected, atol=1e-6)


@exercise
def check_superposition_model(fn: Callable) -> None:
    """fn(W [m, n], b [n], x [batch, n]) -> x' = ReLU(x W^T W + b) [batch, n]: the toy model of
    superposition (Elhage et al. 2022), n features squeezed into m dimensions and read back out."""
    rng = np.random.default_rng(9)
    for m, n in [(2, 5), (3, 7)]:
        W, b, x = rng.normal(size=(m, n)), rng.normal(size=n) * 0.1, rng.uniform(size=(16, n))
        expected = np.maximum(x @ W.T @ W + b, 0.0)
        _compare(f"toy model output (m={m}, n={n})", fn(jnp.asarray(W), jnp.asarray(b), jnp.asarray(x)), expected)


@exercise
def check_importance_weighted_loss(fn: Callable) -> None:
    """fn(x [batch, n], x_hat [batch, n], importance [n]) -> the mean over the batch of
    sum_i importance_i * (x_i - x_hat_i)^2."""
    rng = np.random.default_rng(10)
    x, x_hat = rng.uniform(size=(32, 5)), rng.uniform(size=(32, 5))
    importance = 0.9 ** np.arange(5)
    expected = (importance * (x - x_hat) ** 2).sum(-1).mean()
    _compare(
        "importance-weighted loss",
        np.float64(fn(jnp.asarray(x), jnp.asarray(x_hat), jnp.asarray(importance))),
        expected,
        atol=1e-5,
    )


@exercise
def check_forward_from_state_dict(fn: Callable) -> None:
    """fn(weights, cfg, tokens) -> (streams [n_layers + 1, b, p, d], logits [b, p, v_out]): the forward
    pass rebuilt from `model.state_dict()` by hand. streams[0] is the residual stream entering block 0
    (token plus position embeddings), streams[l + 1] the stream leaving block l (resid_post)."""
    configs = [
        GPTConfig(n_layers=2, d_model=16, n_heads=4, d_mlp=32, n_ctx=8, d_vocab=11, d_vocab_out=7, act_fn="gelu"),
        GPTConfig(n_layers=3, d_model=12, n_heads=3, n_ctx=8, d_vocab=9, act_fn="relu", seed=3),
    ]
    for i, cfg in enumerate(configs):
        model = GPT(cfg)
        tokens = jax.random.randint(jax.random.key(i), (3, 8), 0, cfg.d_vocab)
        logits, cache = model.run_with_cache(tokens)
        expected = [cache["resid_pre", 0]] + [cache["resid_post", l] for l in range(cfg.n_layers)]
        streams, got_logits = fn(model.state_dict(), cfg, tokens)
        if len(streams) != cfg.n_layers + 1:
            raise AssertionError(f"expected {cfg.n_layers + 1} residual streams (embeddings, then each block's output)")
        what = f"{cfg.n_layers} layers, act_fn {cfg.act_fn}"
        for l, (got, want) in enumerate(zip(streams, expected)):
            _compare(f"residual stream {l} ({what})", got, want, atol=1e-4)
        _compare(f"logits ({what})", got_logits, logits, atol=1e-4)


@exercise
def check_stacked_frequency_norms(fn: Callable) -> None:
    """fn(W_E_stack [n_seeds, d_vocab, d_model], p) -> [n_seeds, p//2 + 1]: each seed's per-frequency
    norms of its number embeddings W_E[:p] (index 0 the constant), as fourier.frequency_norms gives
    for one seed."""
    from minillm.fourier import frequency_norms

    rng = np.random.default_rng(11)
    for n_seeds, p in [(3, 13), (2, 59)]:
        stack = jnp.asarray(rng.normal(size=(n_seeds, p + 1, 8)), jnp.float32)
        expected = np.stack([np.asarray(frequency_norms(w[:p], p)) for w in stack])
        _compare(f"frequency norms of {n_seeds} seeds (p = {p})", fn(stack, p), expected, atol=1e-4)


@exercise
def check_distance_irrelevance(fn: Callable) -> None:
    """fn(correct [p, p]) -> distance irrelevance: arrange the right-answer logits [a, b] by s = a + b
    and d = a - b (mod p); the mean over d of their standard deviation over s, divided by their
    standard deviation over all pairs (population standard deviations)."""
    from minillm.clock_pizza import distance_irrelevance_of

    rng = np.random.default_rng(12)
    for p in (7, 59):
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        f, g = rng.normal(size=p), rng.normal(size=p)
        for name, table in [("a function of a + b", f[(a + b) % p]), ("a mixture", f[(a + b) % p] + g[(a - b) % p])]:
            _compare(f"distance irrelevance of {name} (p = {p})", np.float64(fn(table)), distance_irrelevance_of(table))


@exercise
def check_ablate_edge_by_hand(fn: Callable) -> None:
    """fn(model, clean, corrupted, sender, receiver) -> logits [b, p, v] of the clean run with the one
    edge from head sender = (layer, head) to receiver = (layer, head, "q" | "k" | "v") ablated: that
    input of that head reads the sender's output from the corrupted run, every other reader the clean."""
    model = _test_model(3)
    clean = repeated_random_tokens(jax.random.key(5), 3, 6, 20)
    corrupted = repeated_random_tokens(jax.random.key(6), 3, 6, 20)
    graph = Graph.of(model.cfg)
    ablated = ablated_outputs(model, clean, "corrupted", corrupted)
    for sender, receiver in [((0, 1), (1, 0, "k")), ((0, 3), (1, 2, "q")), ((0, 0), (1, 3, "v"))]:
        edge = f"blocks.{sender[0]}.attn.head{sender[1]} -> blocks.{receiver[0]}.attn.head{receiver[1]}.{receiver[2]}"
        keep = np.ones(len(graph), np.float32)
        keep[graph.index(edge)] = 0.0
        expected = run_with_edges(model, clean, keep, ablated)
        _compare(f"logits with {edge} ablated", fn(model, clean, corrupted, sender, receiver), expected, atol=1e-4)


@exercise
def check_roc_auc(fn: Callable) -> None:
    """fn(scores, is_true) -> the ROC AUC of ranking edges by |score| against the bool array is_true:
    the chance that a true edge outranks a false one, ties counting a half."""
    graph = Graph.of(_test_model(0).cfg)
    rng = np.random.default_rng(0)
    for trial in range(4):
        scores = rng.normal(size=len(graph.edges)).round(1 if trial % 2 else 3)  # rounding makes ties
        is_true = rng.random(len(graph.edges)) < 0.2
        truth = [e for e, t in zip(graph.edges, is_true) if t]
        expected = discovery.roc(discovery.EdgeScores(graph, scores, 0.0, "check"), truth).auc
        _compare(f"AUC (trial {trial})", fn(scores, is_true), expected, atol=1e-9)


@exercise
def check_path_patch_by_hand(fn: Callable) -> None:
    """fn(model, clean, corrupted, metric, sender, receiver) -> metric of the clean run in which the
    head sender = (layer, head) reaches the receiver = (layer, head, "q" | "k" | "v") with its
    corrupted output, every other head frozen to the clean run and the MLPs recomputed (Wang et
    al.'s three steps). Checked on a model with MLPs and LayerNorm, where freezing the MLPs too
    would give other numbers."""
    model = GPT(GPTConfig(n_layers=3, d_model=24, n_heads=3, d_mlp=48, n_ctx=32, d_vocab=20, seed=9))
    clean = repeated_random_tokens(jax.random.key(7), 3, 6, 20)
    corrupted = repeated_random_tokens(jax.random.key(8), 3, 6, 20)

    def metric(logits):
        return logits[:, -1, 3].mean() - logits[:, -1, 5].mean()

    for sender, receiver in [((0, 1), (2, 0, "k")), ((1, 2), (2, 1, "q")), ((0, 0), (1, 2, "v"))]:
        got = fn(model, clean, corrupted, metric, sender, receiver)  # first: a stub stops here, before compiling
        expected = patching.get_path_patch_head_to_heads(model, clean, corrupted, metric, [receiver[:2]], receiver[2])
        _compare(f"path {sender} -> {receiver}", got, expected[sender])


@exercise
def check_mean_ablate_at_positions(fn: Callable) -> None:
    """fn(model, tokens, means, entries) -> logits with each head's hook_z at each (layer, head, pos)
    of `entries` replaced by means[layer][pos, head] (means: {layer: [pos, head, d_head]})."""
    model = _test_model(4)
    tokens = repeated_random_tokens(jax.random.key(9), 4, 8, 20)
    reference = repeated_random_tokens(jax.random.key(10), 16, 8, 20)
    _, cache = model.run_with_cache(reference, names_filter=lambda n: n.endswith("hook_z"))
    means = {l: cache["z", l].mean(0) for l in range(model.cfg.n_layers)}
    for entries in ([(0, 1, 5)], [(0, 0, 3), (1, 2, 16), (1, 3, 16)], []):
        got = fn(model, tokens, means, entries)  # first: a stub stops here

        def hook(z, hook, entries=entries):
            layer = int(hook.name.split(".")[1])
            for l, h, p in entries:
                if l == layer:
                    z = z.at[:, p, h].set(means[l][p, h])
            return z

        expected = model.run_with_hooks(tokens, [(lambda n: n.endswith("attn.hook_z"), hook)])
        _compare(f"logits with {entries} mean-ablated", got, expected)


# lesson 9
def _random_dag(rng: np.random.Generator, n: int, density: float, n_weighted: int) -> tuple[np.ndarray, np.ndarray]:
    """A random acyclic adjacency A[target, source] of n nodes, in shuffled order, with signed edges
    and some nodes without inputs; and weights on n_weighted of the nodes that feed nothing."""
    order = rng.permutation(n)  # node order[i] may only read nodes order[:i]
    A = np.zeros((n, n))
    for i in range(1, n):
        sources = order[:i][rng.random(i) < density]
        A[order[i], sources] = rng.normal(size=len(sources)) * rng.choice([0.1, 1.0, 10.0])
    A[order[: max(1, n // 5)]] = 0.0  # the first nodes are pure sources (embeddings, errors)
    sinks = np.flatnonzero(~(A != 0).any(0) & (A != 0).any(1))
    weights = np.zeros(n)
    chosen = rng.choice(sinks, size=min(n_weighted, len(sinks)), replace=False)
    weights[chosen] = rng.dirichlet(np.ones(len(chosen)))
    return A, weights


def _graph_shaped(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A matrix laid out as minillm's graphs are: 2 layers of features at 4 positions, then error
    nodes, embeddings and 3 logits; features read the embeddings, earlier layers and errors at the
    same or earlier positions; the logits read everything at the last position."""
    n_layers, p, per_cell = 2, 4, 3
    feats = [(l, q) for l in range(n_layers) for q in range(p) for _ in range(per_cell)]
    n_f, n_e = len(feats), n_layers * p
    n_s = n_f + n_e + p
    n = n_s + 3
    A = np.zeros((n, n))
    for t, (l, q) in enumerate(feats):
        for s, (ls, qs) in enumerate(feats):
            if ls < l and qs <= q:
                A[t, s] = rng.normal()
        for e in range(n_e):
            if e // p < l and e % p <= q:
                A[t, n_f + e] = rng.normal()
        A[t, n_f + n_e : n_f + n_e + q + 1] = rng.normal(size=q + 1)
    last = [i for i, (_, q) in enumerate(feats) if q == p - 1] + [n_f + l * p + p - 1 for l in range(n_layers)]
    A[n_s:, last] = rng.normal(size=(3, len(last)))
    A[n_s:, n_f + n_e : n_s] = rng.normal(size=(3, p))
    weights = np.zeros(n)
    weights[n_s:] = [0.7, 0.2, 0.1]
    return A, weights


@exercise
def check_node_influence(fn: Callable) -> None:
    """fn(A [n, n], weights [n]) -> [n]: each node's influence w (N + N^2 + N^3 + ...), where N is |A|
    with each row divided by its sum (rows of zeros stay zero) and w the weights (the logits'
    probabilities): the share of the output that reaches each node along paths of any length.
    A[target, source] is acyclic. Checked against minillm.attribution.influence."""
    from minillm.attribution import influence

    rng = np.random.default_rng(9)
    cases = [("a graph laid out as attribute() lays it out", *_graph_shaped(rng))]
    for n, density, n_weighted in [(6, 0.6, 1), (30, 0.2, 3), (80, 0.05, 5)]:
        cases.append((f"a random acyclic graph of {n} nodes", *_random_dag(rng, n, density, n_weighted)))
    for name, A, weights in cases:
        _compare(f"influence on {name}", fn(A.astype(np.float32), weights), influence(A, weights), atol=1e-5)


# lesson 8
def _text_test_model(seed: int, attn_only: bool = False) -> GPT:
    return GPT(
        GPTConfig(n_layers=3, d_model=32, n_heads=4, d_mlp=64, n_ctx=32, d_vocab=20, attn_only=attn_only, seed=seed)
    )


@exercise
def check_logit_lens_losses(fn: Callable) -> None:
    """fn(model, tokens) -> [n_layers + 1] mean losses of the predictions read from hook_resid_pre of
    each block and hook_resid_post of the last, each through ln_final (its own statistics) and the
    unembedding. Checked on models with and without MLPs, with trained-looking (scaled) weights."""
    from minillm.decompose import accumulated_resid

    for seed, attn_only in [(1, False), (2, True)]:
        model = _text_test_model(seed, attn_only)
        tokens = repeated_random_tokens(jax.random.key(seed), 4, 10, 20)
        got = fn(model, tokens)  # first: a stub stops here
        _, cache = model.run_with_cache(tokens)
        stack = accumulated_resid(model, cache, apply_ln=True)  # [n_layers + 1, b, p, d]
        logp = jax.nn.log_softmax(stack @ model.W_U + model.b_U, -1)[:, :, :-1]
        expected = -jnp.take_along_axis(logp, jnp.broadcast_to(tokens[None, :, 1:, None], logp.shape[:3] + (1,)), -1)
        _compare(f"logit lens ({'attention only' if attn_only else 'with MLPs'})", got, expected[..., 0].mean((1, 2)))


@exercise
def check_icl_score(fn: Callable) -> None:
    """fn(nll [b, p]) -> mean of nll over positions p - p // 8 .. p minus the mean over p // 16 .. p // 8."""
    rng = np.random.default_rng(0)
    for p in (256, 100, 37):
        nll = rng.gamma(2.0, 1.0, size=(5, p)) - np.linspace(0, 1, p)  # later positions a little lower
        expected = nll[:, p - p // 8 :].mean() - nll[:, p // 16 : p // 8].mean()
        _compare(f"in-context learning score (p = {p})", fn(jnp.asarray(nll)), expected, atol=1e-5)
