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
# What a finished run leaves: the adapter's weights.
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def training_state(output_dir: Path) -> dict | None:
    """The run's state, None where there is none; a file that is not a JSON object is a one-line error."""
    path = Path(output_dir) / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{shown(path)}: not readable ({err}); the run that wrote it was interrupted. Train again "
                        "(`make train`), or delete the file if the adapter beside it is from a finished run") from err
    if not isinstance(state, dict) or "status" not in state:
        raise UserError(f"{shown(path)}: not a training state (no `status`); train again (`make train`)")
    return state


def require_complete(adapter_dir: Path) -> None:
    """Refuse an adapter whose training run is still running, failed or was killed (no state file: trained
    outside `make train`, accepted)."""
    state = training_state(adapter_dir)
    if state and state["status"] != "complete":
        raise UserError(f"{shown(Path(adapter_dir))}: its training run is `{state['status']}`"
                        + (f" ({state['reason']})" if state.get("reason") else "")
                        + "; the adapter there is not the result of a finished run. Train again (`make train`).")


def adapter_complete(output_dir: Path) -> bool:
    """A finished run's adapter is there (a state that says complete, or none and the weights)."""
    if not (Path(output_dir) / ADAPTER_WEIGHTS).exists():
        return False
    state = training_state(output_dir)
    return state is None or state["status"] == "complete"
