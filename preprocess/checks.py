"""Every check a record must pass before it may be trained on. Problems are collected, never raised one by
one, so that a user fixes their whole file in one go."""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from contract.prompt import control_tokens_in
from contract.records import strictness_problems
from contract.schema import has_pointer

REQUIRED_KEYS = ("query", "data")


@dataclass(frozen=True)
class Problem:
    index: int  # position of the record in raw_data.json (0-based)
    kind: str  # short machine-readable name, e.g. "schema", "duplicate"
    message: str

    def __str__(self) -> str:
        return f"record {self.index}: [{self.kind}] {self.message}"


def schema_errors(data: Any, validator: Draft202012Validator) -> list[str]:
    """Each failure as 'JSON pointer: message', in a stable order."""
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{'/' + '/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def shape_problems(index: int, record: Any, validator: Draft202012Validator, main_label: str) -> list[Problem]:
    if not isinstance(record, dict):
        return [Problem(index, "shape", f"must be an object with keys {list(REQUIRED_KEYS)}, found {record!r:.80}")]
    problems = []
    for message in strictness_problems(record):
        kind = "duplicate-key" if "given twice" in message else "non-finite"
        problems.append(Problem(index, kind, message))
    missing = [key for key in REQUIRED_KEYS if key not in record]
    extra = sorted(set(record) - set(REQUIRED_KEYS))
    if missing:
        problems.append(Problem(index, "missing-key", f"missing key(s) {missing}"))
    if extra:
        problems.append(Problem(index, "extra-key", f"unexpected key(s) {extra}; only {list(REQUIRED_KEYS)} allowed"))
    query = record.get("query")
    if "query" in record and (not isinstance(query, str) or not query.strip()):
        problems.append(Problem(index, "empty-query", f"query must be a non-empty string, found {query!r}"))
    if "data" in record:
        errors = schema_errors(record["data"], validator)
        problems += [Problem(index, "schema", message) for message in errors]
        if not errors and not has_pointer(record["data"], main_label):
            problems.append(Problem(index, "main-label", f"data has no {main_label} (pipeline.yaml main_label)"))
    return problems


def normalized(query: str) -> str:
    """A query as a duplicate check sees it: Unicode compatibility forms folded (NFKC), case folded, runs of white
    space made one space. 'Wake me up at seven am ' and 'wake me up at seven am' are the same request: one in train
    and one in eval would score the model on what it was trained on."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def duplicate_problems(records: Mapping[int, dict]) -> list[Problem]:
    """Repeats of a query up to case, spacing and Unicode form (later copies flagged) and one query labeled two ways
    (every copy flagged). `records` maps each record's index in the file to the record."""
    by_query: dict[str, list[int]] = defaultdict(list)
    for index, record in records.items():
        by_query[normalized(record["query"])].append(index)
    problems = []
    for indices in by_query.values():
        if len(indices) < 2:
            continue
        answers = {json.dumps(records[i]["data"], sort_keys=True) for i in indices}
        if len(answers) > 1:
            problems += [
                Problem(i, "conflict", f"same query as record(s) {[j for j in indices if j != i]} with different data")
                for i in indices
            ]
        else:
            first = records[indices[0]]["query"]
            problems += [Problem(i, "duplicate", f"exact duplicate of record {indices[0]}"
                                 if records[i]["query"] == first
                                 else f"same query as record {indices[0]} up to case, spacing or Unicode form")
                         for i in indices[1:]]
    return problems


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def control_token_problems(records: Mapping[int, dict], tokens: list[str]) -> list[Problem]:
    """A query or an answer value holding a control token (`<end_of_turn>`, ...) would be tokenized as that token:
    user text that forges a chat turn in training data."""
    problems = []
    for index, record in records.items():
        for where, text in [("query", record["query"]), *(("data", s) for s in strings(record["data"]))]:
            if found := control_tokens_in(text, tokens):
                problems.append(Problem(index, "control-token", f"{where} contains {found[0]!r}, which the model reads "
                                        "as a control token (user text must not forge chat turns); remove it"))
                break
    return problems


def length_problems(lengths: Mapping[int, int], sequence_len: int) -> list[Problem]:
    return [
        Problem(i, "too-long", f"{n} tokens with the chat template, over sequence_len {sequence_len} "
                "(Axolotl would drop or truncate it)")
        for i, n in lengths.items()
        if n > sequence_len
    ]


def check_records(
    records: Sequence[Any],
    validator: Draft202012Validator,
    main_label: str,
    sequence_len: int,
    token_lengths: Callable[[list[dict]], list[int]],
    control_tokens: list[str] = (),
) -> tuple[list[Problem], dict[int, int]]:
    """All problems of all records, and the rendered token length of each well-formed record."""
    problems: list[Problem] = []
    for index, record in enumerate(records):
        problems += shape_problems(index, record, validator, main_label)
    well_formed = sorted(set(range(len(records))) - {p.index for p in problems})
    problems += duplicate_problems({i: records[i] for i in well_formed})
    problems += control_token_problems({i: records[i] for i in well_formed}, list(control_tokens))
    lengths = dict(zip(well_formed, token_lengths([records[i] for i in well_formed]), strict=True))
    problems += length_problems(lengths, sequence_len)
    return sorted(problems, key=lambda p: (p.index, p.kind)), lengths
