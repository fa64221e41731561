"""One speed and memory measurement for any HF Trainer run, ours (Axolotl) and the TRL baseline alike.

Axolotl: add `bench.step_timer.StepTimerPlugin` to a recipe's `plugins`. TRL/HF: pass `StepTimer(path)` in
`callbacks`.

Tokens/s counts every non-padding input token (prompt and answer) over the steps after a warm-up, wall clock
between optimizer steps (data loading, logging and optimizer included). Peak memory is torch's for the whole run.
The result goes to $STEP_TIMER_OUT (JSON) and to stdout as one `step_timer: {...}` line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

WARMUP_STEPS = 3  # first steps: allocator growth, Triton autotuning, compilation


class StepTimer(TrainerCallback):
    def __init__(self, out: Path | None = None, warmup: int = WARMUP_STEPS) -> None:
        self.out, self.warmup = out, warmup
        self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at the end of each step

    def on_train_begin(self, args, state, control, **kwargs):
        # The Trainer counts tokens only when asked; padding would flatter a recipe that pads more.
        args.include_num_input_tokens_seen = "non_padding"

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    def summary(self) -> dict[str, Any]:
        if len(self.marks) <= self.warmup + 1:
            return {"error": f"{len(self.marks)} steps: need more than {self.warmup + 1} to measure"}
        (t0, n0), (t1, n1) = self.marks[self.warmup], self.marks[-1]
        steps = len(self.marks) - 1 - self.warmup
        gib = 2**30
        return {
            "measured_steps": steps, "tokens": n1 - n0, "seconds": t1 - t0,
            "tokens_per_s": (n1 - n0) / (t1 - t0), "seconds_per_step": (t1 - t0) / steps,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / gib if torch.cuda.is_available() else None,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / gib if torch.cuda.is_available() else None,
        }

    def on_train_end(self, args, state, control, **kwargs):
        result = self.summary()
        print("step_timer: " + json.dumps(result), flush=True)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(result, indent=2) + "\n")


class StepTimerPlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        out = os.environ.get("STEP_TIMER_OUT")
        return [StepTimer(Path(out) if out else None)]
