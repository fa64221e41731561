#!/usr/bin/env bash
# Our 27B recipe (axolotl_configs/gemma3-27b-qlora.yaml, through Axolotl) against the plain TRL QLoRA
# (bench/trl_baseline.py) on random weights of gemma-3-27b-it's geometry at reduced text depths, each process
# capped at 24 GiB as on an RTX 4090; then the per-layer fit extrapolated to 62 layers, with MFU.
#   bash bench/gpu_27b.sh 4 8 16
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
LOG="${OUT:-reports/measured}/gpu-27b"
STEPS=${STEPS:-24}
mkdir -p "$LOG"
$PY -m bench.matmul_peak | tee "$LOG/matmul_peak.txt"
export GPU_MEMORY_CAP_GIB=${GPU_MEMORY_CAP_GIB:-24} PYTHONPATH="$PWD/bench/gpu_cap${PYTHONPATH:+:$PYTHONPATH}"
for layers in "$@"; do
  model=models/g27-$layers
  # (building the random model is not part of the measurement: no cap)
  [ -f "$model/model.safetensors.index.json" ] || GPU_MEMORY_CAP_GIB= $PY -m bench.gemma27b_geometry \
      --layers "$layers" --tokenizer "${TOKENIZER:-models/gemma-3-270m}" --out "$model" 2>&1 | tail -1
  # The recipe as shipped, on this model and 64 sample rows, plus the step timer (training/recipes.py).
  work=outputs/g27-$layers
  mkdir -p "$work/data"
  head -n 64 data/processed/train.jsonl > "$work/data/train.jsonl"
  head -n 8 data/processed/eval.jsonl > "$work/data/eval.jsonl"
  $PY -m training.recipes axolotl_configs/gemma3-27b-qlora.yaml --out "$work/recipe.yaml" --workdir "$work" \
      "base_model=$model" \
      "plugins=[axolotl.integrations.liger.LigerPlugin, training.plugin.RecipePlugin, bench.step_timer.StepTimerPlugin]"
  STEP_TIMER_OUT="$LOG/ours-$layers.json" $PY -m accelerate.commands.launch -m axolotl.cli.train \
      "$work/recipe.yaml" --max_steps="$STEPS" --gradient_accumulation_steps=1 --logging_steps=1 \
      --evals_per_epoch=0 --saves_per_epoch=0 > "$LOG/ours-$layers.log" 2>&1 \
      || { tail -30 "$LOG/ours-$layers.log"; echo "ours at $layers layers FAILED"; }
  $PY -m bench.trl_baseline --model "$model" --data "$work/data/train.jsonl" --steps "$STEPS" \
      --out "$LOG/trl-$layers.json" > "$LOG/trl-$layers.log" 2>&1 \
      || { tail -30 "$LOG/trl-$layers.log"; echo "TRL at $layers layers FAILED"; }
  grep -ho "step_timer: .*" "$LOG/ours-$layers.log" "$LOG/trl-$layers.log" || true  # (TRL's follows a tqdm \r)
done
$PY -m bench.extrapolate_27b "$LOG" | tee "$LOG/summary.md"
