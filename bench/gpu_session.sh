#!/usr/bin/env bash
# Every GPU measurement the README quotes, in one unattended run (a lent GPU is held for minutes, not hours):
# the cuDNN bug on this GPU, the matmul peak, the prompt comparison (which picks the shipped prompt by the rule in
# bench/pick.py), the 270M training levers side by side, the whole pipeline timed, the quality sweep and the
# learning curve, then the winning recipe on the eval split with two seeds, grounded and not.
#   bash bench/gpu_session.sh /tmp/gpu-logs          # on the GPU machine, from the repo root, after staging
# Each step logs to the folder; a failed step is reported and the next one runs. It edits pipeline.yaml (the chosen
# prompt): run it in a copy of the repo when the checkout may change under it.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-/tmp/gpu-logs}
mkdir -p "$LOG"
export PY=${PY:-python3} PYTHONUNBUFFERED=1
step() { echo "=== $(date +%T) $*"; }
run() { local name=$1; shift; step "$name"; "$@" > "$LOG/$name.log" 2>&1 || echo "!!! $name failed (exit $?)"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/gpu.txt" 2>&1
run base-model make base-model PY="$PY"
run cudnn-sdpa-nan "$PY" -m bench.cudnn_sdpa_nan
run matmul-peak "$PY" -m bench.matmul_peak
run sweep-prompts "$PY" -m bench.sweep_270m --parallel 3 --log-dir "$LOG/sweep" prompt-schema prompt-labels prompt-task
PROMPT=$("$PY" -m bench.pick prompt "$LOG/sweep/results.json")
step "prompt chosen: ${PROMPT:-none, the prompt sweep failed: pipeline.yaml keeps its prompt}"
[ -n "$PROMPT" ] && sed -i "s|^system_prompt: [^ ]*|system_prompt: $PROMPT|" pipeline.yaml
run data make data PY="$PY"
run speed-270m "$PY" -m bench.speed_270m --steps 30 --out "$LOG/speed-270m.json"
run pipeline-270m "$PY" -m bench.pipeline_270m --out "$LOG/pipeline-270m-h100.json"
run sweep-quality "$PY" -m bench.sweep_270m --parallel 8 --log-dir "$LOG/sweep" epochs-6 r128-e5 lr-4e-4-e5 \
  full-ft-e5 entities-first half-data 'curve-*'
WIN=$("$PY" -m bench.pick recipe "$LOG/sweep/results.json" 2>> "$LOG/pick.log")
[ -n "$WIN" ] || WIN='{}'
step "winning overrides: $WIN"
run sweep-final "$PY" -m bench.sweep_270m --parallel 2 --log-dir "$LOG/sweep" --overrides "$WIN" 'final-s*'
run ungrounded "$PY" -m evaluation --pipeline outputs/sweep/final-s42/pipeline.yaml \
  --adapter outputs/sweep/final-s42/model --data outputs/sweep/final-s42/data/eval.jsonl \
  --variants tuned+constrained --no-grounded --run ungrounded --batch-size 128
cp -r outputs/sweep/final-s42/reports "$LOG/final-s42-reports" 2>/dev/null
step done
