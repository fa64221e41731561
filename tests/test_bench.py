"""The arithmetic behind the README's measured figures: the sweep's derived recipes, the 27B FLOP count and the
depth extrapolation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.extrapolate_27b import FULL_DEPTH, extrapolate
from bench.gemma27b_geometry import matmul_params
from bench.sweep_270m import SWEEP_DIR, derived_recipe, load_experiments, subsample
from contract.config import REPO_ROOT


def test_a_full_fine_tune_experiment_drops_every_lora_key_and_writes_only_under_its_own_directory() -> None:
    spec, experiments = load_experiments(REPO_ROOT / "bench/experiments_270m.yaml")
    base = yaml.safe_load((REPO_ROOT / spec["recipe"]).read_text())
    full_ft = next(e for e in experiments if e.name == "full-ft")
    recipe = derived_recipe(base, spec["common"], full_ft, SWEEP_DIR / full_ft.name)
    adapter_keys = [key for key in recipe
                    if key == "adapter" or (key.startswith("lora_") and not key.endswith("_kernel"))]
    assert adapter_keys == []
    assert recipe["learning_rate"] == 5e-5
    written = [recipe["output_dir"], recipe["dataset_prepared_path"], recipe["datasets"][0]["path"],
               recipe["test_datasets"][0]["path"]]
    assert all(path.startswith("outputs/sweep/full-ft/") for path in written)
    assert base["datasets"][0]["path"] == "data/processed/train.jsonl"  # the shipped recipe is untouched


def test_the_sweep_baseline_is_the_pre_sweep_recipe_and_lora_r64_is_the_shipped_one() -> None:
    spec, experiments = load_experiments(REPO_ROOT / "bench/experiments_270m.yaml")
    base = yaml.safe_load((REPO_ROOT / spec["recipe"]).read_text())
    by_name = {e.name: derived_recipe(base, spec["common"], e, SWEEP_DIR / e.name) for e in experiments}
    assert (by_name["baseline"]["lora_r"], by_name["baseline"]["lora_alpha"]) == (16, 32)
    assert (by_name["lora-r64"]["lora_r"], by_name["lora-r64"]["lora_alpha"]) == (base["lora_r"], base["lora_alpha"])


def test_subsampling_the_train_split_is_deterministic_and_keeps_file_order(tmp_path: Path) -> None:
    rows = [f'{{"n": {i}}}\n' for i in range(101)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(rows))
    second.write_text("".join(rows))
    assert subsample(first, 0.5, seed=42) == subsample(second, 0.5, seed=42) == 50
    kept = first.read_text().splitlines(keepends=True)
    assert kept == second.read_text().splitlines(keepends=True)
    assert kept == sorted(kept, key=rows.index)


def test_gemma_3_27b_text_model_multiplies_each_token_by_27_billion_weights() -> None:
    # 62 layers x 412.9 M (attention 66.1 M + MLP 346.8 M) + output layer 262,208 x 5,376.
    assert matmul_params(FULL_DEPTH) == 62 * (5376 * 128 * (2 * 32 + 2 * 16) + 3 * 5376 * 21504) + 262208 * 5376
    assert matmul_params(FULL_DEPTH) / 1e9 == pytest.approx(27.0, abs=0.05)


def test_the_depth_fit_recovers_an_exactly_linear_law() -> None:
    runs = {layers: {"peak_allocated_gib": 3.0 + 0.2 * layers, "peak_reserved_gib": 4.0 + 0.25 * layers,
                     "tokens_per_s": 1 / (1e-4 + 2e-5 * layers)} for layers in (4, 8, 16)}
    full = extrapolate(runs)
    assert full["peak_allocated_gib"] == pytest.approx(3.0 + 0.2 * 62)
    assert full["per_layer_reserved_gib"] == pytest.approx(0.25)
    assert full["tokens_per_s"] == pytest.approx(1 / (1e-4 + 2e-5 * 62))
