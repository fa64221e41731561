"""Labeling guidance: `suggest` ranks unlabeled queries (deterministically, already-labeled ones skipped, paraphrases
spread out, proposed answers schema-valid), `audit` finds labels that cross-validated models find unlikely, and
`fix_spans` repairs copied values that differ from their query only in case or spacing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract.errors import run_cli
from labeling.audit import flagged_records, label_issues, list_disagreements, ungrounded_issues
from labeling.fix_spans import fix_spans
from labeling.fix_spans import main as fix_spans_main
from labeling.suggest import diverse_order, new_queries
from preprocess.checks import normalized
from tests.conftest import Project, make, write_project


def test_labeled_queries_and_repeats_are_not_suggested() -> None:
    known = {normalized("Wake me up at seven am")}
    pool = ["wake me up at  SEVEN am", "turn off the lights", "Turn off the lights ", "what's the weather"]
    assert new_queries(pool, known) == ["turn off the lights", "what's the weather"]


def test_a_batch_of_suggestions_is_not_all_paraphrases_of_one_request() -> None:
    queries = ["wake me up at seven", "wake me up at seven please", "wake me up at seven tomorrow",
               "play some jazz music", "what is the weather in paris"]
    scores = [0.9, 0.8, 0.7, 0.2, 0.1]  # the alarm paraphrases are the least sure
    order, groups = diverse_order(queries, scores, groups=3, seed=0)
    assert order[0] == 0 and {queries[i] for i in order[:3]} >= {"play some jazz music",
                                                                    "what is the weather in paris"}
    assert groups[0] == groups[1] == groups[2] and diverse_order(queries, scores, 3, 0) == (order, groups)


def test_confident_learning_recovers_injected_label_errors() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=200)
    pred_probs = np.full((200, 4), 0.05)
    pred_probs[np.arange(200), truth] = 0.85  # a model that is right and fairly sure
    given = truth.copy()
    flipped = rng.choice(200, size=10, replace=False)
    given[flipped] = (truth[flipped] + 1) % 4
    found = label_issues(given.tolist(), pred_probs)
    assert set(found) == set(flipped.tolist())


def test_list_items_that_disagree_are_named_by_kind() -> None:
    given = [{"type": "time", "value": "seven am"}, {"type": "date", "value": "tomorrow"},
             {"type": "place_name", "value": "paris"}]
    model = [{"type": "date", "value": "seven am"}, {"type": "date", "value": "tomorrow morning"},
             {"type": "person", "value": "anna"}]
    kinds = sorted(kind for kind, _, _ in list_disagreements(given, model))
    assert kinds == ["not-found-by-model", "not-labeled", "span", "type"]


def test_records_are_checked_certain_issues_first_then_by_how_much_more_the_model_believes_its_answer() -> None:
    issues = [{"index": 1, "field": "entities", "confidence": 1.0, "margin": 12.5},
              {"index": 2, "field": "intent", "confidence": 1.0, "margin": 40.0},
              {"index": 0, "field": "entities", "confidence": 0.9, "margin": 2.2},
              {"index": 3, "field": "entities/0/value", "confidence": 1.0, "margin": None},
              {"index": 2, "field": "entities", "confidence": 0.6, "margin": 0.4}]
    assert flagged_records(issues) == [3, 2, 1, 0]  # saturated confidences are ordered by margin, not by index


def test_values_that_grounded_decoding_cannot_write_are_certain_issues_with_the_query_words_as_fix(schema) -> None:
    records = [{"query": "do i have anything this saturday at four pm",
                "data": {"scenario": "calendar", "intent": "calendar_query",
                         "entities": [{"type": "date", "value": "Saturday"}, {"type": "time", "value": "four pm"}]}},
               {"query": "is my order at domino's ready",
                "data": {"scenario": "takeaway", "intent": "takeaway_query",
                         "entities": [{"type": "business_name", "value": "domino 's"}]}},
               {"query": "how old is barack obama",
                "data": {"scenario": "qa", "intent": "qa_factoid",
                         "entities": [{"type": "person", "value": "barack obaba"}]}}]
    found = [(row["index"], row["field"], row["given"], row["kind"], row["fix"])
             for row in ungrounded_issues(records, schema)]
    assert found == [(0, "entities/0/value", "Saturday", "not-in-query", "saturday"),
                     (1, "entities/0/value", "domino 's", "not-in-query", "domino's"),
                     (2, "entities/0/value", "barack obaba", "not-in-query", None)]  # a typo: only a person can say


@pytest.fixture(scope="module")
def labeled(tmp_path_factory, sample_records, tiny_gemma3) -> Project:
    root = tmp_path_factory.mktemp("labeling")
    return Project(root, *write_project(root, sample_records[:24], tiny_gemma3, overrides={
        "max_steps": 2, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "logging_steps": 1,
        "evals_per_epoch": None, "saves_per_epoch": None, "dataset_num_proc": 1},
        settings={"decoding": {"max_new_tokens": 96, "max_string_chars": 16, "max_items": 2, "batch_size": 8}}))


@pytest.mark.slow
def test_suggest_ranks_new_queries_with_schema_valid_proposals_the_same_way_twice(labeled: Project, tiny_gemma3,
                                                                                 sample_records) -> None:
    from labeling.suggest import main as suggest

    pool = labeled.root / "pool.txt"
    pool.write_text("\n".join([sample_records[0]["query"].upper(), *(r["query"] for r in sample_records[100:108])]))
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        args = [*labeled.stage_args(), "--model", str(tiny_gemma3), "--input", str(pool), "--output",
                str(labeled.root / name), "--count", "5"]
        assert run_cli(suggest, args) == 0
        outputs.append([json.loads(line) for line in (labeled.root / name).read_text().splitlines()])
    assert outputs[0] == outputs[1] and [row["rank"] for row in outputs[0]] == [1, 2, 3, 4, 5]
    assert normalized(sample_records[0]["query"]) not in {normalized(row["query"]) for row in outputs[0]}
    assert all(row["schema_valid"] and isinstance(row["proposed"], dict) for row in outputs[0])
    assert all(row["reason"].startswith("least sure at") for row in outputs[0])


@pytest.mark.axolotl
def test_audit_judges_every_record_with_a_model_that_never_saw_it(labeled: Project) -> None:
    result = make("audit", *labeled.make_args(), f"AUDIT_ARGS=--folds 2 --max-steps 2 --out {labeled.root}/audit")
    summary = json.loads((labeled.root / "audit/summary.json").read_text())
    assert summary["records"] == 24 and summary["folds"] == 2 and "label issues" in result.stdout
    for fold in ("fold-0", "fold-1"):
        train = (labeled.root / "audit" / fold / "data/train.jsonl").read_text().splitlines()
        held = (labeled.root / "audit" / fold / "data/eval.jsonl").read_text().splitlines()
        assert len(train) + len(held) == 24 and not set(train) & set(held)
    issues = [json.loads(line) for line in (labeled.root / "audit/label_issues.jsonl").read_text().splitlines()]
    assert all({"index", "field", "given", "model", "confidence", "kind"} <= set(row) for row in issues)
    judged = [json.loads(line) for line in (labeled.root / "audit/out_of_fold.jsonl").read_text().splitlines()]
    assert [row["index"] for row in judged] == list(range(24))
    assert all(len(row["label_log_probabilities"]["intent"]) > 1 and "answer" in row for row in judged)
    raw = json.loads((labeled.root / "raw_data.json").read_text())
    assert [row["given_labels"]["intent"] for row in judged] == [r["data"]["intent"] for r in raw]


def test_fix_spans_rewrites_values_that_differ_from_the_query_only_in_case_or_spacing(schema) -> None:
    records = [{"query": "is my order at domino's ready", "data": {
                    "scenario": "takeaway", "intent": "takeaway_query",
                    "entities": [{"type": "business_name", "value": "domino 's"}]}},
               {"query": "how old is barack obama", "data": {
                    "scenario": "qa", "intent": "qa_factoid",
                    "entities": [{"type": "person", "value": "barack obaba"}]}},
               {"query": "wake me at Seven", "data": {"intent": "not a label"}}]
    fixed, rewrites, left = fix_spans(records, schema)
    assert fixed[0]["data"]["entities"] == [{"type": "business_name", "value": "domino's"}]
    assert fixed[1:] == records[1:] and records[0]["data"]["entities"][0]["value"] == "domino 's"  # input untouched
    assert [(r["index"], r["pointer"], r["fix"]) for r in rewrites] == [(0, "/entities/0/value", "domino's")]
    assert left == [{"index": 1, "pointer": "/entities/0/value", "value": "barack obaba"}]


def test_fix_spans_writes_a_new_file_and_never_overwrites(tmp_path, sample_records, capsys) -> None:
    pipeline, _ = write_project(tmp_path, sample_records[60:70], tmp_path / "no-model")
    raw = tmp_path / "raw_data.json"
    before = raw.read_bytes()
    out = tmp_path / "fixed.json"
    assert run_cli(fix_spans_main, ["--pipeline", str(pipeline), "--out", str(out)]) == 0
    assert "1 values in 1 records rewritten" in capsys.readouterr().out and raw.read_bytes() == before
    assert json.loads(out.read_text())[7]["data"]["entities"][0]["value"] == "restaurant's"
    assert run_cli(fix_spans_main, ["--pipeline", str(pipeline), "--out", str(out)]) == 1
    assert "fixed.json exists; nothing is overwritten" in capsys.readouterr().err


def test_fix_spans_refuses_a_record_whose_duplicated_key_it_would_lose(tmp_path, capsys) -> None:
    pipeline, _ = write_project(tmp_path, '[{"query": "hi", "query": "hello", "data": {}}]', tmp_path / "no-model")
    assert run_cli(fix_spans_main, ["--pipeline", str(pipeline), "--out", str(tmp_path / "fixed.json")]) == 1
    assert capsys.readouterr().err.startswith("error: record 0: ") and not (tmp_path / "fixed.json").exists()
