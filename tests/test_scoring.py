"""Scoring on hand-made predictions with known answers, malformed outputs included."""

import pytest
from jsonschema import Draft202012Validator

from evaluation.scoring import INVALID, item_counts, parse_prediction, score

REF = {"scenario": "alarm", "intent": "alarm_set",
       "entities": [{"type": "time", "value": "seven am"}, {"type": "date", "value": "tomorrow"}]}
EXACT = '{"scenario":"alarm","intent":"alarm_set","entities":[{"type":"time","value":"seven am"},' \
        '{"type":"date","value":"tomorrow"}]}'


@pytest.fixture
def validator(schema):
    return Draft202012Validator(schema)


@pytest.mark.parametrize(("text", "json_error", "schema_error"), [
    (EXACT, None, None),
    ("  " + EXACT + "\n", None, None),
    ("Sure! Here is the JSON you asked for.", "Expecting value (character 0)", None),
    ('{"scenario":"alarm","intent":"alarm_set","entities":[{"type":"ti',
     "Unterminated string starting at (character 61)", None),
    ("```json\n" + EXACT + "\n```", "Expecting value (character 0)", None),
    ('["alarm"]', "a JSON list, not an object", None),
    ('{"scenario":"alarm","intent":"alarm_set","entities":[],"confidence":0.9}', None,
     "/: Additional properties are not allowed ('confidence' was unexpected)"),
    ('{"scenario":"alarm","intent":"alarm_set","entities":"seven am"}', None,
     "/entities: 'seven am' is not of type 'array'"),
])
def test_parse_prediction_classifies_every_kind_of_output(validator, text, json_error, schema_error) -> None:
    parsed = parse_prediction(text, validator)
    assert (parsed.json_error, parsed.schema_error) == (json_error, schema_error)


def test_entity_matching_needs_type_and_value_and_counts_repeats() -> None:
    predicted = [{"type": "time", "value": "seven am"}, {"type": "time", "value": "seven am"},
                 {"type": "date", "value": "today"}]
    counts = item_counts(predicted, REF["entities"])
    assert (counts["time"].tp, counts["time"].fp, counts["time"].fn) == (1, 1, 0)
    assert (counts["date"].tp, counts["date"].fp, counts["date"].fn) == (0, 1, 1)


def test_score_of_four_predictions_with_known_answers(schema) -> None:
    kitchen = [{"type": "house_place", "value": "kitchen"}]
    lights = {"scenario": "iot", "intent": "iot_hue_lightoff", "entities": kitchen}
    predictions = [
        EXACT,  # perfect
        '{"scenario":"alarm","intent":"alarm_query","entities":[{"type":"time","value":"seven am"}]}',  # wrong intent
        "I cannot help with that.",  # prose
        '{"scenario":"iot","intent":"iot_hue_lightoff","entities":[{"type":"house_place","value":"kitchen"}],"x":1}',
    ]
    m = score(predictions, [REF, REF, REF, lights], schema, "/intent")
    assert m["json_valid"] == 0.75 and m["schema_valid"] == 0.5 and m["exact_match"] == 0.25
    assert m["field_accuracy"] == {"scenario": 0.75, "intent": 0.5}
    # entities: 7 expected; found 2 + 1 + 0 + 1 = 4, no false positives
    assert m["extraction"]["entities"]["micro"] == pytest.approx(
        {"precision": 1.0, "recall": 4 / 7, "f1": 2 * (4 / 7) / (1 + 4 / 7), "support": 7})
    assert m["confusion"]["alarm_set"] == {"alarm_set": 1, "alarm_query": 1, INVALID: 1}
    assert m["per_class_accuracy"] == {"alarm_set": pytest.approx(1 / 3), "iot_hue_lightoff": 1.0}
