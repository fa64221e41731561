"""Does labeling guidance pay? Issue #28's simulation on the sample, with the shipped recipe, on a GPU.

- Active vs random: for each seed, `--start` random records of the train split are labeled and the rest is the
  unlabeled pool. Each round adds `--step` records, chosen by `python -m labeling.suggest` (the previous round's
  model ranks the pool) or at random, and trains the recipe again; every model is scored on the eval split
  (constrained decoding). Both arms share each seed's start.
- Audit: `--corrupt` of the train split's records get one injected error each (an intent of the same scenario, a
  dropped entity, another entity type, a span shifted by a word; in turn), then `python -m labeling.audit` runs on
  them. The figure: the share of corrupted records among the top 2x as many flagged records. `--corrupt-seed`
  picks other records and errors, to tell a ranking's merit from one draw's luck.
- With `--clean-audit`, the audit also runs on raw_data.json as it is, as `make audit` does (for a hand check).

    python -m experiments.labeling_sim run --out DIR [--seeds 42 7 1] [--parallel 3] [--clean-audit]
    python -m experiments.labeling_sim report DIR --reference experiments/results/270m-quality/final-eval.json

`run` writes DIR/results.json after every model (a lease that ends early keeps what finished), DIR/audit-*.json
(audit-corrupted-seedN.json for --corrupt-seed N) and each run's log in DIR/logs/; models go to --workdir
(outputs/labeling-sim/). `report` prints the tables (mean of the seeds with a 95 % t-interval; suggest minus random
paired by seed) and writes DIR/active-vs-random.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from scipy import stats

from contract.config import REPO_ROOT, PipelineConfig, load_config, run_env
from contract.outputs import jsonl, write_json_atomic
from contract.prompt import system_prompt
from contract.rows import read_rows
from contract.schema import load_schema
from labeling.audit import flagged_records, train_fold

KINDS = ("intent", "dropped-entity", "entity-type", "shifted-span")
METRICS = {"exact match": "exact_match", "intent": "intent", "entity F1": "entities_f1"}


# --- the data ---------------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_split(path: Path) -> list[dict]:
    """{"query", "data"} records from a split's chat rows (`make data`'s train.jsonl / eval.jsonl)."""
    return [{"query": row.query, "data": json.loads(row.answer)} for row in read_rows(path.read_text())]


def corrupt(record: dict, kind: str, intents: Sequence[str], types: Sequence[str], rng: random.Random
            ) -> dict | None:
    """The record with one injected labeling error of `kind`, or None where the kind cannot apply."""
    data = json.loads(json.dumps(record["data"]))
    entities = data.get("entities") or []
    if kind == "intent":
        scenario = data["intent"].split("_")[0]
        near = [i for i in intents if i != data["intent"] and i.split("_")[0] == scenario]
        data["intent"] = rng.choice(near or [i for i in intents if i != data["intent"]])
    elif kind == "dropped-entity" and entities:
        entities.pop(rng.randrange(len(entities)))
    elif kind == "entity-type" and entities:
        entity = rng.choice(entities)
        entity["type"] = rng.choice([t for t in types if t != entity["type"]])
    elif kind == "shifted-span" and entities:
        words = record["query"].split()
        for entity in rng.sample(entities, len(entities)):
            span = entity["value"].split()
            starts = [s for s in range(len(words) - len(span) + 1) if words[s:s + len(span)] == span]
            if not starts:
                continue
            start = starts[0] + (1 if starts[0] + len(span) < len(words) else -1)  # right by a word, else left
            if start >= 0:
                entity["value"] = " ".join(words[start:start + len(span)])
                break
        else:
            return None
    else:
        return None
    return {**record, "data": data}


def corrupted_copy(records: Sequence[dict], share: float, schema: dict, seed: int) -> tuple[list[dict], dict[int, str]]:
    """`records` with round(share * n) of them corrupted, the kinds in turn; and {index: kind} of those."""
    intents = schema["properties"]["intent"]["enum"]
    types = schema["properties"]["entities"]["items"]["properties"]["type"]["enum"]
    rng = random.Random(seed)
    out, changed = list(records), {}
    for i in rng.sample(range(len(records)), len(records)):
        if len(changed) == round(share * len(records)):
            break
        kind = KINDS[len(changed) % len(KINDS)]
        if (bad := corrupt(records[i], kind, intents, types, rng)) is not None and bad["data"] != records[i]["data"]:
            out[i], changed[i] = bad, kind
    return out, changed


def is_certain(issue: dict) -> bool:
    """A value that is not a word of its query: found with no model (`make data` reports them, `make fix-spans` mends
    most) and, on the sample, one of its own errors; every other issue was raised by a held-out model."""
    return issue["margin"] is None


def records_by_kind(corrupted: dict[int, str]) -> dict[str, list[int]]:
    """The corrupted records of each kind of injected error, kinds in name order."""
    return {kind: [i for i, k in corrupted.items() if k == kind] for kind in sorted(set(corrupted.values()))}


def recall_at(flagged: Sequence[int], corrupted: dict[int, str], factor: int = 2) -> dict[str, Any]:
    """Share of the corrupted records among the first factor x len(corrupted) flagged ones, overall and by kind."""
    top = set(flagged[:factor * len(corrupted)])
    by_kind = records_by_kind(corrupted)
    return {"corrupted": len(corrupted), "checked": len(top), "found": len(top & set(corrupted)),
            "recall": len(top & set(corrupted)) / len(corrupted),
            "recall_by_kind": {k: sum(i in top for i in ids) / len(ids) for k, ids in by_kind.items()},
            "recall_all_flagged": len(set(flagged) & set(corrupted)) / len(corrupted), "flagged": len(flagged)}


def ranks_by_kind(flagged: Sequence[int], corrupted: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Where each kind of injected error lands in the flagged order (1 = checked first): how many are flagged at all
    and their median place. A kind flagged but placed low is a ranking problem, not a detection one."""
    place = {index: n for n, index in enumerate(flagged, 1)}
    out = {}
    for kind, ids in records_by_kind(corrupted).items():
        places = [place[i] for i in ids if i in place]
        out[kind] = {"flagged": len(places), "of": len(ids),
                     "median_place": statistics.median(places) if places else None}
    return out


