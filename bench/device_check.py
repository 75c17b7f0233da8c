"""The Python half of bench/device_check.sh: what the shell script runs besides the benchmarks.

    python bench/device_check.py env OUTDIR             # the device and versions -> OUTDIR/env.json (printed)
    python bench/device_check.py sharding               # a mesh over this machine's devices (one GPU) against none
    python bench/device_check.py tests                  # the test files and -k expression of the device check
    python bench/device_check.py wheels DIR SITE        # the wheels in DIR that this Python lacks, into SITE
    python bench/device_check.py pack DIR [PYVER]       # on a machine with a network: fill DIR for --wheels
    python bench/device_check.py summary OUTDIR         # OUTDIR/summary.md from the parts' files (printed)

Nothing here needs the network but `pack`; `wheels` installs with `pip --no-index --no-deps`.

TransformerLens for a machine without a network: `pack` downloads (no dependencies resolved) the wheels
of TransformerLens 3.9 and of what it imports that a Python with jax, flax, torch and transformers
lacks, for CPython PYVER (default 3.12) on x86-64 Linux: about 20 MB. Not Hugging Face `datasets`: it
needs pyarrow (50 MB), more than fits in what the machine receives, and TransformerLens imports it only
for names that the benchmark never calls; `wheels` writes a stand-in `datasets` (a module that raises
if a data set is loaded) when the Python has none.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# bf16 dense peak (TFLOP/s, the spec sheets') by device kind, first match wins: the MFU denominator
PEAKS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0), ("L4", 121.0)]
DEFAULT_PEAK = 989.0

# The device-dependent tests, most important first. Files are being renamed: a missing one is skipped, and any
# other test file that names one of KEYWORDS is added after these (SLOW files left out: they do not exercise a
# device path and would eat the budget).
TEST_FILES = [  # old and new names of the same files: whichever exist
    "tests/test_network.py",  # float32 numerics by hand, bfloat16, fused vs exact attention, jit vs eager
    "tests/test_model.py",
    "tests/test_gpt.py",
    "tests/test_compiled.py",  # the compiled calls against the op-by-op pass
    "tests/test_losses.py",  # float32 cross-entropy accuracy, chunked evaluation
    "tests/test_step.py",  # compiled chunks of steps, stacks of seeds
    "tests/test_train_step.py",
    "tests/test_loop.py",  # training (float32 and bfloat16), seeds, resume bit-identical
    "tests/test_training.py",
    "tests/test_sharding.py",  # the mesh helpers on this machine's devices
    "tests/test_hooks.py",
    "tests/test_patching.py",
]
KEYWORDS = re.compile(r"bfloat16|attn_implementation|local_mesh|make_train_chunk|default_backend")
SLOW = ("test_lessons", "test_readme", "test_plots", "test_cli", "test_architecture", "test_index_checks")
# the 8-simulated-device test forces JAX_PLATFORMS=cpu in a subprocess: not a device path, and slow
DESELECT = "not simulated_devices"
# the tests whose numbers or code path change with the device, run first (the others after, if time is left)
DEVICE_TESTS = "bfloat16 or fused or auto or jit or compiled or mesh or shard"


def default_peak(device_kind: str) -> float:
    return next((peak for name, peak in PEAKS if name.lower() in device_kind.lower()), DEFAULT_PEAK)


def version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- env ---------------------------------------------------------------------------------------------
def cmd_env(out: str) -> int:
    info: dict = {"python": platform.python_version(), "executable": sys.executable}
    pkgs = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt")
    pkgs += ("flax", "optax", "numpy", "torch", "transformers", "transformer-lens", "pytest")
    info["versions"] = {p: version(p) for p in pkgs}
    try:
        import jax

        dev = jax.devices()[0]
        info.update(
            backend=jax.default_backend(),
            devices=[str(d) for d in jax.devices()],
            device_kind=dev.device_kind,
            platform=dev.platform,
        )
        try:
            import jax._src.xla_bridge as xb  # the CUDA versions the plugin was built with and found

            info["platform_version"] = " ".join(str(getattr(xb.get_backend(), "platform_version", "")).split())
        except Exception as e:
            info["platform_version"] = f"? ({type(e).__name__})"
        try:  # jax, jaxlib, numpy, python, the devices, and nvidia-smi's table on a GPU
            print(jax.print_environment_info(return_string=True), flush=True)
        except Exception as e:
            print(f"jax.print_environment_info: {type(e).__name__}: {e}")
    except Exception as e:  # JAX missing or broken: the other parts will say how
        info["jax_error"] = f"{type(e).__name__}: {e}"
        info.update(backend="?", devices=[], device_kind="?", platform="?")
    info["peak_tflops"] = default_peak(info["device_kind"]) if info["platform"] == "gpu" else None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"not available ({type(e).__name__})"
    if info["versions"]["torch"]:
        try:
            import torch

            info["torch_cuda"] = torch.version.cuda
            info["torch_cuda_available"] = torch.cuda.is_available()
        except Exception as e:
            info["torch_cuda"] = f"? ({type(e).__name__}: {e})"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))
    return 0 if "jax_error" not in info else 1


# --- tests -------------------------------------------------------------------------------------------
def test_selection() -> tuple[list[str], str, str]:
    """(test files, the -k expression of every test to run, of the device-dependent ones among them):
    TEST_FILES that exist, then the other test files naming a KEYWORD."""
    files = [f for f in TEST_FILES if os.path.exists(os.path.join(ROOT, f))]
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py"))):
        rel = os.path.relpath(path, ROOT)
        if rel in files or any(s in rel for s in SLOW):
            continue
        with open(path) as f:
            if KEYWORDS.search(f.read()):
                files.append(rel)
    return files, DESELECT, DEVICE_TESTS


def cmd_tests() -> int:
    """Three lines for the shell script: the files, the -k expression of all, of the device-dependent."""
    for line in test_selection():
        print(" ".join(line) if isinstance(line, list) else line)
    return 0


# --- sharding ------------------------------------------------------------------------------------------
def cmd_sharding() -> int:
    """A mesh over every device here (one GPU: a mesh of one) against no mesh: training (one seed, and
    seeds), and a patching sweep. What tests/sharded_check.py does on 8 simulated CPU devices."""
    import jax
    import numpy as np

    sys.path.insert(0, ROOT)
    from minillm import GPT, GPTConfig
    from minillm.patching import get_act_patch_attn_head_out_by_pos, get_act_patch_resid_pre
    from minillm.sharding import local_mesh
    from minillm.tasks import make_task
    from minillm.training import TrainConfig, train

    mesh = local_mesh()
    print(f"mesh: {mesh.devices.size} device(s), {jax.devices()}", flush=True)
    failed = 0

    def check(what: str, a: dict, b: dict, atol: float) -> None:
        nonlocal failed
        worst = max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a if not k.endswith("b_K"))
        ok = worst <= atol
        failed += not ok
        print(f"{'ok' if ok else 'FAILED'} {what}: max |difference| {worst:.1e} (tolerance {atol:g})", flush=True)

    task = make_task("modular_arithmetic", p=17, frac_train=0.6)
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=3, d_vocab=18, d_vocab_out=17)
    tc = TrainConfig(steps=10, lr=1e-2, steps_per_call=5, eval_every=5)
    one = train(cfg, task, tc, progress=False)
    sharded = train(cfg, task, tc, progress=False, mesh=mesh)
    # b_K aside (its gradient is zero in exact arithmetic), Adam moves a weight by ~lr a step whatever its
    # gradient's rounding: a real bug moves every weight by ~lr = 1e-2, rounding far less
    check("data parallel training (one seed)", one.model.state_dict(), sharded.model.state_dict(), 2.5e-3)
    seeds = list(range(2 * mesh.devices.size))
    tc = TrainConfig(steps=5, lr=1e-2, steps_per_call=5, eval_every=5)
    stacked = train(cfg, task, tc, progress=False, seeds=seeds)
    split = train(cfg, task, tc, progress=False, seeds=seeds, mesh=mesh)
    for i, (a, b) in enumerate(zip(stacked.models(), split.models())):
        check(f"seed {i} of {len(seeds)} (seeds split over the mesh)", a.state_dict(), b.state_dict(), 2.5e-3)

    model = GPT(GPTConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=10, d_vocab=20))
    clean = jax.random.randint(jax.random.key(0), (2, 10), 0, 20)
    corrupted = clean.at[:, 3].set((clean[:, 3] + 1) % 20)
    _, cache = model.run_with_cache(clean)
    metric = lambda logits: logits[:, -1, 0].mean()
    for name, sweep in [
        ("resid_pre", get_act_patch_resid_pre),
        ("head out by pos", get_act_patch_attn_head_out_by_pos),
    ]:
        a = np.asarray(sweep(model, corrupted, cache, metric))
        b = np.asarray(sweep(model, corrupted, cache, metric, mesh=mesh))
        check(f"patching {name} (patches split over the mesh)", {"x": a}, {"x": b}, 1e-5 * max(np.abs(a).max(), 1))
    print(f"{'all ok' if not failed else f'{failed} FAILED'}", flush=True)
    return 1 if failed else 0


# --- wheels ----------------------------------------------------------------------------------------------
def dist_name(wheel: str) -> str:
    return os.path.basename(wheel).split("-")[0].lower().replace("_", "-")


def cmd_wheels(wheel_dir: str, site: str) -> int:
    """Install, offline and without resolving, every wheel in wheel_dir whose distribution this Python
    lacks (a wheel of something it has already, numpy or torch, would shadow it), into site."""
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "*.whl")))
    if not wheels:
        print(f"no wheels in {wheel_dir}")
        return 1
    have = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in importlib.metadata.distributions()}
    todo = [w for w in wheels if dist_name(w) not in have]
    skipped = [os.path.basename(w) for w in wheels if dist_name(w) in have]
    if skipped:
        print(f"already here, not installed: {', '.join(skipped)}")
    rc = 0
    if todo:
        print(f"installing into {site}: {', '.join(os.path.basename(w) for w in todo)}", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", site, *todo]
        rc = subprocess.run(cmd).returncode
    if "datasets" not in have and not any(dist_name(w) == "datasets" for w in todo):
        stub = os.path.join(site, "datasets")
        os.makedirs(stub, exist_ok=True)
        with open(os.path.join(stub, "__init__.py"), "w") as f:
            f.write(DATASETS_STUB)
        for sub in ("arrow_dataset", "iterable_dataset", "load"):
            with open(os.path.join(stub, sub + ".py"), "w") as f:
                f.write("from datasets import Dataset, IterableDataset, load_dataset  # noqa: F401\n")
        print(f"no `datasets` here: a stand-in written to {stub} (TransformerLens imports it; nothing loads data)")
    return rc


# TransformerLens and what it imports beyond jax, flax, torch and transformers (and their dependencies)
TL_PACK = [
    "transformer-lens==3.9.0",
    "accelerate",
    "better-abc",
    "einops",
    "fancy-einsum",
    "jaxtyping",
    "wadler-lindig",
    "beartype",
    "typeguard",
    "sentencepiece",
    "pandas",
    "pytz",
    "tzdata",
    "psutil",
]
DATASETS_STUB = '''"""A stand-in for Hugging Face `datasets`, written by bench/device_check.py: TransformerLens imports
these names when it is imported, and the benchmarks never load a data set (the real package needs
pyarrow, more than a machine without a network can be carried)."""


class Dataset:
    pass


class IterableDataset:
    pass


def load_dataset(*args, **kwargs):
    raise RuntimeError("datasets is a stand-in here (bench/device_check.py): no data set can be loaded")
'''


def cmd_pack(wheel_dir: str, pyver: str = "3.12") -> int:
    abi = "cp" + pyver.replace(".", "")
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", wheel_dir]
    cmd += ["--python-version", pyver, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]
    cmd += [a for p in platforms for a in ("--platform", p)] + ["--platform", "any", *TL_PACK]
    rc = subprocess.run(cmd).returncode
    size = sum(os.path.getsize(w) for w in glob.glob(os.path.join(wheel_dir, "*.whl")))
    print(f"{wheel_dir}: {size / 2**20:.1f} MiB of wheels")
    return rc


# --- summary -------------------------------------------------------------------------------------------
def load_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} us"


def junit_summary(path: str) -> tuple[str, list[str]]:
    """('N passed, F failed, E errors, S skipped', the failing tests' ids and first lines)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return "no junit file (pytest did not finish?)", []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
    failing = []
    for case in root.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            msg = (bad.get("message") or "").splitlines()[0][:200] if bad.get("message") else ""
            failing.append(f"{case.get('classname')}::{case.get('name')}: {msg}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    text = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    return text, failing


def cmd_summary(out: str) -> int:
    env = load_json(os.path.join(out, "env.json")) or {}
    status = {}
    try:
        with open(os.path.join(out, "status.tsv")) as f:
            for line in f:
                part, rc, secs, limit, *note = line.rstrip("\n").split("\t")
                status[part] = (int(rc), float(secs), float(limit), note[0] if note else "")
    except OSError:
        pass
    quick = os.path.exists(os.path.join(out, "QUICK"))
    v = env.get("versions", {})
    lines = [
        "# Device check" + (" (--quick: tiny sizes, not a result)" if quick else ""),
        "",
        f"- Device: {env.get('device_kind', '?')} ({env.get('platform', '?')}); JAX devices {env.get('devices')}; "
        f"nvidia-smi: {env.get('nvidia_smi', '-')}.",
        f"- Versions: python {env.get('python')}, "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + f"; XLA platform version: {env.get('platform_version', '-')}; torch CUDA {env.get('torch_cuda', '-')} "
        f"(available: {env.get('torch_cuda_available', '-')}).",
        "",
        "## Parts",
        "",
        "| part | exit status | seconds | limit | note |",
        "|---|---|---|---|---|",
    ]
    for part, (rc, secs, limit, note) in status.items():
        what = "ok" if rc == 0 else "TIMED OUT" if rc in (124, 137) else "skipped" if rc == 200 else f"FAILED ({rc})"
        lines.append(f"| {part} | {what} | {secs:.0f} | {limit:.0f} | {note} |")

    lines += ["", "## bench/gpu.py", ""]
    g = load_json(os.path.join(out, "gpu.json"))
    if g is None:
        lines.append("No results (see gpu.log).")
    else:
        peak = g.get("peak_tflops")
        t = g.get("targets", {})
        lines += [
            "| figure | value | target | floor / ceiling |",
            "|---|---|---|---|",
        ]
        for m in g.get("mfu", []):
            if "error" in m:
                lines.append(f"| MFU, attention {m['attn']} | failed: {m['error']} | - | - |")
                continue
            floor = m["flops"] / (peak * 1e12)
            lines.append(
                f"| MFU, attention {m['attn']} (batch {m['batch']}) | {100 * m['mfu']:.1f}% ({m['tflops']:.1f} "
                f"TFLOP/s, {fmt_s(m['per_step'])}/step, {m['tokens_per_s']:,.0f} tokens/s; compile "
                f"{fmt_s(m['compile_s'])}, memory {m['memory']}) | none in bench/gpu.py | "
                f"{fmt_s(floor)}/step at {peak:g} TFLOP/s = 100% |"
            )
        for r in g.get("grok", []):
            reached = r.get("reached")
            val = "not reached" if not reached else f"step {reached[0]}, {fmt_s(reached[1])} of train() time"
            ok = bool(reached) and reached[1] <= t.get("grok_s", 5)
            lines.append(
                f"| grokking to {t.get('grok_acc', 0.99):.0%} ({r['label']}) | {val} (ran {r['step']} steps, wall "
                f"{fmt_s(r['wall'])}) | <= {t.get('grok_s', 5):g} s: {'met' if ok else 'MISSED'} | - |"
            )
        for r in g.get("seeds", []):
            judged = r["label"].endswith("(warm)")
            ok = r["ratio"] <= t.get("seeds_ratio", 1.5)
            verdict = ("met" if ok else "MISSED") if judged else "(judged on the warm pass)"
            lines.append(
                f"| 8 seeds / 1 seed, {r['steps']} steps ({r['label']}) | {r['ratio']:.2f}x "
                f"({fmt_s(r['many']['elapsed'])} vs {fmt_s(r['one']['elapsed'])}) | "
                f"<= {t.get('seeds_ratio', 1.5):g}x {verdict} | 1.0x |"
            )
        for key in ("grok_error", "seeds_error"):
            if key in g:
                lines.append(f"| {key} | {g[key]} | | |")

    lines += ["", "## Tests", ""]
    for name, what in [("tests", "device-dependent"), ("tests_rest", "the others in the same files")]:
        if name not in status and not os.path.exists(os.path.join(out, name + ".xml")):
            continue
        rc = status.get(name, (0,))[0]
        if rc == 200:
            lines.append(f"- {what}: skipped (the budget was spent)")
            continue
        text, failing = junit_summary(os.path.join(out, name + ".xml"))
        if rc in (124, 137):
            text += "; stopped at its time limit, the tests after these did not run"
        lines.append(f"- {what}: {text} ({name}.xml, {name}.log)")
        lines += [f"  - FAILED {f}" for f in failing[:40]]

    lines += ["", "## Sharding on this machine's devices", ""]
    try:
        with open(os.path.join(out, "sharding.log")) as f:
            lines += [f"- {ln.strip()}" for ln in f if re.match(r"(ok|FAILED|mesh|all ok|\d+ FAILED)", ln)]
    except OSError:
        lines.append("No log.")

    lines += ["", "## TransformerLens on the same device (bench/vs_transformer_lens.py)", ""]
    tl = load_json(os.path.join(out, "tl.json"))
    try:
        with open(os.path.join(out, "tl_skipped.txt")) as f:
            lines.append(f.read().strip())
    except OSError:
        pass
    if tl is not None:
        lines.append(
            f"Equivalence on the same weights: {'equal within 1e-4' if tl.get('checks_ok') else 'DIFFERENT'}"
            + "".join(f"; {k}: worst {c['worst']:.1e}" for k, c in tl.get("checks", {}).items())
            + (
                " (--check-only: no timings)."
                if tl.get("check_only")
                else f"; float32 matmul peak {(tl.get('peak') or 0) / 1e12:.1f} TFLOP/s (the floors' denominator)."
            )
        )
        if tl.get("rows"):
            lines += [
                "",
                "| row | TransformerLens | minillm | TL / minillm | floor | target | |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in tl["rows"]:
                ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
                lines.append(
                    f"| {r['section']}: {r['name']} ({r['unit']}) | {fmt_s(r['tl'])} | {fmt_s(r['ml'])} | {ratio} | "
                    f"{fmt_s(r['floor'])} | {r['target'] or '-'} | {r['verdict']} |"
                )
    elif not os.path.exists(os.path.join(out, "tl_skipped.txt")):
        lines.append("No results (see tl.log).")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "env":
        return cmd_env(*args)
    if cmd == "tests":
        return cmd_tests()
    if cmd == "sharding":
        return cmd_sharding()
    if cmd == "wheels":
        return cmd_wheels(*args)
    if cmd == "pack":
        return cmd_pack(*args)
    if cmd == "summary":
        return cmd_summary(*args)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
