"""Why answers miss exact match: the main label (e.g. the intent) wrong, the extracted lists (e.g. the
entities) wrong, or both. Reads a predictions file that `python -m evaluation` wrote.

    python -m bench.error_breakdown reports/measured/final-270m-h100/predictions-tuned+constrained.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from jsonschema import Draft202012Validator

from contract.config import DEFAULT_PIPELINE, load_config
from contract.schema import load_schema, scored_fields, validator
from evaluation.scoring import label_at, parse_prediction, value_at


def verdict(output: str, reference: dict, validator: Draft202012Validator, main_label: str,
            lists: list[str]) -> str:
    parsed = parse_prediction(output, validator)
    if not parsed.is_json:
        return "not JSON"
    if parsed.value == reference:
        return "exact"
    label_ok = label_at(parsed.value, main_label) == label_at(reference, main_label)
    lists_ok = all(value_at(parsed.value, field) == value_at(reference, field) for field in lists)
    return {(True, False): "label right, lists wrong", (False, True): "label wrong, lists right",
            (False, False): "both wrong"}.get((label_ok, lists_ok), "label and lists right, another field wrong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE)
    parser.add_argument("--show", type=int, default=8, help="examples of 'label right, lists wrong' to print")
    args = parser.parse_args()
    config = load_config(args.pipeline)
    schema = load_schema(config.path("schema_path"))
    check, lists = validator(schema), [f.pointer for f in scored_fields(schema) if f.kind == "list"]
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    verdicts = [verdict(r["output"], r["reference"], check, config.main_label, lists) for r in rows]
    print(f"{len(rows)} answers; main label {config.main_label}, lists {lists}")
    for name, count in Counter(verdicts).most_common():
        print(f"  {name}: {count}")
    shown = [r for r, v in zip(rows, verdicts, strict=True) if v == "label right, lists wrong"][: args.show]
    for row in shown:
        answer = json.loads(row["output"])
        print(f"- {row['query']}\n    reference: {[value_at(row['reference'], f) for f in lists]}\n"
              f"    predicted: {[value_at(answer, f) for f in lists]}")


if __name__ == "__main__":
    main()
