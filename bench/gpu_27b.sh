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
mkdir -p "$LOG" data/bench
head -n 64 data/processed/train.jsonl > data/bench/train.jsonl
head -n 8 data/processed/eval.jsonl > data/bench/eval.jsonl
$PY -m bench.matmul_peak | tee "$LOG/matmul_peak.txt"
export GPU_MEMORY_CAP_GIB=${GPU_MEMORY_CAP_GIB:-24} PYTHONPATH="$PWD/bench/gpu_cap${PYTHONPATH:+:$PYTHONPATH}"
for layers in "$@"; do
  model=models/g27-$layers
  # (building the random model is not part of the measurement: no cap)
  [ -f "$model/model.safetensors.index.json" ] || GPU_MEMORY_CAP_GIB= $PY -m bench.gemma27b_geometry \
      --layers "$layers" --tokenizer "${TOKENIZER:-models/gemma-3-270m}" --out "$model" 2>&1 | tail -1
  # The recipe as shipped, on this model and the bench data, plus the step timer.
  sed -e "s|^base_model: .*|base_model: $model|" -e "s|data/processed/|data/bench/|" \
      -e "s|^output_dir: .*|output_dir: outputs/g27-$layers|" \
      -e "s|^dataset_prepared_path: .*|dataset_prepared_path: outputs/prepared/g27|" \
      -e "s|^  - axolotl.integrations.liger.LigerPlugin|&\n  - bench.step_timer.StepTimerPlugin|" \
      axolotl_configs/gemma3-27b-qlora.yaml > "data/bench/g27-$layers.yaml"
  STEP_TIMER_OUT="$LOG/ours-$layers.json" $PY -m accelerate.commands.launch -m axolotl.cli.train \
      "data/bench/g27-$layers.yaml" --max_steps="$STEPS" --gradient_accumulation_steps=1 --logging_steps=1 \
      --evals_per_epoch=0 --saves_per_epoch=0 > "$LOG/ours-$layers.log" 2>&1 \
      || { tail -30 "$LOG/ours-$layers.log"; echo "ours at $layers layers FAILED"; }
  $PY -m bench.trl_baseline --model "$model" --data data/bench/train.jsonl --steps "$STEPS" \
      --out "$LOG/trl-$layers.json" > "$LOG/trl-$layers.log" 2>&1 \
      || { tail -30 "$LOG/trl-$layers.log"; echo "TRL at $layers layers FAILED"; }
  grep -ho "step_timer: .*" "$LOG/ours-$layers.log" "$LOG/trl-$layers.log" || true  # (TRL's follows a tqdm \r)
done
$PY -m bench.extrapolate_27b "$LOG" | tee "$LOG/summary.md"
