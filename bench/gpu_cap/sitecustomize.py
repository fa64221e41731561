"""Emulate a smaller GPU: cap this process's CUDA allocations at $GPU_MEMORY_CAP_GIB (e.g. 24 for an RTX 4090).
Put this directory on PYTHONPATH; Python imports sitecustomize at start-up in every process it launches."""

import os

if cap := os.environ.get("GPU_MEMORY_CAP_GIB"):
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) * 2**30 / total))
