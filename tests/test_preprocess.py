"""`python -m preprocess`: every kind of bad record is named, strict mode writes nothing, the split is
deterministic and stratified, and lengths are counted with the real Gemma 3 chat template."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from contract.config import load_config
from contract.errors import run_cli
from contract.prompt import answer_text, system_prompt
from contract.rows import read_rows, training_row
from preprocess.__main__ import main
from preprocess.split import stratified_split
from tests.conftest import write_project

GOOD = {"query": "wake me up at seven am", "data": {"scenario": "alarm", "intent": "alarm_set",
                                                    "entities": [{"type": "time", "value": "seven am"}]}}


def run(tmp: Path, records, model: Path, *extra: str) -> tuple[int, Path]:
    pipeline, _ = write_project(tmp, records, model)
    return run_cli(main, ["--pipeline", str(pipeline), *extra]), tmp / "processed"


def test_sample_becomes_train_and_eval_chat_jsonl(tmp_path, sample_records, base_model_dir) -> None:
    status, out = run(tmp_path, sample_records, base_model_dir)
    assert status == 0
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    evaluation = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert len(train) + len(evaluation) == len(sample_records)
    first = train[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[2]["content"] == json.dumps(json.loads(first[2]["content"]), separators=(",", ":"))
    prompts = {row["messages"][0]["content"] for row in train + evaluation}
    assert prompts == {system_prompt(load_config(tmp_path / "pipeline.yaml"))}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["tokens_per_example"]["max"] <= 1024 and stats["rejected"] == 0
    assert stats["inputs"]["raw_data"]["sha256"] and stats["config"]["main_label"] == "/intent"


def test_values_grounded_decoding_cannot_write_are_noted_not_rejected(tmp_path, capsys, base_model_dir) -> None:
    cased = {"query": "do i have anything this saturday", "data": {
        "scenario": "calendar", "intent": "calendar_query", "entities": [{"type": "date", "value": "Saturday"}]}}
    status, out = run(tmp_path, [GOOD, {**GOOD, "query": "wake me up at seven am please"}, cased,
                                 {**cased, "query": "anything on this saturday"}], base_model_dir)
    assert status == 0 and "note: 2 values marked x-copy-from-query are not words of their query (first: record 2 " \
        "/entities/0/value 'Saturday'): grounded decoding cannot write them; 2 differ from the query only in case or " \
        "spacing" in capsys.readouterr().out
    assert [(v["index"], v["value"], v["fix"]) for v in json.loads((out / "stats.json").read_text())[
        "ungrounded_values"]] == [(2, "Saturday", "saturday"), (3, "Saturday", "saturday")]


def test_same_input_and_seed_give_byte_identical_files(tmp_path, sample_records, base_model_dir) -> None:
    outputs = []
    for attempt in ("a", "b"):
        (tmp_path / attempt).mkdir()
        run(tmp_path / attempt, sample_records, base_model_dir)
        outputs.append([(tmp_path / attempt / "processed" / f).read_bytes() for f in ("train.jsonl", "eval.jsonl")])
    assert outputs[0] == outputs[1]


def test_split_is_stratified_every_class_of_two_or_more_in_both_splits(sample_records) -> None:
    labels = [r["data"]["intent"] for r in sample_records]
    train, evaluation = stratified_split(labels, eval_fraction=0.1, seed=7)
    assert sorted(train + evaluation) == list(range(len(labels)))
    in_train, in_eval = Counter(labels[i] for i in train), Counter(labels[i] for i in evaluation)
    for label, size in Counter(labels).items():
        if size >= 2:
            assert in_train[label] >= 1 and in_eval[label] >= 1, label
    assert abs(len(evaluation) / len(labels) - 0.1) < 0.02


def test_split_changes_with_the_seed(sample_records) -> None:
    labels = [r["data"]["intent"] for r in sample_records]
    assert stratified_split(labels, 0.1, seed=1)[1] != stratified_split(labels, 0.1, seed=2)[1]


BAD_RECORDS = [
    ({"data": GOOD["data"]}, "record 1: [missing-key] missing key(s) ['query']"),
    ({**GOOD, "query": "set an alarm", "label": "x"}, "record 1: [extra-key] unexpected key(s) ['label']"),
    ({**GOOD, "query": "   "}, "record 1: [empty-query] query must be a non-empty string, found '   '"),
    ({"query": "lights off", "data": {"scenario": "iot", "intent": "iot_lights_off", "entities": []}},
     "record 1: [schema] /intent: 'iot_lights_off' is not one of"),
    ({"query": "lights off", "data": {"scenario": "iot", "intent": "iot_hue_lightoff",
                                      "entities": [{"type": "house_place", "value": ""}]}},
     "record 1: [schema] /entities/0/value: '' should be non-empty"),
    ({"query": "lights off", "data": {"scenario": "iot", "intent": "iot_hue_lightoff", "entities": [], "x": 1}},
     "record 1: [schema] /: Additional properties are not allowed ('x' was unexpected)"),
    (GOOD, "record 1: [duplicate] exact duplicate of record 0"),
    ({**GOOD, "data": {**GOOD["data"], "intent": "alarm_query"}},
     "record 1: [conflict] same query as record(s) [0] with different data"),
    ({**GOOD, "query": "wake me " * 600}, "record 1: [too-long]"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_RECORDS, ids=[m.split("]")[0].split("[")[1] + f"-{i}"
                                                               for i, (_, m) in enumerate(BAD_RECORDS)])
def test_each_kind_of_bad_record_is_named_and_nothing_is_written(tmp_path, capsys, base_model_dir, bad, message):
    status, out = run(tmp_path, [GOOD, bad], base_model_dir)
    err = capsys.readouterr().err
    assert status == 1
    assert message in err
    assert "nothing written" in err and not (out / "train.jsonl").exists()


def test_too_long_reports_the_real_chat_template_token_count(tmp_path, capsys, tokenizer, schema,
                                                             base_model_dir) -> None:
    long_record = {**GOOD, "query": "wake me " * 600}
    assert run(tmp_path, [GOOD, long_record], base_model_dir)[0] == 1
    prompt = system_prompt(load_config(tmp_path / "pipeline.yaml"))
    row = training_row(long_record["query"], answer_text(long_record["data"], schema), prompt)
    expected = len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False))
    assert f"record 1: [too-long] {expected} tokens with the chat template, over sequence_len 1024" \
        in capsys.readouterr().err


def test_a_corrupted_file_gets_one_message_per_bad_record(tmp_path, capsys, sample_records, base_model_dir) -> None:
    records = [GOOD, *sample_records[:49]] + [bad for bad, _ in BAD_RECORDS]  # bad ones at 50..58
    status, _ = run(tmp_path, records, base_model_dir)
    err = capsys.readouterr().err
    flagged = Counter(int(line.split(":")[0].split()[1]) for line in err.splitlines() if line.startswith("record "))
    assert status == 1
    # record 0 is flagged too: it and record 57 label the same query differently, and neither is preferred
    assert flagged == dict.fromkeys([0, *range(50, 59)], 1)
    assert "10 of 59 records have problems (10 in all)" in err


def test_write_rejects_sets_bad_records_aside_with_reasons(tmp_path, sample_records, base_model_dir) -> None:
    bad = {**GOOD, "query": "  "}
    status, out = run(tmp_path, [*sample_records[:30], bad], base_model_dir, "--write-rejects")
    assert status == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"index": 30, "record": bad,
                        "problems": ["record 30: [empty-query] query must be a non-empty string, found '  '"]}]
    kept = sum(len(read_rows((out / f).read_text())) for f in ("train.jsonl", "eval.jsonl"))
    assert kept == 30
