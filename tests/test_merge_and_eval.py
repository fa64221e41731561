"""Stages 3-4 on a tiny model trained by the real pipeline: the merge is proven and refused when it must be,
and `make eval` writes every artifact, resumes, and decodes to 100 % schema-valid JSON when constrained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from postprocess.__main__ import main as merge_main
from tests.conftest import REPO_ROOT, Project, make

pytestmark = pytest.mark.axolotl


@pytest.fixture(scope="module")
def merged(tiny_run: Project) -> Project:
    make("merge", *tiny_run.make_args())
    return tiny_run


def test_merge_writes_a_self_contained_model_with_a_passing_proof(merged: Project) -> None:
    out = merged.output_dir / "merged"
    proof = json.loads((out / "merge_proof.json").read_text())
    assert proof["passed"] and proof["max_abs_logit_diff"] <= proof["tolerance"]
    assert proof["adapter_effect"] > 10 * proof["max_abs_logit_diff"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).exists(), name
    assert 106 in json.loads((out / "generation_config.json").read_text())["eos_token_id"]  # stops at <end_of_turn>
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32 and not any("lora" in n for n, _ in model.named_parameters())  # fp32 merge


def test_merge_refuses_an_adapter_from_another_base(merged: Project, tmp_path, capsys) -> None:
    foreign = tmp_path / "foreign-adapter"
    shutil.copytree(merged.output_dir, foreign, ignore=shutil.ignore_patterns("checkpoint-*", "merged"))
    weights = load_file(foreign / "adapter_model.safetensors")
    # an adapter trained on a wider model: its lora_A expects 128 input features, not 64
    save_file({k: torch.zeros(v.shape[0], 128) if ".lora_A." in k and "q_proj" in k else v
               for k, v in weights.items()}, foreign / "adapter_model.safetensors")
    status = merge_main(["--config", str(merged.config), "--pipeline", str(merged.pipeline),
                         "--adapter", str(foreign), "--out", str(tmp_path / "never")])
    assert status == 1 and not (tmp_path / "never").exists()
    assert "does not fit this base model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def report(merged: Project) -> tuple[Project, str]:
    run = f"pytest-{merged.root.name}"
    shutil.rmtree(REPO_ROOT / "reports" / run, ignore_errors=True)
    args = (f"--run {run} --variants tuned,tuned+constrained,base --limit 6 --batch-size 3 --max-new-tokens 96 "
            "--max-string-chars 16 --max-items 2")
    make("eval", *merged.make_args(), f"EVAL_ARGS={args}")
    yield merged, run
    shutil.rmtree(REPO_ROOT / "reports" / run, ignore_errors=True)


def test_eval_writes_metrics_predictions_report_and_plots(report) -> None:
    _, run = report
    out = REPO_ROOT / "reports" / run
    for name in ("metrics.json", "report.md", "per_class_accuracy.png", "confusion.png", "training_loss.png",
                 "predictions-tuned.jsonl", "predictions-tuned+constrained.jsonl", "predictions-base.jsonl"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"tuned", "tuned+constrained", "base"}
    assert metrics["tuned"]["examples"] == 6 and metrics["tuned"]["speed"]["tokens_per_s"] > 0
    rows = [json.loads(line) for line in (out / "predictions-tuned.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(6))
    assert "| schema valid |" in (out / "report.md").read_text()


def test_constrained_decoding_is_schema_valid_even_from_a_random_model(report) -> None:
    _, run = report
    metrics = json.loads((REPO_ROOT / "reports" / run / "metrics.json").read_text())
    assert metrics["tuned+constrained"]["schema_valid"] == 1.0
    assert metrics["tuned"]["schema_valid"] < 1.0  # the same model unconstrained: the constraint did it


def test_an_interrupted_eval_resumes_without_redoing_work(report) -> None:
    merged, run = report
    predictions = REPO_ROOT / "reports" / run / "predictions-tuned.jsonl"
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join(lines[:4]) + "\n")  # as if stopped after 4 of 6
    make("eval", *merged.make_args(), f"EVAL_ARGS=--run {run} --variants tuned --limit 6 --batch-size 3 "
         "--max-new-tokens 96")
    resumed = predictions.read_text().splitlines()
    assert resumed[:4] == lines[:4] and len(resumed) == 6
