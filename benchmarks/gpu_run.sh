#!/usr/bin/env bash
# The GPU check in one command, on a machine with an NVIDIA GPU: gpu_check.py's sections in
# priority order, then its long rows, then the efficacy runs at the seed's size, each in its own
# process under its own `timeout`, all within LIMIT seconds of wall clock.
#
#   bash benchmarks/gpu_run.sh 540                              # everything, by priority, in 540 s
#   bash benchmarks/gpu_run.sh --out DIR 540                    # the results in DIR
#   bash benchmarks/gpu_run.sh --only efficacy --resume F 200   # continue the efficacy runs in results.json F
#   bash benchmarks/gpu_run.sh 540 -- --no-compile              # after --: more efficacy.py arguments
#   bash benchmarks/gpu_run.sh --wheels DIR 540                 # first install the wheels in DIR, offline
#   bash benchmarks/gpu_run.sh --quick 600                      # the CPU smoke test (tiny shapes)
#   bash benchmarks/gpu_run.sh --dry-run 540                    # print the plan, run nothing
#   bash benchmarks/gpu_run.sh --only study [--resume F] 590    # the schedule study at the seed's size (not a default step)
#
# The results go to --out DIR (default: a new folder per run, benchmarks/results/gpu-<card>-<UTC
# date-time>/; with --quick, bench_out/gpu_run_quick/):
#   log.txt                   everything this script printed
#   gpu_check.json, .md       the sections' results (.md row by row, .json after each section)
#   gpu_cli.log               the cli section's two runs
#   efficacy/results.json     the efficacy runs (after each run), with tables.md and efficacy.png
# --wheels DIR (default: .whl/ when it holds wheels) installs attrs, cattrs and transitions from
# wheel files, without a network, for a GPU image that has torch but not them.
#
# Steps and their caps in seconds (a step gets min(cap, what is left); one with less than its
# floor left is skipped). A section's rows reach gpu_check.md as they are measured, so one cut by
# its cap keeps them.
#   conv 90     the fused Triton conv against the FFT conv and cuDNN
#   seed 180    the seed's command: eager / micro-batch 32 / compile / CUDA graphs
#   compare 180 ChunkLM against flash attention at 1k and 4k bytes
#   checks 100  causality in float32 and bf16, exact resume on the device
#   cli 90      `chunklm train --preset seed --device cuda`, stopped and resumed
#   long 150    ChunkLM against flash attention at 8k-32k bytes
#   efficacy    benchmarks/efficacy.py --plan seed (arms C, D, A; 2 seeds), all that is left
#   study       only when named in --only: benchmarks/efficacy_study.py --plan seed (A*, W*, S, S+, WA, C, CS;
#               4 peak LRs on a tuning seed, then 3 seeds), all that is left; --resume continues it.
#               Files: study/results.json, study/tables.md
set -uo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
QUICK=0 DRY=0 ONLY="conv,seed,compare,checks,cli,long,efficacy" RESUME="" LIMIT="" EXTRA=() OUTDIR="" WHEELS=.whl
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; EXTRA=("$@"); break ;;
    --quick) QUICK=1 ;;
    --dry-run) DRY=1 ;;
    --only) ONLY="$2"; shift ;;
    --resume) RESUME="$2"; shift ;;
    --out) OUTDIR="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    -h|--help) usage ;;
    *[!0-9]*|'') echo "gpu_run.sh: unknown argument '$1'" >&2; usage ;;
    *) LIMIT="$1" ;;
  esac
  shift
done
[ -n "$LIMIT" ] || { echo "gpu_run.sh: give the time limit in seconds, e.g. 540" >&2; usage; }

cd "$(dirname "$0")/.."
if [ -n "$OUTDIR" ]; then OUT="$OUTDIR"
elif [ "$QUICK" = 1 ]; then OUT=bench_out/gpu_run_quick
else  # "NVIDIA H200" -> benchmarks/results/gpu-h200-20261204-181500
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' | sed 's/^nvidia //; s/[^a-z0-9]\{1,\}/-/g; s/-$//')
  OUT="benchmarks/results/gpu-${card:-unknown}-$(date -u +%Y%m%d-%H%M%S)"
