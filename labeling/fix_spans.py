"""Copied values that differ from their query only in case or spacing ("domino 's" for "domino's", "Saturday" for
"saturday"), rewritten as the query's own words, into a new file: grounded decoding can then write them, and the
record can be matched exactly. No model; seconds.

    python -m labeling.fix_spans --out data/raw_data.fixed.json

The rest (a typo, a paraphrase: "barack obaba") is listed for a person to fix. raw_data.json itself is never
written: compare the two files, then replace it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contract.config import add_stage_arguments, config_from_args, shown
from contract.errors import UserError, run_cli
from contract.outputs import write_text_atomic
from contract.records import labeled_records, load_records, strictness_problems
from contract.schema import load_schema, resolve_pointer, ungrounded_values, validator


def fix_spans(records: Sequence[Any], schema: dict) -> tuple[list[Any], list[dict], list[dict]]:
    """(the records with every fixable value rewritten, the rewrites, the values left for a person). Records that
    are not valid are copied as they are: `make data` names their problems."""
    fixed, rewrites, left = copy.deepcopy(list(records)), [], []
    for i, record in labeled_records(fixed, validator(schema)):
        for pointer, value, fix in ungrounded_values(record["query"], record["data"], schema):
            if fix is None:
                left.append({"index": i, "pointer": pointer, "value": value})
                continue
            parent_pointer, key = pointer.rsplit("/", 1)
            parent = resolve_pointer(record["data"], parent_pointer)
            parent[int(key) if isinstance(parent, list) else key] = fix
            rewrites.append({"index": i, "pointer": pointer, "value": value, "fix": fix})
    return fixed, rewrites, left


def records_text(records: Sequence[Any]) -> str:
    """A JSON array with one record per line, as the sample is written: a diff shows one line per fixed record."""
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="the fixed copy of raw_data.json (must not exist)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    raw = config.path("raw_data")
    if args.out.exists():
        raise UserError(f"{shown(args.out)} exists; nothing is overwritten: remove it or choose another --out")
    records = load_records(raw)
    # A duplicated key would be written once, its other value lost without a word: fix those first.
    for i, record in enumerate(records):
        if problems := strictness_problems(record):
            raise UserError(f"record {i}: {problems[0]}; fix it first (`make data` lists every such problem)")
    fixed, rewrites, left = fix_spans(records, load_schema(config.path("schema_path")))
    write_text_atomic(args.out, records_text(fixed))
    print(f"{len(rewrites)} values in {len({r['index'] for r in rewrites})} records rewritten as their query's words "
          f"-> {shown(args.out)} ({shown(raw)} unchanged); {len(left)} left for you:")
    for row in left:
        print(f"  record {row['index']} {row['pointer']} {row['value']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
