"""Every plotting function (minillm/plots.py) returns a figure that renders to a PNG."""

import numpy as np
import pytest
from helpers import CONFIGS

from minillm.plots import (
    plot_attention_patterns,
    plot_causal_trace,
    plot_circuit,
    plot_fourier_norms,
    plot_head_heatmap,
    plot_logit_lens,
    plot_patching,
    plot_training_curves,
)


def test_training_curves_render_to_png(tmp_path):
    rows = [
        {
            "step": s,
            "seed": seed,
            "train_loss": 1 / (s + 1),
            "test_loss": 2 / (s + 1),
            "train_acc": 0.5,
            "test_acc": 0.4,
            "induction_score": s / 100,
        }
        for seed in (0, 1)
        for s in range(0, 100, 10)
    ]
    fig = plot_training_curves(rows, log_x=True, extra=["induction_score"], title="t")
    path = tmp_path / "curves.png"
    fig.savefig(path)
    assert path.stat().st_size > 5000
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 4  # train and test loss, two seeds


def _save(fig, path):
    fig.savefig(path)
    return path.stat().st_size


def test_every_plot_renders_to_png(tmp_path):
    rng = np.random.default_rng(0)
    pattern = rng.random((4, 7, 7))
    pattern = np.tril(pattern) / np.tril(pattern).sum(-1, keepdims=True)
    tokens = [f"t{i}" for i in range(7)]
    figs = {
        "patterns": plot_attention_patterns(pattern, tokens, title="p"),
        "one_pattern": plot_attention_patterns(pattern[0], tokens),
        "heads": plot_head_heatmap(rng.random((2, 4)), "scores"),
        "diverging": plot_head_heatmap(rng.normal(size=(2, 4)), "effects", cmap="RdBu"),
        "patch_layer_pos": plot_patching(rng.normal(size=(2, 7)), tokens),
        "patch_layer_pos_head": plot_patching(rng.normal(size=(2, 7, 4)), tokens),
        "patch_layer_head": plot_patching(rng.normal(size=(2, 4))),
        "lens": plot_logit_lens(rng.normal(size=(3, 2)), ["0_pre", "1_pre", "final"], ["a", "b"]),
        "fourier": plot_fourier_norms(rng.random(57), key_freqs=[14, 35]),
        "trace": plot_causal_trace(rng.random((3, 2, 7)), tokens, baseline=0.1),
        "one_trace": plot_causal_trace(rng.random((2, 7)), tokens, titles=["resid"]),
    }
    for name, fig in figs.items():
        assert _save(fig, tmp_path / f"{name}.png") > 3000, name
    assert len(figs["patterns"].axes) == 5  # 4 heads and a colour bar
    assert len(figs["patch_layer_pos_head"].axes) == 3  # 2 layers and a colour bar


@pytest.mark.slow
def test_probe_scores_render_to_png(tmp_path):
    from minillm import GPT
    from minillm.plots import plot_probe_scores
    from minillm.probes import probe_sweep

    tokens = np.random.default_rng(0).integers(0, 5, (60, 6)).astype(np.int32)
    sweep = probe_sweep(GPT(CONFIGS["attn_only_ln"]), tokens, tokens == 1)
    fig = plot_probe_scores(sweep, title="is the token a 1?")
    assert len(fig.axes) == 6  # three panels, each with its colorbar
    _save(fig, tmp_path / "probes.png")


def test_circuit_renders_with_scores_a_circuit_and_missed_truth(tmp_path):
    from minillm.discovery import Circuit, EdgeScores
    from minillm.graph import Graph

    for cfg in (CONFIGS["attn_only_ln"], CONFIGS["mlp_ln_gelu"]):
        g = Graph.of(cfg)
        scores = EdgeScores(g, np.random.default_rng(0).normal(size=len(g)), 0.0, "test")
        truth = [g.edges[0], g.edges[-1]]
        for found in (scores, Circuit(g, g.mask([g.edges[0]]))):
            fig = plot_circuit(found, top=8, truth=truth) if found is scores else plot_circuit(found, truth=truth)
            labels = {t.get_text() for t in fig.axes[0].texts}
            assert {"embed", "logits", "L0H0"} <= labels
            assert ("MLP0" in labels) == (not cfg.attn_only)
            fig.savefig(tmp_path / "circuit.png")
            assert (tmp_path / "circuit.png").stat().st_size > 1000
    with pytest.raises(KeyError):
        plot_circuit(scores, truth=["embed -> nowhere"])
