"""Data parallelism, proven on CPU ranks (gloo) through the real `make train` path: two processes with a
micro-batch each train exactly what one process trains with twice the gradient accumulation; LoRA, DeepSpeed
ZeRO-2 and QLoRA runs with two ranks complete and save an adapter PEFT loads. (FSDP2 does not run on CPU ranks:
Accelerate's FSDP path calls torch._C._cuda_setDevice; README, "The recipes".)

The equivalence is checked on a full fine-tune: a fresh LoRA adapter draws its random A matrices from an RNG
that Axolotl advances differently with one or two processes, so two LoRA runs start from different adapters
(their first losses agree, as B = 0, but not their first gradients). Same seed, same data order (sequential
sampling), no dropout: the two runs must agree to float error."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_TRAINING, Project, make, write_project

pytestmark = pytest.mark.axolotl

SAME_STEPS = {**TINY_TRAINING, "max_steps": 4, "micro_batch_size": 2, "learning_rate": 0.002, "lora_dropout": 0.0,
              "curriculum_sampling": True, "eval_steps": None, "evals_per_epoch": 0, "save_steps": 4}
FULL_FINETUNE = {"adapter": None, "lora_r": None, "lora_alpha": None, "lora_dropout": None,
                 "lora_target_linear": None, "learning_rate": 0.0002}
# Sums of the same per-token losses in another order (two ranks' halves, then the all-reduce): float32 rounding.
TOLERANCE = 1e-4


def train(tmp_path_factory, name: str, records: list, model, processes: int, accumulation: int,
          overrides: dict | None = None) -> Project:
    root = tmp_path_factory.mktemp(name)
    project = Project(root, *write_project(root, records, model, overrides={**SAME_STEPS, **(overrides or {})}))
    make("train", *project.make_args(),
         f"TRAIN_ARGS=--num-processes {processes} --gradient_accumulation_steps={accumulation}")
    return project


def losses(project: Project) -> list[float]:
    state = json.loads(next(project.output_dir.glob("checkpoint-*/trainer_state.json")).read_text())
    return [float(entry["loss"]) for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_records, tiny_gemma3) -> dict[str, Project]:
    records = sample_records[:120]
    full = {"overrides": FULL_FINETUNE}
    return {"two ranks": train(tmp_path_factory, "ddp", records, tiny_gemma3, 2, 1, **full),
            "one, accumulating two": train(tmp_path_factory, "ga2", records, tiny_gemma3, 1, 2, **full),
            "one, no accumulation": train(tmp_path_factory, "ga1", records, tiny_gemma3, 1, 1, **full),
            "two ranks, LoRA": train(tmp_path_factory, "ddp-lora", records, tiny_gemma3, 2, 1)}


def test_two_ranks_train_what_one_process_trains_with_doubled_accumulation(runs) -> None:
    ddp, single = losses(runs["two ranks"]), losses(runs["one, accumulating two"])
    assert len(ddp) == len(single) == 4
    assert ddp == pytest.approx(single, rel=TOLERANCE)
    # ...and the comparison can fail: one process on half the examples per step trains something else
    assert losses(runs["one, no accumulation"]) != pytest.approx(single, rel=TOLERANCE)


def test_the_two_rank_run_records_its_processes_and_saves_an_adapter_peft_loads(runs, tiny_gemma3) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    project = runs["two ranks, LoRA"]
    assert json.loads((project.output_dir / "training_state.json").read_text())["processes"] == 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gemma3), project.output_dir)
    rank = model.peft_config["default"].r
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if "q_proj.lora_A" in name}
    assert shapes and all(shape == (rank, 64) for shape in shapes.values())  # hidden size 64


SHARDED = {
    "deepspeed-zero2": {"deepspeed": "axolotl_configs/deepspeed/zero2.json"},  # DS_ACCELERATOR=cpu
    "qlora-nf4": {"adapter": "qlora", "load_in_4bit": True},  # bitsandbytes' CPU backend
}


@pytest.mark.parametrize("variant", list(SHARDED))
def test_deepspeed_zero2_and_qlora_train_with_two_ranks(tmp_path, sample_records, tiny_gemma3, variant) -> None:
    overrides = {**SAME_STEPS, **SHARDED[variant]}
    project = Project(tmp_path, *write_project(tmp_path, sample_records[:120], tiny_gemma3, overrides=overrides))
    make("train", *project.make_args(), "TRAIN_ARGS=--num-processes 2")
    assert json.loads((project.output_dir / "training_state.json").read_text())["status"] == "complete"
    assert len(losses(project)) == 4 and (project.output_dir / "adapter_model.safetensors").exists()
