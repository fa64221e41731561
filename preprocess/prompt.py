"""The ONE place that turns a query into chat messages. Training data, evaluation and serving all call it.

Design choice: the system prompt embeds the user's JSON Schema itself (compact), not a hand-written label
list. The schema is the contract the output is checked against, it carries the closed label sets (enums),
and a user who swaps in their own schema gets a correct prompt without touching Python. The cost is
~1k prompt tokens per example (measured in the stats the preprocessor prints); the model still learns the
labels from data, but can copy rare label names from its context instead of having to memorise them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PLACEHOLDER = "{schema}"
# Keys that describe the schema document rather than the answer: noise in a prompt.
_META_KEYS = {"$schema", "$id", "$comment"}


def compact_json(value: Any) -> str:
    """The canonical text of a JSON value: no whitespace, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_system_prompt(template: str, schema: dict) -> str:
    prompt_schema = {key: value for key, value in schema.items() if key not in _META_KEYS}
    return template.strip().replace(SCHEMA_PLACEHOLDER, compact_json(prompt_schema))


def load_system_prompt(template_path: Path, schema_path: Path) -> str:
    return render_system_prompt(Path(template_path).read_text(), json.loads(Path(schema_path).read_text()))


def canonical_answer(data: Any, schema: dict) -> Any:
    """Order object keys as the schema declares them (undeclared keys after, sorted), recursively.

    Users' files list keys in whatever order; the model should learn one order.
    """
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        order = [key for key in properties if key in data] + sorted(key for key in data if key not in properties)
        return {key: canonical_answer(data[key], properties.get(key, {})) for key in order}
    if isinstance(data, list):
        items = schema.get("items", {})
        return [canonical_answer(item, items) for item in data]
    return data


def prompt_messages(query: str, system_prompt: str) -> list[dict[str, str]]:
    """What the model sees before it answers. Gemma 3 has no system role: its chat template folds the
    system message into the first user turn, identically at training and inference time."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": query}]


def training_messages(query: str, data: Any, system_prompt: str, schema: dict) -> list[dict[str, str]]:
    answer = compact_json(canonical_answer(data, schema))
    return [*prompt_messages(query, system_prompt), {"role": "assistant", "content": answer}]


def prompt_token_ids(tokenizer: Any, query: str, system_prompt: str) -> list[int]:
    """The exact ids a model is fed at inference: the chat template up to and including `<start_of_turn>model\\n`.
    tests/test_recipes.py proves they equal the ids Axolotl trains on before the answer."""
    return tokenizer.apply_chat_template(
        prompt_messages(query, system_prompt), tokenize=True, add_generation_prompt=True, return_dict=False
    )
