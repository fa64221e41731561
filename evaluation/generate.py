"""Batched greedy generation with the training prompt: left padding, stop at the end of the model's turn,
optional schema-constrained decoding (xgrammar)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from preprocess.tokenizer import load_tokenizer

END_OF_TURN = "<end_of_turn>"


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int  # generated tokens up to and including the stop token


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str | Path, adapter: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A merged directory, or a base plus a LoRA adapter (applied unmerged, as trained). bf16 on GPU;
    fp32 on CPU, where bf16 matmuls are slow."""
    device = pick_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(device)
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter))
    loaded.eval()
    tokenizer = load_tokenizer(adapter or model)
    return loaded, tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def vocab_size(model: PreTrainedModel) -> int:
    """Rows of the output layer: can exceed the tokenizer's size (27B: 262,208 vs 262,144)."""
    return model.get_output_embeddings().weight.shape[0]


def bounded_schema(schema: Any, max_string_chars: int, max_items: int) -> Any:
    """The schema with a length bound on every unbounded string and array. Anything that satisfies it
    satisfies the original; without it a constrained model may write one string until the token budget
    runs out, and a truncated answer is invalid JSON."""
    if isinstance(schema, list):
        return [bounded_schema(s, max_string_chars, max_items) for s in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bounded_schema(value, max_string_chars, max_items) for key, value in schema.items()}
    if schema.get("type") == "string" and "enum" not in schema and "maxLength" not in schema:
        bounded["maxLength"] = max_string_chars
    if schema.get("type") == "array" and "maxItems" not in schema:
        bounded["maxItems"] = max_items
    return bounded


class SchemaConstraint:
    """Compiles the schema once; hands out a fresh (stateful) logits processor per generate() call."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, schema: dict, model_vocab_size: int,
                 max_string_chars: int = 64, max_items: int = 8) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model_vocab_size,
                                                  stop_token_ids=stop_token_ids(tokenizer))
        # Compact separators, as in training: the constrained model writes what it was trained to write.
        self.grammar = xgr.GrammarCompiler(info).compile_json_schema(
            json.dumps(bounded_schema(schema, max_string_chars, max_items)),
            any_whitespace=False, separators=(",", ":"))

    def processor(self) -> LogitsProcessor:
        import xgrammar.contrib.hf

        return xgrammar.contrib.hf.LogitsProcessor(self.grammar)


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, batch))
    ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in batch])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in batch])
    return ids, mask


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
             max_new_tokens: int, constraint: SchemaConstraint | None = None) -> tuple[list[Generation], float]:
    """Greedy answers for a batch of tokenized prompts, and the wall-clock seconds it took."""
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    start = time.perf_counter()
    out = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
        do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
        logits_processor=[constraint.processor()] if constraint else None,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    results = []
    for row in out[:, ids.shape[1]:].tolist():
        end = next((i for i, token in enumerate(row) if token in stops), None)
        answer = row if end is None else row[:end]
        results.append(Generation(tokenizer.decode(answer, skip_special_tokens=True),
                                  len(answer) + (end is not None)))
    return results, seconds
