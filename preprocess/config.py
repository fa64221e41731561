"""The pipeline settings (`pipeline.yaml`) and the bits of an Axolotl recipe the stages need."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO_ROOT / "axolotl_configs/gemma3-270m-lora.yaml"
# What the Makefile exports for every stage: no hub, no telemetry (a crashed run with telemetry on hangs for
# minutes). Python that launches stages itself (tests, bench/) passes the same.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
               "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --pipeline, the two inputs every stage's CLI shares."""
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE,
                        help="the Axolotl recipe: model, sequence_len, train/eval files, output_dir")
    parser.add_argument("--pipeline", type=Path, default=REPO_ROOT / "pipeline.yaml",
                        help="data paths, eval fraction, seed, main label")


@dataclass(frozen=True)
class Pipeline:
    raw_data: Path
    schema: Path
    system_prompt: Path
    main_label: str
    eval_fraction: float
    seed: int

    @classmethod
    def load(cls, path: Path = REPO_ROOT / "pipeline.yaml") -> Pipeline:
        raw = yaml.safe_load(Path(path).read_text())
        base = Path(path).resolve().parent
        expected = set(cls.__dataclass_fields__)
        if set(raw) != expected:
            raise ValueError(
                f"{path}: keys must be exactly {sorted(expected)}; "
                f"missing {sorted(expected - set(raw))}, unknown {sorted(set(raw) - expected)}"
            )
        return cls(
            raw_data=base / raw["raw_data"],
            schema=base / raw["schema"],
            system_prompt=base / raw["system_prompt"],
            main_label=str(raw["main_label"]),
            eval_fraction=float(raw["eval_fraction"]),
            seed=int(raw["seed"]),
        )


@dataclass(frozen=True)
class Recipe:
    """What the data stage needs from an Axolotl YAML: the tokenizer, the length limit, the file names."""

    path: Path
    base_model: str
    tokenizer: str
    sequence_len: int
    train_file: Path
    eval_file: Path
    output_dir: Path

    @classmethod
    def load(cls, path: Path) -> Recipe:
        raw = yaml.safe_load(Path(path).read_text())
        try:
            train = raw["datasets"][0]["path"]
            evaluation = raw["test_datasets"][0]["path"]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"{path}: needs `datasets` and `test_datasets` entries with a `path`") from err
        return cls(
            path=Path(path),
            base_model=_local_or_hub(raw["base_model"]),
            tokenizer=_local_or_hub(raw.get("tokenizer_config") or raw["base_model"]),
            sequence_len=int(raw["sequence_len"]),
            train_file=REPO_ROOT / train,
            eval_file=REPO_ROOT / evaluation,
            output_dir=REPO_ROOT / raw["output_dir"],
        )


def _local_or_hub(name: str) -> str:
    """Recipes name local models relative to the repo root (as Axolotl, run from the root, reads them)."""
    local = REPO_ROOT / name
    return str(local) if local.exists() else name
