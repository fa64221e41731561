"""Validate raw_data.json against the schema, split it, and write chat-format JSONL for Axolotl.

    python -m preprocess --config axolotl_configs/gemma3-270m-lora.yaml [--write-rejects]

Strict by default: any bad record -> every problem is printed, nothing is written, exit status 1.
With --write-rejects the bad records go to rejects.jsonl with their reasons and the rest is written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preprocess.checks import DataFileError, Problem, check_records, load_records
from preprocess.config import REPO_ROOT, Pipeline, Recipe, add_stage_arguments
from preprocess.prompt import load_system_prompt, training_messages
from preprocess.split import resolve_pointer, stratified_split
from preprocess.tokenizer import load_tokenizer


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def percentiles(values: Sequence[int]) -> dict[str, int]:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50": round(cuts[49]), "p90": round(cuts[89]), "p99": round(cuts[98]), "max": ordered[-1]}


def split_stats(labels: Sequence[str], train: Sequence[int], evaluation: Sequence[int],
                lengths: Sequence[int], rejected: int) -> dict[str, Any]:
    train_counts = Counter(labels[i] for i in train)
    eval_counts = Counter(labels[i] for i in evaluation)
    return {
        "train": len(train),
        "eval": len(evaluation),
        "rejected": rejected,
        "tokens_per_example": percentiles(lengths),
        "train_only_labels": sorted(label for label in train_counts if label not in eval_counts),
        "labels": {label: {"train": train_counts[label], "eval": eval_counts[label]} for label in sorted(set(labels))},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--raw-data", type=Path, help="override pipeline.yaml's raw_data")
    parser.add_argument("--tokenizer", help="override the recipe's tokenizer (any Gemma 3 tokenizer counts the same)")
    parser.add_argument("--write-rejects", action="store_true",
                        help="write bad records to rejects.jsonl and go on, instead of failing")
    args = parser.parse_args(argv)

    pipeline = Pipeline.load(args.pipeline)
    recipe = Recipe.load(args.config)
    raw_path = args.raw_data or pipeline.raw_data
    schema = json.loads(pipeline.schema.read_text())
    system_prompt = load_system_prompt(pipeline.system_prompt, pipeline.schema)
    tokenizer = load_tokenizer(args.tokenizer or recipe.tokenizer)

    def token_length(record: dict) -> int:
        messages = training_messages(record["query"], record["data"], system_prompt, schema)
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    try:
        records = load_records(raw_path)
    except DataFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems, lengths = check_records(records, schema, recipe.sequence_len, token_length)
    problems += [
        Problem(i, "main-label", f"main_label {pipeline.main_label} not found in data")
        for i in lengths if not _has_pointer(records[i]["data"], pipeline.main_label)
    ]

    bad = sorted({p.index for p in problems})
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(bad)} of {len(records)} records have problems ({len(problems)} in all)", file=sys.stderr)
    rejects_path = recipe.train_file.parent / "rejects.jsonl"
    if problems and not args.write_rejects:
        print("nothing written; fix the records above, or pass --write-rejects to set them aside", file=sys.stderr)
        return 1

    good = [i for i in range(len(records)) if i not in set(bad)]
    labels = [str(resolve_pointer(records[i]["data"], pipeline.main_label)) for i in good]
    train, evaluation = stratified_split(labels, pipeline.eval_fraction, pipeline.seed)

    def rows(positions: Sequence[int]) -> list[dict]:
        return [{"messages": training_messages(records[good[p]]["query"], records[good[p]]["data"],
                                               system_prompt, schema)} for p in positions]

    write_jsonl(recipe.train_file, rows(train))
    write_jsonl(recipe.eval_file, rows(evaluation))
    if args.write_rejects:
        write_jsonl(rejects_path, [
            {"index": i, "record": records[i], "problems": [str(p) for p in problems if p.index == i]} for i in bad
        ])
    else:
        rejects_path.unlink(missing_ok=True)  # a stale file would claim rejects that no longer exist
    stats = split_stats(labels, train, evaluation, [lengths[i] for i in good], len(bad))
    stats_path = recipe.train_file.parent / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    print(f"{len(records)} records: {stats['train']} train -> {shown(recipe.train_file)}, "
          f"{stats['eval']} eval -> {shown(recipe.eval_file)}, {len(bad)} rejected")
    print(f"tokens per example (chat template, {recipe.tokenizer}): {stats['tokens_per_example']}"
          f" / sequence_len {recipe.sequence_len}")
    print(f"{len(stats['labels'])} classes of {pipeline.main_label}; train-only (one example): "
          f"{stats['train_only_labels'] or 'none'}; details in {shown(stats_path)}")
    return 0


def _has_pointer(data: Any, pointer: str) -> bool:
    try:
        resolve_pointer(data, pointer)
    except (KeyError, IndexError, ValueError, TypeError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
