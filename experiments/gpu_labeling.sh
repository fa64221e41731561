#!/usr/bin/env bash
# Issue #28's simulation on one GPU, unattended, after staging (../shared/device/README):
#   setsid bash experiments/gpu_labeling.sh LOG_DIR &     # on the GPU machine, from the repo root: everything
#   SIM_ARGS="--seeds" setsid bash experiments/gpu_labeling.sh LOG_DIR &   # the corrupted audit alone (~12 min on an H200)
#   SIM_ARGS="--seeds --corrupt-seed 1" ...              # the same with other records corrupted
#   SIM_ARGS="--seeds --corrupt 0 --clean-audit" ...     # the audit of raw_data.json as it is (~11 min)
#   bash experiments/gpu_poll.sh LOG_DIR 540             # each later call, until it exits 0
# LOG_DIR gets session.log and sim/ (results.json, audit-*.json, logs/); then, here:
#   python -m experiments.labeling_sim report LOG_DIR/sim --reference experiments/results/270m-quality/final-eval.json
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: gpu_labeling.sh LOG_DIR}
mkdir -p "$LOG"
export PY=${PY:-python3} PYTHONUNBUFFERED=1
{
  date +%T
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  # The staging installs without bytecode and the machine sets PYTHONDONTWRITEBYTECODE: compile once, as pip would.
  "$PY" -m compileall -q -j 0 contract preprocess training inference merge evaluation labeling experiments \
    $("$PY" -c 'import sys; print(" ".join(p for p in sys.path if "-packages" in p or p.startswith("/tmp/site")))')
  make base-model data PY="$PY" && "$PY" -m experiments.labeling_sim run --out "$LOG/sim" ${SIM_ARGS:---clean-audit}
  echo "exit $?"
  date +%T
} > "$LOG/session.log" 2>&1
