#!/usr/bin/env bash
# Our 27B recipe (axolotl_configs/gemma3-27b-qlora.yaml, through Axolotl) against the plain TRL QLoRA
# (experiments/trl_baseline.py) on random weights of gemma-3-27b-it's geometry at reduced text depths, each process
# capped at 24 GiB as on an RTX 4090, then fitted in depth to 62 layers (experiments/extrapolate_27b.py):
#   1. speed, each run alone on the GPU, the same sample rows: ours at each micro-batch in $MICRO_BATCHES and
#      the plain recipe, at the depths in $SPEED_DEPTHS; the last two steps of ours at the largest micro-batch
#      and deepest depth are profiled (kernel time by kind);
#   2. memory against sequence_len (rows of experiments/long_rows.py, micro-batch 1), $MEMORY_PARALLEL runs at once
#      (peak memory is per process; other work may share the GPU, as long as the caps fit beside it), at the
#      depths in $MEMORY_DEPTHS.
#   bash experiments/gpu_27b.sh            # writes $OUT/gpu-27b (or outputs/gpu-27b): logs, JSON, summary
#   PARTS="build memory" bash experiments/gpu_27b.sh; PARTS=speed bash experiments/gpu_27b.sh   # the same, in two sittings
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
LOG="${OUT:-outputs}/gpu-27b"
TRAIN_STEPS=${TRAIN_STEPS:-12}
SPEED_DEPTHS=${SPEED_DEPTHS:-8 16}
MEMORY_DEPTHS=${MEMORY_DEPTHS:-4 8}
MICRO_BATCHES=${MICRO_BATCHES:-1 16}
OURS_LENGTHS=${OURS_LENGTHS:-2048 8192 16384}
TRL_LENGTHS=${TRL_LENGTHS:-2048 4096 8192}
TOKENIZER=${TOKENIZER:-models/gemma-3-270m}
PARTS=${PARTS:-speed memory}
MEMORY_PARALLEL=${MEMORY_PARALLEL:-4}  # 4 x the 24 GiB cap = 96 GiB: an H200 (139 GiB); use 3 on an 80 GB H100
part() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOG/gpu.txt" 2>&1
part speed && $PY -m experiments.matmul_peak | tee "$LOG/matmul_peak.txt"  # alone on the GPU, as the speed runs
export GPU_MEMORY_CAP_GIB=${GPU_MEMORY_CAP_GIB:-24} PYTHONPATH="$PWD/experiments/gpu_watch${PYTHONPATH:+:$PYTHONPATH}"
PLUGINS="plugins=[axolotl.integrations.liger.LigerPlugin, training.plugin.RecipePlugin, experiments.step_timer.StepTimerPlugin]"

build() {  # (building the random model is not part of the measurement: no cap)
  [ -f "models/g27-$1/preprocessor_config.json" ] || GPU_MEMORY_CAP_GIB= $PY -m experiments.gemma27b_geometry \
      --layers "$1" --tokenizer "$TOKENIZER" --out "models/g27-$1" 2>&1 | tail -1
}

ours() {  # name layers train.jsonl steps [recipe overrides...]: the shipped recipe, the step timer's JSON as $LOG/<name>.json
  local name=$1 layers=$2 rows=$3 steps=$4 work=outputs/g27-experiments/$1; shift 4
  mkdir -p "$work/data" && cp "$rows" "$work/data/train.jsonl" && head -n 8 "$rows" > "$work/data/eval.jsonl"
  $PY -m training.recipes axolotl_configs/gemma3-27b-qlora.yaml --out "$work/recipe.yaml" --workdir "$work" \
      "base_model=models/g27-$layers" "$PLUGINS" gradient_accumulation_steps=1 "$@" > /dev/null
  STEP_TIMER_OUT="$LOG/$name.json" $PY -m accelerate.commands.launch -m axolotl.cli.train "$work/recipe.yaml" \
      --max_steps="$steps" --logging_steps=1 --evals_per_epoch=0 --saves_per_epoch=0 > "$LOG/$name.log" 2>&1 \
      || { echo "{\"error\": \"exit $?, see $name.log\"}" > "$LOG/$name.json"; echo "$name FAILED"; }
  rm -rf "$work/model"
}

plain() {  # name layers train.jsonl steps max_length
  $PY -m experiments.trl_baseline --model "models/g27-$2" --data "$3" --steps "$4" --max-length "$5" \
      --out "$LOG/$1.json" > "$LOG/$1.log" 2>&1 \
      || { echo "{\"error\": \"exit $?, see $1.log\"}" > "$LOG/$1.json"; echo "$1 FAILED"; }
}

# the random models of the parts that run (PARTS=build: of both, e.g. ahead of a later speed sitting)
for layers in $( (part speed || part build) && echo "$SPEED_DEPTHS") $( (part memory || part build) && echo "$MEMORY_DEPTHS"); do
  build "$layers"
done
mkdir -p outputs/g27-bench
head -n 512 data/processed/train.jsonl > outputs/g27-experiments/sample.jsonl

deepest=${SPEED_DEPTHS##* } largest=${MICRO_BATCHES##* }
for layers in $(part speed && echo "$SPEED_DEPTHS"); do
  for mb in $MICRO_BATCHES; do
    export STEP_TIMER_PROFILE=; [ "$layers" = "$deepest" ] && [ "$mb" = "$largest" ] && STEP_TIMER_PROFILE="$LOG/profile.json"
    ours "ours-mb$mb-$layers" "$layers" outputs/g27-experiments/sample.jsonl "$TRAIN_STEPS" \
        "micro_batch_size=$mb"
    grep -ho "step_timer: .*" "$LOG/ours-mb$mb-$layers.log" || true
  done
  plain "trl-$layers" "$layers" outputs/g27-experiments/sample.jsonl "$TRAIN_STEPS" 1024
  grep -ho "step_timer: .*" "$LOG/trl-$layers.log" || true  # (TRL's follows a tqdm \r)
done
export STEP_TIMER_PROFILE=

# Memory against sequence length: 5 steps each (peak memory is reached by the first).
jobs=()
part memory && for length in $(printf '%s\n' $OURS_LENGTHS $TRL_LENGTHS | sort -nu); do
  $PY -m experiments.long_rows --tokens $((length - 16)) --rows 6 --tokenizer "$TOKENIZER" --out "outputs/g27-experiments/rows-$length.jsonl"
done
part memory && for length in $OURS_LENGTHS; do
  for layers in $MEMORY_DEPTHS; do jobs+=("ours mem-ours-$length-$layers $layers outputs/g27-experiments/rows-$length.jsonl 5 sequence_len=$length micro_batch_size=1"); done
done
part memory && for length in $TRL_LENGTHS; do
  for layers in $MEMORY_DEPTHS; do jobs+=("plain mem-trl-$length-$layers $layers outputs/g27-experiments/rows-$length.jsonl 5 $length"); done
done
export -f ours plain; export PY LOG PLUGINS
[ ${#jobs[@]} -gt 0 ] && printf '%s\n' "${jobs[@]}" | xargs -P "$MEMORY_PARALLEL" -I{} bash -c '{}'
[ -f "$LOG/matmul_peak.txt" ] && $PY -m experiments.extrapolate_27b "$LOG" | tee "$LOG/summary.md"
