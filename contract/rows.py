"""The training row format (what `make data` writes and Axolotl reads) and the end-of-turn token.

A row is `{"messages": [system, user, assistant]}`; readers find the turns by role, never by position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from contract.prompt import prompt_messages

# Gemma 3 ends every turn with this token; the model learns to emit it after the answer (recipes'
# `eot_tokens`), and decoding stops at it.
END_OF_TURN = "<end_of_turn>"


@dataclass(frozen=True)
class Example:
    query: str
    answer: str  # the canonical JSON text


def training_row(query: str, answer: str, system_prompt: str) -> dict[str, Any]:
    return {"messages": [*prompt_messages(query, system_prompt), {"role": "assistant", "content": answer}]}


def read_row(row: dict[str, Any]) -> Example:
    by_role = {message["role"]: message["content"] for message in row["messages"]}
    return Example(query=by_role["user"], answer=by_role["assistant"])


def read_rows(text: str) -> list[Example]:
    return [read_row(json.loads(line)) for line in text.splitlines() if line.strip()]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Decoding stops at the end of the model's turn, or at <eos>."""
    return [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id]
