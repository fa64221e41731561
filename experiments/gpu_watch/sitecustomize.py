"""Put this directory on PYTHONPATH and every Python process imports it at start-up (Python's `sitecustomize`):
- GPU_MEMORY_CAP_GIB=24: caps the process's CUDA allocations, as on an RTX 4090 (set when CUDA first initializes,
  so a process that never touches the GPU takes none of it), and `torch.cuda.mem_get_info` reports that card;
- PEAKS_DIR=<dir>: at exit, the process writes <dir>/<pid>.json with its command line, wall seconds, peak RSS and
  peak anonymous RSS, and its true CUDA peaks (gpu_peaks.py)."""

import os

if os.environ.get("GPU_MEMORY_CAP_GIB") or os.environ.get("PEAKS_DIR"):
    import gpu_peaks

    gpu_peaks.install(os.environ.get("GPU_MEMORY_CAP_GIB"), os.environ.get("PEAKS_DIR"))
