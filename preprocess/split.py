"""Deterministic train/eval split, stratified on the main label."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer lookup ("/intent", "/entities/0/type")."""
    value = document
    for raw in pointer.lstrip("/").split("/") if pointer not in ("", "/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def eval_count(class_size: int, eval_fraction: float) -> int:
    """A class of two or more examples gets at least one eval and one train example."""
    if class_size < 2:
        return 0
    return min(max(1, round(class_size * eval_fraction)), class_size - 1)


def stratified_split(
    labels: Sequence[str], eval_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Positions of the train and eval examples. Same labels + seed -> same split, whatever the platform
    (random.Random with an int seed is stable across Python versions)."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1, got {eval_fraction}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_label[label].append(position)
    rng = random.Random(seed)
    train: list[int] = []
    evaluation: list[int] = []
    for label in sorted(by_label):
        members = by_label[label][:]
        rng.shuffle(members)
        n_eval = eval_count(len(members), eval_fraction)
        evaluation += members[:n_eval]
        train += members[n_eval:]
    rng.shuffle(train)
    return train, sorted(evaluation)
