"""GPT-2 from Hugging Face's files: the same numbers as Hugging Face and TransformerLens (3.9's
HookedTransformer or 4.x's TransformerBridge), and timings of a GPT-2-small-shaped model against
TransformerLens 3.9 on the same CPU.

    bench/.venv-tl/bin/python bench/gpt2.py               # parity (three sizes), then the timings
    bench/.venv-tl/bin/python bench/gpt2.py --parity      # parity only (half a minute)
    bench/.venv-tl/bin/python bench/gpt2.py --timing      # timings only
    bench/.venv-tl4/bin/python bench/gpt2.py --parity     # parity against TransformerLens 4.x

(`bash bench/run.sh` installs bench/.venv-tl once: torch CPU, transformer-lens 3.x, transformers;
bench/.venv-tl4 is the same with transformer-lens 4.x. The timings need 3.x.)
No network: Hugging Face is told to stay offline, every model has random weights made here, and
the tokenizer is a byte-level BPE trained here with `tokenizers`.

Parity. A `GPT2LMHeadModel` of each of three sizes (the last with n_inner), randomly initialised
(its LayerNorms and biases moved away from 1 and 0, so that folding them is exercised), is saved
with `save_pretrained` next to its tokenizer. minillm loads the directory (`GPT.from_pretrained`);
TransformerLens 3.x loads it with `HookedTransformer.from_pretrained(dir, hf_model=...,
tokenizer=...)`, 4.x with `TransformerBridge.boot_transformers(dir)` (model and tokenizer read from
the directory) and then `enable_compatibility_mode()` (HookedTransformer's names and processing),
both with and without weight processing. Printed: the largest relative difference (max |a - b| / max
|b|, over the finite entries, infinite where the non-finite entries differ) of the logits against
Hugging Face's, and of every hook point both libraries cache against TransformerLens', the names
only one side has (`blocks.*.` where every layer has it), and whether to_tokens / to_str_tokens /
to_string / to_single_token / greedy generate / text input agree (a call that raises is DIFFERENT,
with its error).

Timing. A GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, vocabulary 50257, random
weights) saved and loaded the same way, a prompt of 64 tokens, batch 1:
- load: wall time and the peak resident memory a fresh process adds while loading, in units of
  the model's float32 size (the loader promises at most two copies);
- forward and run_with_cache (every hook point): medians, interleaved with TransformerLens';
- a head x position activation-patching sweep (`get_act_patch_attn_head_out_by_pos`, the metric
  the last position's logit difference): 12 x 12 x 64 = 9216 patched runs. On two CPU cores the
  whole sweep takes many minutes on both sides, so one layer's sweep (768 runs) is timed for each
  of layers 0, 6 and 11 and the whole sweep estimated from them (minillm starts each run at the
  patched layer, so its cost falls with the layer; TransformerLens runs the whole model each time).
The floor is the forward pass's FLOPs over this machine's measured float32 matmul peak
(bench/common.py), times the number of passes. Run it on a quiet machine: PyTorch's threads wait on
each other when another process holds a core.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from bench.common import fmt_time, machine, matmul_peak_flops, median_times
from minillm import GPT
from minillm import patching as P
from minillm.patching import _patch_one_layer

SIZES = {
    "2 layers, d 64": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=512),
    "4 layers, d 128": dict(n_layer=4, n_embd=128, n_head=8, n_positions=256, vocab_size=2048),
    "2 layers, d 64, n_inner 96": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=512, n_inner=96),
}
SMALL = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
TEXTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The quick brown fox jumps over the lazy dog.",
    "Naïve café owners serve crème brûlée 🦊",
]
EOT = "<|endoftext|>"
TL_VERSION = importlib.metadata.version("transformer-lens")
BRIDGE = int(TL_VERSION.split(".")[0]) >= 4  # TransformerLens 4.x: TransformerBridge, no HookedTransformer


def rel(a, b) -> float:
    """max |a - b| / max |b| over the finite entries; inf if the non-finite ones (masked -inf) differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    finite = np.isfinite(b)
    if not np.array_equal(a[~finite], b[~finite]):
        return float("inf")
    a, b = a[finite], b[finite]
    diff = np.nan_to_num(np.abs(a - b), nan=np.inf)  # a NaN where b is finite: as far as can be
    return float(diff.max() / max(np.abs(b).max(), 1e-12)) if b.size else 0.0


def by_layer(names: set, n_layers: int) -> list:
    """The names sorted, `blocks.*.x` for a `blocks.i.x` that every layer has."""
    rests = {m[1] for n in names if (m := re.match(r"blocks\.\d+\.(.*)", n))}
    every = {r for r in rests if all(f"blocks.{i}.{r}" in names for i in range(n_layers))}
    return sorted(
        {f"blocks.*.{m[1]}" if (m := re.match(r"blocks\.\d+\.(.*)", n)) and m[1] in every else n for n in names}
    )


