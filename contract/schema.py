"""The one walker of the user's JSON Schema. The answer's key order (what the model learns to write), the
decoding bounds (what constrained decoding allows) and the scored fields (what evaluation measures) all come
from here, with local `$ref`/`$defs` resolved and nested objects followed.

The annotation `"x-copy-from-query": true` on a string property says its value is copied from the query;
validators ignore unknown keywords, and grounded decoding (evaluation/constraints.py) enforces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError

from contract.config import shown
from contract.errors import UserError
from contract.records import parse_json, read_text

COPY_FROM_QUERY = "x-copy-from-query"
SCALAR_TYPES = ("string", "integer", "number", "boolean")


def load_schema(path: Path) -> dict:
    """The schema file, checked up front: present, JSON, a valid draft 2020-12 schema of an object."""
    where = shown(Path(path))
    if not Path(path).exists():
        raise UserError(f"{where}: no such file (the `schema` setting in pipeline.yaml)")
    schema = parse_json(read_text(path), where)
    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as err:
        pointer = "/" + "/".join(map(str, err.absolute_path))
        raise UserError(f"{where}: not a valid JSON Schema at {pointer}: {err.message}") from err
    if not isinstance(schema, dict) or not isinstance(resolve_ref(schema, schema), dict) \
            or resolve_ref(schema, schema).get("type") != "object":
        raise UserError(f"{where}: the top level must be `\"type\": \"object\"` (each answer is one JSON object)")
    for pointer, node in walk(schema):
        if any(key in node for key in ("oneOf", "anyOf", "allOf")) and "properties" not in node:
            raise UserError(f"{where}: {pointer or '/'} uses oneOf/anyOf/allOf, which answers cannot be ordered "
                            "or scored by; use one object with optional properties instead")
    return schema


def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema)


def resolve_ref(root: dict, node: Any) -> Any:
    """Follow local `$ref`s ("#/$defs/Entity") until a node without one; anything else is a UserError."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#") or ref in seen:
            raise UserError(f"schema: `$ref: {ref}` is not a local reference (#/$defs/...) or is circular")
        seen.add(ref)
        node = resolve_pointer(root, ref[1:])
    return node


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 lookup ("/intent", "/entities/0/type"); KeyError/IndexError/TypeError where there is none."""
    value = document
    for raw in pointer.split("/")[1:] if pointer not in ("", "/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def has_pointer(document: Any, pointer: str) -> bool:
    try:
        resolve_pointer(document, pointer)
    except (KeyError, IndexError, ValueError, TypeError):
        return False
    return True


def properties(root: dict, node: Any) -> dict[str, Any]:
    """An object node's properties, each with its `$ref` resolved."""
    node = resolve_ref(root, node)
    return {key: resolve_ref(root, spec) for key, spec in (node.get("properties") or {}).items()} \
        if isinstance(node, dict) else {}


def items(root: dict, node: Any) -> Any:
    node = resolve_ref(root, node)
    return resolve_ref(root, node.get("items", {})) if isinstance(node, dict) else {}


def types(node: dict) -> set[str]:
    """A node's JSON types, `null` aside: `"type": ["string", "null"]` is an optional string."""
    declared = node.get("type")  # (in a `properties` mapping, "type" may name a property: a dict, not a type)
    listed = declared if isinstance(declared, list) else [declared]
    return {t for t in listed if isinstance(t, str)} - {"null"}


def kind(node: Any) -> str:
    """object, array, label (a closed or scalar value) or other."""
    if not isinstance(node, dict):
        return "other"
    if types(node) == {"object"} or "properties" in node:
        return "object"
    if types(node) == {"array"}:
        return "array"
    if "enum" in node or "const" in node or (types(node) and types(node) <= set(SCALAR_TYPES)):
        return "label"
    return "other"


def walk(root: dict, node: Any = None, pointer: str = "", refs: tuple[str, ...] = ()
         ) -> Iterator[tuple[str, dict]]:
    """Every (JSON pointer, resolved node) of the answer's shape; array items appear as `<array>/*`. A `$ref` that
    contains itself (a tree of unbounded depth) is refused: such answers cannot be ordered, bounded or scored."""
    node = root if node is None else node
    ref = node.get("$ref") if isinstance(node, dict) else None
    if ref in refs:
        raise UserError(f"schema: {pointer} refers to {ref} inside itself (a recursive schema); answers must have a "
                        "bounded shape")
    refs = (*refs, ref) if ref else refs
    node = resolve_ref(root, node)
    if not isinstance(node, dict):
        return
    yield pointer, node
    for key, spec in (node.get("properties") or {}).items():  # unresolved: walk sees each $ref on the way
        yield from walk(root, spec, f"{pointer}/{key}", refs)
    if kind(node) == "array":
        yield from walk(root, node.get("items", {}), f"{pointer}/*", refs)


