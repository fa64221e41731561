"""The Axolotl recipes, proven with Axolotl's own code on CPU: they validate, typos are caught, the loss
covers exactly the JSON answer, inference sees exactly the training prompt, and a short run learns."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from contract.config import load_config
from contract.prompt import prompt_token_ids, system_prompt
from contract.rows import read_rows
from tests.conftest import END_OF_TURN_ID, RECIPE_27B, RECIPE_270M, REPO_ROOT, Project, make, write_project
from training.recipe_check import check

RECIPES = [RECIPE_270M, RECIPE_27B]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_passes_our_checks_and_axolotls_validation(recipe: Path) -> None:
    assert check(recipe, files=False) == []  # its data files are `make data`'s


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_go_multi_gpu_with_one_deepspeed_key(tmp_path: Path, recipe: Path, zero: str) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text(recipe.read_text() + f"deepspeed: {REPO_ROOT}/axolotl_configs/deepspeed/{zero}.json\n")
    assert check(config, files=False) == []


MISTAKES = [
    ("append", "lora_rr: 16\n", "unknown key `lora_rr` (did you mean `lora_r`?)"),
    ("replace", ("field_messages: messages", "field_mesages: messages"),
     "datasets[0]: unknown key `field_mesages` (did you mean `field_messages`?)"),
    ("append", "learning_rate: 0.1\n", "duplicate key `learning_rate`"),
    ("replace", ("roles_to_train: [assistant]", "roles_to_train: [assistnt]"),
     "datasets[0]: roles_to_train must be ['assistant'] (the JSON answer), got ['assistnt']"),
    ("replace", ("lora_r: 128", "lora_r: many"), "Axolotl rejects it"),
]


@pytest.mark.parametrize(("how", "edit", "message"), MISTAKES, ids=["unknown-key", "dataset-key", "duplicate",
                                                                     "roles", "wrong-type"])
def test_a_mistake_in_a_recipe_is_rejected_with_a_clear_message(tmp_path: Path, how, edit, message) -> None:
    text = RECIPE_270M.read_text()
    text = text + edit if how == "append" else text.replace(*edit, 1)
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    problems = check(config, files=False)
    assert len(problems) == 1 and message in problems[0], problems


@pytest.fixture(scope="module")
def axolotl_tokenized(tmp_path_factory, sample_records, base_model_dir) -> tuple[Project, dict[int, list]]:
    """Our train/eval JSONL of the whole sample, tokenized and masked by `axolotl preprocess` with the real
    Gemma 3 tokenizer. Returns the prepared datasets keyed by their number of rows."""
    root = tmp_path_factory.mktemp("axolotl-tokenized")
    project = Project(root, *write_project(root, sample_records, base_model_dir, overrides={"dataset_num_proc": 1}))
    make("axolotl-preprocess", *project.make_args())
    prepared = [load_from_disk(str(d.parent)) for d in (root / "prepared").rglob("state.json")]
    return project, {len(ds): list(zip(ds["input_ids"], ds["labels"], strict=True)) for ds in prepared}


def _rows(path: Path):
    return read_rows(path.read_text())


def _trained(input_ids: list[int], labels: list[int]) -> tuple[int, list[int]]:
    """Index of the first trained token, and the trained tokens; asserts they form one contiguous run."""
    positions = [i for i, label in enumerate(labels) if label != -100]
    assert positions == list(range(positions[0], positions[-1] + 1)), "trained tokens are not one span"
    assert [labels[i] for i in positions] == [input_ids[i] for i in positions]
    return positions[0], [input_ids[i] for i in positions]


@pytest.mark.axolotl
@pytest.mark.parametrize("split", ["train", "eval"])
def test_loss_covers_exactly_the_json_answer_and_end_of_turn(axolotl_tokenized, tokenizer, split) -> None:
    project, prepared = axolotl_tokenized
    rows = _rows(project.processed / f"{split}.jsonl")
    expected = Counter(
        (*tokenizer(example.answer, add_special_tokens=False).input_ids, END_OF_TURN_ID) for example in rows
    )
    actual = Counter(tuple(_trained(ids, labels)[1]) for ids, labels in prepared[len(rows)])
    assert actual == expected


@pytest.mark.axolotl
def test_inference_prompt_ids_equal_the_training_ids_before_the_answer(axolotl_tokenized, tokenizer) -> None:
    project, prepared = axolotl_tokenized
    rows = _rows(project.processed / "eval.jsonl")
    prompt = system_prompt(load_config(project.pipeline))
    inference = Counter(tuple(prompt_token_ids(tokenizer, e.query, prompt)) for e in rows)
    training = Counter(tuple(ids[: _trained(ids, labels)[0]]) for ids, labels in prepared[len(rows)])
    assert training == inference
    # ...and the check has teeth: one changed character in the system prompt breaks it
    drifted = Counter(tuple(prompt_token_ids(tokenizer, e.query, prompt + " ")) for e in rows)
    assert training != drifted


@pytest.mark.axolotl
def test_short_training_run_lowers_the_loss_and_saves_a_loadable_adapter(tiny_run: Project, tiny_gemma3) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    state = json.loads(next(tiny_run.output_dir.glob("checkpoint-*/trainer_state.json")).read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < losses[0]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gemma3), tiny_run.output_dir)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: non-zero means it trained
    assert yaml.safe_load(tiny_run.config.read_text())["output_dir"] == str(tiny_run.output_dir)


@pytest.mark.axolotl
def test_a_finished_run_records_its_effective_recipe_and_its_completion(tiny_run: Project) -> None:
    state = json.loads((tiny_run.output_dir / "training_state.json").read_text())
    assert state["status"] == "complete"
    effective = yaml.safe_load((tiny_run.output_dir / "recipe.yaml").read_text())
    assert effective["max_steps"] == 6 and effective["bf16"] is False  # the override, and the CPU settings
    # Axolotl keys its tokenized cache by file path; ours adds the data's content hash
    assert effective["dataset_prepared_path"] == f"{tiny_run.root}/prepared/{state['data_sha256'][:16]}"


def test_new_data_under_the_same_path_gets_a_new_tokenized_cache(tmp_path: Path) -> None:
    from training.recipes import effective_recipe, load_recipe, recipe_variant

    recipe = recipe_variant(load_recipe(RECIPE_270M), workdir=tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/eval.jsonl").write_text("{}\n")
    (tmp_path / "data/train.jsonl").write_text('{"a": 1}\n')
    first = effective_recipe(recipe, {}, on_gpu=False)["dataset_prepared_path"]
    (tmp_path / "data/train.jsonl").write_text('{"a": 2}\n')
    second = effective_recipe(recipe, {}, on_gpu=False)["dataset_prepared_path"]
    assert first != second and first.startswith(f"{tmp_path}/prepared/")


@pytest.mark.axolotl
def test_the_tracking_switch_turns_on_tensorboard_and_nothing_else(tmp_path: Path, sample_records, tiny_gemma3) -> None:
    project = Project(tmp_path, *write_project(tmp_path, sample_records[:40], tiny_gemma3))
    make("train", *project.make_args(), "TENSORBOARD=1", "TRAIN_ARGS=--dry-run")
    effective = yaml.safe_load((project.output_dir / "recipe.dry-run.yaml").read_text())
    assert effective["use_tensorboard"] is True
    assert not any(effective.get(key) for key in ("use_wandb", "use_mlflow", "wandb_project", "use_comet"))


@pytest.mark.parametrize(("raised", "reason"), [
    (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory"),
    (SystemExit(2), "Axolotl exited with status 2"),
    (SystemExit(0), None),
])
def test_an_in_process_run_reports_why_it_failed(tmp_path: Path, monkeypatch, raised, reason) -> None:
    import training.__main__ as entry

    def axolotl_fails(recipe_file: Path) -> None:
        raise raised

    monkeypatch.setattr(entry, "train_in_process", axolotl_fails)
    failure = entry.train(tmp_path / "recipe.yaml", tmp_path, num_processes=1, on_gpu=False)
    assert failure == reason if reason is None else failure.startswith(reason)
