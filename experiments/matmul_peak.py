"""The GPU's measured bf16 matmul peak: the denominator of the MFU figures (spec sheets overstate it).

    python -m experiments.matmul_peak
"""

from __future__ import annotations

import torch


def tflops(m: int, k: int, n: int, repeats: int = 50) -> float:
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * m * k * n * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def main() -> None:
    print(torch.cuda.get_device_name())
    shapes = {"8192^3": (8192, 8192, 8192), "16384^3": (16384, 16384, 16384),
              "27B MLP, 1k tokens": (1024, 5376, 21504)}
    results = {name: max(tflops(*shape) for _ in range(3)) for name, shape in shapes.items()}
    for name, value in results.items():
        print(f"bf16 matmul {name}: {value:.0f} TFLOP/s")
    print(f"peak: {max(results.values()):.0f} TFLOP/s")


if __name__ == "__main__":
    main()
