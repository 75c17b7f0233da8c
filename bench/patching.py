"""Patching benchmark: one compiled, vectorised sweep against a Python loop of run_with_hooks calls.

    python bench/patching.py

The induction config (2 layers, attention only, d_model 64, 4 heads of 16, LayerNorm, vocabulary 64,
context 64), a batch of 8 sequences: every head at every position (hook_z, 2 x 64 x 4 = 512
patches) and resid_pre at every layer and position (128 patches). Printed for each: the time of
minillm's sweep, of the loop (one forward pass per patch, as TransformerLens does; each pass jitted,
so the loop is not handicapped by eager dispatch), their ratio, attribution patching of the same
sweep with its agreement with the exact one, and the floor: the FLOPs the sweep must do (each
patch re-runs the layers from the patched one on) over this machine's measured matmul peak.
"""

from __future__ import annotations

import itertools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import machine, matmul_peak_flops, median_time  # noqa: E402
from minillm import GPT, GPTConfig, act_name  # noqa: E402
from minillm import patching as P  # noqa: E402

CFG = GPTConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, n_ctx=64, d_vocab=64, attn_only=True, seed=0)
BATCH = 8


def layer_flops(cfg: GPTConfig, batch: int, n_pos: int) -> float:
    """Matmul FLOPs of one attention-only block on [batch, n_pos]."""
    d, h, e = cfg.d_model, cfg.n_heads, cfg.d_head
    qkvo = 4 * 2 * n_pos * d * h * e
    attention = 2 * 2 * h * n_pos * n_pos * e  # scores and pattern @ v
    return batch * (qkvo + attention)


def unembed_flops(cfg: GPTConfig, batch: int, n_pos: int) -> float:
    return batch * 2 * n_pos * cfg.d_model * cfg.d_vocab_out


def sweep_flops(cfg, batch, n_pos, patches_per_layer) -> float:
    """Every patch at layer l runs blocks l..L-1 and the unembed."""
    return sum(
        patches_per_layer * ((cfg.n_layers - l) * layer_flops(cfg, batch, n_pos) + unembed_flops(cfg, batch, n_pos))
        for l in range(cfg.n_layers)
    )


def main() -> None:
    model = GPT(CFG)
    rng = np.random.default_rng(0)
    clean = rng.integers(1, CFG.d_vocab, (BATCH, CFG.n_ctx)).astype(np.int32)
    corrupted = clean.copy()
    corrupted[:, 1:] = rng.integers(1, CFG.d_vocab, (BATCH, CFG.n_ctx - 1))
    _, clean_cache = model.run_with_cache(clean)
    answers = jnp.asarray(clean[:, -1])

    def metric(logits):  # mean log-prob of the clean next tokens at the second-last position
        return jnp.take_along_axis(jax.nn.log_softmax(logits[:, -2]), answers[:, None], axis=1).mean()

    peak = matmul_peak_flops()
    print(f"machine: {machine()}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"config: {CFG}\nbatch {BATCH}\n")

    rows = []
    for label, sweep, attr, activation, axes, setter in [
        (
            "head out by pos (512 patches)",
            P.get_act_patch_attn_head_out_by_pos,
            P.get_attr_patch_attn_head_out_by_pos,
            "z",
            ("layer", "pos", "head"),
            P.layer_pos_head_vector_patch_setter,
        ),
        (
            "resid_pre (128 patches)",
            P.get_act_patch_resid_pre,
            P.get_attr_patch_resid_pre,
            "resid_pre",
            ("layer", "pos"),
            P.layer_pos_patch_setter,
        ),
    ]:
        ours = median_time(lambda: sweep(model, corrupted, clean_cache, metric), repeats=5)
        exact = np.asarray(sweep(model, corrupted, clean_cache, metric))

        # the loop: one jitted forward pass per patch, the index passed as data (no recompiles)
        @jax.jit
        def one_patch(model, layer_index, index, clean_acts):
            out = []
            for layer in range(CFG.n_layers):
                name = act_name(activation, layer)
                hook = lambda act, hook: setter(act, tuple(index), clean_acts[layer])
                out.append(metric(model.run_with_hooks(corrupted, [(name, hook)])))
            return jnp.stack(out)[layer_index]

        clean_acts = [clean_cache[act_name(activation, l)] for l in range(CFG.n_layers)]
        sizes = P._axis_sizes(model, CFG.n_ctx)
        indices = [
            (l, idx) for l in range(CFG.n_layers) for idx in itertools.product(*[range(sizes[a]) for a in axes[1:]])
        ]

        def loop():
            return [one_patch(model, l, jnp.asarray(idx), clean_acts) for l, idx in indices]

        loop_time = median_time(loop, repeats=3)
        attr_time = median_time(lambda: attr(model, corrupted, clean_cache, metric), repeats=5)
        estimate = np.asarray(attr(model, corrupted, clean_cache, metric))
        corrupted_metric = float(metric(model(corrupted)))
        effect = exact - corrupted_metric
        corr = np.corrcoef(estimate.ravel(), effect.ravel())[0, 1]
        floor = sweep_flops(CFG, BATCH, CFG.n_ctx, len(indices) // CFG.n_layers) / peak
        rows.append((label, ours, loop_time, attr_time, corr, np.abs(estimate - effect).max(), floor))

    print(
        f"{'sweep':<30}{'minillm':>10}{'loop':>10}{'ratio':>8}{'attribution':>13}{'vs loop':>9}"
        f"{'corr':>7}{'max |diff|':>12}{'floor':>9}{'% of peak':>11}"
    )
    for label, ours, loop_time, attr_time, corr, maxdiff, floor in rows:
        print(
            f"{label:<30}{ours * 1e3:>8.1f}ms{loop_time * 1e3:>8.1f}ms{loop_time / ours:>7.1f}x"
            f"{attr_time * 1e3:>11.1f}ms{loop_time / attr_time:>8.0f}x{corr:>7.3f}{maxdiff:>12.4f}"
            f"{floor * 1e3:>7.1f}ms{100 * floor / ours:>10.0f}%"
        )


if __name__ == "__main__":
    main()
