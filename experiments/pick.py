"""Decisions the GPU session takes from the sweep's results, by rules written down here (the README quotes them).

    python -m experiments.pick prompt [results.json]   # the prompt to ship: path
    python -m experiments.pick recipe [results.json]   # the winning experiment's recipe overrides: JSON

prompt: the cheapest prompt (fewest tokens) whose dev exact match (constrained) is within MARGIN of the best.
recipe: among the shipped recipe (the chosen prompt's run) and the experiments that change only recipe keys, the
best dev exact match (constrained); ties go to the shipped recipe, then to the earlier-listed experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from contract.config import REPO_ROOT

MARGIN = 0.02  # two points of exact match: ~3 of the ~165 dev examples, inside the 95 % interval
PROMPT_COST = {"prompt-task": 76, "prompt-labels": 615, "prompt-schema": 690}  # tokens per prompt (README)


def exact(row: dict) -> float:
    return row["tuned+constrained"]["exact_match"]


def pick_prompt(rows: list[dict]) -> str:
    prompts = [r for r in rows if r["name"] in PROMPT_COST and r["scored_on"] == "dev"]
    best = max(map(exact, prompts))
    chosen = min((r for r in prompts if exact(r) >= best - MARGIN), key=lambda r: PROMPT_COST[r["name"]])
    return chosen["settings"]["system_prompt"]


def pick_recipe(rows: list[dict], prompt: str) -> dict:
    spec = yaml.safe_load((REPO_ROOT / "experiments/experiments_270m.yaml").read_text())
    shipped = [r for r in rows if r["name"] in PROMPT_COST and r["settings"]["system_prompt"] == prompt]
    changes = [r for r in rows if r["scored_on"] == "dev" and spec["experiments"].get(r["name"], {}).get("overrides")
               and not spec["experiments"][r["name"]].get("schema_order")]
    winner = max(shipped + changes, key=exact)  # max keeps the first of equals
    overrides = spec["experiments"].get(winner["name"], {}).get("overrides", {}) if winner not in shipped else {}
    return {"experiment": winner["name"], "dev_exact_match": exact(winner), "overrides": overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["prompt", "recipe"])
    parser.add_argument("results", type=Path, help="a sweep's results.json")
    args = parser.parse_args()
    rows = json.loads(args.results.read_text())
    if args.what == "prompt":
        print(pick_prompt(rows))
        return
    current = yaml.safe_load((REPO_ROOT / "pipeline.yaml").read_text())["system_prompt"]
    choice = pick_recipe(rows, current)
    print(f"winner: {choice}", file=sys.stderr)
    print(json.dumps(choice["overrides"]))


if __name__ == "__main__":
    main()
