#!/usr/bin/env bash
# The flagship path at full depth on one GPU capped at 24 GiB (an RTX 4090), with the repo's own commands:
# gemma-3-27b-it's stand-in (experiments/gemma27b_geometry.py: the real config, names and ~5 GB shards, random
# weights) trained by `make train` with the shipped 27B recipe, merged by `make merge`, scored by `make eval` and
# answering through `make predict`; then memory probes at full depth (larger micro-batches, longer rows) and, beside
# them, what the 270M's merge dtype and quantized inference cost. Every process records its peaks
# (experiments/gpu_watch), every stage its wall time (stages.jsonl); `python -m experiments.full_depth_27b LOG_DIR`
# makes gpu-27b-full.json of them.
#   bash experiments/gpu_27b_full.sh LOG_DIR        # on the GPU machine, from the repo root, after staging
#   TOY=1 LAYERS=2 ... bash experiments/gpu_27b_full.sh LOG_DIR   # the same commands at toy width, on a CPU
# The whole script is one function: bash reads it all before running, so an edit of the file (or the device
# tool's copy of the tree) during a run cannot change what runs.
main() {
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: gpu_27b_full.sh LOG_DIR}
export PY=${PY:-python3}
LAYERS=${LAYERS:-62}
STANDIN=${STANDIN:-models/g27-$LAYERS}
MERGED=${MERGED:-/dev/shm/g27-merged}   # 55 GB: beside the 55 GB stand-in it fits RAM, not a 64 GB disk
WORK=${WORK:-outputs/g27-full}
TRAIN_STEPS=${TRAIN_STEPS:-24}
PROBE_STEPS=${PROBE_STEPS:-4}
MICRO_BATCHES=${MICRO_BATCHES:-64 128}
ROW_LENGTHS=${ROW_LENGTHS:-8192 16384}
QUERIES=${QUERIES:-64}
PARTS=${PARTS:-build train eval merge predict probes 270m}   # and eval-merged: the merged weights in NF4
TOY=${TOY:-}
EVAL_EXTRA=${EVAL_EXTRA:-}   # e.g. "--limit 8" for a dry run
export GPU_MEMORY_CAP_GIB=${GPU_MEMORY_CAP_GIB:-24} PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/experiments/gpu_watch${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$LOG/reports" "$WORK"
want() { [[ " $PARTS " == *" $1 "* ]]; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
stage() {  # name command...: its log, its processes' peaks (peaks/<name>/), its wall time and status (stages.jsonl)
  local name=$1 start status; shift
  echo "=== $(date +%T) $name" | tee -a "$LOG/steps.txt"
  start=$(ms)
  PEAKS_DIR="$LOG/peaks/$name" "$@" > "$LOG/$name.log" 2>&1; status=$?
  echo "{\"stage\": \"$name\", \"seconds\": $(( $(ms) - start ))e-3, \"status\": $status}" >> "$LOG/stages.jsonl"
  [ "$status" = 0 ] || echo "!!! $name failed (exit $status)" | tee -a "$LOG/steps.txt"
  return "$status"
}
PLUGINS="plugins=[axolotl.integrations.liger.LigerPlugin, training.plugin.RecipePlugin, experiments.step_timer.StepTimerPlugin]"
# TOY: a CPU has no Triton (Liger's kernels) and no paged 8-bit optimizer; everything else is the shipped recipe.
[ -n "$TOY" ] && PLUGINS="plugins=[training.plugin.RecipePlugin, experiments.step_timer.StepTimerPlugin]" \
  TOY_RECIPE="liger_fused_linear_cross_entropy=null liger_rms_norm=null liger_glu_activation=null optimizer=adamw_torch micro_batch_size=2"
variant() {  # out key=value...: the shipped 27B recipe on the stand-in, writing under $WORK
  $PY -m training.recipes axolotl_configs/gemma3-27b-qlora.yaml --out "$1" "base_model=$STANDIN" "$PLUGINS" \
    ${TOY_RECIPE:-} "${@:2}" > /dev/null
}
R27="$WORK/recipe.yaml"
M27="PY=$PY CONFIG=$R27"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOG/gpu.txt" 2>&1
GPU_MEMORY_CAP_GIB= make base-model data PY="$PY" > "$LOG/setup.log" 2>&1 || { echo "setup failed" >&2; exit 1; }
[ -n "$TOY" ] && TOY_ARGS=(--toy) || TOY_ARGS=()
want build && [ ! -f "$STANDIN/config.json" ] && GPU_MEMORY_CAP_GIB= stage build \
  $PY -m experiments.gemma27b_geometry --layers "$LAYERS" --tokenizer models/gemma-3-270m --out "$STANDIN" "${TOY_ARGS[@]}"
du -sb "$STANDIN" > "$LOG/standin-bytes.txt"
GPU_MEMORY_CAP_GIB= $PY -m experiments.matmul_peak > "$LOG/matmul-peak.txt" 2>&1
variant "$R27" "output_dir=$WORK/model" "dataset_prepared_path=$WORK/prepared"

# 1. Training, alone on the GPU: the shipped recipe (micro-batch 16), step timer on every step; no eval or checkpoint
#    inside the measured steps (the final adapter is saved).
want train && STEP_TIMER_OUT="$LOG/train-timer.json" stage train \
  make train $M27 TRAIN_ARGS="--max_steps=$TRAIN_STEPS --logging_steps=1 --evals_per_epoch=0 --saves_per_epoch=0"
du -sb "$WORK/model" > "$LOG/adapter-bytes.txt" 2>/dev/null

# 2. Evaluation within 24 GiB (the stage picks NF4 itself: the merged model would not fit) beside the streaming merge
#    (CPU and disk only; its output goes to RAM: $MERGED).
want merge && { stage merge make merge $M27 MERGE_ARGS="--out $MERGED"; du -sb "$MERGED" > "$LOG/merged-bytes.txt"; } &
want eval && stage eval make eval $M27 EVAL_ARGS="--run g27 --variants tuned+constrained --reports-dir $LOG/reports $EVAL_EXTRA"
wait
# 3. The merged weights, quantized at load, answer too (optional: a third full load of the model).
want eval-merged && [ -f "$MERGED/merge_proof.json" ] && stage eval-merged make eval $M27 MODEL="$MERGED" \
  EVAL_ARGS="--run g27-merged --variants tuned+constrained --reports-dir $LOG/reports $EVAL_EXTRA"
cp "$MERGED/merge_proof.json" "$LOG/g27-merge-proof.json" 2>/dev/null
rm -rf "$MERGED"

# 4. Beside each other (peaks are per process; the GPU holds five 24 GiB caps): prediction of new queries, memory
#    probes at full depth (micro-batches of the sample's rows, rows of a given length at micro-batch 1), and the 270M.
$PY - "$QUERIES" > "$WORK/queries.txt" <<'EOF2'
import json, sys
rows = [json.loads(line) for line in open("data/processed/eval.jsonl")][-int(sys.argv[1]):]
print("\n".join(next(m["content"] for m in r["messages"] if m["role"] == "user") for r in rows))
EOF2
want predict && stage predict make predict $M27 PREDICT_ARGS="--input $WORK/queries.txt --output $LOG/predict-g27.jsonl" &

probe() {  # name key=value...: a few steps of the shipped recipe with those changes
  local name=$1; shift
  variant "$WORK/$name/recipe.yaml" "output_dir=$WORK/$name/model" "dataset_prepared_path=$WORK/$name/prepared" "$@"
  STEP_TIMER_OUT="$LOG/$name-timer.json" stage "$name" $PY -m training --config "$WORK/$name/recipe.yaml" \
    --max_steps="$PROBE_STEPS" --logging_steps=1 --evals_per_epoch=0 --saves_per_epoch=0
  rm -rf "$WORK/$name/model"
}
if want probes; then
  for mb in $MICRO_BATCHES; do probe "probe-mb$mb" "micro_batch_size=$mb" & done
  for length in $ROW_LENGTHS; do
    mkdir -p "$WORK/rows-$length"
    $PY -m experiments.long_rows --tokens $((length - 16)) --rows 8 --tokenizer models/gemma-3-270m \
      --out "$WORK/rows-$length/train.jsonl" && head -n 2 "$WORK/rows-$length/train.jsonl" > "$WORK/rows-$length/eval.jsonl"
    probe "probe-len$length" micro_batch_size=1 "sequence_len=$length" \
      "datasets=[{path: $WORK/rows-$length/train.jsonl, ds_type: json, type: chat_template, field_messages: messages, roles_to_train: [assistant], train_on_eos: turn}]" \
      "test_datasets=[{path: $WORK/rows-$length/eval.jsonl, ds_type: json, split: train, type: chat_template, field_messages: messages, roles_to_train: [assistant], train_on_eos: turn}]" &
  done
fi

# 5. The 270M (the shipped recipe): what a bfloat16 merge and 4-bit inference cost against the full-precision path.
if want 270m; then
  M270="PY=$PY CONFIG=axolotl_configs/gemma3-270m-lora.yaml"
  E="--variants tuned+constrained --reports-dir $LOG/reports"
  # `python -m training` is what `make train` runs after `make data`, which would rewrite the data under the probes
  stage 270m-train $PY -m training --config axolotl_configs/gemma3-270m-lora.yaml && {
    stage 270m-merge-fp32 make merge $M270 MERGE_ARGS="--dtype float32 --out $WORK/270m-fp32"
    stage 270m-merge-bf16 make merge $M270 MERGE_ARGS="--dtype bfloat16 --out $WORK/270m-bf16"
    stage 270m-eval-fp32 make eval $M270 MODEL="$WORK/270m-fp32" EVAL_ARGS="--run 270m-fp32 --quantize none $E"
    stage 270m-eval-bf16 make eval $M270 MODEL="$WORK/270m-bf16" EVAL_ARGS="--run 270m-bf16 --quantize none $E"
    stage 270m-eval-nf4-merged make eval $M270 MODEL="$WORK/270m-fp32" EVAL_ARGS="--run 270m-nf4-merged --quantize nf4 $E"
    stage 270m-eval-nf4-adapter make eval $M270 EVAL_ARGS="--adapter outputs/gemma3-270m-lora --run 270m-nf4-adapter --quantize nf4 $E"
    cp "$WORK/270m-fp32/merge_proof.json" "$LOG/270m-merge-fp32-proof.json"
    cp "$WORK/270m-bf16/merge_proof.json" "$LOG/270m-merge-bf16-proof.json"
  }
fi
wait
$PY -m experiments.full_depth_27b "$LOG" --layers "$LAYERS" > "$LOG/summary.md" 2>&1
echo "=== $(date +%T) done" | tee -a "$LOG/steps.txt"
}
main "$@"
