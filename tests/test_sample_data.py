"""The shipped sample: reproducible from SLURP, and every record honours the schema."""

import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from contract.config import REPO_ROOT

SLURP = REPO_ROOT.parent / "shared/datasets/slurp/devel.jsonl"


@pytest.mark.skipif(not SLURP.exists(), reason="SLURP devel split not beside the checkout")
def test_sample_rebuilds_byte_identical_from_slurp(tmp_path: Path) -> None:
    subprocess.run([sys.executable, REPO_ROOT / "data/build_sample.py", SLURP, "--out-dir", tmp_path], check=True)
    for name in ("raw_data.json", "schema.json"):
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / "data" / name).read_bytes(), name


def test_sample_has_over_2000_records_and_each_passes_the_schema(sample_records: list, schema: dict) -> None:
    validator = Draft202012Validator(schema)
    assert len(sample_records) >= 2000
    failures = [i for i, record in enumerate(sample_records) if not validator.is_valid(record["data"])]
    assert failures == []


def test_schema_closes_every_label_set_and_forbids_extra_keys(schema: dict) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert len(schema["properties"]["intent"]["enum"]) == 59
    assert len(schema["properties"]["scenario"]["enum"]) == 18
    entity = schema["properties"]["entities"]["items"]
    assert entity["additionalProperties"] is False and len(entity["properties"]["type"]["enum"]) == 53


def test_entities_are_in_order_of_appearance(sample_records: list) -> None:
    record = next(r for r in sample_records if r["query"] == "siri what is one american dollar in japanese yen")
    assert [e["value"] for e in record["data"]["entities"]] == ["american dollar", "japanese yen"]
    out_of_order = []
    for r in sample_records:
        cursor = 0
        for entity in r["data"]["entities"]:
            found = r["query"].find(entity["value"], cursor)
            if found < 0 and entity["value"] in r["query"]:  # found only before the previous entity
                out_of_order.append(r["query"])
            cursor = max(cursor, found)
    assert out_of_order == []
