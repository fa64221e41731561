"""Scoring model outputs against reference JSON. Pure functions: a prediction is the raw text the model
produced; prose, truncated JSON, extra keys and wrong types are scored as what they are, never raised.

`Metrics` is the one typed result: the report, the CLI and the sweep read it (`headline()` lists what a table
shows), so a new metric is added here and nowhere else.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from sklearn.metrics import confusion_matrix

from contract.schema import has_pointer, resolve_pointer, scored_fields

INVALID = "<invalid>"


@dataclass(frozen=True)
class Parsed:
    value: Any  # the parsed object, or None
    json_error: str | None  # why the text is not a JSON object
    schema_error: str | None  # first failing JSON pointer and message, when it is JSON

    @property
    def is_json(self) -> bool:
        return self.json_error is None

    @property
    def conforms(self) -> bool:
        return self.is_json and self.schema_error is None


def parse_prediction(text: str, validator: Draft202012Validator) -> Parsed:
    """Strict: the whole answer must be one JSON object (surrounding whitespace aside)."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError as err:
        return Parsed(None, f"{err.msg} (character {err.pos})", None)
    if not isinstance(value, dict):
        return Parsed(None, f"a JSON {type(value).__name__}, not an object", None)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    first = errors[0] if errors else None
    pointer = "/" + "/".join(map(str, first.absolute_path)) if first else None
    return Parsed(value, None, f"{pointer}: {first.message}" if first else None)


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float
    support: int  # expected items

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> PRF:
        # Items are matched as multisets (a repeated entity must be predicted twice), which scikit-learn's
        # label-per-sample scorers cannot express; from the counts the formulas are the textbook ones.
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, tp + fn)


@dataclass(frozen=True)
class ListScore:
    micro: PRF
    per_type: dict[str, PRF]


@dataclass(frozen=True)
class Metrics:
    examples: int
    json_valid: float
    schema_valid: float
    exact_match: float
    exact_match_ci95: tuple[float, float]  # Wilson score interval: how far a result on this many examples can move
    field_accuracy: dict[str, float]  # label fields by pointer name ("intent", "slots/date")
    extraction: dict[str, ListScore]  # list fields: items matched as wholes
    main_label: str
    per_class_accuracy: dict[str, float]
    confusion: dict[str, dict[str, int]]
    speed: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, float]:
        """The figures a summary shows, in order (fractions)."""
        return {"JSON valid": self.json_valid, "schema valid": self.schema_valid, "exact match": self.exact_match,
                **{f"{name} accuracy": value for name, value in self.field_accuracy.items()},
                **{f"{name} {measure} (micro)": getattr(score.micro, measure)
                   for name, score in self.extraction.items() for measure in ("precision", "recall", "f1")}}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metrics:
        extraction = {name: ListScore(PRF(**s["micro"]), {k: PRF(**v) for k, v in s["per_type"].items()})
                      for name, s in data["extraction"].items()}
        return cls(**{**data, "extraction": extraction, "exact_match_ci95": tuple(data["exact_match_ci95"])})


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _item_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _item_type(item: Any) -> str:
    return str(item.get("type", "*")) if isinstance(item, dict) else "*"


def item_counts(predicted: Any, expected: list) -> dict[str, list[int]]:
    """Per item type, [tp, fp, fn] between predicted and expected items (the whole item must match)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    predicted_items = Counter(_item_key(i) for i in (predicted if isinstance(predicted, list) else []))
    expected_items = Counter(_item_key(i) for i in expected)
    for key in predicted_items | expected_items:
        kind = _item_type(json.loads(key))
        hit = min(predicted_items[key], expected_items[key])
        counts[kind][0] += hit
        counts[kind][1] += predicted_items[key] - hit
        counts[kind][2] += expected_items[key] - hit
    return counts


def value_at(value: Any, pointer: str) -> Any:
    return resolve_pointer(value, pointer) if has_pointer(value, pointer) else INVALID


def label_at(value: Any, pointer: str) -> str:
    """The label at a JSON pointer, or INVALID where the answer has none."""
    return str(value_at(value, pointer))


def list_score(predicted: list[Any], expected: list[list]) -> ListScore:
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for p, e in zip(predicted, expected, strict=True):
        for kind, (tp, fp, fn) in item_counts(p, e).items():
            per_type[kind][0] += tp
            per_type[kind][1] += fp
            per_type[kind][2] += fn
    micro = PRF.from_counts(*(sum(c[i] for c in per_type.values()) for i in range(3)))
    return ListScore(micro, {kind: PRF.from_counts(*per_type[kind]) for kind in sorted(per_type)})


def score(predictions: list[str], references: list[dict], schema: dict, main_label: str) -> Metrics:
    """All metrics of one model over one data set."""
    validator = Draft202012Validator(schema)
    parsed = [parse_prediction(text, validator) for text in predictions]
    values = [p.value if p.is_json else None for p in parsed]
    n = len(references)
    fields = scored_fields(schema)
    field_accuracy = {f.name: sum(value_at(v, f.pointer) == value_at(r, f.pointer) and v is not None
                                  for v, r in zip(values, references, strict=True)) / n
                      for f in fields if f.kind == "label"}
    extraction = {f.name: list_score([value_at(v, f.pointer) if v is not None else None for v in values],
                                     [value_at(r, f.pointer) if has_pointer(r, f.pointer) else [] for r in references])
                  for f in fields if f.kind == "list"}
    gold = [label_at(r, main_label) for r in references]
    guessed = [label_at(v, main_label) if v is not None else INVALID for v in values]
    labels = sorted(set(gold) | set(guessed))
    matrix = confusion_matrix(gold, guessed, labels=labels)
    confusion = {g: {q: int(matrix[i][j]) for j, q in enumerate(labels) if matrix[i][j]}
                 for i, g in enumerate(labels) if g in set(gold)}
    exact = sum(v is not None and v == r for v, r in zip(values, references, strict=True))
    return Metrics(
        examples=n,
        json_valid=sum(p.is_json for p in parsed) / n,
        schema_valid=sum(p.conforms for p in parsed) / n,
        exact_match=exact / n,
        exact_match_ci95=wilson_interval(exact, n),
        field_accuracy=field_accuracy,
        extraction=extraction,
        main_label=main_label,
        per_class_accuracy={g: row.get(g, 0) / sum(row.values()) for g, row in confusion.items()},
        confusion=confusion,
    )


def example_verdicts(text: str, reference: dict, validator: Draft202012Validator) -> dict[str, Any]:
    """What predictions.jsonl records for one example."""
    parsed = parse_prediction(text, validator)
    return {
        "json_error": parsed.json_error,
        "schema_error": parsed.schema_error,
        "exact_match": parsed.is_json and parsed.value == reference,
    }
