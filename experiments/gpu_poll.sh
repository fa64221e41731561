#!/usr/bin/env bash
# Wait for an unattended GPU session (gpu_*.sh LOG_DIR) and pack its logs into $OUT, in one device call:
#   bash experiments/gpu_poll.sh LOG_DIR [SECONDS]
# Exits 0 when the session wrote its "exit" line, 1 when SECONDS (default 540) ran out first (poll again), and 3 at
# once when LOG_DIR/session.log is missing: the machine was handed back between calls and this is a fresh one, so
# waiting would only spend device time.
set -uo pipefail
LOG=${1:?usage: gpu_poll.sh LOG_DIR [SECONDS]}
WAIT=${2:-540}
[ -e "$LOG/session.log" ] || { echo "no $LOG/session.log: a fresh machine; the session is lost, stage and start again"; exit 3; }
end=$((SECONDS + WAIT))
until grep -q "^exit" "$LOG/session.log" || [ "$SECONDS" -ge "$end" ]; do sleep 10; done
tail -c 3000 "$LOG/session.log" | tr '\r' '\n' | tail -n 25
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
[ -n "${OUT:-}" ] && tar czf "$OUT/$(basename "$LOG").tgz" --exclude='*.safetensors' --exclude='*.bin' -C "$(dirname "$LOG")" "$(basename "$LOG")"
grep -q "^exit" "$LOG/session.log"
