"""Run by tests/test_sharding.py in a fresh process with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts): each sharded
computation against the same computation on one device. Prints one line per check; exits 1 on a
mismatch."""

import sys

import jax
import numpy as np

from minillm import GPT, GPTConfig
from minillm.patching import get_act_patch_attn_head_out_by_pos, get_act_patch_resid_pre
from minillm.sharding import local_mesh
from minillm.tasks import make_task
from minillm.training import TrainConfig, train


def weights(model):
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def close(a, b, what, rtol=1e-4, atol=1e-4):
    """Equal within float32 tolerance, except attn.b_K: its true gradient is 0 (a key bias adds the
    same amount to every score of a query, which the softmax ignores), so what the backward pass
    gives it is rounding noise, which Adam's first steps (update ~ lr * g / |g|) turn into moves of
    ~lr whose sign depends on how a sum was split over devices. Other weights with near-zero
    gradients move by up to ~4e-5 the same way (hence atol 1e-4; a wrong gradient moves ~lr = 1e-2)."""
    for k in a:
        if not k.endswith("attn.b_K"):
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f"{what}: {k}")
    print(f"ok {what}", flush=True)


def main() -> int:
    assert jax.device_count() == 8, f"need 8 devices, got {jax.devices()}"
    mesh = local_mesh()
    task = make_task("modular_arithmetic", p=17, frac_train=0.6)  # 173 training pairs: uneven over 8
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=3, d_vocab=18, d_vocab_out=17)
    tc = TrainConfig(steps=10, lr=1e-2, steps_per_call=5, eval_every=5)  # before rounding noise can grow

    one = train(cfg, task, tc, progress=False)
    sharded = train(cfg, task, tc, progress=False, mesh=mesh)
    leaf = sharded.model.embed.W_E[...]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding  # replicated over all 8
    assert one.metrics[-1]["train_loss"] < 0.9 * one.metrics[0]["train_loss"]
    losses = [[r["train_loss"] for r in run.metrics] for run in (one, sharded)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    close(weights(one.model), weights(sharded.model), "data parallel training (batch split over 8)")

    seeds = list(range(8))
    stacked = train(cfg, task, tc, progress=False, seeds=seeds)
    split = train(cfg, task, tc, progress=False, seeds=seeds, mesh=mesh)
    shards = split.model.embed.W_E[...].sharding
    assert shards.shard_shape(split.model.embed.W_E[...].shape)[0] == 1, shards  # one seed a device
    for i, (a, b) in enumerate(zip(stacked.models(), split.models())):
        close(weights(a), weights(b), f"seed {i} of 8 (seeds split over 8)")

    model = GPT(GPTConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=10, d_vocab=20))
    clean = jax.random.randint(jax.random.key(0), (2, 10), 0, 20)
    corrupted = clean.at[:, 3].set((clean[:, 3] + 1) % 20)
    _, cache = model.run_with_cache(clean)

    def metric(logits):
        return logits[:, -1, 0].mean()

    sweeps = {"resid_pre": get_act_patch_resid_pre, "head out by pos": get_act_patch_attn_head_out_by_pos}
    for name, sweep in sweeps.items():  # 10 and 40 patches a layer: padded to 16 and 40
        a = sweep(model, corrupted, cache, metric)
        b = sweep(model, corrupted, cache, metric, mesh=mesh)
        assert a.shape == b.shape
        close({"sweep": np.asarray(a)}, {"sweep": np.asarray(b)}, f"patching {name} (patches split over 8)", 1e-5, 1e-6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
