"""Which labels in raw_data.json are likely wrong, by cross-validation: k models, each trained by `python -m training`
on the other folds, judge the records they never saw.

    python -m labeling.audit [--folds 5] [--parallel 1] [--max-steps N] [--out reports/audit]

- Closed label sets (`enum` fields at the top of the answer, e.g. scenario and intent): for each held-out record, the
  model's probability of every label value (the whole answer with that value, teacher-forced), then confident
  learning (cleanlab's `find_label_issues` on these out-of-fold probabilities) names the records whose given label
  the model finds unlikely against what it believes.
- Extracted lists (e.g. entities): the held-out record's constrained answer against the given items: an item of the
  same value with another type, a value that overlaps a given one (a shifted span), an item the model does not find,
  or one it finds that is not labeled.
- Values marked x-copy-from-query that are not words of their query (no model needed): grounded decoding can never
  write them.
Every issue has a margin: how many nats more the model believes its answer than the given one (the whole answer for
lists, the label for label sets); confidence is the same as a probability. Writes <out>/label_issues.jsonl (record
index, field, kind, given value, the model's value, confidence, margin; for a value not in its query, the query's
words it differs from only in case or spacing, as `fix`): certain issues first, then by margin (on the sample,
confidence is 1.0 for most disagreements and cannot order them), out_of_fold.jsonl (each record's held-out answer,
margin, given labels and label log-probabilities: another ranking can be tried without retraining) and summary.json.
The cost is k trainings of the recipe: on a CPU, pass --folds 2 --max-steps 60.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.model_selection import StratifiedKFold

from contract.config import PipelineConfig, Recipe, add_stage_arguments, config_from_args, shown
from contract.errors import UserError, run_cli
from contract.outputs import jsonl, write_json_atomic, write_text_atomic
from contract.prompt import answer_text, system_prompt
from contract.records import labeled_records, load_records
from contract.rows import training_row
from contract.schema import (
    canonical_answer,
    load_schema,
    properties,
    resolve_pointer,
    scored_fields,
    ungrounded_values,
    validator,
)
from evaluation.scoring import parse_prediction
from inference.generate import Generator
from inference.likelihood import answer_logprobs
from inference.models import load_model
from training.recipes import load_recipe, recipe_variant


def label_fields(schema: dict) -> dict[str, list[Any]]:
    """Closed label sets at the top of the answer (`/intent`: its enum values)."""
    top = properties(schema, schema)
    return {f"/{key}": list(node["enum"]) for key, node in top.items() if isinstance(node, dict) and "enum" in node}


def list_fields(schema: dict) -> list[str]:
    return [f.pointer for f in scored_fields(schema) if f.kind == "list" and f.pointer.count("/") == 1]


def folds(labels: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """k held-out position lists, stratified on the main label where it can be."""
    with warnings.catch_warnings():  # a label with fewer than k records is spread as well as it can be
        warnings.simplefilter("ignore")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [held.tolist() for _, held in splitter.split(np.zeros(len(labels)), labels)]


def label_issues(labels: Sequence[int], pred_probs: np.ndarray) -> list[int]:
    """Positions whose given label confident learning finds likely wrong, most likely first."""
    from cleanlab.filter import find_label_issues

    return find_label_issues(np.asarray(labels), pred_probs, return_indices_ranked_by="self_confidence").tolist()


def list_disagreements(given: list[dict], model: list[dict]) -> list[tuple[str, Any, Any]]:
    """(kind, given item, model item) where the model's items differ from the given ones (items matched whole, then
    by value, then by overlapping value)."""
    given_left = [g for g in given if g not in model]
    model_left = [m for m in model if m not in given]
    found = []
    for g in list(given_left):
        value = str(g.get("value", ""))
        same = next((m for m in model_left if str(m.get("value", "")) == value), None)
        near = same or next((m for m in model_left if value and str(m.get("value", "")) and (
            value in str(m.get("value")) or str(m.get("value")) in value)), None)
        if near is not None:
            found.append(("type" if same is not None else "span", g, near))
            given_left.remove(g)
            model_left.remove(near)
    found += [("not-found-by-model", g, None) for g in given_left]
    found += [("not-labeled", None, m) for m in model_left]
    return found


def train_fold(config: PipelineConfig, pipeline: Path, train: Sequence[dict], held_out: Sequence[dict],
               workdir: Path, schema: dict, prompt: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe (with `overrides`) trained on `train` in `workdir`, `held_out` as its eval file: a subprocess of
    `python -m training`, as `make train` runs it."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("eval", held_out)):
        rows = [training_row(r["query"], answer_text(r["data"], schema), prompt) for r in part]
        write_text_atomic(workdir / "data" / f"{name}.jsonl", jsonl(rows))
    recipe_file = workdir / "recipe.yaml"
    recipe = recipe_variant(load_recipe(config.path("recipe")),
                            {"evals_per_epoch": 0, "saves_per_epoch": 0, **(overrides or {})}, workdir)
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    command = [sys.executable, "-m", "training", "--pipeline", str(pipeline), "--config", str(recipe_file)]
    with (workdir / "train.log").open("w") as log:  # several folds may train at once: each keeps its own log
        if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise UserError(f"training {shown(workdir)} failed: {shown(workdir / 'train.log')}")
    return Recipe.load(recipe_file)


def judge_fold(recipe: Recipe, records: list[dict], held: Sequence[int], schema: dict, prompt: str,
               config: PipelineConfig) -> tuple[dict[str, dict[int, list[float]]], list[dict], dict[int, dict]]:
    """Out-of-fold label log-probabilities by field and position, the list-field disagreements, and by position the
    model's answer and margin."""
    model, tokenizer = load_model(recipe.base_model, recipe.output_dir, quantize=config.decoding.quantize)
    log_probabilities: dict[str, dict[int, list[float]]] = {}
    for pointer, values in label_fields(schema).items():
        key = pointer.strip("/")
        for i in held:
            data = records[i]["data"]
            candidates = [answer_text({**data, key: value}, schema) for value in values]
            scores = np.array(answer_logprobs(model, tokenizer, prompt, records[i]["query"], candidates))
            top = scores.max()
            log_probabilities.setdefault(pointer, {})[i] = (scores - top - np.log(np.exp(scores - top).sum())).tolist()
    issues: list[dict] = []
    answers: dict[int, dict] = {}  # by position
    lists = list_fields(schema)
    if lists:
        generator = Generator.build(model, tokenizer, prompt, schema, True, config.decoding)
        queries = [records[i]["query"] for i in held]
        check = validator(schema)
        for positions, batch in generator.answer(queries, config.decoding.batch_size):
            for position, answer in zip(positions, batch, strict=True):
                i, parsed = held[position], parse_prediction(answer.text, check)
                answers[i] = {"answer": answer.text, "conforms": parsed.conforms}
                if not parsed.conforms:
                    continue
                given = canonical_answer(records[i]["data"], schema)
                belief = answer_logprobs(model, tokenizer, prompt, records[i]["query"],
                                         [answer.text, answer_text(given, schema)])
                margin = belief[0] - belief[1]  # nats: how much more the model believes its answer
                confidence = (1 + math.tanh(margin / 2)) / 2  # the sigmoid, without overflow at any margin
                answers[i]["margin"] = round(margin, 3)
                for pointer in lists:
                    for kind, given_item, model_item in list_disagreements(
                            resolve_or_empty(given, pointer), resolve_or_empty(parsed.value, pointer)):
                        issues.append({"index": i, "field": pointer.strip("/"), "kind": kind, "given": given_item,
                                       "model": model_item, "confidence": round(confidence, 4),
                                       "margin": round(margin, 3)})
    return log_probabilities, issues, answers


