"""Axolotl's dataset preparation (tokenizing, label masking, saving) of the shipped recipe's data, with our plugin
and without it, side by side: wall seconds of `python -m axolotl.cli.preprocess`, each from an empty cache.

    python -m experiments.prep_270m          # after `make data`; on a CPU the recipe gets make's CPU settings

Without the plugin, `datasets` fingerprints every map by pickling Gemma's 262k-token tokenizer and runs
`num_proc=1` in a freshly spawned interpreter (training/plugin.py says why and what the plugin does instead).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from contract.config import OFFLINE_ENV, REPO_ROOT, load_config
from training.recipes import CPU_OVERRIDES, load_recipe, recipe_variant

PLUGIN = "training.plugin.RecipePlugin"


def variants(recipe: dict) -> dict[str, dict]:
    """The recipe as shipped, and without our plugin (and the keys only the plugin knows)."""
    without = {"plugins": [p for p in recipe["plugins"] if p != PLUGIN] or None, "loss_positions_only": None}
    return {"with the plugin": recipe, "without the plugin": recipe_variant(recipe, without)}


def prepare_seconds(recipe: dict, workdir: Path) -> float:
    path = workdir / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, "dataset_prepared_path": str(workdir / "prepared")}, sort_keys=False))
    start = time.perf_counter()
    with (workdir / "preprocess.log").open("w") as log:
        subprocess.run([sys.executable, "-m", "axolotl.cli.preprocess", str(path)], cwd=REPO_ROOT, stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE_ENV}, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    recipe = load_recipe(load_config().recipe)
    if not torch.cuda.is_available():
        recipe = recipe_variant(recipe, CPU_OVERRIDES)
    for name, variant in variants(recipe).items():
        with tempfile.TemporaryDirectory() as workdir:
            print(f"{name}: {prepare_seconds(variant, Path(workdir)):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
