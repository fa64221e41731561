"""Reading the user's JSON strictly. Python's json module accepts a duplicated key (last one wins) and the
non-JSON constants NaN/Infinity; both would train something other than what the file says. Here they are
kept visible, so that the record checks can name them with the record's index."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from contract.config import shown
from contract.errors import UserError


class DuplicateKeys(dict):
    """A JSON object that named some key twice (the last value kept, as json does); `.duplicates` lists them."""

    duplicates: list[str]


class NonFinite:
    """Where the file says NaN, Infinity or -Infinity: not JSON, never trained on."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _object(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) == len(keys):
        return dict(pairs)
    obj = DuplicateKeys(pairs)
    obj.duplicates = sorted({key for key in keys if keys.count(key) > 1})
    return obj


def read_text(path: Path) -> str:
    """A user's text file, which must be UTF-8 (a leading byte-order mark is dropped: editors add one): anything else
    is a one-line error naming the byte."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise UserError(f"{shown(Path(path))}: no such file") from err
    except IsADirectoryError as err:
        raise UserError(f"{shown(Path(path))}: a directory, not a file") from err
    except PermissionError as err:
        raise UserError(f"{shown(Path(path))}: not readable (permission denied)") from err
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{shown(Path(path))}: not UTF-8 (byte 0x{data[err.start]:02x} on line {line}); "
                        "save the file as UTF-8") from err


def _number(text: str) -> float | NonFinite:
    """A JSON number; one too large for a float (1e400) would silently become infinity."""
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=NonFinite, parse_float=_number)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from err
    except RecursionError as err:
        raise UserError(f"{where}: nested too deeply to read (arrays or objects inside each other thousands of "
                        "levels deep)") from err


def load_records(path: Path) -> list[Any]:
    """raw_data.json: a JSON array. Per-record problems are left for the checks to report all at once."""
    records = parse_json(read_text(path), shown(Path(path)))
    if not isinstance(records, list):
        raise UserError(f"{shown(Path(path))}: must be a JSON array of records, found a JSON "
                        f"{'object' if isinstance(records, dict) else type(records).__name__}")
    if not records:
        raise UserError(f"{shown(Path(path))}: the array is empty; there is nothing to train on")
    return records


def labeled_records(records: list[Any], check: Draft202012Validator) -> list[tuple[int, dict]]:
    """(position, record) of each record the labeling tools can read: an object with a string query and data the
    schema accepts. The others are left to `make data`, which names what is wrong with each."""
    return [(i, r) for i, r in enumerate(records)
            if isinstance(r, dict) and isinstance(r.get("query"), str) and check.is_valid(r.get("data"))]


def strictness_problems(value: Any, pointer: str = "") -> list[str]:
    """Duplicated keys and non-finite numbers anywhere in a parsed value, each as 'pointer: problem'."""
    problems = []
    if isinstance(value, DuplicateKeys):
        problems.append(f"{pointer or '/'}: key(s) {value.duplicates} given twice (JSON keeps only the last)")
    if isinstance(value, NonFinite):
        problems.append(f"{pointer or '/'}: {value.text} is not a finite JSON number")
    if isinstance(value, dict):
        for key, item in value.items():
            problems += strictness_problems(item, f"{pointer}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += strictness_problems(item, f"{pointer}/{index}")
    return problems