def out_of_fold_rows(index: Sequence[int], records: Sequence[dict],
                     log_probabilities: dict[str, dict[int, list[float]]], answers: dict[int, dict],
                     schema: dict) -> list[dict]:
    """One row per judged record (its raw_data.json position): the held-out model's answer, its margin over the
    given answer, the given labels and the model's log-probability of every label value. What any ranking needs,
    without k new trainings."""
    labels = label_fields(schema)
    rows = []
    for position in sorted(set(answers) | {p for by in log_probabilities.values() for p in by}):
        logs = {pointer.strip("/"): dict(zip(labels[pointer], (round(x, 3) for x in by[position]), strict=True))
                for pointer, by in log_probabilities.items() if position in by}
        given = {pointer.strip("/"): resolve_pointer(records[position]["data"], pointer) for pointer in labels}
        rows.append({"index": index[position], **answers.get(position, {}), "given_labels": given,
                     "label_log_probabilities": logs})
    return rows


def confident_learning_issues(records: Sequence[dict], log_probabilities: dict[str, dict[int, list[float]]],
                              schema: dict) -> list[dict]:
    """The records whose given label (of each closed label set) cleanlab finds likely wrong, from out-of-fold
    log-probabilities by field and position."""
    issues = []
    for pointer, values in label_fields(schema).items():
        rows = log_probabilities.get(pointer, {})
        positions = sorted(rows)
        given = [values.index(resolve_pointer(records[p]["data"], pointer)) for p in positions]
        logs = np.array([rows[p] for p in positions])
        matrix = np.exp(logs)
        for rank in label_issues(given, matrix):
            p, best = positions[rank], int(logs[rank].argmax())
            issues.append({"index": p, "field": pointer.strip("/"), "kind": "label",
                           "given": values[given[rank]], "model": values[best],
                           "confidence": round(float(matrix[rank][best]), 4),
                           "given_probability": round(float(matrix[rank][given[rank]]), 4),
                           "margin": round(float(logs[rank][best] - logs[rank][given[rank]]), 3)})
    return issues


