"""What grounded values change: the same model, the same eval examples, constrained decoding with and without
`x-copy-from-query` enforced, one run after the other, side by side.

    python -m experiments.grounding --model outputs/quickstart-cpu/merged --limit 100 \
        --out experiments/results/grounding

Runs `python -m evaluation` twice (runs `grounding-on` / `grounding-off` under --reports-dir) and prints the headline
metrics and examples/s of both; writes `comparison.json` beside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from contract.config import REPO_ROOT, resolve
from evaluation.scoring import Metrics

RUNS = {"grounding-on": "--grounded", "grounding-off": "--no-grounded"}
VARIANT = "tuned+constrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="merged model dir")
    parser.add_argument("--limit", type=int, default=100, help="first N eval examples")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = resolve(args.out)
    results = {}
    for run, flag in RUNS.items():
        subprocess.run([sys.executable, "-m", "evaluation", "--model", str(args.model), "--variants", VARIANT,
                        "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--reports-dir", str(out),
                        "--run", run, "--fresh", flag], cwd=REPO_ROOT, check=True)
        metrics = json.loads((out / run / "metrics.json").read_text())["variants"][VARIANT]
        results[run] = {**Metrics.from_json(metrics).headline(),
                        "examples/s": metrics["speed"]["examples_per_s"]}
    print(f"{'':32}" + "".join(f"{run:>16}" for run in results))
    for name in results["grounding-on"]:
        on, off = results["grounding-on"][name], results["grounding-off"][name]
        shown = (lambda v: f"{v:16.2f}") if name == "examples/s" else (lambda v: f"{v:16.1%}")
        print(f"{name:32}{shown(on)}{shown(off)}")
    comparison = {"model": str(args.model), "examples": args.limit, "variant": VARIANT, "results": results,
                  "command": "python -m experiments.grounding " + " ".join(sys.argv[1:])}
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")


if __name__ == "__main__":
    main()
