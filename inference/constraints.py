"""Schema-constrained decoding with xgrammar: the answer can only be JSON that the (bounded) schema accepts.

Grounded values: a string property marked `"x-copy-from-query": true` may only be a contiguous span of the
query's words. Each query gets its own grammar, the schema with every marked property replaced by the enum
of that query's spans (compiling one takes ~20 ms on a CPU core; `python -m experiments.grounding` measures it).
"""

from __future__ import annotations

import json
from typing import Any

from contract.rows import stop_token_ids
from contract.schema import COPY_FROM_QUERY, bounded_schema, word_runs


def query_spans(query: str, max_chars: int) -> list[str]:
    """Every contiguous run of the query's whitespace-separated words, up to max_chars, in order of appearance."""
    return [span for span in word_runs(query) if len(span) <= max_chars]


def grounded(schema: Any, spans: list[str]) -> Any:
    """The schema document with every node marked x-copy-from-query replaced by the enum of the spans
    (in $defs too: the walk covers the whole document)."""
    if isinstance(schema, list):
        return [grounded(item, spans) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get(COPY_FROM_QUERY):
        return {"type": "string", "enum": spans}
    return {key: grounded(value, spans) for key, value in schema.items()}


def has_marked(schema: Any) -> bool:
    if isinstance(schema, dict):
        return bool(schema.get(COPY_FROM_QUERY)) or any(has_marked(v) for v in schema.values())
    return isinstance(schema, list) and any(has_marked(v) for v in schema)


class SchemaGrammar:
    """Hands out a fresh matcher per answer; compiles the bounded schema once, and a grounded one per query."""

    def __init__(self, tokenizer: Any, schema: dict, vocab_size: int, max_string_chars: int, max_items: int,
                 grounded_values: bool) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.stops = stop_token_ids(tokenizer)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stops)
        self.compiler = xgr.GrammarCompiler(info)
        self.schema = bounded_schema(schema, max_string_chars, max_items)
        self.max_string_chars = max_string_chars
        self.grounded_values = grounded_values and has_marked(schema)
        self.whole = None if self.grounded_values else self._compile(self.schema)

    def _compile(self, schema: dict) -> Any:
        # Compact separators, as in training: the constrained model writes what it was trained to write.
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))

    def matcher(self, query: str) -> Any:
        grammar = self.whole or self._compile(grounded(self.schema, query_spans(query, self.max_string_chars)))
        return self.xgr.GrammarMatcher(grammar, override_stop_tokens=self.stops)
