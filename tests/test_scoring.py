"""Scoring on hand-made predictions with known answers, malformed outputs included."""

import json

import pytest
from jsonschema import Draft202012Validator

from evaluation.scoring import INVALID, Metrics, item_counts, parse_prediction, score

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
    assert counts["time"] == [1, 1, 0] and counts["date"] == [0, 1, 1]  # tp, fp, fn


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
    assert m.json_valid == 0.75 and m.schema_valid == 0.5 and m.exact_match == 0.25
    assert m.field_accuracy == {"scenario": 0.75, "intent": 0.5}
    # entities: 7 expected; found 2 + 1 + 0 + 1 = 4, no false positives
    micro = m.extraction["entities"].micro
    assert (micro.precision, micro.recall, micro.support) == (1.0, pytest.approx(4 / 7), 7)
    assert micro.f1 == pytest.approx(2 * (4 / 7) / (1 + 4 / 7))
    assert m.confusion["alarm_set"] == {"alarm_set": 1, "alarm_query": 1, INVALID: 1}
    assert m.per_class_accuracy == {"alarm_set": pytest.approx(1 / 3), "iot_hue_lightoff": 1.0}
    assert m.exact_match_ci95[0] < 0.25 < m.exact_match_ci95[1]
    assert list(m.headline())[:5] == ["JSON valid", "schema valid", "exact match", "scenario accuracy",
                                      "intent accuracy"]
    assert Metrics.from_json(json.loads(json.dumps(m.to_json()))) == m  # what metrics.json holds reads back


# A schema of another shape: nested objects and $ref/$defs, the way users write bigger schemas.
NESTED = {
    "type": "object", "additionalProperties": False, "required": ["intent", "slots", "items"],
    "$defs": {"Item": {"type": "object", "properties": {"type": {"enum": ["a", "b"]}, "value": {"type": "string"}}}},
    "properties": {
        "intent": {"enum": ["buy", "sell"]},
        "slots": {"type": "object", "properties": {"date": {"type": "string"}, "count": {"type": "integer"}}},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
    },
}


def test_nested_fields_and_ref_lists_are_scored() -> None:
    ref = {"intent": "buy", "slots": {"date": "monday", "count": 2}, "items": [{"type": "a", "value": "x"}]}
    guess = '{"intent":"buy","slots":{"date":"tuesday","count":2},"items":[{"type":"a","value":"x"}]}'
    m = score([guess], [ref], NESTED, "/intent")
    assert m.field_accuracy == {"intent": 1.0, "slots/date": 0.0, "slots/count": 1.0}
    assert m.extraction["items"].micro.f1 == 1.0 and m.exact_match == 0.0
