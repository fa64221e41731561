"""The learning curve from the sweep's results: quality against the number of labelled training records, each
point the mean of its seeds (scored on the eval split, constrained decoding). Prints a table and writes a plot.

    python -m experiments.learning_curve experiments/results/270m-quality/dev-sweep.json \
        --plot experiments/results/270m-quality/learning-curve.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tabulate import tabulate

METRICS = {"exact match": "exact_match", "intent": "intent_accuracy", "entity F1": "entities_f1"}
VARIANT = "tuned+constrained"


def curve(rows: list[dict]) -> dict[int, dict[str, list[float]]]:
    """records -> metric -> one value per seed, from the `curve-*` experiments."""
    points: dict[int, dict[str, list[float]]] = {}
    for row in rows:
        if not row["name"].startswith("curve-") or VARIANT not in row:
            continue
        values = points.setdefault(row["train_records"], {name: [] for name in METRICS})
        for name, key in METRICS.items():
            values[name].append(row[VARIANT][key])
    return dict(sorted(points.items()))


def table(points: dict[int, dict[str, list[float]]]) -> str:
    lines = [[records, len(next(iter(values.values())))]
             + [f"{statistics.mean(v):.1%} ({', '.join(f'{x:.1%}' for x in v)})" for v in values.values()]
             for records, values in points.items()]
    return tabulate(lines, headers=["train records", "seeds", *(f"{m} (each seed)" for m in METRICS)],
                    tablefmt="github")


def plot(points: dict[int, dict[str, list[float]]], out: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    records = list(points)
    for name in METRICS:
        means = [statistics.mean(points[r][name]) * 100 for r in records]
        (line,) = axis.plot(records, means, marker="o", label=name)
        for r in records:  # each seed, faint, in its metric's colour
            axis.scatter([r] * len(points[r][name]), [v * 100 for v in points[r][name]], s=10, alpha=0.4,
                         color=line.get_color())
    axis.set_xscale("log")
    axis.set_xticks(records, [str(r) for r in records])
    axis.set_xlabel("labelled training records (log scale)")
    axis.set_ylabel("% on the eval split (constrained)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = json.loads(args.results.read_text())
    points = curve(rows)
    if not points:
        parser.error(f"{args.results}: no curve-* experiments")
    print(table(points))
    recipe = next(r["recipe"] for r in rows if r["name"].startswith("curve-"))
    seeds = max(len(values["exact match"]) for values in points.values())
    adapter = f"LoRA r{recipe['lora_r']}" if recipe.get("adapter") else "full fine-tune"
    title = f"{Path(recipe['base_model']).name}, {adapter}, {recipe['num_epochs']} epochs: mean of {seeds} seeds"
    plot(points, args.plot, title)
    print(f"plot -> {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
