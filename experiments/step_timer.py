"""One speed and memory measurement for any HF Trainer run, ours (Axolotl) and the TRL baseline alike.

Axolotl: add `experiments.step_timer.StepTimerPlugin` to a recipe's `plugins`. TRL/HF: pass `StepTimer(path)` in
`callbacks`.

Tokens/s counts every non-padding input token (prompt and answer) over the steps after a warm-up, wall clock
between optimizer steps (data loading, logging and optimizer included). Peak memory is the whole run's (model
loading included): the running maximum of torch's peaks, read at the end of every step, because Axolotl resets
torch's peak statistics at every log (axolotl.utils.experiments.gpu_memory_usage_all), so a single reading at the end
covers only the steps after the last log.
The result goes to $STEP_TIMER_OUT (JSON) and to stdout as one `step_timer: {...}` line.
With $STEP_TIMER_PROFILE=<file>, the two steps after the timed ones are profiled (torch.profiler) and the GPU
time is summarised by kind of kernel into that file (JSON, plus the top kernels as text beside it); run a few
extra steps, the profiled ones are not in the timing.
With $STEP_TIMER_SYNCS=<file>, one step after the warm-up runs under torch's CUDA sync debug mode, and every
operation that made the CPU wait for the GPU (`.item()`, a boolean-mask index, a device-to-host copy) is counted by
the Python stack that called it, into that file (JSON): each one drains the GPU's queue, so kernel launches stop
overlapping the GPU's work.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

WARMUP_STEPS = 3  # first steps: allocator growth, Triton autotuning, compilation
PROFILED_STEPS = 2
# Kernel names -> kind, first match wins (bitsandbytes' NF4 dequantization, attention kernels, the optimizer's
# fused/foreach kernels, GEMMs; the LoRA matmuls are GEMMs too, apart from Axolotl's Triton LoRA kernels).
KINDS = [("dequantization", r"dequant|kdequant|nf4|bnb"), ("lora (triton)", r"lora"),
         ("attention", r"flash|fmha|attention|sdpa|softmax"),
         ("optimizer", r"adam|optim|multi_tensor|foreach"),
         ("cross-entropy (liger)", r"cross_entropy|liger"),
         ("matmul", r"gemm|cutlass|cublas|xmma|nvjet|matmul|splitk|sm90")]


def kernel_kinds(kernels: dict[str, float], wall_us: float) -> dict[str, float]:
    """Share of the profiled wall time per kind of kernel; `idle` is the wall time no kernel ran (one stream)."""
    shares = dict.fromkeys([kind for kind, _ in KINDS] + ["other kernels"], 0.0)
    for name, us in kernels.items():
        kind = next((kind for kind, pattern in KINDS if re.search(pattern, name.lower())), "other kernels")
        shares[kind] += us / wall_us
    shares["idle"] = max(0.0, 1 - sum(shares.values()))
    return shares


def cuda_peaks() -> tuple[int, int]:
    return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def load_peaks() -> tuple[int, int]:
    """(allocated, reserved) bytes at their highest so far in this process: gpu_watch's running maximum where it is
    installed (resets by Axolotl included), else torch's own peaks since their last reset."""
    try:
        import gpu_peaks
    except ImportError:
        return cuda_peaks()
    found = gpu_peaks.peaks()
    return int(found["peak_allocated_gib"] * 2**30), int(found["peak_reserved_gib"] * 2**30)


def calling_stack(frames: list[traceback.FrameSummary], depth: int = 6) -> str:
    """The innermost `depth` frames outside the warnings machinery, one `file:line function` each."""
    frames = [f for f in frames if not f.filename.endswith(("warnings.py", "step_timer.py"))]
    return " <- ".join(f"{'/'.join(Path(f.filename).parts[-2:])}:{f.lineno} {f.name}" for f in frames[::-1][:depth])


class SyncTrace:
    """Counts synchronizing CUDA operations by the Python stack that called them, while active."""

    def __init__(self) -> None:
        self.stacks: Counter[str] = Counter()
        self._show = None
        self._filters = None

    def start(self) -> None:
        self._show, self._filters = warnings.showwarning, warnings.filters[:]
        warnings.simplefilter("always")

        def show(message, category, filename, lineno, file=None, line=None):
            if "synchronizing CUDA operation" in str(message):
                self.stacks[calling_stack(traceback.extract_stack())] += 1
            else:
                self._show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> dict[str, Any]:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning, warnings.filters[:] = self._show, self._filters
        return {"syncs_in_one_step": sum(self.stacks.values()),
                "by_stack": dict(self.stacks.most_common())}


