"""The human-readable side of an evaluation: report.md and its plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from tabulate import tabulate

from contract.outputs import write_text_atomic
from evaluation.scoring import Metrics


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def summary_table(metrics: dict[str, Metrics]) -> str:
    variants = list(metrics)
    rows = [[name, *(pct(metrics[v].headline()[name]) for v in variants)] for name in metrics[variants[0]].headline()]
    rows.append(["exact match, 95 % interval",
                 *(f"{pct(metrics[v].exact_match_ci95[0])} – {pct(metrics[v].exact_match_ci95[1])}" for v in variants)])
    speed = [("examples/s", "examples_per_s", "{:.2f}"), ("generated tokens/s", "tokens_per_s", "{:.1f}")]
    rows += [[label, *(fmt.format(metrics[v].speed[key]) for v in variants)] for label, key, fmt in speed]
    rows.append(["batch latency p50 / p90 / p99 (s)",
                 *(" / ".join(f"{metrics[v].speed['latency_s'][p]:.2f}" for p in ("p50", "p90", "p99"))
                   for v in variants)])
    return tabulate(rows, headers=["metric", *variants], tablefmt="github")


def top_confusions(confusion: dict[str, dict[str, int]], count: int = 10) -> list[tuple[str, str, int]]:
    pairs = [(gold, guess, n) for gold, row in confusion.items() for guess, n in row.items() if gold != guess]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:count]


def plot_per_class(per_class: dict[str, float], path: Path) -> None:
    labels = sorted(per_class, key=per_class.get)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(labels))))
    ax.barh(labels, [per_class[label] for label in labels], color="#4C72B0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: dict[str, dict[str, int]], path: Path) -> None:
    gold = sorted(confusion)
    guessed = sorted({g for row in confusion.values() for g in row} - set(gold))
    columns = gold + guessed
    matrix = [[confusion[g].get(c, 0) / max(1, sum(confusion[g].values())) for c in columns] for g in gold]
    size = max(5, 0.16 * len(columns))
    fig, ax = plt.subplots(figsize=(size, size * len(gold) / len(columns) + 1))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=5)
    ax.set_yticks(range(len(gold)), gold, fontsize=5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    fig.tight_layout()
    fig.savefig(path, dpi=140)
    plt.close(fig)


def training_log(output_dir: Path) -> list[dict[str, Any]]:
    """Axolotl/transformers log history from the newest checkpoint of the run, if there is one."""
    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text())["log_history"] if states else []


def plot_loss(history: list[dict[str, Any]], path: Path) -> bool:
    train = [(e["step"], e["loss"]) for e in history if "loss" in e]
    evaluation = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    if not train:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*train, strict=True), label="train loss")
    if evaluation:
        ax.plot(*zip(*evaluation, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out: Path, title: str, context: dict[str, str], metrics: dict[str, Metrics],
                 failures: dict[str, list[dict]], history: list[dict[str, Any]]) -> Path:
    first = metrics[next(iter(metrics))]
    name = next(iter(metrics))
    plot_per_class(first.per_class_accuracy, out / "per_class_accuracy.png")
    plot_confusion(first.confusion, out / "confusion.png")
    has_loss = plot_loss(history, out / "training_loss.png")
    parts = [f"# {title}", "", *[f"- **{k}**: {v}" for k, v in context.items()], "",
             "## Summary", "", summary_table(metrics), ""]
    parts += [f"## `{first.main_label}` per class ({name})", "", "![per-class accuracy](per_class_accuracy.png)", "",
              "Most frequent confusions (reference → predicted):", "",
              tabulate(top_confusions(first.confusion), headers=["reference", "predicted", "count"],
                       tablefmt="github"), "",
              "![confusion matrix](confusion.png)", ""]
    for field, extraction in first.extraction.items():
        rows = [[kind, pct(m.precision), pct(m.recall), pct(m.f1), m.support]
                for kind, m in sorted(extraction.per_type.items(), key=lambda kv: -kv[1].support)]
        parts += [f"## `{field}` by type ({name})", "",
                  tabulate(rows, headers=["type", "precision", "recall", "F1", "support"], tablefmt="github"), ""]
    if has_loss:
        parts += ["## Training loss", "", "![training loss](training_loss.png)", ""]
    for variant, examples in failures.items():
        if examples:
            parts += [f"## Examples that failed the schema ({variant}, first {len(examples)})", ""]
            parts += [f"- `{e['query']}` → `{e['output'][:200]}` — {(e['json_error'] or e['schema_error'])[:160]}"
                      for e in examples]
            parts.append("")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path
