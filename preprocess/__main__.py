"""Validate raw_data.json against the schema, split it, and write chat-format JSONL for Axolotl.

    python -m preprocess [--pipeline pipeline.yaml] [--config <recipe>] [--write-rejects]

Strict by default: any bad record -> every problem is printed, nothing is written, exit status 1.
With --write-rejects the bad records go to rejects.jsonl with their reasons and the rest is written.
The outputs (train.jsonl, eval.jsonl, stats.json, rejects.jsonl) are written as one set: a failed or killed
run leaves the previous complete set. stats.json records the inputs' hashes and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.config import Recipe, add_stage_arguments, config_from_args, resolve, sha256_file, shown
from contract.errors import UserError, run_cli
from contract.outputs import replaced_directory
from contract.prompt import answer_text, control_tokens, control_tokens_in, prompt_messages, system_prompt
from contract.records import NonFinite, load_records
from contract.rows import training_row
from contract.schema import load_schema, resolve_pointer, scored_fields, ungrounded_values, validator
from contract.tokenizer import load_tokenizer
from preprocess.checks import check_records
from preprocess.split import stratified_split

STATS = "stats.json"


def percentiles(values: Sequence[int]) -> dict[str, int]:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": round(p50), "p90": round(p90), "p99": round(p99), "max": int(max(values))}


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


def token_lengths(tokenizer: Any, prompt: str, schema: dict) -> Callable[[list[dict]], list[int]]:
    """Rendered training-row lengths with the real chat template (tokenized in one batch: fast)."""
    def lengths(records: list[dict]) -> list[int]:
        texts = [tokenizer.apply_chat_template(
            [*prompt_messages(r["query"], prompt), {"role": "assistant", "content": answer_text(r["data"], schema)}],
            tokenize=False) for r in records]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return lengths


def previous_set(data_dir: Path) -> str:
    """What a failed run leaves in place, in words."""
    stats = data_dir / STATS
    if not stats.exists():
        return f"{shown(data_dir)} holds no earlier outputs"
    try:
        made = json.loads(stats.read_text(encoding="utf-8")).get("created", "an earlier run")
    except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object: someone edited it
        return f"{shown(data_dir)} holds an earlier set whose {STATS} is unreadable"
    return f"{shown(data_dir)} still holds the complete set written at {made}"


def check_writable(data_dir: Path) -> None:
    """The outputs' directory can be written: said before the records are checked, not after."""
    parent = data_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {shown(parent)}: {err.strerror or err}") from err
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {shown(parent)} (permission denied): `make data` writes {shown(data_dir)}")


