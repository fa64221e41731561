"""Outputs that are complete or absent, never torn: files are written beside their target and renamed into
place; a set of files (train, eval, stats, rejects) is written into a fresh directory that replaces the old
one, so a failed or killed run leaves the previous complete set."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; outputs are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _alive(pid: str) -> bool:
    """Whether the process that made a staging directory (its pid is in the name) still runs."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def replaced_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory; when the block succeeds, it becomes `target` (the old one is removed).
    If the block fails, `target` is untouched. A kill between the two renames leaves `target` absent and the
    previous set in `<target>.previous`, never a mix; the next run puts it back first (and says so), and removes the
    staging directories that killed runs left."""
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = target.with_name(f"{target.name}.previous")
    if not target.exists() and previous.is_dir():
        previous.rename(target)
        print(f"{target}: restored the previous complete set (a run was killed while replacing it)", file=sys.stderr)
    for stale in target.parent.glob(f".{target.name}.*.*"):
        if stale.is_dir() and not _alive(stale.name[len(target.name) + 2:].split(".")[0]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}."))
    try:
        yield staging
        staging.chmod(0o755)
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