def ungrounded_issues(records: Sequence[dict], schema: dict) -> list[dict]:
    """Values marked x-copy-from-query that are not words of their query: certain, no model needed (grounded
    decoding can never write them, so the record can never be matched exactly). `fix` is the query's own words
    for the value where only case or spacing differ."""
    return [{"index": i, "field": at.strip("/"), "kind": "not-in-query", "given": value, "model": None,
             "fix": fix, "confidence": 1.0, "margin": None}
            for i, r in enumerate(records) for at, value, fix in ungrounded_values(r["query"], r["data"], schema)]


def rank_key(issue: dict) -> tuple:
    """Certain issues first, then by margin (how many nats more the model believes its value than the given one):
    the confidence saturates at 1.0 for most disagreements and cannot order them."""
    return (issue["margin"] is not None, -(issue["margin"] or 0.0), issue["index"], issue["field"])


def flagged_records(issues: Sequence[dict]) -> list[int]:
    """Record indexes in the order to check them: by their strongest issue."""
    return list(dict.fromkeys(row["index"] for row in sorted(issues, key=rank_key)))


def resolve_or_empty(data: Any, pointer: str) -> list:
    try:
        value = resolve_pointer(data, pointer)
    except (KeyError, IndexError, TypeError, ValueError):
        return []
    return value if isinstance(value, list) else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "decoding")
    parser.add_argument("--folds", type=int, default=5, help="k: each record is judged by a model trained without it")
    parser.add_argument("--max-steps", type=int, help="cap each fold's training (a CPU: 60)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="folds training at once (a small model leaves most of a GPU idle; 1 for a large one)")
    parser.add_argument("--out", type=Path, default=Path("reports/audit"), help="label_issues.jsonl goes here")
    args = parser.parse_args(argv)
    if args.folds < 2:
        raise UserError("--folds must be at least 2")
    config = config_from_args(args)
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    good = labeled_records(load_records(config.path("raw_data")), validator(schema))
    if len(good) < 2 * args.folds:
        raise UserError(f"{len(good)} valid records: too few for {args.folds} folds (`make data` names bad ones)")
    index, records = [i for i, _ in good], [r for _, r in good]
    labels = [str(resolve_pointer(r["data"], config.main_label)) for r in records]
    out = args.out.absolute()
    print(f"auditing {len(records)} records with {args.folds} folds: {args.folds} trainings of "
          f"{shown(config.path('recipe'))}", flush=True)
    log_probabilities: dict[str, dict[int, list[float]]] = {}
    issues: list[dict] = []
    answers: dict[int, dict] = {}
    held_out = folds(labels, args.folds, config.seed)
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}

    def train(k: int) -> Recipe:
        held = set(held_out[k])
        print(f"fold {k}: training, log in {shown(out / f'fold-{k}' / 'train.log')}", flush=True)
        return train_fold(config, args.pipeline.absolute(), [r for i, r in enumerate(records) if i not in held],
                          [records[i] for i in held_out[k]], out / f"fold-{k}", schema, prompt, overrides)

    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        for k, recipe in enumerate(pool.map(train, range(args.folds))):  # each fold judged once it has trained
            fold_probabilities, fold_issues, fold_answers = judge_fold(recipe, records, held_out[k], schema, prompt,
                                                                       config)
            for pointer, rows in fold_probabilities.items():
                log_probabilities.setdefault(pointer, {}).update(rows)
            issues += fold_issues
            answers |= fold_answers
    issues += confident_learning_issues(records, log_probabilities, schema) + ungrounded_issues(records, schema)
    for issue in issues:
        issue["index"] = index[issue["index"]]  # the record's position in raw_data.json
    issues.sort(key=rank_key)
    write_text_atomic(out / "label_issues.jsonl", jsonl(issues))
    judged = out_of_fold_rows(index, records, log_probabilities, answers, schema)
    write_text_atomic(out / "out_of_fold.jsonl", jsonl(judged))
    summary = {"records": len(records), "folds": args.folds, "max_steps": args.max_steps,
               "issues": len(issues), "records_flagged": len(flagged_records(issues)),
               "by_field_and_kind": dict(Counter(f"{row['field']}/{row['kind']}" for row in issues)),
               "config": config.as_record()}
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    print(f"label issues, most confident first -> {shown(out / 'label_issues.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
