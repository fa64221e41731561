"""Fit the 27B measurements of experiments/gpu_27b.sh linearly in depth and extrapolate to the full 62 layers.

Per recipe variant and depth L the step timer gives peak memory and tokens/s. Memory and seconds per token are
each fitted as a + b*L (least squares): every layer adds the same weights, adapters, checkpointed activations and
work, while the embeddings, vision tower, logits/loss and optimizer overheads are the fixed part.
MFU counts model FLOPs = 4 x N per token (forward 2N, backward input-gradients 2N; the frozen 4-bit base has no
weight gradients; N = the matmul weights a token meets, output layer included, experiments.gemma27b_geometry), over
the GPU's measured bf16 matmul peak (experiments.matmul_peak). HFU also counts the recomputed forward of gradient
checkpointing (6 x N). Attention-score FLOPs (<1 % at these lengths) are left out of both.

Files read from the log dir: `ours-<variant>-<layers>.json` and `trl-<layers>.json` (speed, each run alone on
the GPU), `mem-<ours|trl>-<sequence_len>-<layers>.json` (memory at long rows), `profile.json`, `gpu.txt`.

    python -m experiments.extrapolate_27b <gpu_27b.sh's log dir>     # prints summary.md, writes summary.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from experiments.gemma27b_geometry import matmul_params

FULL_DEPTH = 62
CAP_GIB = 24.0  # an RTX 4090
LABELS = {"ours": "ours (Axolotl recipe)", "trl": "plain TRL SFTTrainer"}


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares a, b of value = a + b * layers."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def logged_peaks(log: str) -> dict[str, float]:
    """The largest of Axolotl's per-log memory figures in a run's log (each covers the steps since the log
    before: Axolotl resets torch's peaks at every log). The step timer of runs before 2026-12-03 read torch's
    peak once, at the end, so it saw only the steps after the last log; these lines recover the whole run."""
    found = {}
    for key, pattern in (("peak_allocated_gib", "max_allocated"), ("peak_reserved_gib", "device_reserved")):
        values = [float(v) for v in re.findall(rf"'memory/{pattern} \(GiB\)': '([\d.]+)'", log)]
        if values:
            found[key] = max(values)
    return found


def load(log_dir: Path, prefix: str) -> dict[int, dict]:
    """{layers: step timer result} of the files `<prefix>-<layers>.json` that measured something; peak memory
    is the larger of the step timer's and Axolotl's own log lines (`<prefix>-<layers>.log`)."""
    runs = {}
    for path in log_dir.glob(f"{prefix}-*.json"):
        name, _, layers = path.stem.rpartition("-")
        result = json.loads(path.read_text())
        if name == prefix and layers.isdigit() and "error" not in result:
            log = path.with_suffix(".log")
            for key, value in (logged_peaks(log.read_text(errors="replace")) if log.exists() else {}).items():
                result[key] = max(result.get(key) or 0.0, value)
            runs[int(layers)] = result
    return dict(sorted(runs.items()))


def extrapolate(runs: dict[int, dict]) -> dict[str, float]:
    out = {}
    for key in ("peak_allocated_gib", "peak_reserved_gib"):
        a, b = fit({layers: run[key] for layers, run in runs.items()})
        out[key], out[key.replace("peak", "per_layer")] = a + b * FULL_DEPTH, b
    a, b = fit({layers: 1 / run["tokens_per_s"] for layers, run in runs.items()})
    out["tokens_per_s"] = 1 / (a + b * FULL_DEPTH)
    if all("examples_per_s" in run for run in runs.values()):
        a, b = fit({layers: 1 / run["examples_per_s"] for layers, run in runs.items()})
        out["examples_per_s"] = 1 / (a + b * FULL_DEPTH)
    return out


def mfu(layers: int, tokens_per_s: float, peak: float, passes: int = 4) -> float:
    return passes * matmul_params(layers) * tokens_per_s / peak


def speed_prefixes(log_dir: Path) -> list[str]:
    """`ours-<variant>` for every variant measured, then `trl`."""
    names = {p.stem.rpartition("-")[0] for p in log_dir.glob("ours-*-*.json")}
    return [*sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]), "trl"]


def sequence_table(log_dir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """{recipe: {sequence_len: the 62-layer fit of its memory runs}}; a length with fewer than two depths
    measured (an out-of-memory run leaves an error) is left out."""
    table: dict[str, dict[int, dict[str, float]]] = {}
    for recipe in LABELS:
        lengths = sorted({int(p.stem.split("-")[2]) for p in log_dir.glob(f"mem-{recipe}-*-*.json")})
        for length in lengths:
            runs = load(log_dir, f"mem-{recipe}-{length}")
            if len(runs) >= 2:
                table.setdefault(recipe, {})[length] = extrapolate(runs)
    return table


def summary(log_dir: Path) -> tuple[dict[str, Any], list[str]]:
    peak = float(re.search(r"peak: ([\d.]+) TFLOP/s", (log_dir / "matmul_peak.txt").read_text())[1]) * 1e12
    lines = [f"bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s; N at {FULL_DEPTH} layers: "
             f"{matmul_params(FULL_DEPTH) / 1e9:.2f} B", "",
             "| recipe | text layers | tokens/s | examples/s | MFU | HFU | peak allocated GiB | peak reserved GiB |",
             "|---|---|---|---|---|---|---|---|"]

    def row(label: str, depth: str, layers: int, r: dict[str, float]) -> str:
        examples = f"{r['examples_per_s']:.2f}" if "examples_per_s" in r else "–"
        used = mfu(layers, r["tokens_per_s"], peak), mfu(layers, r["tokens_per_s"], peak, 6)
        return (f"| {label} | {depth} | {r['tokens_per_s']:.0f} | {examples} | {used[0]:.1%} | {used[1]:.1%} | "
                f"{r['peak_allocated_gib']:.2f} | {r['peak_reserved_gib']:.2f} |")

    full: dict[str, dict[str, float]] = {}
    depths: dict[str, list[int]] = {}
    measured = {prefix: load(log_dir, prefix) for prefix in speed_prefixes(log_dir)}
    for prefix, runs in measured.items():
        label = LABELS["trl"] if prefix == "trl" else f"{LABELS['ours']}, {prefix.removeprefix('ours-')}"
        lines += [row(label, str(layers), layers, run) for layers, run in runs.items()]
        if len(runs) >= 2:
            full[prefix], depths[prefix] = extrapolate(runs), list(runs)
            lines.append(row(label, f"**{FULL_DEPTH} (fit)**", FULL_DEPTH, full[prefix]))
    result: dict[str, Any] = {"hardware": (log_dir / "gpu.txt").read_text().strip() if (log_dir / "gpu.txt").exists()
                              else None, "matmul_peak_tflops": peak / 1e12, "full_depth": FULL_DEPTH,
                              "cap_gib": CAP_GIB, "depths_fitted": depths, "fit_62_layers": full}
    ours = {k: v for k, v in full.items() if k != "trl" and v["peak_reserved_gib"] <= CAP_GIB - 2}
    if ours and "trl" in full:
        best = max(ours, key=lambda k: ours[k]["tokens_per_s"])
        trl = full["trl"]
        result.update({"ours_variant": best, "ours_tokens_per_s": ours[best]["tokens_per_s"],
                       "plain_tokens_per_s": trl["tokens_per_s"],
                       "ratio": ours[best]["tokens_per_s"] / trl["tokens_per_s"],
                       "examples_ratio": (ours[best].get("examples_per_s", 0) / trl["examples_per_s"]
                                          if "examples_per_s" in trl else None),
                       "mfu": mfu(FULL_DEPTH, ours[best]["tokens_per_s"], peak),
                       "plain_mfu": mfu(FULL_DEPTH, trl["tokens_per_s"], peak),
                       "peak_reserved_gib": ours[best]["peak_reserved_gib"],
                       "plain_peak_reserved_gib": trl["peak_reserved_gib"]})
        lines += ["", f"at {FULL_DEPTH} layers, the fastest of ours within {CAP_GIB - 2:.0f} GiB ({best}): "
                  f"{result['ratio']:.2f}x the plain recipe's tokens/s, MFU {result['mfu']:.1%}, "
                  f"{result['peak_reserved_gib']:.1f} GiB reserved"]
    sequences = sequence_table(log_dir)
    if sequences:
        lines += ["", f"Peak reserved GiB at {FULL_DEPTH} layers (fit) against sequence_len, micro-batch 1:", "",
                  "| sequence_len | " + " | ".join(LABELS[r] for r in sequences) + " |",
                  "|---|" + "---|" * len(sequences)]
        lengths = sorted({length for table in sequences.values() for length in table})
        for length in lengths:
            cells = [f"{sequences[r][length]['peak_reserved_gib']:.1f} "
                     f"({sequences[r][length]['per_layer_reserved_gib']:.2f} a layer)" if length in sequences[r]
                     else "–" for r in sequences]
            lines.append(f"| {length} | " + " | ".join(cells) + " |")
        result["max_seq_len_24gib"] = {
            ("ours" if r == "ours" else "plain"): max((n for n, e in t.items() if e["peak_reserved_gib"] <= CAP_GIB),
                                                      default=None) for r, t in sequences.items()}
        result["seq_len_reserved_gib"] = {r: {n: e["peak_reserved_gib"] for n, e in t.items()}
                                          for r, t in sequences.items()}
        lines += ["", f"longest measured sequence_len within {CAP_GIB:.0f} GiB: " + ", ".join(
            f"{k} {v}" for k, v in result["max_seq_len_24gib"].items())]
    if (log_dir / "profile.json").exists():
        profile = json.loads((log_dir / "profile.json").read_text())
        result["profile"] = {"file": "profile.json", **{k: profile[k] for k in ("wall_s", "kernel_s", "shares")}}
        # The profiler slows the CPU side, so its wall time overstates idle: GPU busy is the kernel time of a
        # profiled step over the unprofiled step time of the same run (the deepest depth, largest micro-batch).
        profiled = [p for p in measured if p.startswith("ours-")]
        deepest = measured[profiled[-1]] if profiled else {}
        kernel_per_step = profile["kernel_s"] / profile["profiled_steps"]
        lines += ["", f"Where a step's time goes ({profile['profiled_steps']} profiled steps, "
                  f"{profile['wall_s']:.2f} s under the profiler, {kernel_per_step:.3f} s of kernels a step):", "",
                  "| kind | share of wall time (profiled) | share of kernel time |", "|---|---|---|"]
        lines += [f"| {kind} | {share:.1%} | {share * profile['wall_s'] / profile['kernel_s']:.1%} |"
                  for kind, share in profile["shares"].items() if kind != "idle"]
        if deepest:
            layers, run = max(deepest.items())
            busy = kernel_per_step / run["seconds_per_step"]
            result["profile"] |= {"run": f"{profiled[-1]}-{layers}", "gpu_busy": busy}
            lines += ["", f"GPU busy: {kernel_per_step:.3f} s of kernels in a {run['seconds_per_step']:.3f} s step "
                      f"({profiled[-1]}, {layers} layers, unprofiled): {busy:.0%}"]
    return result, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path)
    args = parser.parse_args()
    result, lines = summary(args.log_dir)
    (args.log_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
