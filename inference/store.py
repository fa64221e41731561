"""Answers appended to a JSONL file batch by batch, resumable after an interruption and keyed by content: the
model, the inputs and the settings must match, or the file starts over."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from contract.config import shown
from contract.errors import UserError
from contract.outputs import write_json_atomic, write_text_atomic
from inference.generate import Answer, Generator


def read_jsonl_resumable(path: Path) -> list[dict] | None:
    """A predictions file as written so far. A torn last line (what an interrupted write leaves) is reported
    and dropped, and the file is rewritten without it, so the run resumes from there. A file damaged anywhere else
    (edited, an invalid byte) cannot be resumed: None, and the caller starts over."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        print(f"{shown(path)}: not UTF-8 any more (damaged); starting it over")
        return None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number == len(lines):
            print(f"{shown(path)}: dropped a torn last line ({len(line)} characters, line {number}: an "
                  "interrupted write); resuming from there")
            path.write_text("".join(lines[:-1]), encoding="utf-8")
        else:
            print(f"{shown(path)}: line {number} is not a row this stage wrote (damaged); starting it over")
            return None
    return rows


def read_identity(meta: Path) -> dict[str, Any] | None:
    """What made a predictions file (its .run.json), or None where that record is damaged."""
    try:
        identity = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return identity if isinstance(identity, dict) else None


class Resumable:
    """A JSONL file of rows keyed by position, plus `<name>.run.json` saying what made them (`identity`).
    Rows from another model, inputs or settings are never mixed with new ones: the file starts over."""

    def __init__(self, path: Path, identity: dict[str, Any], expected: Sequence[dict[str, Any]],
                 fresh: bool = False) -> None:
        """`expected[i]`: fields row i must carry (its query, its reference) for an old row to be kept."""
        self.path, self.identity = path, identity
        self.meta = path.with_name(path.name.removesuffix(".jsonl") + ".run.json")
        self.done: dict[int, dict] = {}
        if path.exists() and path.stat().st_size and not self.meta.exists():
            raise UserError(f"{shown(path)}: exists, and no answers of this stage are in it (no "
                            f"{self.meta.name} beside it): it is not overwritten; choose another output file")
        previous = read_identity(self.meta) if self.meta.exists() and not fresh else None
        if self.meta.exists() and not fresh and previous is None:
            print(f"{shown(path)}: its {self.meta.name} is damaged; starting it over")
        if previous is not None and previous != identity:
            changed = sorted(key for key in identity.keys() | previous.keys() if identity.get(key) != previous.get(key))
            print(f"{shown(path)}: made with another {', '.join(changed)}; starting it over")
        elif previous is not None:
            for row in read_jsonl_resumable(path) or []:
                index = row.get("index", -1)
                if not 0 <= index < len(expected) or any(row.get(k) != v for k, v in expected[index].items()):
                    print(f"{shown(path)}: row {index} does not match the input there; starting it over")
                    self.done = {}
                    break
                self.done[index] = row
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.done:
            path.write_text("")
        write_json_atomic(self.meta, identity)

    def append(self, rows: Sequence[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        for row in rows:
            self.done[row["index"]] = row

    def sort(self) -> list[dict]:
        """Once every row is in: the file rewritten in input order (batches run longest prompt first)."""
        rows = [self.done[i] for i in sorted(self.done)]
        write_text_atomic(self.path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return rows


def run_resumable(generator: Generator, queries: Sequence[str], store: Resumable, batch_size: int, desc: str,
                  row: Callable[[int, Answer], dict]) -> list[dict]:
    """Answer the queries not in `store` yet, appending each batch; all rows, in input order."""
    todo = [i for i in range(len(queries)) if i not in store.done]
    with tqdm(total=len(queries), initial=len(queries) - len(todo), desc=desc, unit="ex") as bar:
        for positions, answers in generator.answer([queries[i] for i in todo], batch_size):
            store.append([row(todo[p], a) for p, a in zip(positions, answers, strict=True)])
            bar.update(len(positions))
    return store.sort()