def canonical_answer(data: Any, root: dict, node: Any = None) -> Any:
    """Object keys in the order the schema declares them (undeclared keys after, sorted), recursively.
    Users' files list keys in whatever order; the model should learn one order."""
    node = resolve_ref(root, root if node is None else node)
    if isinstance(data, dict):
        props = properties(root, node)
        order = [key for key in props if key in data] + sorted(key for key in data if key not in props)
        return {key: canonical_answer(data[key], root, props.get(key, {})) for key in order}
    if isinstance(data, list):
        return [canonical_answer(item, root, items(root, node)) for item in data]
    return data


@dataclass(frozen=True)
class ScoredField:
    pointer: str  # "/intent", "/slots/date", "/entities"
    kind: str  # "label": accuracy; "list": precision/recall/F1 of its items

    @property
    def name(self) -> str:
        return self.pointer.lstrip("/")


def scored_fields(root: dict) -> list[ScoredField]:
    """Leaf values of objects (followed to any depth) are labels scored by accuracy; arrays are lists whose
    items are matched as wholes (precision/recall/F1). Items inside arrays are not scored separately."""
    fields = []
    for pointer, node in walk(root):
        if "/*" in pointer or not pointer:
            continue
        if kind(node) == "label":
            fields.append(ScoredField(pointer, "label"))
        elif kind(node) == "array":
            fields.append(ScoredField(pointer, "list"))
    return fields


def enum_labels(root: dict) -> dict[str, list[Any]]:
    """Closed label sets by pointer ("/intent", "/entities/*/type"): what a label-list prompt shows."""
    return {pointer: list(node["enum"]) for pointer, node in walk(root) if "enum" in node}


def copy_from_query_pointers(root: dict) -> list[str]:
    """Properties marked `"x-copy-from-query": true`: free strings whose value is a span of the query."""
    marked = []
    for pointer, node in walk(root):
        if node.get(COPY_FROM_QUERY):
            if types(node) != {"string"} or "enum" in node:
                raise UserError(f"schema: {pointer} is marked {COPY_FROM_QUERY} but is not a free string")
            marked.append(pointer)
    return marked


def values_at(document: Any, pointer: str) -> list[tuple[str, Any]]:
    """(concrete pointer, value) for a pointer whose `*` parts stand for every item of an array."""
    found = [("", document)]
    for part in pointer.split("/")[1:]:
        step = []
        for at, value in found:
            if part == "*" and isinstance(value, list):
                step += [(f"{at}/{i}", item) for i, item in enumerate(value)]
            elif isinstance(value, dict) and part in value:
                step.append((f"{at}/{part}", value[part]))
        found = step
    return found


def _loose(text: str) -> str:
    return re.sub(r"\s+(?=')", "", " ".join(text.lower().split()))


def word_runs(query: str) -> list[str]:
    """Every contiguous run of the query's whitespace-separated words, once each, in order of appearance."""
    words = query.split()
    return list(dict.fromkeys(" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)))


def query_span(query: str, value: str) -> str | None:
    """The run of the query's words that `value` names once case and the space before an apostrophe are ignored
    (the two ways a tokenized source writes a span: "domino 's" is "domino's", "Saturday" is "saturday"); None
    when there is none (a typo, a paraphrase): then only a person can say what the value should be."""
    wanted = _loose(value)
    return next((run for run in word_runs(query) if _loose(run) == wanted), None)


def ungrounded_values(query: str, data: Any, root: dict) -> list[tuple[str, str, str | None]]:
    """(pointer, value, fix) of each value marked x-copy-from-query that is not a run of the query's words: grounded
    decoding can never write it (a case or spacing difference, "domino 's" for "domino's", a typo). `fix` is the
    query's own words for it where only case or spacing differ (`query_span`), else None."""
    words = f" {' '.join(query.split())} "
    return [(at, value, query_span(query, value)) for pointer in copy_from_query_pointers(root)
            for at, value in values_at(data, pointer) if isinstance(value, str) and f" {value} " not in words]


def bounded_schema(schema: Any, max_string_chars: int, max_items: int) -> Any:
    """The schema with a length bound on every unbounded free string and array. Anything that satisfies it
    satisfies the original; without it a constrained model may write one string until the token budget
    runs out, and a truncated answer is invalid JSON."""
    if isinstance(schema, list):
        return [bounded_schema(s, max_string_chars, max_items) for s in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bounded_schema(value, max_string_chars, max_items) for key, value in schema.items()}
    if "string" in types(schema) and "enum" not in schema and "maxLength" not in schema:
        bounded["maxLength"] = max_string_chars
    if "array" in types(schema) and "maxItems" not in schema:
        bounded["maxItems"] = max_items
    return bounded
