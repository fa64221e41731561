"""gpu-27b-full.json from the logs of experiments/gpu_27b_full.sh: per stage of the flagship path at full depth, its
peak GPU memory (reserved, allocated: torch's, every reset folded in), peak host RAM, disk and wall time; training's
tokens/s and MFU; the memory probes; the fitted figures of the reduced-depth runs beside the measured ones; the
270M's merge-dtype and quantized-inference comparison. Prints the tables RESULTS.md quotes.

    python -m experiments.full_depth_27b LOG_DIR [--layers 62] [--out LOG_DIR/gpu-27b-full.json]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from contract.config import REPO_ROOT
from experiments.gemma27b_geometry import matmul_params

FITTED = REPO_ROOT / "experiments/results/27b-fitted/summary.json"
STAGES = ("build", "train", "merge", "eval", "eval-merged", "predict")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def stage_peaks(log: Path, stage: str) -> dict[str, float | None]:
    """The largest peak of each kind over the stage's processes (make's own Python helpers included)."""
    records = [json.loads(p.read_text()) for p in sorted((log / "peaks" / stage).glob("*.json"))]
    keys = ("peak_reserved_gib", "peak_allocated_gib", "peak_rss_gib", "peak_anon_rss_gib")
    return {key: round(max(r[key] for r in records), 2) if records else None for key in keys}


def stage_records(log: Path) -> dict[str, dict[str, Any]]:
    """Wall time and exit status by stage (the last run of each)."""
    lines = (log / "stages.jsonl").read_text().splitlines() if (log / "stages.jsonl").exists() else []
    return {row["stage"]: row for row in map(json.loads, lines)}


def disk_bytes(log: Path, name: str) -> int | None:
    path = log / f"{name}-bytes.txt"
    return int(path.read_text().split()[0]) if path.exists() and path.read_text().strip() else None


def matmul_peak(log: Path) -> float | None:
    text = (log / "matmul-peak.txt").read_text() if (log / "matmul-peak.txt").exists() else ""
    found = re.search(r"peak: (\d+) TFLOP/s", text)
    return float(found.group(1)) if found else None


def eval_summary(log: Path, run: str) -> dict[str, Any] | None:
    metrics = read_json(log / "reports" / run / "metrics.json")
    if metrics is None:
        return None
    variant = metrics["variants"]["tuned+constrained"]
    return {"examples": variant["examples"], "schema_valid": variant["schema_valid"],
            "examples_per_s": round(variant["speed"]["examples_per_s"], 2), "model": metrics["context"]["models"]}


def answers(log: Path, run: str) -> list[dict] | None:
    path = log / "reports" / run / "predictions-tuned+constrained.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else None


def comparison_270m(log: Path) -> dict[str, Any]:
    """Each 270M variant against the full-precision path (fp32 merge, served in bf16): same answers, exact match."""
    reference = answers(log, "270m-fp32")
    proofs = {dtype: read_json(log / f"270m-merge-{dtype}-proof.json") for dtype in ("fp32", "bf16")}
    result: dict[str, Any] = {"merge_proofs": proofs}
    for run in ("270m-fp32", "270m-bf16", "270m-nf4-merged", "270m-nf4-adapter"):
        rows = answers(log, run)
        if rows is None or reference is None:
            continue
        same = sum(a["output"] == b["output"] for a, b in zip(rows, reference, strict=True))
        result[run] = {"exact_match": sum(r["exact_match"] for r in rows) / len(rows),
                       "same_answer_as_fp32": same / len(rows), **(eval_summary(log, run) or {})}
    for dtype in ("fp32", "bf16"):
        proof = result["merge_proofs"][dtype]
        if proof:
            proofs[dtype] = {"dtype": proof["dtype"], "matrix_delta_error": proof["matrices"]["delta_error"],
                             "logits": proof["logits"], "passed": proof["passed"]}
    return result


def summarize(log: Path, layers: int) -> dict[str, Any]:
    records = stage_records(log)
    stages: dict[str, Any] = {}
    for name in STAGES:
        if name in records:
            stages[name] = {"seconds": round(records[name]["seconds"], 1), "status": records[name]["status"],
                            **stage_peaks(log, name)}
    timer = read_json(log / "train-timer.json") or {}
    peak = matmul_peak(log)
    if "train" in stages and "tokens_per_s" in timer:
        stages["train"].update({
            "tokens_per_s": round(timer["tokens_per_s"], 1), "examples_per_s": round(timer["examples_per_s"], 2),
            "seconds_per_step": round(timer["seconds_per_step"], 3), "measured_steps": timer["measured_steps"],
            "load_peak_reserved_gib": round(timer["load_peak_reserved_gib"], 2),
            "step_peak_reserved_gib": round(timer["step_peak_reserved_gib"], 2),
            "load_peak_allocated_gib": round(timer["load_peak_allocated_gib"], 2),
            "step_peak_allocated_gib": round(timer["step_peak_allocated_gib"], 2),
            "mfu": round(4 * matmul_params(layers) * timer["tokens_per_s"] / (peak * 1e12), 4) if peak else None,
        })
    for name, run in (("eval", "g27"), ("eval-merged", "g27-merged")):
        if name in stages and (found := eval_summary(log, run)):
            stages[name].update(found)
    if "merge" in stages and (proof := read_json(log / "g27-merge-proof.json")):
        stages["merge"].update({"proof_passed": proof["passed"], "dtype": proof["dtype"],
                                "matrices": proof["matrices"], "logits": proof["logits"]})
    if "predict" in stages and (log / "predict-g27.jsonl").exists():
        rows = [json.loads(line) for line in (log / "predict-g27.jsonl").read_text().splitlines()]
        valid = sum(r["schema_valid"] for r in rows)
        stages["predict"].update({"queries": len(rows), "schema_valid": valid / len(rows)})
    for name, key in (("build", "standin"), ("train", "adapter"), ("merge", "merged")):
        if name in stages:
            stages[name]["disk_bytes"] = disk_bytes(log, key)
    probes = {}
    for name, row in sorted(records.items()):
        if name.startswith("probe-"):
            probe_timer = read_json(log / f"{name}-timer.json") or {}
            probes[name] = {"fits": row["status"] == 0, **stage_peaks(log, name),
                            **{k: round(v, 2) for k, v in probe_timer.items()
                               if k in ("step_peak_reserved_gib", "load_peak_reserved_gib", "tokens_per_s")}}
    fitted = read_json(FITTED) or {}
    return {
        "hardware": (log / "gpu.txt").read_text().strip() if (log / "gpu.txt").exists() else None,
        "layers": layers, "fitted": False, "cap_gib": 24, "matmul_peak_tflops": peak,
        "stages": stages, "probes": probes,
        "fitted_at_62_layers": {"from": "experiments/results/27b-fitted/summary.json (8 and 16 layers)",
                                **(fitted.get("fit_62_layers", {}).get("ours-mb16", {})),
                                "mfu": fitted.get("mfu"), "max_seq_len_24gib": fitted.get("max_seq_len_24gib")},
        "270m": comparison_270m(log),
    }


def table(result: dict[str, Any]) -> str:
    rows = ["| stage | seconds | peak GPU reserved GiB | peak GPU allocated GiB | peak RSS GiB | peak own RSS GiB | "
            "disk GB |", "|---|---|---|---|---|---|---|"]
    for name, s in result["stages"].items():
        disk = f"{s['disk_bytes'] / 1e9:.1f}" if s.get("disk_bytes") else ""
        rows.append(f"| {name}{'' if s['status'] == 0 else ' (FAILED)'} | {s['seconds']} | {s['peak_reserved_gib']} | "
                    f"{s['peak_allocated_gib']} | {s['peak_rss_gib']} | {s['peak_anon_rss_gib']} | {disk} |")
    rows += ["", "| probe | fits 24 GiB | peak GPU reserved GiB |", "|---|---|---|"]
    rows += [f"| {name} | {p['fits']} | {p['peak_reserved_gib']} |" for name, p in result["probes"].items()]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("--layers", type=int, default=62)
    parser.add_argument("--out", type=Path, help="default: LOG/gpu-27b-full.json")
    args = parser.parse_args()
    result = summarize(args.log, args.layers)
    (args.out or args.log / "gpu-27b-full.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(json.dumps({k: v for k, v in result["stages"].get("train", {}).items()}, indent=1))
    print(json.dumps(result["270m"], indent=1)[:3000])


if __name__ == "__main__":
    main()
