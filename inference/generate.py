"""Answers for queries, as training taught them: the same prompt (contract.prompt), greedy decoding with the
shared prefix computed once (inference.decoding), optionally under the schema (inference.constraints)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from contract.config import DecodingOptions
from contract.errors import UserError
from contract.prompt import prompt_token_ids
from contract.rows import stop_token_ids
from inference.constraints import SchemaGrammar
from inference.decoding import Decoder, shared_prefix_length


def vocab_size(model: PreTrainedModel) -> int:
    """Rows of the output layer: can exceed the tokenizer's size (27B: 262,208 vs 262,144)."""
    return model.get_output_embeddings().weight.shape[0]


@dataclass(frozen=True)
class Answer:
    text: str
    new_tokens: int
    batch_seconds: float
    batch_size: int
    token_ids: tuple[int, ...] = ()
    margins: tuple[float, ...] = ()  # per answer token, where asked (inference.decoding.token_margins)


class Generator:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str,
                 max_new_tokens: int, grammar: SchemaGrammar | None = None) -> None:
        self.model, self.tokenizer, self.system_prompt, self.grammar = model, tokenizer, system_prompt, grammar
        self.max_new_tokens = max_new_tokens

    @classmethod
    def build(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str, schema: dict,
              constrained: bool, options: DecodingOptions) -> Generator:
        grammar = SchemaGrammar(tokenizer, schema, vocab_size(model), options.max_string_chars, options.max_items,
                                options.grounded) if constrained else None
        return cls(model, tokenizer, system_prompt, options.max_new_tokens, grammar)

    def prompts(self, queries: Sequence[str]) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, query, self.system_prompt) for query in queries]

    def answer(self, queries: Sequence[str], batch_size: int, margins: bool = False
               ) -> Iterable[tuple[list[int], list[Answer]]]:
        """(positions, answers) batch by batch, longest prompts first (batches of similar length pad less)."""
        prompts = self.prompts(queries)
        if not prompts:
            return
        decoder = Decoder(self.model, self.tokenizer.pad_token_id, stop_token_ids(self.tokenizer),
                          self.max_new_tokens, prompts[0][:shared_prefix_length(prompts)])
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        start, size = 0, batch_size
        while start < len(order):
            batch = order[start:start + size]
            matchers = [self.grammar.matcher(queries[i]) for i in batch] if self.grammar else None
            try:
                decoded, seconds = decoder.decode([prompts[i] for i in batch], matchers, margins)
            except torch.OutOfMemoryError as err:
                # A batch's key/value cache grows with its longest answer: on a small GPU (the 27B in 4 bits on
                # 24 GB) a batch that fits at first can run out later. Halve it and go on, rather than lose the run.
                if size == 1:
                    raise UserError("one query alone does not fit in GPU memory; lower decoding.max_new_tokens") \
                        from err
                size //= 2
                torch.cuda.empty_cache()
                print(f"batch of {len(batch)} ran out of GPU memory; continuing with batches of {size}",
                      file=sys.stderr, flush=True)
                continue
            start += len(batch)
            yield batch, [Answer(self.tokenizer.decode(d.token_ids, skip_special_tokens=True), d.new_tokens,
                                 seconds, len(batch), tuple(d.token_ids), d.margins) for d in decoded]
