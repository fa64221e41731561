#!/usr/bin/env bash
# Our 27B recipe (axolotl_configs/gemma3-27b-qlora.yaml) on random weights of the 27B geometry, through
# `make train`, with the process capped at 24 GiB as on an RTX 4090. Two text depths -> per-layer slope.
#   bash bench/gpu_27b_memory.sh 4 8
set -euo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-reports/measured}/gpu-27b-memory"
mkdir -p "$LOG" data/bench
head -n 64 data/processed/train.jsonl > data/bench/train.jsonl
head -n 8 data/processed/eval.jsonl > data/bench/eval.jsonl
export GPU_MEMORY_CAP_GIB=${GPU_MEMORY_CAP_GIB:-24} PYTHONPATH="$PWD/bench/gpu_cap${PYTHONPATH:+:$PYTHONPATH}"
for layers in "$@"; do
  model=models/g27-$layers
  # (building the random model is not part of the measurement: no cap)
  [ -f "$model/model.safetensors.index.json" ] || GPU_MEMORY_CAP_GIB= ${PY:-python} -m bench.gemma27b_geometry --layers "$layers" \
      --tokenizer "${TOKENIZER:-models/gemma-3-270m}" --out "$model" 2>&1 | tail -1 | tee "$LOG/build-$layers.log"
  sed -e "s|^base_model: .*|base_model: $model|" -e "s|data/processed/|data/bench/|" \
      -e "s|^output_dir: .*|output_dir: outputs/g27-$layers|" \
      -e "s|^dataset_prepared_path: .*|dataset_prepared_path: outputs/prepared/g27|" \
      axolotl_configs/gemma3-27b-qlora.yaml > "data/bench/g27-$layers.yaml"
  ${PY:-python} -m accelerate.commands.launch -m axolotl.cli.train "data/bench/g27-$layers.yaml" \
      --max_steps=6 --gradient_accumulation_steps=1 --logging_steps=1 --evals_per_epoch=0 --saves_per_epoch=0 \
      > "$LOG/train-$layers.log" 2>&1 || { tail -30 "$LOG/train-$layers.log"; exit 1; }
  grep -o "{'loss'[^}]*}" "$LOG/train-$layers.log" | tail -3
done
