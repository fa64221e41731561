#!/usr/bin/env bash
# Gemma 3 270M end to end on a GPU: base model -> data -> train (the full recipe) -> merge -> eval of the
# untuned base, the fine-tuned model, and the fine-tuned model with constrained decoding.
#   bash bench/gpu_270m.sh train    # then
#   bash bench/gpu_270m.sh eval
# Logs go to $OUT/gpu-270m (the device tool) or reports/measured/gpu-270m.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=axolotl_configs/gemma3-270m-lora.yaml
LOG="${OUT:-reports/measured}/gpu-270m"
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$LOG/gpu.txt" 2>&1 || true
case "${1:-all}" in
  train|all)
    make train CONFIG=$CONFIG 2>&1 | tee "$LOG/train.log" | grep -v "it/s\]" || exit 1
    ;;&
  eval|all)
    make merge CONFIG=$CONFIG 2>&1 | tee "$LOG/merge.log"   # fp32 merge + proof (the default)
    make eval CONFIG=$CONFIG EVAL_ARGS="--run gpu-270m --fresh --variants tuned,tuned+constrained,base --batch-size 64" \
      2>&1 | tee "$LOG/eval.log" | grep -v "ex/s\]"
    cp reports/gpu-270m/metrics.json reports/gpu-270m/report.md "$LOG/"
    cp outputs/gemma3-270m-lora/merged/merge_proof.json "$LOG/"
    ;;
esac
