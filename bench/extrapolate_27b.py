"""Fit the 27B measurements of bench/gpu_27b.sh linearly in depth and extrapolate to the full 62 layers.

Per recipe and depth L the step timer gives peak memory and tokens/s. Memory and seconds per token are each
fitted as a + b*L (least squares): every layer adds the same weights, adapters, checkpointed activations and
work, while the embeddings, vision tower, logits/loss and optimizer overheads are the fixed part.
MFU counts model FLOPs = 4 x N per token (forward 2N, backward input-gradients 2N; the frozen 4-bit base has no
weight gradients; N = the matmul weights a token meets, output layer included, bench.gemma27b_geometry), over
the GPU's measured bf16 matmul peak (bench.matmul_peak). HFU also counts the recomputed forward of gradient
checkpointing (6 x N). Attention-score FLOPs (<1 % at these lengths) are left out of both.

    python -m bench.extrapolate_27b reports/measured/gpu-27b
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bench.gemma27b_geometry import matmul_params

FULL_DEPTH = 62
RECIPES = {"ours": "ours (Axolotl recipe)", "trl": "plain TRL SFTTrainer"}


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares a, b of value = a + b * layers."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def load(log_dir: Path, recipe: str) -> dict[int, dict]:
    runs = {}
    for path in log_dir.glob(f"{recipe}-*.json"):
        runs[int(path.stem.split("-")[1])] = json.loads(path.read_text())
    return dict(sorted(runs.items()))


def extrapolate(runs: dict[int, dict]) -> dict[str, float]:
    out = {}
    for key in ("peak_allocated_gib", "peak_reserved_gib"):
        a, b = fit({layers: run[key] for layers, run in runs.items()})
        out[key], out[key.replace("peak", "per_layer")] = a + b * FULL_DEPTH, b
    a, b = fit({layers: 1 / run["tokens_per_s"] for layers, run in runs.items()})
    out["tokens_per_s"] = 1 / (a + b * FULL_DEPTH)
    return out


def step_seconds_per_layer(two_runs: dict[int, dict]) -> float:
    (shallow, first), (deep, second) = two_runs.items()
    return (second["seconds_per_step"] - first["seconds_per_step"]) / (deep - shallow)


def table_row(label: str, depth: str, layers: int, result: dict[str, float], peak: float) -> str:
    flops = matmul_params(layers) * result["tokens_per_s"]
    return (f"| {label} | {depth} | {result['tokens_per_s']:.0f} | {4 * flops / peak:.1%} | {6 * flops / peak:.1%} | "
            f"{result['peak_allocated_gib']:.2f} | {result['peak_reserved_gib']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path)
    args = parser.parse_args()
    peak = float(re.search(r"peak: ([\d.]+) TFLOP/s", (args.log_dir / "matmul_peak.txt").read_text())[1]) * 1e12
    rows = ["| recipe | text layers | tokens/s | MFU | HFU | peak allocated GiB | peak reserved GiB |",
            "|---|---|---|---|---|---|---|"]
    full: dict[str, dict] = {}
    for recipe, label in RECIPES.items():
        runs = load(args.log_dir, recipe)
        rows += [table_row(label, str(layers), layers, run, peak) for layers, run in runs.items()]
        if len(runs) >= 2:
            full[recipe] = extrapolate(runs)
            rows.append(table_row(label, f"**{FULL_DEPTH} (fit)**", FULL_DEPTH, full[recipe], peak))
    print(f"bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s; "
          f"N at {FULL_DEPTH} layers: {matmul_params(FULL_DEPTH) / 1e9:.2f} B\n")
    print("\n".join(rows))
    for recipe, e in full.items():
        print(f"\n{RECIPES[recipe]}: {e['per_layer_allocated_gib']:.3f} GiB allocated and "
              f"{e['per_layer_reserved_gib']:.3f} GiB reserved per layer")
    if len(full) == 2:
        ours, trl = full["ours"], full["trl"]
        print(f"\nat {FULL_DEPTH} layers: tokens/s ours / TRL = {ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x; "
              f"peak reserved ours / TRL = {ours['peak_reserved_gib'] / trl['peak_reserved_gib']:.2f}")
        # The fit is not quite linear (shallow runs carry a fixed overhead): the two deepest runs alone, for scale.
        deepest = {recipe: dict(list(load(args.log_dir, recipe).items())[-2:]) for recipe in RECIPES}
        ours2, trl2 = (extrapolate(deepest[recipe])["tokens_per_s"] for recipe in ("ours", "trl"))
        print(f"from the two deepest depths only: {ours2:.0f} vs {trl2:.0f} tokens/s at {FULL_DEPTH} layers "
              f"({ours2 / trl2:.2f}x); seconds per step added per layer: "
              f"ours {step_seconds_per_layer(deepest['ours']):.4f}, TRL {step_seconds_per_layer(deepest['trl']):.4f}")


if __name__ == "__main__":
    main()
