"""Run by tests/test_sharding.py in a fresh process with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts): each sharded
computation against the same computation on one device. Prints one line per check; exits 1 on a
mismatch."""

import sys

import jax
import numpy as np
from helpers import CONFIGS, modular_config, numpy_weights

from minillm import GPT
from minillm.patching import get_act_patch_attn_head_out_by_pos, get_act_patch_resid_pre
from minillm.sharding import local_mesh
from minillm.tasks import make_task
from minillm.training import TrainConfig, train


def close(a, b, what):
    """Equal up to the order of float sums, as far as Adam lets that show. Adam's first step moves
    every weight by ~lr * sign(g), however small g is, so an element whose true gradient is ~0 (all
    of attn.b_K: a key bias adds the same amount to every score of a query, which the softmax
    ignores; a few others by chance) moves by +-lr depending on how a sum was split over devices,
    and the run carries that on. On an AMD EPYC, seed 7 of the 8-seed run ends with differences up
    to 1.3e-3 (W_V) and a quarter of W_O beyond 1e-4. What a real bug does (a gradient not summed
    over the devices, a seed given another's data) moves every element by ~lr = 1e-2. So, b_K
    aside: the mean difference must stay below lr / 10 and none may reach lr / 4."""
    for k in a:
        if not k.endswith("attn.b_K"):
            diff = np.abs(a[k] - b[k])
            assert diff.mean() < 1e-3, f"{what}: {k}: mean difference {diff.mean():.2e}"
            assert diff.max() < 2.5e-3, f"{what}: {k}: max difference {diff.max():.2e}"
    print(f"ok {what}", flush=True)


def main() -> int:
    assert jax.device_count() == 8, f"need 8 devices, got {jax.devices()}"
    mesh = local_mesh()
    task = make_task("modular_arithmetic", p=17, frac_train=0.6)  # 173 training pairs: uneven over 8
    cfg = modular_config(17, normalization_type="LN")  # fits the task
    tc = TrainConfig(steps=10, lr=1e-2, steps_per_call=5, eval_every=5)  # before rounding noise can grow

    one = train(cfg, task, tc, progress=False)
    sharded = train(cfg, task, tc, progress=False, mesh=mesh)
    leaf = sharded.model.embed.W_E[...]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding  # replicated over all 8
    assert one.metrics[-1]["train_loss"] < 0.9 * one.metrics[0]["train_loss"]
    losses = [[r["train_loss"] for r in run.metrics] for run in (one, sharded)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    close(numpy_weights(one.model), numpy_weights(sharded.model), "data parallel training (batch split over 8)")

    seeds = list(range(8))
    tc = TrainConfig(steps=5, lr=1e-2, steps_per_call=5, eval_every=5)  # seed 7 drifts by ~lr after 10 steps
    stacked = train(cfg, task, tc, progress=False, seeds=seeds)
    split = train(cfg, task, tc, progress=False, seeds=seeds, mesh=mesh)
    shards = split.model.embed.W_E[...].sharding
    assert shards.shard_shape(split.model.embed.W_E[...].shape)[0] == 1, shards  # one seed a device
    for i, (a, b) in enumerate(zip(stacked.models(), split.models())):
        close(numpy_weights(a), numpy_weights(b), f"seed {i} of 8 (seeds split over 8)")

    model = GPT(CONFIGS["mlp_ln_gelu"])  # 4 heads
    clean = jax.random.randint(jax.random.key(0), (2, 10), 0, model.cfg.d_vocab)
    corrupted = clean.at[:, 3].set((clean[:, 3] + 1) % model.cfg.d_vocab)
    _, cache = model.run_with_cache(clean)

    def metric(logits):
        return logits[:, -1, 0].mean()

    sweeps = {"resid_pre": get_act_patch_resid_pre, "head out by pos": get_act_patch_attn_head_out_by_pos}
    for name, sweep in sweeps.items():  # 10 and 40 patches a layer: padded to 16 and 40
        a = sweep(model, corrupted, cache, metric)
        b = sweep(model, corrupted, cache, metric, mesh=mesh)
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=f"patching {name}")
        print(f"ok patching {name} (patches split over 8)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
