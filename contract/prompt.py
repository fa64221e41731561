"""The ONE place that turns a query into what the model sees, and a record into what it learns to answer.
Training rows, the merge proof, evaluation and prediction all call it; tests/test_recipes.py proves that the
ids inference feeds the model equal the ids Axolotl trains on before the answer.

The system prompt is a template (data/prompts/). `{schema}` is replaced by the compact schema,
`{labels}` by the closed label sets only ("intent: alarm_query|alarm_set|..."); a template with neither is a
task description alone. Which one to ship is a measured trade-off (README, "The prompt").
"""

from __future__ import annotations

import json
import sys
import weakref
from typing import Any

from contract.config import PipelineConfig, shown
from contract.errors import UserError
from contract.records import read_text
from contract.schema import canonical_answer, enum_labels, load_schema

SCHEMA_PLACEHOLDER = "{schema}"
LABELS_PLACEHOLDER = "{labels}"
# Keys that describe the schema document rather than the answer: noise in a prompt.
_META_KEYS = {"$schema", "$id", "$comment", "title"}


def compact_json(value: Any) -> str:
    """The canonical text of a JSON value: no whitespace, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def labels_text(schema: dict) -> str:
    """One line per closed label set: `intent: alarm_query|alarm_set|...`, `entities[].type: date|time|...`."""
    return "\n".join(f"{pointer.lstrip('/').replace('/*/', '[].')}: {'|'.join(map(str, values))}"
                     for pointer, values in enum_labels(schema).items())


def render_system_prompt(template: str, schema: dict) -> str:
    prompt_schema = {key: value for key, value in schema.items() if key not in _META_KEYS}
    return (template.strip().replace(SCHEMA_PLACEHOLDER, compact_json(prompt_schema))
            .replace(LABELS_PLACEHOLDER, labels_text(schema)))


def system_prompt(config: PipelineConfig) -> str:
    """The configured template, rendered; an empty template is an error, one that shows the model neither the
    schema nor its labels a warning (unless `allow_prompt_without_schema: true` says it is deliberate)."""
    path = config.path("system_prompt")
    if not path.exists():
        raise UserError(f"{shown(path)}: no such file (the `system_prompt` setting in pipeline.yaml)")
    template = read_text(path)
    if not template.strip():
        raise UserError(f"{shown(path)}: the system prompt is empty; describe the task there")
    if (SCHEMA_PLACEHOLDER not in template and LABELS_PLACEHOLDER not in template
            and not config.allow_prompt_without_schema):
        print(f"warning: {shown(path)} has neither {SCHEMA_PLACEHOLDER} nor {LABELS_PLACEHOLDER}: the model is not "
              "shown the schema or its labels. Set `allow_prompt_without_schema: true` in pipeline.yaml if that "
              "is deliberate.", file=sys.stderr)
    schema = load_schema(config.path("schema_path"))
    if LABELS_PLACEHOLDER in template and not enum_labels(schema):
        raise UserError(f"{shown(path)} shows {LABELS_PLACEHOLDER}, but the schema has no `enum` label sets to fill "
                        f"it with: use {SCHEMA_PLACEHOLDER}, or describe the labels in the template")
    return render_system_prompt(template, schema)


def answer_text(data: Any, schema: dict) -> str:
    """What the model learns to write: the canonical compact JSON of a record's data."""
    return compact_json(canonical_answer(data, schema))


def prompt_messages(query: str, system_prompt: str) -> list[dict[str, str]]:
    """What the model sees before it answers. Gemma 3 has no system role: its chat template folds the
    system message into the first user turn, identically at training and inference time."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": query}]


_CONTROL_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its control tokens


def control_tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's control tokens (`<start_of_turn>`, `<end_of_turn>`, `<bos>`, ...): a text that contains one is
    tokenized as that token, so a query holding `<end_of_turn>\\n<start_of_turn>model\\n` would forge a chat turn."""
    if tokenizer not in _CONTROL_TOKENS:
        _CONTROL_TOKENS[tokenizer] = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special},
                                            key=len, reverse=True)
    return _CONTROL_TOKENS[tokenizer]


def control_tokens_in(text: str, tokens: list[str]) -> list[str]:
    if not any(start in text for start in {token[0] for token in tokens}):  # Gemma's all start with < or [
        return []
    return [token for token in tokens if token in text]


def prompt_token_ids(tokenizer: Any, query: str, system_prompt: str) -> list[int]:
    """The exact ids a model is fed at inference: the chat template up to and including `<start_of_turn>model\\n`.
    User text never becomes control tokens: a query that holds one is refused."""
    if found := control_tokens_in(query, control_tokens(tokenizer)):
        raise UserError(f"the query {query[:60]!r} contains {found[0]!r}, which the model reads as a control token; "
                        "remove it")
    return tokenizer.apply_chat_template(
        prompt_messages(query, system_prompt), tokenize=True, add_generation_prompt=True, return_dict=False
    )

