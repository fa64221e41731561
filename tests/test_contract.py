"""The shared contract: one schema walker for key order, decoding bounds and scored fields ($ref/$defs and
nested objects included); one row format; one typed configuration whose command-line flags override it."""

from __future__ import annotations

import argparse
import json

import pytest

from contract.config import add_stage_arguments, config_from_args, run_env
from contract.prompt import answer_text, labels_text, render_system_prompt
from contract.rows import read_row, training_row
from contract.schema import bounded_schema, canonical_answer, copy_from_query_pointers, scored_fields
from tests.conftest import REPO_ROOT
from tests.test_scoring import NESTED


def test_answers_follow_the_schema_order_through_refs_and_nesting() -> None:
    data = {"items": [{"value": "x", "type": "a"}], "slots": {"count": 2, "date": "monday"}, "intent": "buy"}
    assert list(canonical_answer(data, NESTED)) == ["intent", "slots", "items"]
    assert answer_text(data, NESTED) == \
        '{"intent":"buy","slots":{"date":"monday","count":2},"items":[{"type":"a","value":"x"}]}'


def test_scored_fields_cover_nested_labels_and_lists(schema) -> None:
    assert [(f.pointer, f.kind) for f in scored_fields(NESTED)] == [
        ("/intent", "label"), ("/slots/date", "label"), ("/slots/count", "label"), ("/items", "list")]
    assert [(f.pointer, f.kind) for f in scored_fields(schema)] == [
        ("/scenario", "label"), ("/intent", "label"), ("/entities", "list")]


def test_bounds_reach_strings_and_arrays_in_defs_and_leave_enums() -> None:
    bounded = bounded_schema(NESTED, max_string_chars=16, max_items=3)
    assert bounded["$defs"]["Item"]["properties"]["value"]["maxLength"] == 16
    assert bounded["properties"]["items"]["maxItems"] == 3
    assert "maxLength" not in bounded["$defs"]["Item"]["properties"]["type"]


def test_the_sample_schema_marks_entity_values_as_copied_from_the_query(schema) -> None:
    assert copy_from_query_pointers(schema) == ["/entities/*/value"]


def test_label_lists_name_every_closed_set(schema) -> None:
    lines = labels_text(schema).splitlines()
    assert [line.split(":")[0] for line in lines] == ["scenario", "intent", "entities[].type"]
    assert "alarm_set" in lines[1] and render_system_prompt("Labels:\n{labels}", schema).endswith(lines[-1])


def test_a_row_is_read_by_role_not_position() -> None:
    row = training_row("wake me", '{"intent":"alarm_set"}', "SYSTEM")
    assert read_row({"messages": list(reversed(row["messages"]))}).query == "wake me"
    assert json.loads(read_row(row).answer) == {"intent": "alarm_set"}


def test_command_line_flags_override_the_pipeline_file_and_are_typed() -> None:
    parser = argparse.ArgumentParser()
    add_stage_arguments(parser, "eval", "decoding")
    config = config_from_args(parser.parse_args(
        ["--pipeline", str(REPO_ROOT / "pipeline.yaml"), "--batch-size", "8", "--variants", "base,tuned",
         "--no-grounded"]))
    assert (config.decoding.batch_size, config.eval.variants, config.decoding.grounded) == (8, ["base", "tuned"],
                                                                                               False)
    assert config.decoding.max_new_tokens == 256  # the file's value where no flag is given
    assert config.as_record()["decoding"]["batch_size"] == 8


@pytest.mark.parametrize("recipe", ["gemma3-270m-lora.yaml", "gemma3-27b-qlora.yaml"])
def test_every_recipe_reads_the_data_stage_files(recipe) -> None:
    from contract.config import Recipe

    loaded = Recipe.load(REPO_ROOT / "axolotl_configs" / recipe)
    assert loaded.data_dir == REPO_ROOT / "data/processed" and loaded.sequence_len >= 512


def test_training_goes_to_the_hub_only_when_asked_and_never_sends_telemetry(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert run_env()["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the 27B's download (README, Docker image)
    env = run_env()
    assert env["HF_HUB_OFFLINE"] == "0"
    assert env["AXOLOTL_DO_NOT_TRACK"] == env["DO_NOT_TRACK"] == env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["WANDB_MODE"] == "disabled"
