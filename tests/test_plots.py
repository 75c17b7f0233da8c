"""Every plotting function returns a figure that renders to a PNG."""

import numpy as np

from minillm.plots import plot_training_curves


def test_training_curves_render_to_png(tmp_path):
    rows = [{"step": s, "seed": seed, "train_loss": 1 / (s + 1), "test_loss": 2 / (s + 1), "train_acc": 0.5,
             "test_acc": 0.4, "induction_score": s / 100} for seed in (0, 1) for s in range(0, 100, 10)]
    fig = plot_training_curves(rows, log_x=True, extra=["induction_score"], title="t")
    path = tmp_path / "curves.png"
    fig.savefig(path)
    assert path.stat().st_size > 5000
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 4  # train and test loss, two seeds
