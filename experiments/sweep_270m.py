"""Run the recipe experiments of experiments/experiments_270m.yaml: each one is prepared, trained with Axolotl and
scored by our evaluation, exactly as `make data train eval` would, in outputs/sweep/<name>/. Several run at
once on one GPU (a 270M model leaves most of an H100 idle). Prints a table; writes it, the raw numbers and each
run's settings to --log-dir.

    python -m experiments.sweep_270m --parallel 6 [names...]

Selection without peeking: with `select_on: dev` (the default) an experiment trains on the train split minus a
stratified tenth of it (dev) and is scored on dev; only the winner is then judged on the eval split.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from contract.config import OFFLINE_ENV, REPO_ROOT, load_config, resolve
from contract.rows import read_rows
from contract.schema import resolve_pointer
from preprocess.split import stratified_split
from training.recipes import load_recipe, recipe_variant

SWEEP_DIR = REPO_ROOT / "outputs/sweep"
DEV_FRACTION = 0.1


@dataclass(frozen=True)
class Experiment:
    name: str
    what: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train_records: int | None = None  # learning curve: a random subset of this many training examples
    seed: int = 42  # of the subset and of training
    system_prompt: str | None = None
    schema_order: list[str] | None = None  # answer format: top-level keys in this order
    eval_on: str = "dev"  # "dev" (a tenth of the train split) or "eval" (the held-out split)
    variants: str = "tuned,tuned+constrained"


def load_experiments(path: Path) -> tuple[dict, list[Experiment]]:
    """The named experiments, the learning curve's (`curve-<records>-s<seed>`, scored on the eval split) and the
    final runs (`final-s<seed>`: the recipe as shipped, on the whole train split, scored on eval)."""
    spec = yaml.safe_load(path.read_text())
    experiments = [Experiment(name, **(body or {})) for name, body in spec["experiments"].items()]
    curve = spec.get("learning_curve") or {}
    for records in curve.get("train_records", []):
        for seed in curve.get("seeds", []):
            experiments.append(Experiment(f"curve-{records or 'all'}-s{seed}", f"{records or 'all'} train records",
                                          train_records=records, seed=seed, eval_on="eval"))
    for seed in spec.get("final_seeds", []):
        experiments.append(Experiment(f"final-s{seed}", "the shipped recipe, scored on the eval split", seed=seed,
                                      eval_on="eval", variants="tuned,tuned+constrained,base+constrained"))
    return spec, experiments


def experiment_recipe(base: dict, common: dict, experiment: Experiment, workdir: Path) -> dict:
    return recipe_variant(base, {**common, **experiment.overrides, "seed": experiment.seed},
                          workdir=workdir.relative_to(REPO_ROOT))


def experiment_pipeline(spec: dict, experiment: Experiment, workdir: Path, recipe_file: Path) -> dict:
    settings = load_config(resolve(spec["pipeline"])).as_settings()  # paths absolute: the copy lives in workdir
    if experiment.system_prompt:
        settings["system_prompt"] = str(resolve(experiment.system_prompt))
        settings["allow_prompt_without_schema"] = True
    if experiment.schema_order:
        schema = json.loads(Path(settings["schema"]).read_text())
        schema["properties"] = {key: schema["properties"][key] for key in experiment.schema_order}
        (workdir / "schema.json").write_text(json.dumps(schema, indent=2))
        settings["schema"] = str(workdir / "schema.json")
    settings["recipe"] = str(recipe_file)
    settings["eval"] = {**settings.get("eval", {}), "reports_dir": str(workdir / "reports")}
    return settings


def carve(train_file: Path, eval_file: Path, experiment: Experiment, main_label: str) -> tuple[int, Path]:
    """Hold out dev from the train split (scored instead of eval), then keep `train_records` of the rest."""
    lines = train_file.read_text().splitlines(keepends=True)
    target = eval_file
    if experiment.eval_on == "dev":
        labels = [str(resolve_pointer(json.loads(e.answer), main_label)) for e in read_rows("".join(lines))]
        keep, dev = stratified_split(labels, DEV_FRACTION, seed=0)  # one dev split for every experiment
        target = train_file.with_name("dev.jsonl")
        target.write_text("".join(lines[i] for i in dev))
        lines = [lines[i] for i in sorted(keep)]
    if experiment.train_records:
        lines = [lines[i] for i in sorted(random.Random(experiment.seed).sample(range(len(lines)),
                                                                               experiment.train_records))]
    train_file.write_text("".join(lines))
    return len(lines), target


def run(experiment: Experiment, spec: dict, eval_args: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    workdir = SWEEP_DIR / experiment.name
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    recipe = experiment_recipe(load_recipe(spec["recipe"]), {**spec.get("common", {}), **extra}, experiment, workdir)
    recipe_file, pipeline_file, log_path = workdir / "recipe.yaml", workdir / "pipeline.yaml", workdir / "log.txt"
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    settings = experiment_pipeline(spec, experiment, workdir, recipe_file)
    pipeline_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    py, stage = sys.executable, ["--pipeline", str(pipeline_file)]
    model = REPO_ROOT / recipe["output_dir"]
    env = {**os.environ, **OFFLINE_ENV}
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def step(name: str, command: list[str]) -> None:
        t0 = time.monotonic()
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
        seconds[name] = round(time.monotonic() - t0, 1)

    log_path.write_text("")
    step("data", [py, "-m", "preprocess", *stage])
    train_records, scored_on = carve(workdir / "data/train.jsonl", workdir / "data/eval.jsonl", experiment,
                                     settings["main_label"])
    step("train", [py, "-m", "training", *stage])
    tuned = ["--adapter", str(model)] if recipe.get("adapter") else ["--model", str(model)]
    step("eval", [py, "-m", "evaluation", *stage, *tuned, "--data", str(scored_on), "--run", "sweep", "--fresh",
                  "--variants", experiment.variants, *eval_args])
    metrics = json.loads((workdir / "reports/sweep/metrics.json").read_text())["variants"]
    result = {"name": experiment.name, "what": experiment.what, "scored_on": experiment.eval_on,
              "train_records": train_records, "seed": experiment.seed, "wall_s": round(time.monotonic() - started),
              "seconds": seconds, "recipe": recipe, "settings": settings}
    for variant, m in metrics.items():
        result[variant] = {"exact_match": m["exact_match"], "exact_match_ci95": m["exact_match_ci95"],
                           "schema_valid": m["schema_valid"], **{f"{k}_accuracy": v for k, v in
                                                                  m["field_accuracy"].items()},
                           **{f"{k}_f1": e["micro"]["f1"] for k, e in m["extraction"].items()},
                           "examples_per_s": m["speed"]["examples_per_s"]}
    return result


def table(rows: list[dict[str, Any]], variant: str) -> str:
    lines = []
    for row in rows:
        m = row.get(variant)
        if not m:
            continue
        lines.append([row["name"], row["what"], row["scored_on"], row["train_records"], row["seconds"].get("train"),
                      f"{m['exact_match']:.1%} ({m['exact_match_ci95'][0]:.0%}–{m['exact_match_ci95'][1]:.0%})",
                      f"{m.get('intent_accuracy', 0):.1%}", f"{m.get('scenario_accuracy', 0):.1%}",
                      f"{m.get('entities_f1', 0):.1%}", f"{m['schema_valid']:.1%}", f"{m['examples_per_s']:.1f}"])
    return tabulate(lines, headers=["experiment", "change", "scored on", "train ex.", "train s",
                                    "exact (95 % CI)", "intent", "scenario", "entity F1", "schema valid",
                                    "eval ex/s"], tablefmt="github")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiments to run, or patterns ('curve-*'); default: all")
    parser.add_argument("--experiments", type=Path, default=REPO_ROOT / "experiments/experiments_270m.yaml")
    parser.add_argument("--parallel", type=int, default=1, help="experiments training at once on the GPU")
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--eval-args", default="--batch-size 128", help="passed to `python -m evaluation`")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help="JSON recipe overrides for every chosen experiment (e.g. the winner's, for final runs)")
    args = parser.parse_args(argv)

    spec, experiments = load_experiments(args.experiments)
    if unknown := [n for n in args.names if not any(fnmatch(e.name, n) for e in experiments)]:
        parser.error(f"unknown experiment(s) {unknown}")
    # In the order the names are given (put the longest first: the pool then finishes together).
    chosen = [e for pattern in args.names or ["*"] for e in experiments if fnmatch(e.name, pattern)]
    chosen = list({e.name: e for e in chosen}.values())  # a name matched twice runs once, where first matched
    args.log_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.log_dir / "results.json"
    merged = {r["name"]: r for r in json.loads(results_file.read_text())} if results_file.exists() else {}
    lock = threading.Lock()

    def record(result: dict[str, Any]) -> None:
        """Written after every experiment: a lease that ends mid-sweep keeps what finished."""
        with lock:
            merged[result["name"]] = result
            results_file.write_text(json.dumps(list(merged.values()), indent=2) + "\n")
            (args.log_dir / "results.md").write_text(tables(list(merged.values())) + "\n")

    def keep_log(name: str) -> None:
        """The run's log beside the results (they come back together), without progress bars."""
        log = SWEEP_DIR / name / "log.txt"
        if log.exists():
            kept = [line for line in log.read_text().splitlines(keepends=True) if "it/s]" not in line]
            (args.log_dir / f"{name}.log").write_text("".join(kept))

    def attempt(experiment: Experiment) -> dict[str, Any] | None:
        try:
            result = run(experiment, spec, args.eval_args.split(), args.overrides)
        except subprocess.CalledProcessError as err:
            print(f"{experiment.name}: FAILED ({' '.join(err.cmd[1:4])}); log: outputs/sweep/{experiment.name}/log.txt",
                  flush=True)
            return None
        finally:
            keep_log(experiment.name)
        record(result)
        m = result.get("tuned+constrained") or result.get("tuned")
        print(f"{experiment.name}: done in {result['wall_s']} s: exact {m['exact_match']:.1%}", flush=True)
        return result

    with ThreadPoolExecutor(args.parallel) as pool:
        results = [r for r in pool.map(attempt, chosen) if r]
    print(tables(list(merged.values())))
    return 0 if len(results) == len(chosen) else 1


def tables(rows: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"### {variant}\n\n{table(rows, variant)}" for variant in ("tuned+constrained", "tuned"))


if __name__ == "__main__":
    sys.exit(main())
