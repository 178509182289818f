#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh demo    set up .venv, then train ChunkLM's demo on the default corpus (CPU, ~7 min)
#   ./run.sh test    set up .venv, then check lint and format (ruff) and run the test suite
#   ./run.sh setup   only set up .venv
# Extra arguments go to the command (e.g. ./run.sh test -k engine).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

setup() {
    [ -x "$PY" ] || python3 -m venv "$VENV"
    if ! "$PY" -c "import torch" >/dev/null 2>&1; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            "$PY" -m pip install -q torch          # a GPU is present: the default (CUDA) build
        else
            "$PY" -m pip install -q "torch==2.13.0" # no GPU: the CPU build
        fi
    fi
    # Install the project with its test and framework extras once per pyproject.toml (pip's own
    # no-op check of the extras takes ~40 s). The extras must not replace the torch above (a CUDA
    # build is several GB): it is pinned.
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "torch==$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" > "$VENV/torch-constraint.txt"  # (numpy is not there yet)
        "$PY" -m pip install -q -c "$VENV/torch-constraint.txt" -e ".[test,hf,lightning]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

cmd="${1:-demo}"
shift || true
case "$cmd" in
    setup) setup ;;
    demo)  # each demo run gets its own folder, so a second run never touches the first; out/demo/latest names the newest
        setup
        run="$(date +%Y%m%d-%H%M%S)"
        mkdir -p "out/demo/$run"
        ln -sfn "$run" out/demo/latest
        exec "$VENV/bin/chunklm" train --preset demo --ckpt "out/demo/$run/chunklm_ckpt.pt" "$@" ;;
    test)  # lint and format first (seconds), then the suite
        setup
        "$VENV/bin/ruff" check --quiet . || { echo "ruff check failed: fix the lines above (ruff check --fix fixes some)" >&2; exit 1; }
        "$VENV/bin/ruff" format --check --quiet . || { echo "ruff format: the files above need 'ruff format'" >&2; exit 1; }
        exec "$PY" -m pytest -q "$@" ;;
    *) echo "usage: ./run.sh [demo|test|setup] [args...]" >&2; exit 2 ;;
esac
