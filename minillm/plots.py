"""Figures with matplotlib. Each function returns the Figure, so it works in notebooks, scripts and
tests alike (save it with `fig.savefig(path)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg")  # no display needed; notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np


def plot_training_curves(
    metrics: Sequence[dict[str, Any]],
    *,
    log_x: bool = False,
    log_y: bool = True,
    title: str | None = None,
    extra: Sequence[str] = (),
):
    """Loss and accuracy, train and test, against step (one line per seed); `extra` adds panels
    for other logged metrics (e.g. "induction_score")."""
    panels = [("loss", ["train_loss", "test_loss"]), ("accuracy", ["train_acc", "test_acc"])]
    panels += [(name, [name]) for name in extra]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    seeds = sorted({row.get("seed", 0) for row in metrics})
    styles = {"train": "-", "test": "--"}
    for ax, (label, keys) in zip(axes[0], panels):
        for i, seed in enumerate(seeds):
            rows = [r for r in metrics if r.get("seed", 0) == seed]
            steps = np.array([r["step"] for r in rows])
            for key in keys:
                values = np.array([r.get(key, np.nan) for r in rows], dtype=float)
                split = key.split("_")[0]
                ax.plot(
                    np.maximum(steps, 1) if log_x else steps,
                    values,
                    styles.get(split, "-"),
                    color=f"C{i}",
                    label=f"{key}" + (f" (seed {seed})" if len(seeds) > 1 else ""),
                )
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if log_x:
            ax.set_xscale("log")
        if log_y and label == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(seeds) <= 4:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _labels(tokens: Sequence[str] | None, n: int) -> list[str]:
    return list(tokens) if tokens is not None else [str(i) for i in range(n)]


def plot_attention_patterns(
    pattern,
    tokens: Sequence[str] | None = None,
    head_names: Sequence[str] | None = None,
    title: str | None = None,
    max_label_count: int = 40,
):
    """Attention patterns [head, q, k] (or one [q, k]) of one sequence, one panel per head, with the
    tokens on both axes: the row is the token attending (query), the column the token attended to."""
    pattern = np.asarray(pattern)
    if pattern.ndim == 2:
        pattern = pattern[None]
    n_heads, n_q, n_k = pattern.shape
    cols = min(n_heads, 4)
    rows = -(-n_heads // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    labels = _labels(tokens, n_k)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= n_heads:
            ax.axis("off")
            continue
        im = ax.imshow(pattern[h], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(head_names[h] if head_names else f"head {h}", fontsize=10)
        if n_k <= max_label_count:
            ax.set_xticks(range(n_k), labels[:n_k], rotation=90, fontsize=6)
            ax.set_yticks(range(n_q), labels[:n_q], fontsize=6)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="attention")
    if title:
        fig.suptitle(title)
    return fig


def plot_head_heatmap(
    scores, title: str = "", cmap: str = "viridis", vmin=None, vmax=None, annotate: bool = True, label: str = "score"
):
    """A [layer, head] array (detector scores, patching or ablation effects) as a heatmap."""
    scores = np.asarray(scores)
    n_layers, n_heads = scores.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n_heads, 0.9 + 0.6 * n_layers))
    if cmap == "RdBu" and vmin is None and vmax is None:
        vmax = float(np.abs(scores).max()) or 1.0
        vmin = -vmax
    im = ax.imshow(scores, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_heads), [f"H{h}" for h in range(n_heads)])
    ax.set_yticks(range(n_layers), [f"L{l}" for l in range(n_layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if annotate and scores.size <= 144:
        for l in range(n_layers):
            for h in range(n_heads):
                ax.text(
                    h,
                    l,
                    f"{scores[l, h]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if im.norm(scores[l, h]) < 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_patching(result, tokens: Sequence[str] | None = None, title: str = "", label: str = "metric"):
    """A patching sweep: [layer, pos] as one heatmap, [layer, pos, head] as one panel per layer,
    [layer, head] as a head heatmap. Diverging colours centred on zero."""
    result = np.asarray(result)
    if result.ndim == 2 and tokens is None and result.shape[1] <= 16:
        return plot_head_heatmap(result, title, cmap="RdBu", label=label)
    vmax = float(np.abs(result).max()) or 1.0
    panels = [result] if result.ndim == 2 else [result[l].T for l in range(result.shape[0])]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(max(6, 0.25 * result.shape[1]) * len(panels) ** 0.5 + 2, 2.2 + 0.35 * panels[0].shape[0]),
        squeeze=False,
    )
    for i, (ax, panel) in enumerate(zip(axes[0], panels)):
        im = ax.imshow(panel, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        n_pos = panel.shape[1]
        ax.set_xticks(range(n_pos), _labels(tokens, n_pos)[:n_pos], rotation=90, fontsize=6)
        if result.ndim == 2:
            ax.set_yticks(range(panel.shape[0]), [f"L{l}" for l in range(panel.shape[0])])
            ax.set_ylabel("layer")
        else:
            ax.set_yticks(range(panel.shape[0]), [f"H{h}" for h in range(panel.shape[0])])
            ax.set_title(f"layer {i}")
            ax.set_ylabel("head")
        ax.set_xlabel("position")
    fig.colorbar(im, ax=axes.ravel().tolist(), label=label)
    if title:
        fig.suptitle(title)
    return fig


def plot_logit_lens(
    values,
    labels: Sequence[str],
    line_labels: Sequence[str] | None = None,
    title: str = "logit lens",
    ylabel: str = "logit difference",
):
    """Values [component] or [component, line] along the residual stream (e.g. from
    accumulated_resid projected on a logit direction), one line per column."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(labels)), 3.5))
    for j in range(values.shape[1]):
        ax.plot(range(len(labels)), values[:, j], "o-", label=line_labels[j] if line_labels else None)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    if line_labels:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_fourier_norms(
    norms,
    names: Sequence[str] | None = None,
    key_freqs: Sequence[int] = (),
    title: str = "norm of each Fourier component",
    ylabel: str = "norm",
):
    """Bars of per-frequency (or per-basis-vector) norms, the key frequencies highlighted."""
    norms = np.asarray(norms)
    fig, ax = plt.subplots(figsize=(max(6, 0.09 * len(norms)), 3.2))
    colors = ["C3" if i in set(key_freqs) else "C0" for i in range(len(norms))]
    ax.bar(range(len(norms)), norms, color=colors, width=0.9)
    if names is not None and len(names) <= 60:
        ax.set_xticks(range(len(norms)), names, rotation=90, fontsize=6)
    else:
        ax.set_xlabel("frequency k")
    for k in key_freqs:
        ax.annotate(str(k), (k, norms[k]), ha="center", va="bottom", fontsize=8, color="C3")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_probe_scores(sweep, *, title: str | None = None, vmin: float = 0.0):
    """A probe sweep (minillm.probes.probe_sweep) as three heatmaps over hook point (rows, in forward
    order) and position (columns): the trained model's held-out scores, the untrained control's, and
    the selectivity (trained minus untrained). NaN (a label that never varies there) shows blank."""
    panels = [("trained model", sweep.scores), ("untrained control", sweep.untrained)]
    panels.append(("selectivity (trained - untrained)", sweep.selectivity))
    short = [n.replace("blocks.", "").replace("hook_", "") for n in sweep.names]
    positions = ["pooled"] if sweep.positions is None else [str(p) for p in sweep.positions]
    width = min(5.5, 0.16 * len(positions) + 2.5)  # per panel, in inches
    fig, axes = plt.subplots(1, 3, figsize=(3 * width, 0.45 * len(short) + 1.8), squeeze=False)
    metric = "R^2" if sweep.kind == "linear" else "accuracy"
    for ax, (label, values) in zip(axes[0], panels):
        low = -1.0 if label.startswith("selectivity") else vmin
        image = ax.imshow(np.asarray(values, float), aspect="auto", cmap="viridis", vmin=low, vmax=1.0)
        ax.set_title(f"{label}: held-out {metric}", fontsize=9)
        ax.set_yticks(range(len(short)), short, fontsize=7)
        step = max(1, len(positions) // 16)
        ax.set_xticks(range(0, len(positions), step), positions[::step], fontsize=7)
        ax.set_xlabel("position")
        fig.colorbar(image, ax=ax, fraction=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_causal_trace(
    traces,
    tokens: Sequence[str],
    *,
    titles: Sequence[str] = ("restore the residual stream", "restore attention output", "restore MLP output"),
    baseline: float | None = None,
    row_labels: Sequence[str] | None = None,
    label: str = "recovered",
):
    """A causal trace (Meng et al. 2022): [kind, layer, pos] patching results (e.g. from
    get_act_patch_block_every with corruption_hooks) as one panel per kind, positions down the rows
    and layers across, as in the paper. `baseline` (the corrupted run's metric) is the colour floor."""
    traces = np.asarray(traces)
    if traces.ndim == 2:
        traces = traces[None]
    n_kinds, n_layers, n_pos = traces.shape
    fig, axes = plt.subplots(1, n_kinds, figsize=(2.2 + 1.6 * n_kinds + 0.35 * n_layers * n_kinds, 1.2 + 0.3 * n_pos))
    axes = np.atleast_1d(axes)
    cmaps = ["Purples", "Reds", "Greens", "Blues"]
    low = float(traces.min()) if baseline is None else baseline
    high = max(float(traces.max()), low + 1e-6)
    for i, ax in enumerate(axes):
        image = ax.imshow(traces[i].T, cmap=cmaps[i % len(cmaps)], vmin=low, vmax=high, aspect="auto")
        ax.set_yticks(range(n_pos), list(tokens)[:n_pos] if i == 0 else [""] * n_pos, fontsize=7)
        rows = row_labels if row_labels is not None else [str(l) for l in range(n_layers)]
        ax.set_xticks(range(n_layers), rows, fontsize=8)
        ax.set_xlabel("layer")
        ax.set_title(titles[i] if i < len(titles) else "", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.08, label=label if i == n_kinds - 1 else None)
    fig.tight_layout()
    return fig


_PART_COLORS = {"q": "tab:blue", "k": "tab:orange", "v": "tab:green"}


def plot_circuit(found, *, top: int | None = None, truth: Sequence[str] = (), title: str = ""):
    """A circuit as a graph: embed at the bottom, each block's heads (and MLP) above it, the logits
    on top; an edge is an arrow from its sender to its receiver's node, coloured by what it feeds
    (a head's query blue, key orange, value green; an MLP or the logits grey). `found` is an
    EdgeScores (minillm.discovery: width by |score|; `top` keeps the largest) or a Circuit.
    Ground-truth edges (`truth`) the circuit misses are drawn dotted."""
    graph = found.graph
    cfg = graph.cfg
    if hasattr(found, "scores"):
        weight = np.abs(np.asarray(found.scores, float))
        shown = np.argsort(-weight, kind="stable")[: top or len(weight)]
        shown = [i for i in shown if weight[i] > 0]
        weight = weight / (weight.max() or 1.0)
    else:
        shown = list(np.flatnonzero(found.keep))
        weight = np.ones(len(graph.edges))
    H = cfg.n_heads
    mid = (H - 1) / 2 if cfg.attn_only else H / 2  # MLPs sit in a column right of the heads

    def place(node: str) -> tuple[float, float]:
        if node == "embed":
            return mid, 0.0
        if node == "logits":
            return mid, 2.0 * cfg.n_layers + 1
        layer = int(node.split(".")[1])
        if node.endswith(".mlp"):
            return float(H), 2.0 * layer + 2
        return float(node.rsplit("head", 1)[1]), 2.0 * layer + 1

    def label(node: str) -> str:
        if node in ("embed", "logits"):
            return node
        layer = node.split(".")[1]
        return f"MLP{layer}" if node.endswith(".mlp") else f"L{layer}H{node.rsplit('head', 1)[1]}"

    columns = H if cfg.attn_only else H + 1
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * columns + 2.0), 0.9 * (2 * cfg.n_layers + 2) + 0.8))
    nodes = list(graph.senders) + ["logits"]
    used = set()
    missed = [graph.index(e) for e in truth if graph.index(e) not in set(shown)]
    for i in list(shown) + missed:
        sender, receiver = graph.edges[i].split(" -> ")
        part = receiver.rsplit(".", 1)[1] if receiver.endswith((".q", ".k", ".v")) else ""
        node = receiver[: -len(part) - 1] if part else receiver
        used.update((sender, node))
        (x0, y0), (x1, y1) = place(sender), place(node)
        is_missed = i in missed
        ax.annotate(
            "",
            xy=(x1 + {"q": -0.12, "k": 0.0, "v": 0.12}.get(part, 0.0), y1 - 0.18),
            xytext=(x0, y0 + 0.18),
            arrowprops=dict(
                arrowstyle="-|>",
                color="lightgrey" if is_missed else _PART_COLORS.get(part, "dimgrey"),
                lw=0.8 if is_missed else 0.6 + 3.4 * float(weight[i]),
                ls=":" if is_missed else "-",
                alpha=0.9,
                connectionstyle="arc3,rad=0.12" if abs(x1 - x0) + abs(y1 - y0) > 2.1 else "arc3,rad=0.0",
                shrinkA=2,
                shrinkB=2,
            ),
        )
    for node in nodes:
        x, y = place(node)
        active = node in used
        ax.text(
            x,
            y,
            label(node),
            ha="center",
            va="center",
            fontsize=9,
            color="black" if active else "silver",
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="black" if active else "silver"),
        )
    handles = [plt.Line2D([], [], color=c, lw=2, label=p) for p, c in _PART_COLORS.items()]
    handles.append(plt.Line2D([], [], color="dimgrey", lw=2, label="MLP / logits"))
    if missed:
        handles.append(plt.Line2D([], [], color="lightgrey", lw=1, ls=":", label="missed (truth)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(-0.8, columns - 1 + 0.8)
    ax.set_ylim(-0.7, 2 * cfg.n_layers + 1.7)
    ax.axis("off")
    ax.set_title(title or f"{len(shown)} of {len(graph.edges)} edges")
    fig.tight_layout()
    return fig