class StepTimer(TrainerCallback):
    def __init__(self, out: Path | None = None, warmup: int = WARMUP_STEPS, profile: Path | None = None,
                 memory: Callable[[], tuple[int, int]] | None = None, syncs: Path | None = None) -> None:
        """`memory`: (peak allocated, peak reserved) bytes so far; by default torch's CUDA peaks (gpu_watch's, where it
        is installed)."""
        self.out, self.warmup, self.profile_out, self.syncs_out = out, warmup, profile, syncs
        self.sync_trace: SyncTrace | None = None
        self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at the end of each step
        self.examples_per_step = 1
        self.profiler: Any = None
        self.memory = memory or (load_peaks if torch.cuda.is_available() else None)
        # the steps' peaks are torch's since the start of training (an injected reader resets nothing)
        self.reset = torch.cuda.reset_peak_memory_stats if memory is None and torch.cuda.is_available() else None
        self.peaks = (0, 0)
        self.load_peaks = (0, 0)

    def read_peaks(self) -> None:
        if self.memory:
            self.peaks = tuple(max(old, new) for old, new in zip(self.peaks, self.memory(), strict=True))

    def on_train_begin(self, args, state, control, **kwargs):
        if self.memory:  # what loading took; the steps' peaks start from here
            self.load_peaks = self.memory()
            if self.reset is not None:
                self.reset()
        # The Trainer counts tokens only when asked; padding would flatter a recipe that pads more.
        args.include_num_input_tokens_seen = "non_padding"
        self.examples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self.profile_from = state.max_steps - PROFILED_STEPS if self.profile_out else None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.syncs_out and torch.cuda.is_available() and state.global_step == self.warmup:
            self.sync_trace = SyncTrace()
            self.sync_trace.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.sync_trace is not None:  # the traced step ends before this callback's own synchronize
            traced = self.sync_trace.stop()
            self.sync_trace = None
            self.syncs_out.parent.mkdir(parents=True, exist_ok=True)
            self.syncs_out.write_text(json.dumps(traced, indent=2) + "\n")
            print(f"step_timer: {traced['syncs_in_one_step']} synchronizing CUDA operations in step "
                  f"{state.global_step}, by stack in {self.syncs_out}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.read_peaks()  # before this step's log resets them (the Trainer logs after on_step_end)
        if self.profiler is None and state.global_step == self.profile_from:
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.profiler.start()
            self.profile_start = time.perf_counter()
        if self.profiler is None:
            self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))

    def write_profile(self) -> None:
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - self.profile_start) * 1e6
        self.profiler.stop()
        events = self.profiler.key_averages()
        # Kernels are the events that ran on the GPU without CPU-side children (their self time is device time).
        kernels = {e.key: e.self_device_time_total for e in events if e.self_device_time_total > 0
                   and e.self_cpu_time_total == 0}
        result = {"profiled_steps": PROFILED_STEPS, "wall_s": wall_us / 1e6,
                  "kernel_s": sum(kernels.values()) / 1e6, "shares": kernel_kinds(kernels, wall_us),
                  "top_kernels_ms": {k: round(v / 1e3, 2)
                                     for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:30]}}
        self.profile_out.parent.mkdir(parents=True, exist_ok=True)
        self.profile_out.write_text(json.dumps(result, indent=2) + "\n")
        self.profile_out.with_suffix(".txt").write_text(events.table(sort_by="self_cuda_time_total", row_limit=40))
        print("step_timer profile: " + json.dumps({k: round(v, 3) for k, v in result["shares"].items()}), flush=True)

    def summary(self) -> dict[str, Any]:
        """Speed over the steps after the warm-up (where there are enough), and the memory peaks in any case."""
        gib = 2**30
        speed: dict[str, Any] = {"error": f"{len(self.marks)} steps: need more than {self.warmup + 1} for speed"}
        if len(self.marks) > self.warmup + 1:
            (t0, n0), (t1, n1) = self.marks[self.warmup], self.marks[-1]
            steps = len(self.marks) - 1 - self.warmup
            speed = {"measured_steps": steps, "tokens": n1 - n0, "seconds": t1 - t0,
                     "tokens_per_s": (n1 - n0) / (t1 - t0), "seconds_per_step": (t1 - t0) / steps,
                     "examples_per_step": self.examples_per_step,
                     "examples_per_s": self.examples_per_step * steps / (t1 - t0)}
        return {
            **speed,
            "load_peak_allocated_gib": self.load_peaks[0] / gib if self.memory else None,
            "load_peak_reserved_gib": self.load_peaks[1] / gib if self.memory else None,
            "step_peak_allocated_gib": self.peaks[0] / gib if self.memory else None,
            "step_peak_reserved_gib": self.peaks[1] / gib if self.memory else None,
            "peak_allocated_gib": max(self.peaks[0], self.load_peaks[0]) / gib if self.memory else None,
            "peak_reserved_gib": max(self.peaks[1], self.load_peaks[1]) / gib if self.memory else None,
        }

    def on_train_end(self, args, state, control, **kwargs):
        self.read_peaks()
        if self.profiler is not None:
            self.write_profile()
        result = self.summary()
        print("step_timer: " + json.dumps(result), flush=True)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(result, indent=2) + "\n")


class StepTimerPlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        out, profile = os.environ.get("STEP_TIMER_OUT"), os.environ.get("STEP_TIMER_PROFILE")
        syncs = os.environ.get("STEP_TIMER_SYNCS")
        return [StepTimer(Path(out) if out else None, profile=Path(profile) if profile else None,
                          syncs=Path(syncs) if syncs else None)]
