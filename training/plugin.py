"""The Axolotl plugin every recipe lists (`plugins: [training.plugin.GuardsPlugin]`). It keeps a run honest:

- **cuDNN attention backward.** On Hopper GPUs (sm_90: H100, H200) with cuDNN older than 9.26, PyTorch's
  cuDNN SDPA backward returns NaN in grad_q when an attention mask is passed and the padded length is
  64 mod 128 (pytorch/pytorch#196678; fixed by PyTorch's upgrade to cuDNN 9.26, pytorch/pytorch#196861).
  Axolotl pads batches to multiples of 64, so ordinary data hits it. Where the installed GPU and cuDNN are
  in that range, the plugin switches the cuDNN SDPA backend off; SDPA then runs on its flash /
  memory-efficient kernels. `cudnn_sdpa: enable|disable` overrides the decision.
- **Non-finite guard.** The first logged step whose loss or grad norm is NaN/inf stops training with a
  message naming the step and the value, and a non-zero exit: no final adapter is written as if the run
  had succeeded. The HF Trainer's `logging_nan_inf_filter` (which logs a NaN loss as the running mean, so a
  diverged run looks calm) is switched off.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel, Field
from transformers import TrainerCallback

# cuDNN >= 9.26 carries the fix (PyTorch PR #196861 upgrades to it "to fix #196678").
CUDNN_FIXED = 92600
NON_FINITE_REPORT = "non_finite.json"


class GuardsArgs(BaseModel):
    """Recipe keys this plugin adds."""

    cudnn_sdpa: Literal["auto", "enable", "disable"] = Field(
        default="auto",
        json_schema_extra={"description": "cuDNN attention backend for training: auto = off where the "
                           "NaN-gradient bug applies (Hopper GPU, cuDNN < 9.26)"},
    )


def cudnn_sdpa_bug(capability: tuple[int, int] | None, cudnn_version: int | None) -> str | None:
    """Why this GPU + cuDNN hit pytorch/pytorch#196678, or None where it does not apply.
    Facts checked: the failing kernel is cuDNN's sm90 flash backward; the fix ships in cuDNN 9.26."""
    if capability is None or cudnn_version is None:
        return None
    if capability[0] != 9:
        return None
    if cudnn_version >= CUDNN_FIXED:
        return None
    return (f"sm_{capability[0]}{capability[1]} GPU with cuDNN {cudnn_version} (< 9.26): cuDNN's SDPA backward "
            "returns NaN gradients for masked batches padded to 64 mod 128 (pytorch/pytorch#196678)")


def decide_cudnn_sdpa(setting: str, capability: tuple[int, int] | None, cudnn_version: int | None) -> tuple[bool, str]:
    """(keep cuDNN SDPA on?, the reason, for the log)."""
    if setting == "enable":
        return True, "cudnn_sdpa: enable in the recipe"
    if setting == "disable":
        return False, "cudnn_sdpa: disable in the recipe"
    bug = cudnn_sdpa_bug(capability, cudnn_version)
    if bug:
        return False, bug
    return True, "not affected" if capability else "no CUDA device"


def _device_facts() -> tuple[tuple[int, int] | None, int | None]:
    if not torch.cuda.is_available():
        return None, None
    return torch.cuda.get_device_capability(), torch.backends.cudnn.version()


class NonFiniteTraining(RuntimeError):
    """Raised from the Trainer's log callback: training must not go on, nor save a final model."""


def non_finite_values(logs: dict[str, Any]) -> dict[str, float]:
    found = {}
    for key in ("loss", "grad_norm", "eval_loss"):
        if key in logs:
            value = float(logs[key])
            if not math.isfinite(value):
                found[key] = value
    return found


def diagnosis(step: int, values: dict[str, float], cudnn_note: str) -> str:
    shown = ", ".join(f"{key} = {value}" for key, value in values.items())
    return (f"training stopped at step {step}: {shown}. Likely causes, most likely first: "
            f"(1) cuDNN attention backward on Hopper GPUs ({cudnn_note}); set `cudnn_sdpa: disable` "
            "or `attn_implementation: eager`; (2) fp16 on Gemma (use bf16); (3) a learning rate too high "
            "for this data (lower `learning_rate`, keep `max_grad_norm`); (4) a non-finite weight in the base model")


class NonFiniteGuard(TrainerCallback):
    def __init__(self, output_dir: Path, cudnn_note: str) -> None:
        self.output_dir, self.cudnn_note = output_dir, cudnn_note

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = non_finite_values(logs or {})
        if not values:
            return
        message = diagnosis(state.global_step, values, self.cudnn_note)
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            report = {"step": state.global_step, "values": {k: str(v) for k, v in values.items()},
                      "message": message}
            (self.output_dir / NON_FINITE_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        raise NonFiniteTraining(message)


class GuardsPlugin(BasePlugin):
    def __init__(self) -> None:
        super().__init__()
        self.cudnn_note = "not decided yet"

    def get_input_args(self) -> str:
        return "training.plugin.GuardsArgs"

    def pre_model_load(self, cfg) -> None:
        keep, why = decide_cudnn_sdpa(cfg.cudnn_sdpa or "auto", *_device_facts())
        if torch.cuda.is_available():
            torch.backends.cuda.enable_cudnn_sdp(keep)
        self.cudnn_note = f"cuDNN SDPA {'on' if keep else 'OFF'}: {why}"
        print(f"[training.plugin] {self.cudnn_note}", flush=True)

    def get_training_args(self, cfg) -> dict[str, Any]:
        return {"logging_nan_inf_filter": False}

    def add_callbacks_post_trainer(self, cfg, trainer) -> list:
        (Path(cfg.output_dir) / NON_FINITE_REPORT).unlink(missing_ok=True)  # a report from an earlier run
        return [NonFiniteGuard(Path(cfg.output_dir), self.cudnn_note)]
