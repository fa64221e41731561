"""Check an Axolotl recipe before a run: Axolotl's own validation, plus what it lets through silently.

Axolotl accepts an unknown top-level key (`lora_rr`), a misspelt dataset key (`field_mesages`), a
duplicated YAML key (the last one wins) and `roles_to_train: [assistnt]` (zero trained tokens, a warning).
Each of these would train something other than what the recipe says, so each is an error here; all the
problems of a file are reported at once.

    python -m training.recipe_check axolotl_configs/gemma3-27b-qlora.yaml
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contract.config import load_yaml, resolve, shown
from contract.errors import UserError, run_cli
from contract.rows import END_OF_TURN

# Our data has one assistant turn per example; training any other role would train on the prompt.
ROLES_TO_TRAIN = ["assistant"]
# Stops a run at the first NaN/inf and avoids the cuDNN attention bug that causes it (training/plugin.py).
GUARDS_PLUGIN = "training.plugin.RecipePlugin"
# Settings that must be positive where given.
POSITIVE = ("micro_batch_size", "gradient_accumulation_steps", "sequence_len", "num_epochs", "learning_rate",
            "eval_batch_size")


def _field_names(model: Any) -> set[str]:
    return {name for name, field in model.model_fields.items()} | {
        field.alias for field in model.model_fields.values() if field.alias}


def known_top_level_keys(plugins: list[str]) -> set[str]:
    from axolotl.utils.schemas.config import AxolotlInputConfig

    keys = _field_names(AxolotlInputConfig)
    for plugin in plugins:
        module, name = plugin.rsplit(".", 1)
        args_path = getattr(importlib.import_module(module), name)().get_input_args()
        if args_path:
            args_module, args_name = args_path.rsplit(".", 1)
            keys |= _field_names(getattr(importlib.import_module(args_module), args_name))
    return keys


def _unknown(keys: Any, known: set[str], where: str) -> list[str]:
    problems = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"{where}unknown key `{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    return problems


def recipe_problems(recipe: dict) -> list[str]:
    """What Axolotl would accept silently but should not be."""
    from axolotl.utils.schemas.datasets import SFTDataset

    problems = _unknown(recipe, known_top_level_keys(recipe.get("plugins") or []), "")
    dataset_keys = _field_names(SFTDataset)
    for section in ("datasets", "test_datasets"):
        for i, dataset in enumerate(recipe.get(section) or []):
            problems += _unknown(dataset, dataset_keys, f"{section}[{i}]: ")
            if dataset.get("roles_to_train") != ROLES_TO_TRAIN:
                problems.append(f"{section}[{i}]: roles_to_train must be {ROLES_TO_TRAIN} (the JSON answer), "
                                f"got {dataset.get('roles_to_train')}")
    if GUARDS_PLUGIN not in (recipe.get("plugins") or []):
        problems.append(f"plugins must include {GUARDS_PLUGIN}: without it a run that goes NaN trains on and saves "
                        "a broken model")
    if recipe.get("eot_tokens") != [END_OF_TURN]:
        problems.append(f"eot_tokens must be ['{END_OF_TURN}'] or the model never learns to stop")
    if not recipe.get("base_model"):
        problems.append("base_model is missing: the model to fine-tune (a local directory or a Hub name)")
    for key in POSITIVE:  # Axolotl lets a negative batch size through to the Trainer
        value = recipe.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or value <= 0):
            problems.append(f"{key} must be a positive number, got {value!r}")
    return problems


def missing_files(recipe: dict) -> list[str]:
    """Local dataset files the recipe names that do not exist (yet: `make data` writes the sample's)."""
    return [f"{section}[{i}]: {dataset['path']}: no such file (run `make data` first)"
            for section in ("datasets", "test_datasets") for i, dataset in enumerate(recipe.get(section) or [])
            if dataset.get("ds_type") == "json" and dataset.get("path") and not resolve(dataset["path"]).exists()]


def axolotl_problems(recipe: dict) -> list[str]:
    """Axolotl's own validation: types, values, incompatible options."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    if recipe.get("plugins"):
        from axolotl.cli.config import prepare_plugins

        try:
            prepare_plugins(DictDefault(recipe))
        except (ImportError, AttributeError) as err:
            return [f"a plugin cannot be loaded: {err}"]
    try:
        validate_config(DictDefault(recipe))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        return [f"Axolotl rejects it: {err}"]
    return []


def check(path: Path, files: bool = True) -> list[str]:
    """Every problem of the file: duplicated keys, our checks, Axolotl's validation, and (with `files`) dataset files
    that are not there."""
    try:
        recipe, duplicates = load_yaml(path)
    except UserError as err:
        return [str(err)]
    if not isinstance(recipe, dict):
        return [f"{shown(Path(path))}: a recipe is a mapping of Axolotl settings"]
    problems = [f"duplicate key `{key}` (again at line {line}); YAML would silently keep the last one"
                for key, line in duplicates]
    problems += recipe_problems(recipe) + axolotl_problems(recipe) + (missing_files(recipe) if files else [])
    return [f"{shown(Path(path))}: {problem}" for problem in problems]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    problems = [problem for config in args.configs for problem in check(config)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"ok: {', '.join(map(str, args.configs))}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
