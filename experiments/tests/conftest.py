"""The experiments' tests share the product's fixtures (tests/conftest.py) and carry the `lab` marker."""

from __future__ import annotations

import pytest

from tests.conftest import *  # noqa: F403  (fixtures: the 270M directory, its tokenizer, the tiny Gemma 3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "experiments/tests" in str(item.path):
            item.add_marker("lab")
