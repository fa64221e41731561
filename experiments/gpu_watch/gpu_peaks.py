"""True peak memory of a process, GPU and host, whatever the code it runs does with torch's statistics.

torch's CUDA peaks (`max_memory_allocated/reserved`) are reset by anyone who calls `reset_peak_memory_stats`, and
Axolotl does at every log, so a single reading misses what came before (the model's loading, earlier steps). Here
every reset first folds the peaks so far into a running maximum. Host memory: VmHWM (peak resident set, which counts
memory-mapped checkpoint pages) and the peak of RssAnon (the process's own memory), sampled every 0.2 s.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path

GIB = 2**30
_peaks = {"allocated": 0, "reserved": 0}
_host = {"anon": 0}
_start = time.time()


def _status(key: str) -> int:
    with open("/proc/self/status") as status:
        return next((int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":")), 0)


def _torch():
    return sys.modules.get("torch")


def fold() -> None:
    """The CUDA peaks so far into the running maximum (without initializing CUDA where nothing did)."""
    torch = _torch()
    if torch is not None and torch.cuda.is_initialized():
        _peaks["allocated"] = max(_peaks["allocated"], torch.cuda.max_memory_allocated())
        _peaks["reserved"] = max(_peaks["reserved"], torch.cuda.max_memory_reserved())


def peaks() -> dict[str, float]:
    """Peaks of this process so far, in GiB."""
    fold()
    return {"peak_allocated_gib": _peaks["allocated"] / GIB, "peak_reserved_gib": _peaks["reserved"] / GIB,
            "peak_rss_gib": _status("VmHWM") / GIB, "peak_anon_rss_gib": max(_host["anon"], _status("RssAnon")) / GIB}


def _sample_host() -> None:
    while True:
        _host["anon"] = max(_host["anon"], _status("RssAnon"))
        time.sleep(0.2)


def install(cap_gib: str | None, peaks_dir: str | None) -> None:
    import torch
    import torch.cuda.memory as memory

    original = memory.reset_peak_memory_stats

    def reset_peak_memory_stats(device=None) -> None:
        fold()
        original(device)

    memory.reset_peak_memory_stats = torch.cuda.reset_peak_memory_stats = reset_peak_memory_stats
    if cap_gib:
        def cap() -> None:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap_gib) * GIB / total))

        torch.cuda._lazy_call(cap)  # at CUDA's first use, before any allocation
        original_info = torch.cuda.mem_get_info

        def mem_get_info(device=None) -> tuple[int, int]:
            """What a card of the cap's size would report: code that sizes itself by free memory sees a 4090."""
            free, total = original_info(device)
            limit = int(float(cap_gib) * GIB)
            return max(0, min(free, limit - torch.cuda.memory_reserved(device))), min(total, limit)

        torch.cuda.mem_get_info = torch.cuda.memory.mem_get_info = mem_get_info
    if peaks_dir:
        threading.Thread(target=_sample_host, daemon=True).start()

        def write() -> None:
            record = {"pid": os.getpid(), "argv": sys.argv, "seconds": round(time.time() - _start, 1), **peaks()}
            Path(peaks_dir).mkdir(parents=True, exist_ok=True)
            (Path(peaks_dir) / f"{os.getpid()}.json").write_text(json.dumps(record) + "\n")

        atexit.register(write)
