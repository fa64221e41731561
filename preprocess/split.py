"""Deterministic train/eval split, stratified on the main label."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence


def eval_count(class_size: int, eval_fraction: float) -> int:
    """A class of two or more examples gets at least one eval and one train example."""
    if class_size < 2:
        return 0
    return min(max(1, round(class_size * eval_fraction)), class_size - 1)


def stratified_split(labels: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of the train and eval examples. Same labels + seed -> same split, whatever the platform
    (random.Random with an int seed is stable across Python versions)."""
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
