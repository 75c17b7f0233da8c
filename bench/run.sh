#!/usr/bin/env bash
# minillm against TransformerLens: the one command.
#
#     bash bench/run.sh            # full run; writes bench/RESULTS.md (about 4 minutes on 2 cores)
#     bash bench/run.sh --quick    # fewer repeats, prints only
#     bash bench/run.sh --suite    # the cross-library suite instead (bench/tl_suite.py -> bench/TL_SUITE.md)
#     bash bench/run.sh --suite4   # the same suite against TransformerLens 4.x's TransformerBridge
#                                  # (bench/tl_suite.py in bench/.venv-tl4 -> bench/TL4_SUITE.md)
#     bash bench/run.sh --text     # nanoGPT's CPU config on text (bench/text_train.py; prints; pass
#                                  # --nanogpt DIR to run nanoGPT's own train.py from a checkout too)
#     bash bench/run.sh --attribution  # attribution graphs against a loop of one VJP per target, the
#                                  # floor, and circuit-tracer 0.5.0 (bench/attribution.py; prints;
#                                  # installs circuit-tracer into bench/.venv-tl with --no-deps: its
#                                  # pins would downgrade transformers and huggingface-hub)
#
# Installs, once, its own environment in bench/.venv-tl: torch pinned to 2.13.0 (the CPU build; an
# open range would pull several GB of CUDA packages), transformer-lens < 4 (3.x is the last series
# with HookedTransformer for models built from a config), and minillm with JAX, flax and optax from
# this checkout (editable). Then runs bench/vs_transformer_lens.py in it. Run it on a quiet machine:
# the table is only as good as the CPU is idle. --suite4 (or --bridge) does the same in a second
# environment, bench/.venv-tl4, with transformer-lens 4.x (>= 4.3), which has no HookedTransformer:
# bench/tl.py builds a TransformerBridge there.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-}"
case "$MODE" in
    --suite | --suite4 | --bridge | --text | --attribution) shift ;;
esac
if [ "$MODE" = "--suite4" ] || [ "$MODE" = "--bridge" ]; then
    VENV=bench/.venv-tl4
    REQS=("torch==2.13.0" "transformer-lens>=4.3,<5")
else
    VENV=bench/.venv-tl
    REQS=("torch==2.13.0" "transformer-lens<4")
fi
STAMP="$VENV/.installed"
WANT="${REQS[*]} -e ."

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    python3 -m venv "$VENV"
fi
# the environment keeps itself out of git (as Python >= 3.13's venv does)
[ -f "$VENV/.gitignore" ] || echo "*" > "$VENV/.gitignore"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "installing ${REQS[*]} and minillm (-e .) into $VENV"
    "$VENV/bin/pip" install --quiet "${REQS[@]}" -e .
    if "$VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia-'; then
        echo "error: CUDA packages were installed into $VENV; torch must be the CPU build" >&2
        exit 1
    fi
    echo "$WANT" > "$STAMP"
fi

if [ "$MODE" = "--attribution" ] && ! "$VENV/bin/pip" show circuit-tracer >/dev/null 2>&1; then
    echo "installing circuit-tracer==0.5.0 (--no-deps) into $VENV"
    "$VENV/bin/pip" install --quiet --no-deps circuit-tracer==0.5.0
fi

case "$MODE" in
    --suite) exec "$VENV/bin/python" bench/tl_suite.py "$@" ;;
    --text) exec "$VENV/bin/python" bench/text_train.py "$@" ;;
    --attribution) exec "$VENV/bin/python" bench/attribution.py "$@" ;;
    --suite4 | --bridge) exec "$VENV/bin/python" bench/tl_suite.py --out bench/TL4_SUITE.md "$@" ;;
esac
exec "$VENV/bin/python" bench/vs_transformer_lens.py "$@"
