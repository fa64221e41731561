"""Stages 3-4 on a tiny model trained by the real pipeline: the merge is proven and refused when it must be,
and `make eval` writes every artifact, resumes, and decodes to 100 % schema-valid JSON when constrained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from contract.errors import run_cli
from merge.__main__ import main as merge_main
from tests.conftest import END_OF_TURN_ID, Project, make

pytestmark = pytest.mark.axolotl


@pytest.fixture(scope="module")
def merged(tiny_run: Project) -> Project:
    make("merge", *tiny_run.make_args())
    return tiny_run


def test_merge_writes_a_self_contained_model_with_a_passing_proof(merged: Project) -> None:
    out = merged.output_dir / "merged"
    proof = json.loads((out / "merge_proof.json").read_text())
    logits, matrices = proof["logits"], proof["matrices"]
    assert proof["passed"] and logits["max_abs_logit_diff"] <= logits["tolerance"]
    assert logits["adapter_effect"] > 10 * logits["max_abs_logit_diff"]
    assert matrices["matrices"] > 0 and matrices["exact"] == matrices["matrices"]
    assert proof["dtype"] == "float32" and len(proof["adapter_sha256"]) == 64  # auto: a small model, in float32
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).exists(), name
    assert END_OF_TURN_ID in json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32 and not any("lora" in n for n, _ in model.named_parameters())  # fp32 merge


def test_merge_refuses_an_adapter_from_another_base(merged: Project, tmp_path, capsys) -> None:
    foreign = tmp_path / "foreign-adapter"
    shutil.copytree(merged.output_dir, foreign, ignore=shutil.ignore_patterns("checkpoint-*", "merged"))
    weights = load_file(foreign / "adapter_model.safetensors")
    # an adapter trained on a wider model: its lora_A expects 128 input features, not 64
    save_file({k: torch.zeros(v.shape[0], 128) if ".lora_A." in k and "q_proj" in k else v
               for k, v in weights.items()}, foreign / "adapter_model.safetensors")
    status = run_cli(merge_main, [*merged.stage_args(), "--adapter", str(foreign), "--out", str(tmp_path / "never")])
    assert status == 1 and not (tmp_path / "never").exists()
    assert "does not fit this base model" in capsys.readouterr().err


EVAL_ARGS = "--variants tuned,tuned+constrained,base --limit 6 --batch-size 3 --max-new-tokens 96 " \
            "--max-string-chars 16 --max-items 2"


@pytest.fixture(scope="module")
def report(merged: Project) -> Project:
    make("eval", *merged.make_args(), f"EVAL_ARGS=--run tiny {EVAL_ARGS}")
    return merged


def test_eval_writes_metrics_predictions_report_and_plots(report: Project) -> None:
    out = report.reports / "tiny"
    for name in ("metrics.json", "report.md", "per_class_accuracy.png", "confusion.png", "training_loss.png",
                 "predictions-tuned.jsonl", "predictions-tuned+constrained.jsonl", "predictions-base.jsonl"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"tuned", "tuned+constrained", "base"}
    assert metrics["variants"]["tuned"]["examples"] == 6 and metrics["variants"]["tuned"]["speed"]["tokens_per_s"] > 0
    assert metrics["config"]["decoding"]["batch_size"] == 3  # the command line's value, recorded
    rows = [json.loads(line) for line in (out / "predictions-tuned.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(6))
    assert "| schema valid " in (out / "report.md").read_text()


def test_constrained_decoding_is_schema_valid_even_from_a_random_model(report: Project) -> None:
    variants = json.loads((report.reports / "tiny/metrics.json").read_text())["variants"]
    assert variants["tuned+constrained"]["schema_valid"] == 1.0
    assert variants["tuned"]["schema_valid"] < 1.0  # the same model unconstrained: the constraint did it


def test_an_interrupted_eval_resumes_without_redoing_work(report: Project) -> None:
    predictions = report.reports / "tiny/predictions-tuned.jsonl"
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])  # stopped after 4 of 6, mid-line
    result = make("eval", *report.make_args(), f"EVAL_ARGS=--run tiny {EVAL_ARGS} --variants tuned")
    resumed = predictions.read_text().splitlines()
    assert resumed[:4] == lines[:4] and len(resumed) == 6
    assert "dropped a torn last line" in result.stdout


def test_eval_after_retraining_does_not_report_the_old_model(report: Project) -> None:
    merged = report.output_dir / "merged/model.safetensors"
    merged.touch()  # as `make merge` after a new training run rewrites it
    result = make("eval", *report.make_args(), f"EVAL_ARGS=--run tiny {EVAL_ARGS} --variants tuned")
    assert "made with another model; starting it over" in result.stdout


def test_predict_answers_every_line_of_a_text_file_schema_valid(merged: Project, tmp_path) -> None:
    queries = tmp_path / "queries.txt"
    # the shorter query first: batches run longest first, the file is still in input order
    queries.write_text("lights off\nwake me up at seven am tomorrow please\n")
    answers = tmp_path / "answers.jsonl"
    make("predict", *merged.make_args(), f"PREDICT_ARGS=--input {queries} --output {answers} --max-new-tokens 96 "
         "--max-string-chars 16 --max-items 2")
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and rows[0]["query"] == "lights off"
    assert all(r["schema_valid"] and isinstance(r["answer"], dict) for r in rows)


BAD_QUERIES = [
    ("empty-line", b"wake me up\n\nlights off\n", "line 2: empty; remove it or put a query there"),
    ("latin-1", "caf\u00e9 music\n".encode("latin-1"), "not UTF-8 (byte 0xe9 on line 1)"),
    ("jsonl-no-query", b'{"text": "lights off"}\n', "line 1: needs a \"query\" string"),
    ("too-long", ("play " * 1200 + "\n").encode(), "line 1: the prompt is"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
def test_predict_names_every_bad_input_line_and_answers_nothing(merged: Project, tmp_path, capsys, name, content,
                                                                message) -> None:
    from evaluation.predict import main as predict_main

    queries = tmp_path / ("queries.jsonl" if name.startswith("jsonl") else "queries.txt")
    queries.write_bytes(content)
    answers = tmp_path / "answers.jsonl"
    assert run_cli(predict_main, [*merged.stage_args(), "--input", str(queries), "--output", str(answers)]) == 1
    assert message in capsys.readouterr().err and not answers.exists()


def test_the_card_and_the_upload_plan_hold_what_a_user_needs_and_no_training_state(merged: Project) -> None:
    from release.push import main as push_main

    model_dir = merged.output_dir / "merged"
    (model_dir / "optimizer.pt").write_bytes(b"x")  # as if training files had been copied there
    (model_dir / "training_args.bin").write_bytes(b"x")
    assert run_cli(push_main, [*merged.stage_args(), "--repo", "you/model", "--dry-run"]) == 0
    card = (model_dir / "README.md").read_text()
    assert "Gemma Terms of Use" in card and '"x-copy-from-query":true' in card and "merged logits are within" in card
    from release.push import upload_plan

    names = {p.name for p in upload_plan(model_dir)}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "merge_proof.json"} <= names
    assert not names & {"optimizer.pt", "training_args.bin"}
