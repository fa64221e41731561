"""Run the recipe experiments of bench/experiments_270m.yaml: each one is prepared, trained with Axolotl and
scored by our evaluation, exactly as `make data train eval` would, in outputs/sweep/<name>/. Several run at
once on one GPU (a 270M model leaves most of an H100 idle). Prints a markdown table; writes it with the raw
numbers to --log-dir.

    python -m bench.sweep_270m --parallel 3 [names...]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from preprocess.config import OFFLINE_ENV, REPO_ROOT

SWEEP_DIR = REPO_ROOT / "outputs/sweep"
METRICS = ("json_valid", "schema_valid", "exact_match")


@dataclass(frozen=True)
class Experiment:
    name: str
    what: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train_fraction: float = 1.0
    system_prompt: str | None = None


def load_experiments(path: Path) -> tuple[dict, list[Experiment]]:
    spec = yaml.safe_load(path.read_text())
    experiments = [Experiment(name, **{"overrides": {}, **(body or {})}) for name, body in spec["experiments"].items()]
    return spec, experiments


def derived_recipe(base: dict, common: dict, experiment: Experiment, workdir: Path) -> dict:
    """The shipped recipe + overrides, reading and writing only under workdir (relative to the repo root)."""
    recipe = {**base, **common, **experiment.overrides}
    recipe = {key: value for key, value in recipe.items() if value is not None}
    rel = workdir.relative_to(REPO_ROOT)
    recipe["datasets"] = [{**base["datasets"][0], "path": f"{rel}/data/train.jsonl"}]
    recipe["test_datasets"] = [{**base["test_datasets"][0], "path": f"{rel}/data/eval.jsonl"}]
    recipe["output_dir"] = f"{rel}/model"
    recipe["dataset_prepared_path"] = f"{rel}/prepared"
    return recipe


def derived_pipeline(base_path: Path, experiment: Experiment) -> dict:
    pipeline = yaml.safe_load(base_path.read_text())
    for key in ("raw_data", "schema", "system_prompt"):  # absolute: the file lives elsewhere
        pipeline[key] = str((base_path.parent / pipeline[key]).resolve())
    if experiment.system_prompt:
        pipeline["system_prompt"] = str(REPO_ROOT / experiment.system_prompt)
    return pipeline


def subsample(jsonl: Path, fraction: float, seed: int) -> int:
    lines = jsonl.read_text().splitlines(keepends=True)
    keep = sorted(random.Random(seed).sample(range(len(lines)), round(len(lines) * fraction)))
    jsonl.write_text("".join(lines[i] for i in keep))
    return len(keep)


def last_logged(log: str, key: str) -> dict[str, str]:
    """The last `{'key': ...}` dict the HF Trainer printed (values are strings in Axolotl's logs)."""
    found = re.findall(r"\{'" + key + r"'[^{}]*\}", log)
    return ast.literal_eval(found[-1]) if found else {}


def run(experiment: Experiment, spec: dict, eval_args: list[str], dry_run: bool = False) -> dict[str, Any]:
    workdir = SWEEP_DIR / experiment.name
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    recipe_path, pipeline_path, log_path = workdir / "recipe.yaml", workdir / "pipeline.yaml", workdir / "log.txt"
    base = yaml.safe_load((REPO_ROOT / spec["recipe"]).read_text())
    recipe = derived_recipe(base, spec.get("common", {}), experiment, workdir)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    pipeline_path.write_text(yaml.safe_dump(derived_pipeline(REPO_ROOT / spec["pipeline"], experiment)))
    py = sys.executable
    stage = ["--config", str(recipe_path), "--pipeline", str(pipeline_path)]
    model = REPO_ROOT / recipe["output_dir"]
    tuned = ["--adapter", str(model)] if recipe.get("adapter") else ["--model", str(model)]
    steps = [
        [py, "-m", "preprocess", *stage],
        [py, "-m", "preprocess.recipe_check", str(recipe_path)],
        [py, "-m", "accelerate.commands.launch", "-m", "axolotl.cli.train", str(recipe_path)],
        [py, "-m", "evaluation", *stage, *tuned, "--run", f"sweep-{experiment.name}", "--fresh", *eval_args],
    ]
    env = {**os.environ, **OFFLINE_ENV}
    if dry_run:  # write the files and let recipe_check (our checks + Axolotl's validation) judge the recipe
        subprocess.run(steps[1], cwd=REPO_ROOT, check=True, env=env)
        return {}
    started = time.monotonic()
    with log_path.open("w") as log:
        for number, command in enumerate(steps):
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
            if number == 0 and experiment.train_fraction < 1:
                kept = subsample(workdir / "data/train.jsonl", experiment.train_fraction, int(recipe["seed"]))
                log.write(f"train split subsampled to {kept} examples\n")
    text = log_path.read_text()
    metrics = json.loads((REPO_ROOT / f"reports/sweep-{experiment.name}/metrics.json").read_text())["tuned"]
    return {
        "name": experiment.name, "what": experiment.what, "wall_s": round(time.monotonic() - started),
        "train_examples": sum(1 for _ in (workdir / "data/train.jsonl").open()),
        "train_runtime_s": float(last_logged(text, "train_runtime").get("train_runtime", "nan")),
        "eval_loss": float(last_logged(text, "eval_loss").get("eval_loss", "nan")),
        **{m: metrics[m] for m in METRICS},
        **{f"{f}_accuracy": a for f, a in metrics["field_accuracy"].items()},
        **{f"{f}_f1": e["micro"]["f1"] for f, e in metrics["extraction"].items()},
    }


def table(rows: list[dict[str, Any]]) -> str:
    columns = [c for c in rows[0] if c not in ("name", "what", "wall_s", "train_examples")]
    head = "| experiment | what | train ex. | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for row in rows:
        cells = [f"{row[c]:.1%}" if c not in ("train_runtime_s", "eval_loss") else f"{row[c]:.3g}" for c in columns]
        lines.append(f"| {row['name']} | {row['what']} | {row['train_examples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiments to run (default: all)")
    parser.add_argument("--experiments", type=Path, default=REPO_ROOT / "bench/experiments_270m.yaml")
    parser.add_argument("--parallel", type=int, default=1, help="experiments training at once on the GPU")
    parser.add_argument("--log-dir", type=Path,
                        default=Path(os.environ.get("OUT", REPO_ROOT / "reports")) / "sweep-270m")
    parser.add_argument("--dry-run", action="store_true", help="only write and validate the derived recipes")
    parser.add_argument("--eval-args", default="--variants tuned --batch-size 64",
                        help="passed to `python -m evaluation`")
    args = parser.parse_args(argv)

    spec, experiments = load_experiments(args.experiments)
    if unknown := set(args.names) - {e.name for e in experiments}:
        parser.error(f"unknown experiment(s) {sorted(unknown)}")
    chosen = [e for e in experiments if not args.names or e.name in args.names]

    if args.dry_run:
        for experiment in chosen:
            run(experiment, spec, [], dry_run=True)
        return 0

    def attempt(experiment: Experiment) -> dict[str, Any] | None:
        try:
            result = run(experiment, spec, args.eval_args.split())
        except subprocess.CalledProcessError as err:
            print(f"{experiment.name}: FAILED ({' '.join(err.cmd[1:4])}); log: outputs/sweep/{experiment.name}/log.txt",
                  flush=True)
            return None
        print(f"{experiment.name}: done in {result['wall_s']} s: exact {result['exact_match']:.1%}", flush=True)
        return result

    with ThreadPoolExecutor(args.parallel) as pool:
        results = [r for r in pool.map(attempt, chosen) if r]
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for experiment in chosen:  # the logs come back with the results (the device tool returns $OUT)
        log = SWEEP_DIR / experiment.name / "log.txt"
        if log.exists():
            kept = [line for line in log.read_text().splitlines(keepends=True) if "it/s]" not in line]
            (args.log_dir / f"{experiment.name}.log").write_text("".join(kept))
    if not results:
        return 1
    (args.log_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.log_dir / "results.md").write_text(table(results) + "\n")
    print(table(results))
    return 0 if len(results) == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
