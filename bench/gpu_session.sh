#!/usr/bin/env bash
# The GPU measurements the README quotes, in one unattended run, most needed first (a lent GPU is held for
# minutes: whatever finished before the lease ends is kept, each step in its own log):
#   1. the cuDNN bug on this GPU and the matmul peak (seconds);
#   2. the whole 270M pipeline, timed stage by stage, alone on the GPU (also: the shipped recipe trains clean);
#   3. the price of the cuDNN fix: shipped (sdpa, cuDNN off) vs cuDNN left on vs eager, side by side;
#   4. the quality sweep (longest first, several at once): recipe levers on dev, half the data, and the learning
#      curve (two seeds per point, scored on eval; `curve-all-*` are the shipped recipe at two more seeds);
#   5. the dev winner (bench/pick.py's rule) trained on the whole train split, two seeds, scored on eval;
#   6. the 27B recipe against the plain one (bench/gpu_27b.sh; its random models are built during step 5);
#   7. evaluation's speed (plain, constrained, grounded; two batch sizes; a profile) on the first final model.
#   bash bench/gpu_session.sh /tmp/gpu-logs          # on the GPU machine, from the repo root, after staging
#   STEPS="final" bash bench/gpu_session.sh ...      # only the named steps (base-model and data always run)
# Ran on an H200 on 2026-12-02: steps 1-4 took 21 minutes after staging (reports/measured/h200-2026-12-02/);
# then `STEPS="final eval-speed g27"` in a second lease (reports/measured/h200-2026-12-02b/).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-/tmp/gpu-logs}
PARALLEL=${PARALLEL:-8}
mkdir -p "$LOG/sweep"
export PY=${PY:-python3} PYTHONUNBUFFERED=1
step() { echo "=== $(date +%T) $*" | tee -a "$LOG/steps.txt"; }
run() { local name=$1; shift; step "$name"; "$@" > "$LOG/$name.log" 2>&1 || step "!!! $name failed (exit $?)"; }
want() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/gpu.txt" 2>&1
# the last measured sweep (the prompt comparison included): new rows replace old ones, the winner is picked from all
cp reports/measured/h200-2026-12-02/sweep/results.json "$LOG/sweep/results.json"
run base-model make base-model PY="$PY"
run data make data PY="$PY"
want cudnn && run cudnn-sdpa-nan "$PY" -m bench.cudnn_sdpa_nan
want peak && run matmul-peak "$PY" -m bench.matmul_peak
want pipeline && run pipeline-270m "$PY" -m bench.pipeline_270m --out "$LOG/pipeline-270m.json"
want speed && run speed-270m "$PY" -m bench.speed_270m --steps 60 --out "$LOG/speed-270m.json" \
  shipped cudnn-default eager batch-32
want sweep && run sweep "$PY" -m bench.sweep_270m --parallel "$PARALLEL" --log-dir "$LOG/sweep" full-ft-e5 r128-e5 \
  lr-4e-4-e5 epochs-6 'curve-all-*' entities-first 'curve-1000-*' half-data 'curve-500-*' 'curve-250-*' 'curve-100-*'
if want g27; then  # the random 27B-geometry models: disk and CPU bound, built while the final runs train
  step "g27 models (background)"
  for layers in 4 8 16; do
    [ -f "models/g27-$layers/preprocessor_config.json" ] || "$PY" -m bench.gemma27b_geometry --layers "$layers" \
        --tokenizer models/gemma-3-270m --out "models/g27-$layers" >> "$LOG/g27-build.log" 2>&1
  done &
fi
if want final; then
  WIN=$("$PY" -m bench.pick recipe "$LOG/sweep/results.json" 2>> "$LOG/pick.log")
  step "winning overrides: ${WIN:-none}"
  [ -n "$WIN" ] && run final "$PY" -m bench.sweep_270m --parallel 2 --log-dir "$LOG/sweep" --overrides "$WIN" 'final-s*'
fi
wait  # (the builds: the speed measurements below run alone)
want g27 && run g27 env OUT="$LOG" bash bench/gpu_27b.sh
want eval-speed && [ -f outputs/sweep/final-s42/model/adapter_config.json ] && run eval-speed \
  "$PY" -m bench.eval_speed --adapter outputs/sweep/final-s42/model --out "$LOG/eval-speed.json"
step done