def tokenizer_for(vocab_size: int):
    """A byte-level BPE (GPT-2's kind) trained on some text, <|endoftext|> last, as a HF tokenizer."""
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    corpus = [t * 20 for t in TEXTS] + [open(os.path.join(ROOT, "README.md")).read()]
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    have = tok.get_vocab_size()  # a small corpus stops short of the size asked: fill it, in one call
    tok.add_tokens([f"<unused{i}>" for i in range(have, vocab_size - 1)])
    tok.add_special_tokens([EOT])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)


def save_random_gpt2(directory: str, sizes: dict, seed: int = 0, perturb: bool = True):
    torch.manual_seed(seed)
    # n_ctx as the Hub's gpt2 config.json has it beside n_positions (TransformerLens 3.9 reads it)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_ctx=sizes["n_positions"], **sizes)).eval()
    if perturb:  # LayerNorms away from (1, 0) and nonzero biases, so that processing has work to do
        with torch.no_grad():
            for p in hf.parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(directory, safe_serialization=True)
    tokenizer_for(sizes["vocab_size"]).save_pretrained(directory)
    return hf, transformers.AutoTokenizer.from_pretrained(directory)  # as a user would load it


def local_names_for_transformer_lens() -> None:
    """TransformerLens 3.9's from_pretrained takes only official model names (its config lookup alone
    accepts a directory): let a directory through, so that its config comes from the directory's
    config.json and its weights from `hf_model=`. Nothing else of TransformerLens changes."""
    import transformer_lens.loading_from_pretrained as loading

    official = loading.get_official_model_name
    loading.get_official_model_name = lambda name: name if os.path.isdir(name) else official(name)


def load_transformer_lens(d: str, hf, hf_tok, processed: bool):
    """TransformerLens' model of the directory: 3.x's HookedTransformer, with or without processing;
    4.x's TransformerBridge (model and tokenizer read from the directory) in compatibility mode."""
    if BRIDGE:
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(d, device="cpu")
        bridge.enable_compatibility_mode(no_processing=not processed)  # else fold_ln, centring, value biases
        return bridge
    from transformer_lens import HookedTransformer

    load = HookedTransformer.from_pretrained if processed else HookedTransformer.from_pretrained_no_processing
    return load(d, hf_model=hf, tokenizer=hf_tok, device="cpu")


def last_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1].strip() if lines else ''}"


def parity() -> None:
    if not BRIDGE:
        local_names_for_transformer_lens()
    how = " (TransformerBridge.boot_transformers(dir), enable_compatibility_mode)" if BRIDGE else ""
    print(f"transformers {transformers.__version__}, transformer-lens {TL_VERSION}{how}")
    for label, sizes in SIZES.items():
        with tempfile.TemporaryDirectory() as d:
            hf, hf_tok = save_random_gpt2(d, sizes)
            tokens_np = np.random.default_rng(0).integers(0, sizes["vocab_size"], (3, 40))
            with torch.no_grad():
                hf_logits = hf(torch.from_numpy(tokens_np)).logits.numpy()
            print(f"\n## {label}: Hugging Face GPT2LMHeadModel, saved with save_pretrained")
            for processed in (False, True):
                load = GPT.from_pretrained if processed else GPT.from_pretrained_no_processing
                model = load(d)
                logits, cache = model.run_with_cache(tokens_np)
                try:
                    tl = load_transformer_lens(d, hf, hf_tok, processed)
                except Exception as e:  # TransformerLens 3.9 takes d_mlp = 4 d_model whatever n_inner says
                    print(
                        f"minillm logits vs Hugging Face {rel(logits, hf_logits):.1e}; TransformerLens {TL_VERSION} "
                        f"cannot load it: {last_line(e)}"
                    )
                    break
                with torch.no_grad():
                    tl_logits, tl_cache = tl.run_with_cache(torch.from_numpy(tokens_np))
                what = "processed (fold_ln, centring, value biases)" if processed else "no processing"
                if processed:  # centring the unembedding shifts each position's logits: compare log-probs
                    lp, hf_lp = jax.nn.log_softmax(logits), torch.log_softmax(torch.from_numpy(hf_logits), -1)
                    print(f"{what}: log-probs vs Hugging Face {rel(lp, hf_lp):.1e}")
                else:
                    print(f"{what}: logits vs Hugging Face {rel(logits, hf_logits):.1e}")
                shared = [n for n in tl_cache.keys() if n in cache]
                shapes = {n: (tuple(cache[n].shape), tuple(tl_cache[n].shape)) for n in shared}
                diffs = {n: rel(cache[n], tl_cache[n].numpy()) for n in shared if len(set(shapes[n])) == 1}
                worst = max(diffs, key=diffs.get)
                print(
                    f"  vs TransformerLens: logits {rel(logits, tl_logits.numpy()):.1e}; {len(diffs)} hook points, "
                    f"largest {diffs[worst]:.1e} ({worst})"
                )
                if len(diffs) < len(shared):
                    differ = {n: shapes[n] for n in shared if n not in diffs}
                    print(f"  hook points whose shapes DIFFER (minillm, TransformerLens): {differ}")
                only_tl = by_layer(set(tl_cache.keys()) - set(cache.keys()), sizes["n_layer"])
                only_mini = by_layer(set(cache.keys()) - set(tl_cache.keys()), sizes["n_layer"])
                if only_tl or only_mini:
                    print(f"  hook points only TransformerLens caches: {only_tl}; only minillm: {only_mini}")
            else:
                text_checks(model, tl)


