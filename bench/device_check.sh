#!/usr/bin/env bash
# The GPU check (issue 25) for a GPU machine with no network: one call, under 8 minutes, results as files.
#
#     bash bench/device_check.sh OUTDIR                   # on the GPU ($OUT when OUTDIR is left out)
#     bash bench/device_check.sh --wheels DIR OUTDIR      # and the TransformerLens rows (wheels carried in DIR)
#     bash bench/device_check.sh --quick OUTDIR           # everything small, on any device (2-core CPU: minutes)
#
# Options: --wheels DIR (or WHEELS=DIR): TransformerLens' wheels and those of its dependencies that the
# machine's Python lacks, installed offline (pip --no-index --no-deps --target) into a folder put on
# PYTHONPATH; `python bench/device_check.py pack DIR 3.12` fills DIR on a machine with a network (about
# 18 MiB for CPython 3.12). TL_PYTHON=... instead: a Python that imports transformer_lens and jax. --budget S:
# the whole run's limit in seconds (default 460; --quick 420). PYTHON=...: the Python to use (default
# python3, or this checkout's .venv when python3 lacks JAX).
#
# Uses the Python that is there (jax with its CUDA plugin, flax, optax, safetensors, tqdm, numpy,
# matplotlib, pytest, hypothesis; torch for the TransformerLens part) and minillm from this checkout
# (PYTHONPATH=.); installs nothing from the network. Each part runs in its own process under its own
# time limit (cut to what is left of the budget) and the run goes on past a part that fails:
#   env       device, driver, JAX, its CUDA plugin, torch                          -> env.json, env.log
#   gpu       bench/gpu.py: training-step MFU of the 12-layer d768 ctx-1024 bf16 model with fused ("auto")
#             and exact attention, grokking to 99% (cold, warm), 8 seeds against 1  -> gpu.md, gpu.json, gpu.log
#   tests     the tests of the device-dependent paths (float32 and bfloat16 numerics, fused vs exact
#             attention, compiled calls, training, the mesh helpers)                -> tests.xml (junit), tests.log
#             (bench/device_check.py picks the files, whatever their names now, and the -k expression)
#   sharding  a mesh over this machine's devices (one GPU) against none: training, seeds, patching -> sharding.log
#   tl        bench/vs_transformer_lens.py --device cuda --quick: both libraries on the same GPU, where
#             TransformerLens can be imported (otherwise skipped, saying why)      -> tl.md, tl.json, tl.log
#   tests_rest  the other tests of the same files, in whatever time is left        -> tests_rest.xml, .log
# then summary.md (also printed): the device, the versions, each figure beside its target and floor,
# and each part's exit status and time (status.tsv). Exit status: 0 when every part that ran passed.
# The fuller runs, on a machine with a network: bash bench/run_gpu.sh (installs jax[cuda12] and torch).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
BUDGET=""
WHEELS="${WHEELS:-}"
OUTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --wheels) WHEELS="$2"; shift ;;
        --wheels=*) WHEELS="${1#--wheels=}" ;;
        --budget) BUDGET="$2"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) OUTDIR="$1" ;;
    esac
    shift
done
OUTDIR="${OUTDIR:-${OUT:-}}"
if [ -z "$OUTDIR" ]; then
    echo "usage: bash bench/device_check.sh [--quick] [--wheels DIR] [--budget S] OUTDIR (or set \$OUT)" >&2
    exit 2
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
if [ -z "$BUDGET" ]; then
    BUDGET=$([ "$QUICK" = 1 ] && echo 420 || echo 460)
fi

if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if ! python3 -c "import jax" 2>/dev/null && [ -x .venv/bin/python ]; then
        PYTHON=.venv/bin/python
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
rm -f "$OUTDIR"/status.tsv "$OUTDIR"/QUICK "$OUTDIR"/tl_skipped.txt
[ "$QUICK" = 1 ] && touch "$OUTDIR/QUICK"

START=$SECONDS
FAILED=0
left() { echo $((BUDGET - (SECONDS - START))); }

# run_part NAME LIMIT LOG CMD...: CMD under `timeout` (SIGINT first, so that pytest still writes its junit
# file, then KILL 15 s later), its limit cut to what is left of the budget less 20 s (the summary and a
# KILL's grace); its output to LOG and the terminal; a line in status.tsv.
run_part() {
    local name=$1 limit=$2 log=$3
    shift 3
    local avail=$(($(left) - 20))
    [ "$limit" -gt "$avail" ] && limit=$avail
    if [ "$limit" -lt 10 ]; then
        echo "== $name: skipped, the budget is spent"
        printf '%s\t200\t0\t0\tskipped: budget spent\n' "$name" >> "$OUTDIR/status.tsv"
        return
    fi
    echo "== $name (limit ${limit} s; $(left) s of the budget left)"
    local t0=$SECONDS rc
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUTDIR/$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && FAILED=1
    [ "$rc" -eq 124 ] && echo "== $name: stopped at its time limit (${limit} s)"
    printf '%s\t%s\t%s\t%s\t\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$OUTDIR/status.tsv"
}

