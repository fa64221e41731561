"""Shared fixtures: the real Gemma 3 270M directory, a tiny random Gemma 3 with the real tokenizer, and
helpers that write a pipeline/recipe pair reading and writing only inside a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from contract.config import OFFLINE_ENV, REPO_ROOT

# Before anything imports huggingface_hub / axolotl: no hub, no telemetry, in every test.
os.environ.update({**OFFLINE_ENV, "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

import pytest
import yaml

from contract.config import load_config
from training.recipes import load_recipe, recipe_variant

# Fixtures that need the real Gemma 3 270M directory (built by `make base-model`, or here on first use): a test
# that uses one, directly or through another fixture, is marked `model` and left out of `make test-unit`.
MODEL_FIXTURES = {"base_model_dir"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("model")


SHIPPED = load_config(REPO_ROOT / "pipeline.yaml")  # the shipped settings (the prompt the tests use is its)
RECIPE_270M = REPO_ROOT / "axolotl_configs/gemma3-270m-lora.yaml"
RECIPE_27B = REPO_ROOT / "axolotl_configs/gemma3-27b-qlora.yaml"
END_OF_TURN_ID = 106  # Gemma 3's <end_of_turn>


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma 3 270M directory `make base-model` builds; if it has not been built, built once for this
    session in a temporary directory (~75 s)."""
    from training.base_model import COMPLETE_MARKER, DEFAULT_OUT, build

    if os.environ.get("TEST_TIER") == "unit":  # `make test-unit` promises no model: a test that needs one is mis-marked
        pytest.fail("a test of the unit tier asked for the Gemma 3 270M: it must carry the `model` marker")
    if (DEFAULT_OUT / COMPLETE_MARKER).exists():
        return DEFAULT_OUT
    return build(tmp_path_factory.mktemp("models") / "gemma-3-270m")


@pytest.fixture(scope="session")
def tokenizer(base_model_dir: Path):
    from contract.tokenizer import load_tokenizer

    return load_tokenizer(base_model_dir)


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A 2-layer random-weight Gemma 3 text model with the real tokenizer and chat template: every code
    path of the 270M, in seconds."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=2048,
        pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=[1, END_OF_TURN_ID], pad_token_id=0, bos_token_id=2)
    out = tmp_path_factory.mktemp("tiny-gemma3")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def schema() -> dict:
    return json.loads((REPO_ROOT / "data/schema.json").read_text())


@pytest.fixture(scope="session")
def sample_records() -> list[dict]:
    return json.loads((REPO_ROOT / "data/raw_data.json").read_text())


def write_project(tmp: Path, records: list | str, model: Path, *, recipe: Path = RECIPE_270M,
                  overrides: dict | None = None, settings: dict | None = None) -> tuple[Path, Path]:
    """A pipeline.yaml + recipe pair that read `records`, train `model` and write only under `tmp`."""
    raw = tmp / "raw_data.json"
    raw.write_text(records if isinstance(records, str) else json.dumps(records))
    config = tmp / "recipe.yaml"
    variant = recipe_variant(load_recipe(recipe), {"base_model": str(model), **(overrides or {})})
    variant["datasets"] = [{**variant["datasets"][0], "path": str(tmp / "processed/train.jsonl")}]
    variant["test_datasets"] = [{**variant["test_datasets"][0], "path": str(tmp / "processed/eval.jsonl")}]
    variant["output_dir"], variant["dataset_prepared_path"] = str(tmp / "out"), str(tmp / "prepared")
    config.write_text(yaml.safe_dump(variant, sort_keys=False))
    pipeline = tmp / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "recipe": str(config), "raw_data": str(raw), "schema": str(REPO_ROOT / "data/schema.json"),
        "system_prompt": str(SHIPPED.path("system_prompt")), "main_label": "/intent",
        "allow_prompt_without_schema": SHIPPED.allow_prompt_without_schema,
        "eval_fraction": 0.1, "seed": 42, "eval": {"reports_dir": str(tmp / "reports")}, **(settings or {}),
    }))
    return pipeline, config


def make(*args: str, timeout: int = 1800, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a Makefile target exactly as the README does; by default fail with the tail of its output."""
    result = subprocess.run(["make", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert result.returncode == 0, \
            f"make {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result


@dataclass(frozen=True)
class Project:
    root: Path
    pipeline: Path
    config: Path

    @property
    def output_dir(self) -> Path:
        return self.root / "out"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def make_args(self) -> list[str]:
        return [f"CONFIG={self.config}", f"PIPELINE={self.pipeline}"]

    def stage_args(self) -> list[str]:
        return ["--pipeline", str(self.pipeline), "--config", str(self.config)]


TINY_TRAINING = {
    # a few CPU steps of the real recipe on the tiny model; a high learning rate so the loss visibly moves
    "max_steps": 6, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 0.005,
    "warmup_ratio": 0.0, "logging_steps": 1, "evals_per_epoch": None, "saves_per_epoch": None,
    "eval_steps": 6, "save_steps": 6, "dataset_num_proc": 1,
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, sample_records: list, tiny_gemma3: Path) -> Project:
    """`make train` of the 270M recipe on the tiny model and 240 sample records (~2 min on 2 cores)."""
    root = tmp_path_factory.mktemp("tiny-run")
    project = Project(root, *write_project(root, sample_records[:240], tiny_gemma3, overrides=TINY_TRAINING))
    make("train", *project.make_args())
    return project
