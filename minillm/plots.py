"""Figures with matplotlib. Each function returns the Figure, so it works in notebooks, scripts and
tests alike (save it with `fig.savefig(path)`)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg")  # no display needed; notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np


def plot_training_curves(metrics: Sequence[dict[str, Any]], *, log_x: bool = False, log_y: bool = True,
                         title: Optional[str] = None, extra: Sequence[str] = ()):
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
                ax.plot(np.maximum(steps, 1) if log_x else steps, values, styles.get(split, "-"),
                        color=f"C{i}", label=f"{key}" + (f" (seed {seed})" if len(seeds) > 1 else ""))
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
