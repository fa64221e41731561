"""Scoring model outputs against reference JSON. Pure functions: a prediction is the raw text the model
produced; prose, truncated JSON, extra keys and wrong types are scored as what they are, never raised."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from preprocess.split import resolve_pointer

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


def label_fields(schema: dict) -> list[str]:
    """Top-level properties that classify (enums, strings, numbers, booleans): scored by accuracy."""
    return [key for key, spec in schema.get("properties", {}).items()
            if "enum" in spec or spec.get("type") in ("string", "integer", "number", "boolean")]


def list_fields(schema: dict) -> list[str]:
    """Top-level arrays (extracted items such as entities): scored by precision/recall/F1."""
    return [key for key, spec in schema.get("properties", {}).items() if spec.get("type") == "array"]


def _item_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _item_type(item: Any) -> str:
    return str(item.get("type", "*")) if isinstance(item, dict) else "*"


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def prf(self) -> dict[str, float]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": self.tp + self.fn}


def item_counts(predicted: list | None, expected: list) -> dict[str, Counts]:
    """Per item type, matches between predicted and expected items (type + value must both match)."""
    counts: dict[str, Counts] = defaultdict(Counts)
    predicted_items = Counter(_item_key(i) for i in (predicted if isinstance(predicted, list) else []))
    expected_items = Counter(_item_key(i) for i in expected)
    for key in predicted_items | expected_items:
        kind = _item_type(json.loads(key))
        hit = min(predicted_items[key], expected_items[key])
        counts[kind].tp += hit
        counts[kind].fp += predicted_items[key] - hit
        counts[kind].fn += expected_items[key] - hit
    return counts


def label_at(value: Any, pointer: str) -> str:
    """The label at a JSON pointer, or INVALID where the answer has none."""
    try:
        return str(resolve_pointer(value, pointer))
    except (KeyError, IndexError, TypeError, ValueError):
        return INVALID


def score(predictions: list[str], references: list[dict], schema: dict, main_label: str) -> dict[str, Any]:
    """All metrics of one model over one data set, JSON-serialisable."""
    validator = Draft202012Validator(schema)
    parsed = [parse_prediction(text, validator) for text in predictions]
    n = len(references)
    labels, lists = label_fields(schema), list_fields(schema)
    pairs = list(zip(parsed, references, strict=True))
    field_accuracy = {
        field: sum(p.is_json and p.value.get(field) == ref.get(field) for p, ref in pairs) / n for field in labels
    }
    extraction: dict[str, Any] = {}
    for field in lists:
        per_type: dict[str, Counts] = defaultdict(Counts)
        for p, ref in pairs:
            predicted = p.value.get(field) if p.is_json else None
            for kind, c in item_counts(predicted, ref.get(field, [])).items():
                per_type[kind].tp += c.tp
                per_type[kind].fp += c.fp
                per_type[kind].fn += c.fn
        micro = Counts(*(sum(getattr(c, a) for c in per_type.values()) for a in ("tp", "fp", "fn")))
        extraction[field] = {"micro": micro.prf(), "per_type": {k: per_type[k].prf() for k in sorted(per_type)}}
    gold = [label_at(ref, main_label) for ref in references]
    guessed = [label_at(p.value, main_label) if p.is_json else INVALID for p in parsed]
    confusion: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g, q in zip(gold, guessed, strict=True):
        confusion[g][q] += 1
    per_class = {label: confusion[label][label] / sum(confusion[label].values()) for label in sorted(confusion)}
    return {
        "examples": n,
        "json_valid": sum(p.is_json for p in parsed) / n,
        "schema_valid": sum(p.conforms for p in parsed) / n,
        "exact_match": sum(p.is_json and p.value == ref for p, ref in pairs) / n,
        "field_accuracy": field_accuracy,
        "extraction": extraction,
        "main_label": main_label,
        "per_class_accuracy": per_class,
        "confusion": {g: dict(row) for g, row in sorted(confusion.items())},
    }


def example_verdicts(text: str, reference: dict, validator: Draft202012Validator) -> dict[str, Any]:
    """What predictions.jsonl records for one example."""
    parsed = parse_prediction(text, validator)
    return {
        "json_error": parsed.json_error,
        "schema_error": parsed.schema_error,
        "exact_match": parsed.is_json and parsed.value == reference,
    }
