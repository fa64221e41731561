#!/usr/bin/env bash
# The GPU measurements the README quotes, in one unattended run, most needed first (a lent GPU is held for
# minutes: whatever finished before the lease ends is kept, each step in its own log):
#   1. the cuDNN bug on this GPU and the matmul peak (seconds);
#   2. side by side, sharing the GPU (a 270M run leaves most of it idle; peak memory is per process):
#      the dev winner (experiments/pick.py's rule) trained on the whole train split, two seeds, scored on eval; the
#      quality sweep on dev ($SWEEP); the 27B memory runs against sequence_len (experiments/gpu_27b.sh, PARTS="build memory")
#      after its random models are built;
#   3. alone on the GPU (timings): evaluation's speed (plain, constrained, grounded; two batch sizes; a profile)
#      on the first final model; the 27B speed runs against the plain recipe, with a profile (PARTS=speed);
#      which operations of a 270M training step make the CPU wait for the GPU (one step, by calling stack);
#      what starting `make train` costs in our process against `accelerate launch`; the whole 270M pipeline,
#      stage by stage; the price of the cuDNN fix (shipped vs cuDNN on vs eager).
#   bash experiments/gpu_session.sh LOG_DIR [SWEEP_RESULTS]   # on the GPU machine, from the repo root, after staging
#   STEPS="final g27" bash experiments/gpu_session.sh ...     # only the named steps (base-model and data always run)
# SWEEP_RESULTS: an earlier sweep's results.json (experiments/results/270m-quality/dev-sweep.json): new rows replace
# its rows, and the dev winner is picked from all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: gpu_session.sh LOG_DIR [SWEEP_RESULTS]}
PREVIOUS=${2:-}
PARALLEL=${PARALLEL:-4}
# the dev experiments of step 2 (experiments/experiments_270m.yaml), longest first
SWEEP=${SWEEP:-epochs-10 r128-e8 r128-lr4e-4-e6 batch-32-e5}
# the training-speed variants of step 3 (experiments/speed_270m.py)
SPEED=${SPEED:-shipped cudnn-default eager batch-32}
mkdir -p "$LOG/sweep"
export PY=${PY:-python3} PYTHONUNBUFFERED=1
step() { echo "=== $(date +%T) $*" | tee -a "$LOG/steps.txt"; }
run() { local name=$1; shift; step "$name"; "$@" > "$LOG/$name.log" 2>&1 || step "!!! $name failed (exit $?)"; }
want() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/gpu.txt" 2>&1
[ -n "$PREVIOUS" ] && cp "$PREVIOUS" "$LOG/sweep/results.json"
# pip compiles bytecode when it installs; the staging (--no-compile) does not, and the lent GPU machine sets
# PYTHONDONTWRITEBYTECODE=1, so every process would compile the sources of Axolotl, its dependencies and this repo
# again on import, seconds per process (the torchao SyntaxWarning in every stage log of 2026-12-03 is that
# compilation). Compile once, as an install would have; Python reads the bytecode whatever that variable says.
run compile "$PY" -m compileall -q -j 0 contract preprocess training inference merge evaluation release experiments \
  $("$PY" -c 'import os, sys; print(" ".join(p for p in sys.path if "-packages" in p or p.startswith("/tmp/site")))')
run base-model make base-model PY="$PY"
run data make data PY="$PY"
want cudnn && run cudnn-sdpa-nan "$PY" -m experiments.cudnn_sdpa_nan
want peak && run matmul-peak "$PY" -m experiments.matmul_peak

# 2. Side by side.
if want g27; then
  ( step "g27 models and memory runs (background)"
    env OUT="$LOG" PARTS="build memory" bash experiments/gpu_27b.sh > "$LOG/g27-memory.log" 2>&1
    step "g27 memory runs done" ) &
fi
if want final; then
  WIN=$("$PY" -m experiments.pick recipe "$LOG/sweep/results.json" 2>> "$LOG/pick.log")
  step "winning overrides: ${WIN:-none}"
  [ -n "$WIN" ] && run final "$PY" -m experiments.sweep_270m --parallel 2 --log-dir "$LOG/final" --overrides "$WIN" \
    'final-s*' &
fi
want sweep && run sweep "$PY" -m experiments.sweep_270m --parallel "$PARALLEL" --log-dir "$LOG/sweep" $SWEEP &
wait

# 3. Alone.
want eval-speed && [ -f outputs/sweep/final-s42/model/adapter_config.json ] && run eval-speed \
  "$PY" -m experiments.eval_speed --adapter outputs/sweep/final-s42/model --out "$LOG/eval-speed.json"
want g27 && run g27-speed env OUT="$LOG" PARTS=speed bash experiments/gpu_27b.sh  # summary: $LOG/gpu-27b/summary.md
want syncs && run syncs-270m env STEP_TIMER_SYNCS="$LOG/syncs-270m.json" "$PY" -m experiments.speed_270m --steps 8 \
  --out "$LOG/speed-syncs.json" shipped
want startup && run train-startup "$PY" -m experiments.train_startup --rounds 2 --out "$LOG/train-startup.json"
want pipeline && run pipeline-270m "$PY" -m experiments.pipeline_270m --out "$LOG/pipeline-270m.json"
want speed && run speed-270m "$PY" -m experiments.speed_270m --steps 60 --out "$LOG/speed-270m.json" $SPEED
step done