# --- env --------------------------------------------------------------------------------------------------
run_part env 60 env.log "$PYTHON" bench/device_check.py env "$OUTDIR"
PEAK=$("$PYTHON" -c "import json; print(json.load(open('$OUTDIR/env.json')).get('peak_tflops') or 989)" 2>/dev/null \
    || echo 989)

# --- gpu: bench/gpu.py ----------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    run_part gpu 150 gpu.log "$PYTHON" bench/gpu.py --quick --out "$OUTDIR/gpu.md" --json "$OUTDIR/gpu.json"
else
    # 3 timed calls of 10 steps (not 5): two compilations of the 12-layer model are most of the time
    run_part gpu 180 gpu.log "$PYTHON" bench/gpu.py --peak-tflops "$PEAK" --calls 3 \
        --out "$OUTDIR/gpu.md" --json "$OUTDIR/gpu.json"
fi

# --- tests: the device-dependent ones (the others in the same files at the end, if time is left) ----------------
mapfile -t SEL < <("$PYTHON" bench/device_check.py tests)
read -r -a TEST_FILES <<< "${SEL[0]:-}"
K_ALL="${SEL[1]:-}"
K_DEVICE="${SEL[2]:-bfloat16}"
if [ "$QUICK" = 1 ]; then
    # on the CPU: a few, to see the part work (the whole suite is the ordinary test run)
    K_DEVICE="(bfloat16 or fused) and mlp_ln_gelu"
fi
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -rfE --durations=10)
if [ "${#TEST_FILES[@]}" -eq 0 ]; then
    echo "== tests: no test file found"
    printf 'tests\t1\t0\t0\tno test file found\n' >> "$OUTDIR/status.tsv"
    FAILED=1
else
    run_part tests "$([ "$QUICK" = 1 ] && echo 120 || echo 100)" tests.log "${PYTEST[@]}" \
        --junitxml "$OUTDIR/tests.xml" -k "($K_ALL) and ($K_DEVICE)" "${TEST_FILES[@]}"
fi

# --- sharding on this machine's devices ----------------------------------------------------------------------
run_part sharding "$([ "$QUICK" = 1 ] && echo 90 || echo 75)" sharding.log "$PYTHON" bench/device_check.py sharding

# --- TransformerLens on the same device -------------------------------------------------------------------------
TLPY="$PYTHON"
TL_ENV=()
skip_tl=""
if [ -n "${TL_PYTHON:-}" ]; then
    TLPY="$TL_PYTHON"
elif [ -n "$WHEELS" ]; then
    if [ -d "$WHEELS" ]; then
        echo "== tl: installing TransformerLens from $WHEELS (offline) into $WORK/tl-site"
        "$PYTHON" bench/device_check.py wheels "$WHEELS" "$WORK/tl-site" 2>&1 | tee "$OUTDIR/tl_install.log"
        TL_ENV=(env "PYTHONPATH=$WORK/tl-site:$PYTHONPATH")
    else
        skip_tl="TransformerLens rows skipped: --wheels $WHEELS is not a folder."
    fi
fi
if [ -z "$skip_tl" ]; then
    if ! why=$(${TL_ENV[@]+"${TL_ENV[@]}"} "$TLPY" -c "import torch, transformer_lens" 2>&1); then
        why=$(echo "$why" | tail -1)
        skip_tl="TransformerLens rows skipped: \`import torch, transformer_lens\` fails here ($why). Carry its wheels: --wheels DIR."
    fi
fi
if [ -n "$skip_tl" ]; then
    echo "== tl: $skip_tl"
    echo "$skip_tl" > "$OUTDIR/tl_skipped.txt"
    printf 'tl\t200\t0\t0\tskipped: TransformerLens not here\n' >> "$OUTDIR/status.tsv"
elif [ "$QUICK" = 1 ]; then
    # on the CPU: the equivalence checks only (the timed table is bash bench/run.sh --quick)
    run_part tl 150 tl.log ${TL_ENV[@]+"${TL_ENV[@]}"} "$TLPY" bench/vs_transformer_lens.py --check-only \
        --json "$OUTDIR/tl.json"
else
    # JAX's preallocation off: torch needs GPU memory too
    run_part tl 150 tl.log ${TL_ENV[@]+"${TL_ENV[@]}"} env XLA_PYTHON_CLIENT_PREALLOCATE=false \
        "$TLPY" bench/vs_transformer_lens.py --device cuda --quick --out "$OUTDIR/tl.md" --json "$OUTDIR/tl.json"
fi

# --- the other tests of the same files, in what is left ---------------------------------------------------------
if [ "$QUICK" = 0 ] && [ "${#TEST_FILES[@]}" -gt 0 ]; then
    run_part tests_rest 150 tests_rest.log "${PYTEST[@]}" --junitxml "$OUTDIR/tests_rest.xml" \
        -k "($K_ALL) and not ($K_DEVICE)" "${TEST_FILES[@]}"
fi

# --- summary ----------------------------------------------------------------------------------------------------
"$PYTHON" bench/device_check.py summary "$OUTDIR" || FAILED=1
echo "device check: $((SECONDS - START)) s of the ${BUDGET} s budget; files in $OUTDIR"
exit "$FAILED"
