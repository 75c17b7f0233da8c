#!/usr/bin/env bash
# minillm on a GPU: the TransformerLens table with both libraries on the GPU, then bench/gpu.py.
#
#     bash bench/run_gpu.sh            # writes bench/RESULTS_GPU.md and bench/GPU.md
#     bash bench/run_gpu.sh --quick    # fewer repeats and tiny sizes, prints only
#
# This one needs a network (it installs). On a GPU machine without one, whose Python has JAX with its CUDA
# plugin already: bash bench/device_check.sh OUTDIR (under 8 minutes, results as files in OUTDIR; the
# TransformerLens rows too with --wheels DIR, filled beforehand by `python bench/device_check.py pack DIR`).
#
# Installs, once, its own environment in bench/.venv-gpu (needs PyPI and a few GB of disk): jax[cuda12]
# (JAX's CUDA 12 build with its NVIDIA libraries from PyPI), torch 2.10.0 (the last release whose PyPI
# wheel is built for CUDA 12; 2.11 and later bring CUDA 13 libraries beside JAX's CUDA 12 ones),
# transformer-lens < 4, and minillm from this checkout (editable). Needs an NVIDIA driver for CUDA 12
# (525 or later). Then runs:
#   bench/vs_transformer_lens.py --device cuda --out bench/RESULTS_GPU.md   (TransformerLens on cuda,
#       JAX on its default backend, the GPU; JAX's preallocation is off so that torch has memory too)
#   bench/gpu.py                                                            (JAX only; bench/GPU.md)
# Set PYTHON=/path/to/python to use an environment that has these packages already (no install).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=()
if [ "${1:-}" = "--quick" ]; then
    QUICK=(--quick)
fi

VENV=bench/.venv-gpu
REQS=("jax[cuda12]" "torch==2.10.0" "transformer-lens<4")
STAMP="$VENV/.installed"
WANT="${REQS[*]} -e ."

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
else
    PY="$VENV/bin/python"
    if [ ! -x "$PY" ]; then
        echo "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
        echo "installing ${REQS[*]} and minillm (-e .) into $VENV (several GB)"
        "$VENV/bin/pip" install --quiet "${REQS[@]}" -e .
        echo "$WANT" > "$STAMP"
    fi
fi

# Both libraries must see the GPU: a CPU build of torch (e.g. from a local wheel cache) or JAX without
# its CUDA plugin would time something else.
"$PY" - <<'EOF'
import sys

import jax
import torch

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
print(f"jax {jax.__version__}: {jax.devices()}")
if torch.version.cuda is None or not torch.cuda.is_available():
    sys.exit("error: torch has no CUDA device here (a CPU build, or no driver): reinstall torch from PyPI")
if jax.default_backend() != "gpu":
    sys.exit("error: JAX does not run on a GPU here: install jax[cuda12] (and check the NVIDIA driver)")
EOF

status=0
OUTFILE=(--out bench/RESULTS_GPU.md)
if [ "${#QUICK[@]}" -gt 0 ]; then
    OUTFILE=()  # --quick prints only
fi
XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" bench/vs_transformer_lens.py --device cuda ${OUTFILE[@]+"${OUTFILE[@]}"} \
    ${QUICK[@]+"${QUICK[@]}"} || status=$?
"$PY" bench/gpu.py ${QUICK[@]+"${QUICK[@]}"} || status=$?
exit "$status"
