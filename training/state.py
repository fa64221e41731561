"""<output_dir>/training_state.json: whether a training run is running, failed (and why) or complete. Merge,
evaluation and prediction refuse an adapter whose run did not complete."""

from __future__ import annotations

import json
from pathlib import Path

from contract.config import shown
from contract.errors import UserError

STATE = "training_state.json"
# Written by training/plugin.py when a run stops at a NaN/inf: why, for the state above.
NON_FINITE_REPORT = "non_finite.json"


def training_state(output_dir: Path) -> dict | None:
    path = Path(output_dir) / STATE
    return json.loads(path.read_text()) if path.exists() else None


def require_complete(adapter_dir: Path) -> None:
    """Refuse an adapter whose training run is still running, failed or was killed (no state file: trained
    outside `make train`, accepted)."""
    state = training_state(adapter_dir)
    if state and state["status"] != "complete":
        raise UserError(f"{shown(Path(adapter_dir))}: its training run is `{state['status']}`"
                        + (f" ({state['reason']})" if state.get("reason") else "")
                        + "; the adapter there is not the result of a finished run. Train again (`make train`).")