fi
PY="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python  # this project's CPU checkout
STEPS=(conv seed compare checks cli long efficacy study)
declare -A CAP=([conv]=90 [seed]=180 [compare]=180 [checks]=100 [cli]=90 [long]=150 [efficacy]=100000 [study]=100000)
declare -A FLOOR=([conv]=20 [seed]=30 [compare]=30 [checks]=30 [cli]=30 [long]=30 [efficacy]=100 [study]=100)
RESERVE=10  # seconds kept at the end for the last writes
Q=""
[ "$QUICK" = 1 ] && Q="--quick"
FAILED=()

set_command() {  # CMD=(the command line of step $1 under a timeout of $2 s)
  case "$1" in
    long) CMD=("$PY" benchmarks/gpu_check.py $Q --long --append --out "$OUT") ;;
    efficacy)
      local plan=seed minutes
      [ "$QUICK" = 1 ] && plan=quick
      minutes=$(awk "BEGIN { printf \"%.2f\", ($2 - 15) / 60 }")  # it stops itself 15 s before the timeout
      CMD=("$PY" benchmarks/efficacy.py --plan "$plan" --device auto --out "$OUT/efficacy" --max-minutes "$minutes")
      if [ -n "$RESUME" ] && [ -f "$RESUME" ]; then CMD+=(--resume "$RESUME")
      elif [ -n "$RESUME" ]; then echo "== efficacy: no $RESUME (no run finished earlier?): starting afresh"; fi
      CMD+=("${EXTRA[@]}") ;;
    study)
      local plan=seed minutes
      [ "$QUICK" = 1 ] && plan=quick
      minutes=$(awk "BEGIN { printf \"%.2f\", ($2 - 15) / 60 }")  # it stops itself 15 s before the timeout
      CMD=("$PY" benchmarks/efficacy_study.py --plan "$plan" --device auto --out "$OUT/study" --max-minutes "$minutes")
      if [ -n "$RESUME" ] && [ -f "$RESUME" ]; then CMD+=(--resume "$RESUME")
      elif [ -n "$RESUME" ]; then echo "== study: no $RESUME (no run finished earlier?): starting afresh"; fi
      CMD+=("${EXTRA[@]}") ;;
    *) CMD=("$PY" benchmarks/gpu_check.py $Q --only "$1" --append --out "$OUT") ;;
  esac
}

if [ "$DRY" = 0 ]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/log.txt") 2>&1
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then  # offline: the wheels in $WHEELS, first on the path
    site="$(mktemp -d)"
    echo "installing the wheels in $WHEELS: $(ls "$WHEELS"/*.whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c 'import attrs, cattrs, transitions' || { echo "attrs, cattrs or transitions missing: pip install them, or pass --wheels DIR (BENCHMARKS.md)"; exit 1; }
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  echo "== gpu_run.sh time limit ${LIMIT} s, steps ${ONLY}, quick=${QUICK}, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c 'import sys, torch; t = torch.cuda.is_available(); print("python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name() if t else "(no GPU)", "triton", __import__("triton").__version__ if t else "-"); sys.exit(0 if t else 3)'
  case "$?:$QUICK" in
    0:*|3:1) ;;
    3:0) echo "no GPU here: run with --quick for the CPU smoke test"; exit 1 ;;
    *) echo "python/torch did not start"; exit 1 ;;
  esac
fi

echo "== results in $OUT"
used=0  # dry run: every step is assumed to use its whole timeout
for step in "${STEPS[@]}"; do
  case ",$ONLY," in *",$step,"*) ;; *) continue ;; esac
  [ "$DRY" = 1 ] && elapsed=$used || elapsed=$SECONDS
  left=$((LIMIT - RESERVE - elapsed))
  t=$(( CAP[$step] < left ? CAP[$step] : left ))
  if [ "$t" -lt "${FLOOR[$step]}" ]; then
    echo "== $step: SKIPPED, ${left} s left of the time limit (needs ${FLOOR[$step]})"
    continue
  fi
  set_command "$step" "$t"
  echo "== $step: timeout ${t} s: ${CMD[*]}"
  if [ "$DRY" = 1 ]; then used=$((used + t)); continue; fi
  start=$SECONDS
  timeout --kill-after=10 "$t" "${CMD[@]}"
  rc=$?
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "== $step: CUT at its ${t} s timeout (rows measured so far are in gpu_check.md)"
  [ "$rc" != 0 ] && FAILED+=("$step(rc=$rc)")
  echo "== $step: rc $rc, $((SECONDS - start)) s"
done
[ "$DRY" = 1 ] && exit 0
echo "== done in ${SECONDS} s of ${LIMIT}; not ok: ${FAILED[*]:-none}; files: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
