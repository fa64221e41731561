"""Build the shipped sample (`data/raw_data.json` + `data/schema.json`) from SLURP's development split.

SLURP (Bastianelli et al., EMNLP 2020) is CC BY 4.0. Each record becomes
``{"query": sentence, "data": {"scenario", "intent", "entities": [{"type", "value"}, ...]}}``
with entities in order of appearance. The intent is derived as ``scenario_action`` because SLURP's own
``intent`` field disagrees with scenario/action in ~30 rows.

    python data/build_sample.py ../shared/datasets/slurp/devel.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent


def slurp_to_record(row: dict) -> dict:
    surfaces = [token["surface"] for token in row["tokens"]]
    entities = sorted(row["entities"], key=lambda e: e["span"][0])
    return {
        "query": row["sentence"],
        "data": {
            "scenario": row["scenario"],
            "intent": f"{row['scenario']}_{row['action']}",
            "entities": [
                {"type": e["type"], "value": " ".join(surfaces[i] for i in e["span"])} for e in entities
            ],
        },
    }


def curate(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Keep the first record of each query; report (never hide) every record that is skipped."""
    kept: dict[str, dict] = {}
    skipped = []
    for index, record in enumerate(records):
        first = kept.get(record["query"])
        if first is None:
            kept[record["query"]] = record
        elif first["data"] == record["data"]:
            skipped.append(f"row {index}: exact duplicate of an earlier row: {record['query']!r}")
        else:
            skipped.append(f"row {index}: same query as an earlier row with other labels: {record['query']!r}")
    return list(kept.values()), skipped


def build_schema(records: list[dict]) -> dict:
    """The closed label sets are the ones observed in the sample; everything else is closed too."""

    def labels(values: set[str]) -> list[str]:
        return sorted(values)

    scenarios = {r["data"]["scenario"] for r in records}
    intents = {r["data"]["intent"] for r in records}
    entity_types = {e["type"] for r in records for e in r["data"]["entities"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Home-assistant command",
        "type": "object",
        "additionalProperties": False,
        "required": ["scenario", "intent", "entities"],
        "properties": {
            "scenario": {"enum": labels(scenarios)},
            "intent": {"enum": labels(intents)},
            "entities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "value"],
                    "properties": {
                        "type": {"enum": labels(entity_types)},
                        # copied from the query (SLURP annotates spans of it): grounded decoding enforces it
                        "value": {"type": "string", "minLength": 1, "x-copy-from-query": True},
                    },
                },
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slurp_jsonl", type=Path, help="SLURP devel.jsonl")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.slurp_jsonl.read_text().splitlines() if line.strip()]
    records, skipped = curate([slurp_to_record(row) for row in rows])
    for reason in skipped:
        print("skipped", reason)
    # One record per line: readable, and diffs stay small when a label is corrected.
    lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    (args.out_dir / "raw_data.json").write_text(f"[\n{lines}\n]\n")
    (args.out_dir / "schema.json").write_text(json.dumps(build_schema(records), indent=2) + "\n")
    print(f"{len(records)} records from {len(rows)} SLURP rows -> {args.out_dir}/raw_data.json, schema.json")


if __name__ == "__main__":
    main()