def text_checks(model, tl) -> None:
    """to_tokens, to_str_tokens, to_string, to_single_token, greedy generate and text input, both libraries."""

    def text_input():  # logits at every real position of a right-padded batch
        last = [len(model.to_tokens(t)[0]) - 1 for t in TEXTS]
        with torch.no_grad():
            tl_text = tl(TEXTS).numpy()
        text = np.asarray(model(TEXTS))
        return all(rel(text[i, : n + 1], tl_text[i, : n + 1]) < 1e-5 for i, n in enumerate(last))

    checks = {
        "to_tokens (padded list)": lambda: np.array_equal(model.to_tokens(TEXTS), tl.to_tokens(TEXTS).numpy()),
        "to_tokens (left padding)": lambda: np.array_equal(
            model.to_tokens(TEXTS, padding_side="left"), tl.to_tokens(TEXTS, padding_side="left").numpy()
        ),
        "to_str_tokens": lambda: all(model.to_str_tokens(t) == tl.to_str_tokens(t) for t in TEXTS),
        "to_string": lambda: model.to_string(model.to_tokens(TEXTS)) == tl.to_string(tl.to_tokens(TEXTS)),
        "to_single_token": lambda: model.to_single_token(" the") == tl.to_single_token(" the"),
        "generate (greedy, 10 tokens)": lambda: (
            model.generate(TEXTS[0], 10, temperature=0) == tl.generate(TEXTS[0], 10, do_sample=False, verbose=False)
        ),
        "model(list of texts): logits at every real position": text_input,
    }
    results = []
    for name, check in checks.items():
        try:
            results.append(f"{name} {'same' if check() else 'DIFFERENT'}")
        except Exception as e:
            results.append(f"{name} DIFFERENT ({last_line(e)})")
    print("  text: " + ", ".join(results))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def load_memory(directory: str) -> tuple[float, float]:
    """(seconds, peak MB added) of GPT.from_pretrained in a fresh process (after its imports)."""
    code = (
        f"import resource, time, sys; sys.path.insert(0, {ROOT!r})\n"
        "from bench.gpt2 import _rss_mb\n"
        "from minillm import GPT\n"
        "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()\n"
        "before = _rss_mb(); t = time.perf_counter()\n"
        f"m = GPT.from_pretrained({directory!r}); jnp.zeros(1).block_until_ready()\n"
        "dt = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(dt, peak - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def forward_flops(cfg, n_pos: int) -> float:
    """Multiply-adds x 2 of one forward pass: the matmuls of every block, the attention and the unembed."""
    d, m, L = cfg.d_model, cfg.d_mlp, cfg.n_layers
    per_block = 4 * d * d + 2 * d * m  # QKV + O, MLP in + out
    attention = 2 * n_pos * d  # scores and pattern @ v, per position
    return 2 * n_pos * (L * (per_block + attention) + d * cfg.d_vocab_out)


def timing(quick: bool) -> None:
    from transformer_lens import HookedTransformer
    from transformer_lens import patching as tlp

    local_names_for_transformer_lens()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"\n## Timing: GPT-2-small shape, prompt of 64 tokens, batch 1 ({machine()}, "
        f"torch threads {torch.get_num_threads()})"
    )
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        hf, hf_tok = save_random_gpt2(d, SMALL, perturb=False)
        print(f"random GPT2LMHeadModel saved in {time.perf_counter() - t:.1f} s")
        seconds, added = load_memory(d)
        size_mb = sum(p.numel() for p in hf.parameters()) * 4 / 2**20  # float32, tied embedding once
        print(
            f"load: GPT.from_pretrained {seconds:.1f} s, peak memory added {added:.0f} MB = "
            f"{added / size_mb:.2f}x the model's {size_mb:.0f} MB"
        )
        model = GPT.from_pretrained_no_processing(d)
        tl = HookedTransformer.from_pretrained_no_processing(d, hf_model=hf, tokenizer=hf_tok, device="cpu")
        del hf
        tokens_np = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (1, 64))
        corrupted_np = tokens_np.copy()
        corrupted_np[0, 10:20] = np.random.default_rng(1).integers(0, SMALL["vocab_size"], 10)
        tokens, tl_tokens = jnp.asarray(tokens_np), torch.from_numpy(tokens_np)
        peak = matmul_peak_flops()
        flops = forward_flops(model.cfg, 64)
        floor = flops / peak
        print(f"forward: {flops / 1e9:.1f} GFLOP; matmul peak {peak / 1e9:.0f} GFLOP/s; floor {fmt_time(floor)}")

        def tl_forward():
            with torch.inference_mode():
                return tl(tl_tokens)

        def tl_cache():
            with torch.inference_mode():
                return tl.run_with_cache(tl_tokens)

        budget = 4.0 if quick else 10.0
        times = median_times(
            {
                "minillm forward": lambda: model(tokens),
                "TL forward": tl_forward,
                "minillm run_with_cache": lambda: model.run_with_cache(tokens),
                "TL run_with_cache": tl_cache,
            },
            budget_s=budget,
        )
        for what in ("forward", "run_with_cache"):
            mine, theirs = times[f"minillm {what}"], times[f"TL {what}"]
            print(
                f"{what}: TransformerLens {fmt_time(theirs)}, minillm {fmt_time(mine)} ({theirs / mine:.2f}x), "
                f"floor {fmt_time(floor)} (minillm {mine / floor:.1f}x the floor)"
            )

        # the patching sweep, one layer at a time
        a, b = 11, 22
        metric = lambda logits: logits[0, -1, a] - logits[0, -1, b]  # noqa: E731
        _, clean_cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
        with torch.inference_mode():
            _, tl_clean = tl.run_with_cache(tl_tokens, names_filter=lambda n: n.endswith("hook_z"))
        layers = (0, 6, 11)
        corrupted = jnp.asarray(corrupted_np)
        resid = P._resid_pre_of_every_layer(model, corrupted)
        idx = P._index_grid([64, 12])
        mine = {}
        for layer in layers:
            name = f"blocks.{layer}.attn.hook_z"
            run = lambda: _patch_one_layer(  # noqa: E731
                model,
                resid[layer],
                clean_cache[name],
                idx,
                name=name,
                layer=layer,
                patch_setter=P.layer_pos_head_vector_patch_setter,
                patching_metric=metric,
                chunk_size=P.default_chunk_size(1),
                corruption=(),
                mesh=None,
            )
            t = time.perf_counter()
            jax.block_until_ready(run())
            compile_s = time.perf_counter() - t
            t = time.perf_counter()
            jax.block_until_ready(run())
            mine[layer] = time.perf_counter() - t
            print(
                f"patching layer {layer} (768 runs): minillm {fmt_time(mine[layer])} "
                f"(first call {compile_s:.1f} s with compiling)"
            )
        import pandas as pd

        tl_metric = lambda logits: logits[0, -1, a] - logits[0, -1, b]  # noqa: E731
        n_tl = 48 if quick else 96  # TransformerLens runs the whole model per patch: time a sample of one layer
        index_df = pd.DataFrame(
            {"layer": [6] * n_tl, "pos": [i % 64 for i in range(n_tl)], "head": [i % 12 for i in range(n_tl)]}
        )
        t = time.perf_counter()
        with torch.inference_mode():
            tlp.generic_activation_patch(
                tl,
                torch.from_numpy(corrupted_np),
                tl_clean,
                tl_metric,
                tlp.layer_pos_head_vector_patch_setter,
                "z",
                index_axis_names=None,
                index_df=index_df,
            )
        per_patch = (time.perf_counter() - t) / n_tl
        # every layer's cost for minillm, linear between the timed layers (each run starts at its layer)
        est = sum(np.interp(l, layers, [mine[x] for x in layers]) for l in range(12))
        tl_est = per_patch * 9216
        print(
            f"head x position sweep, 9216 runs (estimated from the timings above): "
            f"TransformerLens {tl_est / 60:.1f} min "
            f"({fmt_time(per_patch)} per patch, {n_tl} timed), minillm {est / 60:.1f} min ({tl_est / est:.1f}x); "
            f"floor {fmt_time(9216 * floor)} (every run a whole forward; "
            "minillm's start at the patched layer goes below it)"
        )
        print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parity", action="store_true", help="parity only")
    parser.add_argument("--timing", action="store_true", help="timings only")
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    args = parser.parse_args()
    if BRIDGE and not args.parity:
        parser.error(
            f"the timings run against TransformerLens 3.x's HookedTransformer (bench/.venv-tl), not {TL_VERSION}"
        )
    if not args.timing:
        parity()
    if not args.parity:
        timing(args.quick)
