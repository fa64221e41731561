"""Issue #28's simulation: the injected errors are real labeling errors of each kind (and nothing else changes), the
recall is counted over the right records, and the whole run works end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.outputs import jsonl
from contract.prompt import answer_text, system_prompt
from contract.rows import training_row
from contract.schema import validator
from experiments.labeling_sim import KINDS, corrupted_copy, main, ranks_by_kind, recall_at
from tests.conftest import SHIPPED, write_project


def test_corruption_injects_one_error_of_each_kind_in_turn_into_five_percent_of_the_records(sample_records, schema
                                                                                           ) -> None:
    records = sample_records[:400]
    corrupted, changed = corrupted_copy(records, 0.05, schema, seed=0)
    assert len(changed) == 20 and sorted(changed.values()) == sorted(KINDS * 5)
    assert all(corrupted[i] is records[i] for i in range(400) if i not in changed)
    check = validator(schema)
    for i, kind in changed.items():
        given, bad = records[i]["data"], corrupted[i]["data"]
        assert check.is_valid(bad) and bad != given and corrupted[i]["query"] == records[i]["query"]
        if kind == "intent":
            assert bad["intent"] != given["intent"] and bad["entities"] == given["entities"]
        elif kind == "dropped-entity":
            assert len(bad["entities"]) == len(given["entities"]) - 1
        elif kind == "entity-type":
            assert [e["value"] for e in bad["entities"]] == [e["value"] for e in given["entities"]]
        else:  # a shifted span is still words of the query
            moved = [e["value"] for e in bad["entities"] if e not in given["entities"]]
            assert len(moved) == 1 and moved[0] in records[i]["query"]
    assert corrupted_copy(records, 0.05, schema, seed=0) == (corrupted, changed)


def test_recall_counts_corrupted_records_among_the_first_twice_as_many_flagged() -> None:
    corrupted = {3: "intent", 8: "dropped-entity"}
    result = recall_at([3, 5, 7, 9, 8], corrupted)  # record 8 is flagged fifth: outside the first four
    assert result["recall"] == 0.5 and result["recall_by_kind"] == {"dropped-entity": 0.0, "intent": 1.0}
    assert result["recall_all_flagged"] == 1.0


def test_each_kind_of_injected_error_is_placed_by_its_median_position_among_the_flagged() -> None:
    corrupted = {3: "intent", 8: "intent", 4: "dropped-entity"}
    assert ranks_by_kind([3, 5, 7, 9, 8], corrupted) == {
        "dropped-entity": {"flagged": 0, "of": 1, "median_place": None},
        "intent": {"flagged": 2, "of": 2, "median_place": 3.0}}


@pytest.mark.slow
def test_the_simulation_trains_suggests_audits_and_reports_on_a_tiny_model(tmp_path: Path, sample_records, schema,
                                                                          tiny_gemma3) -> None:
    pipeline, _ = write_project(tmp_path, sample_records[:20], tiny_gemma3, overrides={
        "micro_batch_size": 2, "gradient_accumulation_steps": 1, "evals_per_epoch": None, "saves_per_epoch": None},
        settings={"decoding": {"max_new_tokens": 96, "max_string_chars": 16, "max_items": 2}})
    prompt = system_prompt(SHIPPED)
    for name, part in (("train", sample_records[:20]), ("eval", sample_records[100:104])):
        rows = [training_row(r["query"], answer_text(r["data"], schema), prompt) for r in part]
        (tmp_path / f"{name}.jsonl").write_text(jsonl(rows))
    out = tmp_path / "sim"
    assert main(["run", "--out", str(out), "--workdir", str(tmp_path / "work"), "--pipeline", str(pipeline),
                 "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "eval.jsonl"), "--seeds", "1",
                 "--start", "8", "--step", "4", "--rounds", "1", "--corrupt", "0.2", "--folds", "2",
                 "--max-steps", "1", "--batch-size", "4", "--clean-audit"]) == 0
    rows = {row["name"]: row for row in json.loads((out / "results.json").read_text())}
    assert sorted(rows) == ["random-12-s1", "start-8-s1", "suggest-12-s1"]
    assert all(0 <= row["exact_match"] <= 1 and row["schema_valid"] == 1.0 for row in rows.values())
    labeled = json.loads((tmp_path / "work/suggest-12-s1/labeled.json").read_text())
    start = json.loads((tmp_path / "work/start-8-s1/labeled.json").read_text())
    assert labeled[:8] == start and len({r["query"] for r in labeled}) == 12  # four new queries, suggested
    audit = json.loads((out / "audit-corrupted.json").read_text())
    assert audit["corrupted"] == 4 and audit["checked"] <= 8 and 0 <= audit["recall"] <= 1
    assert json.loads((out / "audit-clean.json").read_text())["records"] == 20  # raw_data.json as it is
    assert main(["report", str(out)]) == 0 and (out / "active-vs-random.png").stat().st_size > 0
