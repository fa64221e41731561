"""Deriving one recipe from another: the ONE function behind make's overrides (`TRAIN_ARGS`), the CPU settings,
the sweep's experiments, the 27B bench and the tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from contract.config import load_yaml, resolve, shown
from contract.errors import UserError, run_cli

# No GPU: no bf16/fp16/tf32 (`bf16: auto` would pick fp16) and no Triton LoRA kernels (CUDA only).
CPU_OVERRIDES = {"bf16": False, "fp16": False, "tf32": False, "lora_mlp_kernel": False, "lora_qkv_kernel": False,
                 "lora_o_kernel": False, "lora_embedding_kernel": False}


def load_recipe(path: str | Path) -> dict[str, Any]:
    recipe, duplicates = load_yaml(resolve(path))
    if duplicates:
        raise UserError(f"{shown(resolve(path))}: duplicate key(s) "
                        + ", ".join(f"`{key}` (line {line})" for key, line in duplicates)
                        + "; YAML keeps only the last one")
    if not isinstance(recipe, dict):
        raise UserError(f"{shown(resolve(path))}: a recipe is a mapping of Axolotl settings")
    return recipe


def recipe_variant(base: dict[str, Any], overrides: dict[str, Any] | None = None,
                   workdir: str | Path | None = None) -> dict[str, Any]:
    """`base` with `overrides` applied (a value of None removes the key). With `workdir` (relative to the repo
    root, as Axolotl reads paths), everything the run reads and writes moves under it: data/train.jsonl,
    data/eval.jsonl, model/ and prepared/."""
    recipe = {key: value for key, value in {**base, **(overrides or {})}.items() if value is not None}
    if workdir is not None:
        workdir = str(workdir).rstrip("/")
        recipe["datasets"] = [{**recipe["datasets"][0], "path": f"{workdir}/data/train.jsonl"}]
        recipe["test_datasets"] = [{**recipe["test_datasets"][0], "path": f"{workdir}/data/eval.jsonl"}]
        recipe["output_dir"] = f"{workdir}/model"
        recipe["dataset_prepared_path"] = f"{workdir}/prepared"
    return recipe


def parse_overrides(arguments: Sequence[str]) -> dict[str, Any]:
    """Axolotl-style `--key=value` arguments; values are read as YAML (`--num_epochs=5`, `--adapter=null`)."""
    overrides = {}
    for argument in arguments:
        key, sep, value = argument.removeprefix("--").partition("=")
        if not argument.startswith("--") or not sep or not key:
            raise UserError(f"recipe override `{argument}` is not of the form --key=value")
        overrides[key] = yaml.safe_load(value)
    return overrides


def data_fingerprint(recipe: dict[str, Any]) -> str:
    """sha256 of the train and eval files' contents. Axolotl keys its tokenized cache by the files' paths, not
    their contents: new data under the same path would train on the old tokens without this."""
    digest = hashlib.sha256()
    for section in ("datasets", "test_datasets"):
        for dataset in recipe.get(section) or []:
            path = resolve(dataset["path"])
            if not path.exists():
                raise UserError(f"{shown(path)}: no such file; run `make data` first")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def effective_recipe(base: dict[str, Any], overrides: dict[str, Any], on_gpu: bool) -> dict[str, Any]:
    """What a training run really uses: the recipe, the CPU settings where there is no GPU, the user's overrides,
    and a tokenized-data cache keyed by the data's content."""
    recipe = recipe_variant(base, {**({} if on_gpu else CPU_OVERRIDES), **overrides})
    prepared = recipe.get("dataset_prepared_path", "last_run_prepared")
    recipe["dataset_prepared_path"] = f"{prepared}/{data_fingerprint(recipe)[:16]}"
    return recipe


def main(argv: Sequence[str] | None = None) -> int:
    """python -m training.recipes <recipe> --out <file> [key=value ...]: write a variant (scripts use this)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", help="move the run's data, output and cache under this directory")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="values read as YAML; null removes a key")
    args = parser.parse_intermixed_args(argv)
    variant = recipe_variant(load_recipe(args.recipe), parse_overrides([f"--{o}" for o in args.overrides]),
                             args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(variant, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