def as_written(value: Any) -> Any:
    """A record as the file had it, for rejects.jsonl: NaN/Infinity stay NaN/Infinity (not the string "NaN", which
    would pass the schema if copied back)."""
    if isinstance(value, NonFinite):
        return float(value.text)  # NaN, Infinity, or a number too large (1e400): json writes NaN / Infinity
    if isinstance(value, dict):
        return {key: as_written(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_written(item) for item in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--raw-data", type=Path, help="override pipeline.yaml's raw_data")
    parser.add_argument("--write-rejects", action="store_true",
                        help="write bad records to rejects.jsonl and go on, instead of failing")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.raw_data:
        config = config.model_copy(update={"raw_data": args.raw_data.absolute()})  # the command line's: from the cwd
    recipe = Recipe.load(config.path("recipe"))
    data_dir = recipe.data_dir
    schema = load_schema(config.path("schema_path"))
    labels_in_schema = [f.pointer for f in scored_fields(schema) if f.kind == "label"]
    if config.main_label not in labels_in_schema:
        raise UserError(f"{shown(resolve(args.pipeline))}: main_label {config.main_label} is not a label field of the "
                        f"schema; choose one of {labels_in_schema}")
    check_writable(data_dir)  # before minutes of validation, not after
    prompt = system_prompt(config)
    records = load_records(config.path("raw_data"))
    tokenizer = load_tokenizer(recipe.tokenizer)
    controls = control_tokens(tokenizer)
    if found := control_tokens_in(prompt, controls):
        raise UserError(f"{shown(config.path('system_prompt'))}: contains {found[0]!r}, which the model reads as a "
                        "control token; remove it")

    problems, lengths = check_records(records, validator(schema), config.main_label, recipe.sequence_len,
                                      token_lengths(tokenizer, prompt, schema), controls)
    bad = sorted({p.index for p in problems})
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(bad)} of {len(records)} records have problems ({len(problems)} in all)", file=sys.stderr)
    rejected = set(bad)
    good = [i for i in range(len(records)) if i not in rejected]
    if problems and not args.write_rejects:
        raise UserError(f"nothing written ({previous_set(data_dir)}); fix the records above, or pass "
                        "--write-rejects to set them aside")
    if not good:
        raise UserError(f"all {len(records)} records have problems: nothing written ({previous_set(data_dir)})")

    labels = [str(resolve_pointer(records[i]["data"], config.main_label)) for i in good]
    train, evaluation = stratified_split(labels, config.eval_fraction, config.seed)
    if not evaluation:
        raise UserError(f"nothing can be held out for evaluation: each of the {len(set(labels))} values of "
                        f"{config.main_label} has a single record, and a value's only record must be trained on. Label "
                        f"a second example of the values you care about, or choose a coarser main_label "
                        f"({previous_set(data_dir)})")

    def rows(positions: Sequence[int]) -> str:
        chosen = [records[good[p]] for p in positions]
        return "".join(json.dumps(training_row(r["query"], answer_text(r["data"], schema), prompt),
                                  ensure_ascii=False) + "\n" for r in chosen)

    # Not an error (the record is valid), but a label grounded decoding can never reproduce: said, and kept in stats.
    ungrounded = [{"index": i, "pointer": at, "value": value, "fix": fix} for i in good
                  for at, value, fix in ungrounded_values(records[i]["query"], records[i]["data"], schema)]
    stats = {
        **split_stats(labels, train, evaluation, [lengths[i] for i in good], len(bad)),
        "ungrounded_values": ungrounded,
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "inputs": {name: {"path": shown(config.path(name)), "sha256": sha256_file(config.path(name))}
                   for name in ("raw_data", "schema_path", "system_prompt")},
        "recipe": shown(recipe.path),
        "config": config.as_record(),
    }
    try:
        with replaced_directory(data_dir) as staging:
            (staging / recipe.train_file.name).write_text(rows(train), encoding="utf-8")
            (staging / recipe.eval_file.name).write_text(rows(evaluation), encoding="utf-8")
            if args.write_rejects and bad:
                why = defaultdict(list)
                for problem in problems:
                    why[problem.index].append(str(problem))
                (staging / "rejects.jsonl").write_text("".join(json.dumps(
                    {"index": i, "record": as_written(records[i]), "problems": why[i]}, ensure_ascii=False) + "\n"
                    for i in bad), encoding="utf-8")
            (staging / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    except OSError as err:
        raise UserError(f"cannot write {shown(data_dir)}: {err.strerror or err} ({previous_set(data_dir)})") from err

    print(f"{len(records)} records: {stats['train']} train -> {shown(recipe.train_file)}, "
          f"{stats['eval']} eval -> {shown(recipe.eval_file)}, {len(bad)} rejected"
          + (f" -> {shown(data_dir / 'rejects.jsonl')}" if bad else ""))
    print(f"tokens per example (chat template, {recipe.tokenizer}): {stats['tokens_per_example']}"
          f" / sequence_len {recipe.sequence_len}")
    print(f"{len(stats['labels'])} classes of {config.main_label}; train-only (one example): "
          f"{stats['train_only_labels'] or 'none'}; details in {shown(data_dir / STATS)}")
    if ungrounded:
        first, fixable = ungrounded[0], sum(v["fix"] is not None for v in ungrounded)
        print(f"note: {len(ungrounded)} values marked x-copy-from-query are not words of their query (first: record "
              f"{first['index']} {first['pointer']} {first['value']!r}): grounded decoding cannot write them; "
              + (f"{fixable} differ from the query only in case or spacing, and `make fix-spans` rewrites them; "
                 if fixable else "") + f"all are listed in {shown(data_dir / STATS)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
