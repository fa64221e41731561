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

from evaluation.scoring import label_at, list_fields, parse_prediction
from preprocess.config import REPO_ROOT, Pipeline


def verdict(output: str, reference: dict, validator: Draft202012Validator, main_label: str,
            lists: list[str]) -> str:
    parsed = parse_prediction(output, validator)
    if not parsed.is_json:
        return "not JSON"
    if parsed.value == reference:
        return "exact"
    label_ok = label_at(parsed.value, main_label) == label_at(reference, main_label)
    lists_ok = all(parsed.value.get(field) == reference.get(field) for field in lists)
    return {(True, False): "label right, lists wrong", (False, True): "label wrong, lists right",
            (False, False): "both wrong"}.get((label_ok, lists_ok), "label and lists right, another field wrong")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--pipeline", type=Path, default=REPO_ROOT / "pipeline.yaml")
    parser.add_argument("--show", type=int, default=8, help="examples of 'label right, lists wrong' to print")
    args = parser.parse_args()
    pipeline = Pipeline.load(args.pipeline)
    schema = json.loads(pipeline.schema.read_text())
    validator, lists = Draft202012Validator(schema), list_fields(schema)
    rows = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    verdicts = [verdict(r["output"], r["reference"], validator, pipeline.main_label, lists) for r in rows]
    print(f"{len(rows)} answers; main label {pipeline.main_label}, lists {lists}")
    for name, count in Counter(verdicts).most_common():
        print(f"  {name}: {count}")
    shown = [r for r, v in zip(rows, verdicts, strict=True) if v == "label right, lists wrong"][: args.show]
    for row in shown:
        answer = json.loads(row["output"])
        print(f"- {row['query']}\n    reference: {[row['reference'][f] for f in lists]}\n"
              f"    predicted: {[answer.get(f) for f in lists]}")


if __name__ == "__main__":
    main()
