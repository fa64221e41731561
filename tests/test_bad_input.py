"""What happens when the input is wrong: every case ends in one line naming the file, the place and the fix,
and a non-zero exit; nothing is silently accepted, destroyed or left stale. (The cases of issue #17.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.config import load_config
from contract.errors import UserError, run_cli
from contract.prompt import system_prompt
from evaluation.__main__ import main as evaluate
from inference.store import Resumable, read_jsonl_resumable
from merge.__main__ import main as merge
from preprocess.__main__ import main as preprocess
from tests.conftest import REPO_ROOT, write_project
from training.recipe_check import check

GOOD = {"query": "wake me up at seven am", "data": {"scenario": "alarm", "intent": "alarm_set",
                                                    "entities": [{"type": "time", "value": "seven am"}]}}
OTHER = {"query": "turn the kitchen lights off", "data": {"scenario": "iot", "intent": "iot_hue_lightoff",
                                                           "entities": [{"type": "house_place", "value": "kitchen"}]}}


def stage(main, tmp: Path, records, model: Path, *extra: str, settings: dict | None = None) -> int:
    pipeline, _ = write_project(tmp, records, model, settings=settings)
    return run_cli(main, ["--pipeline", str(pipeline), *extra])


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# -- records: read strictly ---------------------------------------------------------------------------------------

RAW_TEXT_CASES = [
    ('[{"query": "wake me", "data": {"scenario": "alarm", "intent": "alarm_set", "intent": "alarm_query", '
     '"entities": []}}]', "record 0: [duplicate-key] /data: key(s) ['intent'] given twice"),
    ('[{"query": "wake me", "data": {"scenario": "alarm", "intent": "alarm_set", '
     '"entities": [{"type": "time", "value": NaN}]}}]', "record 0: [non-finite] /data/entities/0/value: NaN is not"),
    ('[{"query": "wake me", "data": {"scenario": "alarm", "intent": "alarm_set", '
     '"entities": [{"type": "time", "value": Infinity}]}}]', "record 0: [non-finite]"),
]


@pytest.mark.parametrize(("text", "message"), RAW_TEXT_CASES, ids=["duplicate-key", "nan", "infinity"])
def test_a_record_json_would_misread_is_rejected_with_its_index(tmp_path, capsys, base_model_dir, text, message):
    assert stage(preprocess, tmp_path, text, base_model_dir) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "processed").exists()


FILE_CASES = [
    ("latin-1", lambda p: p.write_bytes('[{"query": "caf\u00e9"}]'.encode("latin-1")),
     "raw_data.json: not UTF-8 (byte 0xe9 on line 1); save the file as UTF-8"),
    ("empty-array", lambda p: p.write_text("[]"), "raw_data.json: the array is empty"),
    ("not-array", lambda p: p.write_text(json.dumps(GOOD)), "must be a JSON array of records, found a JSON object"),
    ("not-json", lambda p: p.write_text('[\n{"query": "hi", "data": {}},\n{"query": oops}\n]'),
     "not valid JSON: Expecting value at line 3, column 11"),
]


@pytest.mark.parametrize(("name", "write", "message"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_an_unusable_data_file_is_one_line(tmp_path, capsys, base_model_dir, name, write, message) -> None:
    pipeline, _ = write_project(tmp_path, [GOOD], base_model_dir)
    write(tmp_path / "raw_data.json")
    assert run_cli(preprocess, ["--pipeline", str(pipeline)]) == 1
    assert message in one_error_line(capsys)


# -- outputs: a complete set or the previous one ------------------------------------------------------------------

@pytest.fixture
def previous_set(tmp_path, sample_records, base_model_dir) -> dict[str, bytes]:
    """A complete earlier `make data` output in tmp_path/processed."""
    assert stage(preprocess, tmp_path, sample_records[:40], base_model_dir) == 0
    return {p.name: p.read_bytes() for p in (tmp_path / "processed").iterdir()}


def _unchanged(tmp_path: Path, previous: dict[str, bytes]) -> bool:
    now = {p.name: p.read_bytes() for p in (tmp_path / "processed").iterdir()}
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".processed")]
    return now == previous and not leftovers


def test_a_failed_strict_run_leaves_the_previous_set_and_says_so(tmp_path, capsys, previous_set, base_model_dir):
    assert stage(preprocess, tmp_path, [GOOD, {**GOOD, "query": " "}], base_model_dir) == 1
    assert "processed still holds the complete set written at" in capsys.readouterr().err
    assert _unchanged(tmp_path, previous_set)


def test_all_records_rejected_writes_nothing(tmp_path, capsys, previous_set, base_model_dir) -> None:
    assert stage(preprocess, tmp_path, [{**GOOD, "query": " "}], base_model_dir, "--write-rejects") == 1
    assert "all 1 records have problems: nothing written" in capsys.readouterr().err
    assert _unchanged(tmp_path, previous_set)


def test_a_run_killed_while_writing_leaves_the_previous_set(tmp_path, monkeypatch, sample_records, previous_set,
                                                            base_model_dir) -> None:
    import preprocess.__main__ as stage_module

    calls = {"n": 0}
    real = stage_module.training_row

    def dies_halfway(*args):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt  # what a kill does to the write loop
        return real(*args)

    monkeypatch.setattr(stage_module, "training_row", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        stage(preprocess, tmp_path, sample_records[40:100], base_model_dir)
    assert _unchanged(tmp_path, previous_set)


# -- settings and schema: checked up front -------------------------------------------------------------------------

SETTINGS_CASES = [
    ({"eval_fraction": 1.5}, "eval_fraction: Input should be less than 1 (got 1.5)"),
    ({"eval_fractoin": 0.1}, "unknown key `eval_fractoin` (did you mean `eval_fraction`?)"),
    ({"decoding": {"batch_sise": 8}}, "unknown key `decoding.batch_sise` (did you mean `decoding.batch_size`?)"),
    ({"eval": {"batch_size": 8}}, "unknown key `eval.batch_size` (did you mean `decoding.batch_size`?)"),
    ({"main_label": "/intnt"}, "main_label /intnt is not a label field of the schema; choose one of"),
]


@pytest.mark.parametrize(("settings", "message"), SETTINGS_CASES,
                         ids=["range", "typo", "section-typo", "moved", "label"])
def test_a_bad_setting_is_one_line_before_any_work(tmp_path, capsys, base_model_dir, settings, message) -> None:
    assert stage(preprocess, tmp_path, [GOOD, OTHER], base_model_dir, settings=settings) == 1
    assert message in one_error_line(capsys)


SCHEMA_CASES = [
    ("missing", None, "no such file (the `schema` setting in pipeline.yaml)"),
    ("not-json", "{oops", "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
    ("invalid", {"type": "object", "properties": {"intent": {"type": "strnig"}}},
     "not a valid JSON Schema at /properties/intent/type"),
]


@pytest.mark.parametrize(("name", "content", "message"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_a_bad_schema_file_is_one_line(tmp_path, capsys, base_model_dir, name, content, message) -> None:
    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content if isinstance(content, str) else json.dumps(content))
    assert stage(preprocess, tmp_path, [GOOD], base_model_dir, settings={"schema": str(schema)}) == 1
    assert message in one_error_line(capsys)


def test_a_prompt_that_shows_no_schema_is_warned_and_an_empty_one_refused(tmp_path, capsys) -> None:
    template = tmp_path / "prompt.txt"
    pipeline = tmp_path / "pipeline.yaml"
    base = {"raw_data": "x", "schema": str(REPO_ROOT / "data/schema.json"), "system_prompt": str(template),
            "main_label": "/intent", "eval_fraction": 0.1, "seed": 1}
    pipeline.write_text(json.dumps(base))
    template.write_text("Turn the request into JSON.")
    system_prompt(load_config(pipeline))
    assert "has neither {schema} nor {labels}" in capsys.readouterr().err
    pipeline.write_text(json.dumps({**base, "allow_prompt_without_schema": True}))
    system_prompt(load_config(pipeline))
    assert capsys.readouterr().err == ""
    template.write_text("  \n")
    with pytest.raises(UserError, match="the system prompt is empty"):
        system_prompt(load_config(pipeline))


def test_records_without_the_main_label_are_each_named(tmp_path, capsys, base_model_dir):
    schema = json.loads((REPO_ROOT / "data/schema.json").read_text())
    schema["properties"]["mood"] = {"enum": ["calm", "angry"]}  # declared, optional, and in no record
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    settings = {"schema": str(tmp_path / "schema.json"), "main_label": "/mood"}
    assert stage(preprocess, tmp_path, [GOOD, OTHER], base_model_dir, settings=settings) == 1
    err = capsys.readouterr().err
    assert err.count("[main-label]") == 2 and "data has no /mood" in err  # one line per record, each named


def test_recipe_check_reports_every_problem_of_a_file_at_once(tmp_path) -> None:
    text = (REPO_ROOT / "axolotl_configs/gemma3-270m-lora.yaml").read_text()
    text = text.replace("roles_to_train: [assistant]", "roles_to_train: [assistnt]", 1) + "lora_rr: 4\nseed: 1\n"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    problems = check(recipe)
    assert any("duplicate key `seed`" in p for p in problems)
    assert any("unknown key `lora_rr`" in p for p in problems)
    assert any("roles_to_train must be ['assistant']" in p for p in problems)


# -- evaluation: resume keyed by content, references checked ------------------------------------------------------

def test_predictions_from_another_model_or_data_are_not_reused(tmp_path, capsys) -> None:
    path = tmp_path / "predictions-tuned.jsonl"
    expected = [{"query": "a", "reference": {"x": 1}}, {"query": "b", "reference": {"x": 2}}]
    first = Resumable(path, {"model": "m1", "data_sha256": "d1"}, expected)
    first.append([{"index": 0, "query": "a", "reference": {"x": 1}, "output": "{}"}])
    assert Resumable(path, {"model": "m1", "data_sha256": "d1"}, expected).done.keys() == {0}  # same: resumes
    assert Resumable(path, {"model": "m2", "data_sha256": "d1"}, expected).done == {}
    assert "made with another model; starting it over" in capsys.readouterr().out
    Resumable(path, {"model": "m2", "data_sha256": "d1"}, expected).append(
        [{"index": 0, "query": "a", "reference": {"x": 1}, "output": "{}"}])
    moved = [{"query": "b", "reference": {"x": 2}}, *expected]  # same identity, other rows at those positions
    assert Resumable(path, {"model": "m2", "data_sha256": "d1"}, moved).done == {}
    assert "row 0 does not match the input there" in capsys.readouterr().out


def test_a_torn_last_prediction_line_is_reported_dropped_and_resumed(tmp_path, capsys) -> None:
    path = tmp_path / "predictions-tuned.jsonl"
    path.write_text('{"index": 0, "output": "{}"}\n{"index": 1, "outp')
    assert read_jsonl_resumable(path) == [{"index": 0, "output": "{}"}]
    assert "predictions-tuned.jsonl: dropped a torn last line" in capsys.readouterr().out
    assert path.read_text() == '{"index": 0, "output": "{}"}\n'


EVAL_CASES = [
    (["--limit", "0"], "eval.limit: Input should be greater than 0 (got '0')"),
    (["--batch-size", "many"], "decoding.batch_size: Input should be a valid integer"),
    (["--variants", "tuned,tunde"], "eval.variants.1: Input should be"),
]


@pytest.mark.parametrize(("flags", "message"), EVAL_CASES, ids=["limit-0", "batch-size", "variant"])
def test_a_bad_eval_flag_is_one_line(tmp_path, capsys, base_model_dir, flags, message) -> None:
    assert stage(evaluate, tmp_path, [GOOD], base_model_dir, *flags) == 1
    assert message in one_error_line(capsys)


def test_eval_data_with_labels_outside_the_schema_is_refused(tmp_path, capsys, base_model_dir) -> None:
    data = tmp_path / "other.json"
    data.write_text(json.dumps([GOOD, {**OTHER, "data": {**OTHER["data"], "intent": "lights_off"}}]))
    assert stage(evaluate, tmp_path, [GOOD], base_model_dir, "--data", str(data)) == 1
    assert "1 reference(s) do not satisfy the schema, e.g. record 1: 'lights_off' is not one of" \
        in one_error_line(capsys)


# -- merge: adapters that are not there, or torn ------------------------------------------------------------------

def test_a_missing_adapter_says_what_to_do(tmp_path, capsys, base_model_dir) -> None:
    assert stage(merge, tmp_path, [GOOD], base_model_dir, "--adapter", str(tmp_path / "nothing")) == 1
    line = one_error_line(capsys)
    assert "adapter_model.safetensors: no adapter there; train first (`make train`)" in line
    assert "--tokenizer" not in line


def test_a_corrupt_adapter_file_is_named(tmp_path, capsys, base_model_dir) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    assert stage(merge, tmp_path, [GOOD], base_model_dir, "--adapter", str(adapter)) == 1
    assert "adapter_model.safetensors: not a readable safetensors file" in one_error_line(capsys)


def test_an_adapter_from_a_failed_run_is_refused(tmp_path, capsys, base_model_dir) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "training_state.json").write_text(json.dumps({"status": "failed", "reason": "loss = nan at step 3"}))
    assert stage(merge, tmp_path, [GOOD], base_model_dir, "--adapter", str(adapter)) == 1
    assert "its training run is `failed` (loss = nan at step 3)" in one_error_line(capsys)