# --- the runs ----------------------------------------------------------------------------------------------------

class Sim:
    """One simulation: the base pipeline, the splits, where results go, and the lock results are written under."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, args.out.absolute()
        self.pipeline = args.pipeline.absolute()
        self.config: PipelineConfig = load_config(self.pipeline)
        self.schema = load_schema(self.config.path("schema_path"))
        self.prompt = system_prompt(self.config)
        self.train, self.eval = read_split(args.train), read_split(args.eval)
        # Random-arm models at once; the suggest arms (each a chain: the critical path) and the audits never wait.
        self.random_slots = threading.Semaphore(args.parallel)
        self.lock, self.results = threading.Lock(), []
        (self.out / "logs").mkdir(parents=True, exist_ok=True)

    def overrides(self, seed: int) -> dict[str, Any]:
        return {"seed": seed, **({"max_steps": self.args.max_steps} if self.args.max_steps else {})}

    def run_pipeline(self, workdir: Path, labeled: Sequence[dict], own_recipe: bool = True) -> Path:
        """workdir/pipeline.yaml: the base settings with raw_data = the labeled records (what suggest skips and audit
        judges), reports in workdir and, with `own_recipe`, the recipe trained in workdir (its model is the run's)."""
        workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(workdir / "labeled.json", list(labeled))
        settings = {**self.config.as_settings(), "raw_data": str(workdir / "labeled.json")}
        if own_recipe:
            settings["recipe"] = str(workdir / "recipe.yaml")
        settings["eval"] = {**settings["eval"], "reports_dir": str(workdir / "reports")}
        (workdir / "pipeline.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        return workdir / "pipeline.yaml"

    def command(self, name: str, args: list[str]) -> None:
        with (self.out / "logs" / f"{name}.log").open("a") as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            subprocess.run([sys.executable, *args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, **run_env()})

    def train_and_score(self, name: str, arm: str, seed: int, labeled: Sequence[dict]) -> Path:
        workdir, started = self.args.workdir.absolute() / name, time.monotonic()
        pipeline = self.run_pipeline(workdir, labeled)
        with self.random_slots if arm == "random" else contextlib.nullcontext():
            train_fold(self.config, self.pipeline, labeled, self.eval, workdir, self.schema, self.prompt,
                       self.overrides(seed))
            shutil.copy(workdir / "train.log", self.out / "logs" / f"{name}.train.log")
            self.command(name, ["-m", "evaluation", "--pipeline", str(pipeline), "--adapter", str(workdir / "model"),
                                "--data", str(workdir / "data/eval.jsonl"), "--run", "sim", "--fresh",
                                "--variants", "tuned+constrained", "--batch-size", str(self.args.batch_size)])
        metrics = json.loads((workdir / "reports/sim/metrics.json").read_text())["variants"]["tuned+constrained"]
        self.record({"name": name, "arm": arm, "seed": seed, "records": len(labeled),
                     "seconds": round(time.monotonic() - started),
                     "exact_match": metrics["exact_match"], "schema_valid": metrics["schema_valid"],
                     **metrics["field_accuracy"],
                     **{f"{k}_f1": e["micro"]["f1"] for k, e in metrics["extraction"].items()}})
        return workdir

    def suggest(self, name: str, model_run: Path, labeled: Sequence[dict], pool: Sequence[dict]) -> list[dict]:
        """The `--step` pool records `python -m labeling.suggest` ranks first, with the model of `model_run`."""
        (model_run / "pool.jsonl").write_text(jsonl([{"query": r["query"]} for r in pool]))
        pipeline = self.run_pipeline(model_run, labeled)
        self.command(name, ["-m", "labeling.suggest", "--pipeline", str(pipeline), "--adapter",
                            str(model_run / "model"), "--input", str(model_run / "pool.jsonl"), "--output",
                            str(model_run / "suggested.jsonl"), "--overwrite", "--count", str(self.args.step),
                            "--batch-size", str(self.args.batch_size)])
        by_query = {}
        for record in pool:
            by_query.setdefault(record["query"], record)
        rows = read_jsonl(model_run / "suggested.jsonl")
        return [by_query[row["query"]] for row in rows]

    def record(self, row: dict) -> None:
        with self.lock:
            self.results.append(row)
            write_json_atomic(self.out / "results.json", self.results)
        print(f"{row['name']}: {row['records']} records, exact {row['exact_match']:.1%}", flush=True)

    def seed(self, seed: int, pool_threads: ThreadPoolExecutor) -> None:
        """Both arms of one seed: random rounds are independent of each other's models; suggest's are a chain."""
        order = random.Random(seed).sample(range(len(self.train)), len(self.train))
        start = [self.train[i] for i in order[:self.args.start]]
        rest = [self.train[i] for i in order[self.args.start:]]
        step, rounds = self.args.step, self.args.rounds
        randoms = [pool_threads.submit(self.train_and_score, f"random-{len(start) + k * step}-s{seed}", "random",
                                       seed, start + rest[:k * step]) for k in range(1, rounds + 1)]
        model = self.train_and_score(f"start-{len(start)}-s{seed}", "start", seed, start)
        labeled, pool = list(start), list(rest)
        for _ in range(rounds):
            picks = self.suggest(f"suggest-after-{len(labeled)}-s{seed}", model, labeled, pool)
            chosen = {id(r) for r in picks}
            labeled, pool = labeled + picks, [r for r in pool if id(r) not in chosen]
            model = self.train_and_score(f"suggest-{len(labeled)}-s{seed}", "suggest", seed, labeled)
        for future in randoms:
            future.result()

    def audit(self, name: str, records: Sequence[dict] | None, corrupted: dict[int, str]) -> None:
        """`python -m labeling.audit` on `records` (None: raw_data.json as it is) and its recall of `corrupted`."""
        workdir = self.args.workdir.absolute() / name
        pipeline = self.pipeline if records is None else self.run_pipeline(workdir, records, own_recipe=False)
        args = ["-m", "labeling.audit", "--pipeline", str(pipeline), "--folds", str(self.args.folds),
                "--parallel", str(self.args.folds), "--out", str(workdir / "audit"), "--batch-size",
                str(self.args.batch_size), *([f"--max-steps={self.args.max_steps}"] if self.args.max_steps else [])]
        self.command(name, args)
        issues = read_jsonl(workdir / "audit/label_issues.jsonl")
        shutil.copy(workdir / "audit/label_issues.jsonl", self.out / f"{name}-issues.jsonl")
        shutil.copy(workdir / "audit/out_of_fold.jsonl", self.out / f"{name}-out-of-fold.jsonl")
        summary = json.loads((workdir / "audit/summary.json").read_text())
        result: dict[str, Any] = {"command": " ".join(args), "records": summary["records"], "summary": summary}
        if corrupted:
            result |= {"corrupt_seed": self.args.corrupt_seed,
                       "injected": {str(i): k for i, k in sorted(corrupted.items())},
                       **recall_at(flagged_records(issues), corrupted)}
        write_json_atomic(self.out / f"{name}.json", result)
        print(f"{name}: {json.dumps({k: v for k, v in result.items() if k not in ('injected', 'summary')})}",
              flush=True)


def run(args: argparse.Namespace) -> int:
    # Many processes share the machine's cores: one thread each for the CPU-side work.
    os.environ.update({"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    sim = Sim(args)
    records, corrupted = corrupted_copy(sim.train, args.corrupt, sim.schema, seed=args.corrupt_seed)
    failures: list[str] = []

    def guarded(name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as err:  # one failed part must not stop the others; the log says why
            failures.append(f"{name}: {err!r}")
            print(f"{name}: FAILED {err!r}", flush=True)

    # Another draw gets its own name, so the draws can sit side by side in one results folder.
    corrupted_name = "audit-corrupted" + (f"-seed{args.corrupt_seed}" if args.corrupt_seed else "")
    audits = [(corrupted_name, records, corrupted)] if args.corrupt else []
    audits += [("audit-clean", None, {})] if args.clean_audit else []
    workers = len(args.seeds) * (args.rounds + 1) + len(audits)
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(guarded, name, lambda a=(name, part, bad): sim.audit(*a)) for name, part, bad in audits]
        jobs += [pool.submit(guarded, f"seed {s}", lambda s=s: sim.seed(s, pool)) for s in args.seeds]
        for job in jobs:
            job.result()
    print("\n".join(["failed:", *failures]) if failures else "all parts done", flush=True)
    return 1 if failures else 0


# --- the report --------------------------------------------------------------------------------------------------

def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (0 for one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def curves(rows: Sequence[dict]) -> dict[str, dict[int, dict[int, dict]]]:
    """arm -> records -> seed -> row; the start belongs to both arms."""
    out: dict[str, dict[int, dict[int, dict]]] = {"suggest": {}, "random": {}}
    for row in rows:
        for arm in (["suggest", "random"] if row["arm"] == "start" else [row["arm"]]):
            out[arm].setdefault(row["records"], {})[row["seed"]] = row
    return out


def report_table(rows: Sequence[dict]) -> str:
    by_arm = curves(rows)
    lines = ["| records | metric | suggest (95 % CI) | random (95 % CI) | suggest − random, paired (95 % CI) | seeds |",
             "|---|---|---|---|---|---|"]
    for records in sorted(set(by_arm["suggest"]) | set(by_arm["random"])):
        for label, key in METRICS.items():
            cells, seeds = [], sorted(set(by_arm["suggest"].get(records, {})) & set(by_arm["random"].get(records, {})))
            for arm in ("suggest", "random"):
                values = [row[key] * 100 for row in by_arm[arm].get(records, {}).values()]
                cells.append("{:.1f} ± {:.1f}".format(*interval(values)) if values else "—")
            diffs = [(by_arm["suggest"][records][s][key] - by_arm["random"][records][s][key]) * 100 for s in seeds]
            cells.append("{:+.1f} ± {:.1f}".format(*interval(diffs)) if diffs else "—")
            lines.append(f"| {records} | {label} | {' | '.join(cells)} | {len(seeds)} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], reference: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (label, key) in zip(axes, [("exact match", "exact_match"), ("entity F1", "entities_f1")], strict=True):
        for arm, points in curves(rows).items():
            xs = sorted(points)
            means = [interval([r[key] * 100 for r in points[x].values()]) for x in xs]
            axis.errorbar(xs, [m for m, _ in means], yerr=[h for _, h in means], marker="o", capsize=4, label=arm)
        if reference and key == "exact_match":
            axis.axhline(statistics.mean(reference), color="grey", linestyle="--",
                         label=f"full train split, mean of {len(reference)} runs")
        axis.set_xlabel("labeled training records")
        axis.set_ylabel(f"{label}, % on the eval split")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("suggest vs random: mean of the seeds, 95 % t-interval")
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def report_curves(results: Path, reference_file: Path | None) -> None:
    """The active-vs-random table and plot, beside the full train split's exact match where given."""
    rows = json.loads(results.read_text())
    print(report_table(rows))
    reference: list[float] = []
    if reference_file:
        finals = [r for r in json.loads(reference_file.read_text()) if r["name"].startswith("final-")]
        reference = [r["tuned+constrained"]["exact_match"] * 100 for r in finals]
        print(f"\nfull train split ({finals[0]['train_records']} records), exact match: "
              + ", ".join(f"{v:.1f}" for v in reference))
    plot(rows, reference, results.parent / "active-vs-random.png")
    print(f"\nplot -> {results.parent / 'active-vs-random.png'}")


def report_audit(audit: Path) -> None:
    """An audit's recall; for a corrupted copy also the certain records among the checked, the model's flags alone,
    where each kind of injected error is placed and how many records share a dropped entity's flag."""
    result = json.loads(audit.read_text())
    print(f"\n{audit.stem}: " + json.dumps({k: v for k, v in result.items() if k not in ("injected", "summary")}))
    if "injected" not in result:
        return
    issues = read_jsonl(audit.with_name(f"{audit.stem}-issues.jsonl"))
    corrupted = {int(i): kind for i, kind in result["injected"].items()}
    certain = {issue["index"] for issue in issues if is_certain(issue)}
    order = flagged_records(issues)
    checked = set(order[:result["checked"]])
    print(f"{audit.stem}: {len(certain & checked)} of the {len(checked)} checked records have a value not in "
          f"their query ({len(certain & checked & set(corrupted))} of them injected)")
    judged = [issue for issue in issues if not is_certain(issue)]
    print(f"{audit.stem}, the model's flags alone: " + json.dumps(recall_at(flagged_records(judged), corrupted)))
    print(f"{audit.stem}, where the injected errors are placed: "
          + json.dumps(ranks_by_kind(order, corrupted)))
    unlabeled = {issue["index"] for issue in issues if issue["kind"] == "not-labeled"}
    dropped = set(records_by_kind(corrupted).get("dropped-entity", []))
    print(f"{audit.stem}: {len(unlabeled)} records have an item the model finds and the label lacks "
          f"({len(unlabeled & dropped)} of them a dropped entity)")


def report(args: argparse.Namespace) -> int:
    """What DIR holds: the curves where active-vs-random ran (results.json), every audit-*.json."""
    if (args.dir / "results.json").exists():
        report_curves(args.dir / "results.json", args.reference)
    for audit in sorted(args.dir.glob("audit-*.json")):
        report_audit(audit)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("run", help="train, suggest, audit and score")
    sim.add_argument("--out", type=Path, required=True)
    sim.add_argument("--workdir", type=Path, default=REPO_ROOT / "outputs/labeling-sim", help="models and data")
    sim.add_argument("--pipeline", type=Path, default=REPO_ROOT / "pipeline.yaml")
    sim.add_argument("--train", type=Path, default=REPO_ROOT / "data/processed/train.jsonl")
    sim.add_argument("--eval", type=Path, default=REPO_ROOT / "data/processed/eval.jsonl")
    sim.add_argument("--seeds", type=int, nargs="*", default=[42, 7, 1],
                     help="seeds of the active-vs-random part; none (`--seeds`) runs the audits alone")
    sim.add_argument("--start", type=int, default=500)
    sim.add_argument("--step", type=int, default=500)
    sim.add_argument("--rounds", type=int, default=2)
    sim.add_argument("--corrupt", type=float, default=0.05, help="share of train records given an error (0: no audit)")
    sim.add_argument("--corrupt-seed", type=int, default=0,
                     help="which records get which error: another seed tests a ranking chosen on the first")
    sim.add_argument("--folds", type=int, default=5)
    sim.add_argument("--clean-audit", action="store_true", help="also audit raw_data.json as it is")
    sim.add_argument("--parallel", type=int, default=3, help="random-arm models training at once")
    sim.add_argument("--batch-size", type=int, default=128, help="decoding batch")
    sim.add_argument("--max-steps", type=int, help="cap every training (a CPU check of the plumbing)")
    show = commands.add_parser("report", help="tables and the plot from a run's DIR")
    show.add_argument("dir", type=Path)
    show.add_argument("--reference", type=Path, help="a sweep's results.json with final-* runs (full train split)")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
