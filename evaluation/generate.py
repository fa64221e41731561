"""Answers for queries, as training taught them: the same prompt (contract.prompt), greedy decoding with the
shared prefix computed once (evaluation.decoding), optionally under the schema (evaluation.constraints).
Predictions are appended to a JSONL file batch by batch and resume after an interruption, keyed by content:
the model, the inputs and the settings must match, or the file starts over."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from contract.config import Recipe, shown
from contract.outputs import write_json_atomic, write_text_atomic
from contract.prompt import prompt_token_ids
from contract.rows import stop_token_ids
from contract.tokenizer import load_tokenizer
from evaluation.constraints import SchemaGrammar
from evaluation.decoding import Decoder, shared_prefix_length
from training.state import require_complete


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model / --adapter: which fine-tuned model answers (evaluation's `tuned`, prediction)."""
    parser.add_argument("--model", help="merged model dir (default: <output_dir>/merged)")
    parser.add_argument("--adapter", type=Path, help="the recipe's base + this adapter (unmerged) instead")


def model_source(recipe: Recipe, args: argparse.Namespace) -> tuple[str | Path, Path | None]:
    """(model, adapter) to load: the merged dir, or the recipe's base with --adapter."""
    if args.adapter:
        return recipe.base_model, args.adapter
    return args.model or recipe.merged_dir, None


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str | Path, adapter: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A merged directory, or a base plus a LoRA adapter (applied unmerged, as trained). bf16 on GPU;
    fp32 on CPU, where bf16 matmuls are slow."""
    if adapter is not None:
        require_complete(adapter)
    tokenizer = load_tokenizer(adapter or model, fix="pass --model <merged dir> (`make merge` writes one) or "
                               "--adapter <training output_dir>")
    device = pick_device()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(device)
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter))
    loaded.eval()
    return loaded, tokenizer


def vocab_size(model: PreTrainedModel) -> int:
    """Rows of the output layer: can exceed the tokenizer's size (27B: 262,208 vs 262,144)."""
    return model.get_output_embeddings().weight.shape[0]


def fingerprint(model: str | Path, adapter: Path | None) -> str:
    """Identifies the weights cheaply: file names, sizes and modification times (a retrained or re-merged model
    differs), or the hub name."""
    digest = hashlib.sha256()
    for source in filter(None, [model, adapter]):
        path = Path(source)
        digest.update(str(path.resolve() if path.exists() else source).encode())
        for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*config.json")) if path.is_dir() else []:
            stat = weights.stat()
            digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Answer:
    text: str
    new_tokens: int
    batch_seconds: float
    batch_size: int


class Generator:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str,
                 max_new_tokens: int, grammar: SchemaGrammar | None = None) -> None:
        self.model, self.tokenizer, self.system_prompt, self.grammar = model, tokenizer, system_prompt, grammar
        self.max_new_tokens = max_new_tokens

    @classmethod
    def build(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str, schema: dict,
              constrained: bool, options: Any) -> Generator:
        grammar = SchemaGrammar(tokenizer, schema, vocab_size(model), options.max_string_chars, options.max_items,
                                options.grounded) if constrained else None
        return cls(model, tokenizer, system_prompt, options.max_new_tokens, grammar)

    def prompts(self, queries: Sequence[str]) -> list[list[int]]:
        return [prompt_token_ids(self.tokenizer, query, self.system_prompt) for query in queries]

    def answer(self, queries: Sequence[str], batch_size: int) -> Iterable[tuple[list[int], list[Answer]]]:
        """(positions, answers) batch by batch, longest prompts first (batches of similar length pad less)."""
        prompts = self.prompts(queries)
        if not prompts:
            return
        decoder = Decoder(self.model, self.tokenizer.pad_token_id, stop_token_ids(self.tokenizer),
                          self.max_new_tokens, prompts[0][:shared_prefix_length(prompts)])
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            matchers = [self.grammar.matcher(queries[i]) for i in batch] if self.grammar else None
            decoded, seconds = decoder.decode([prompts[i] for i in batch], matchers)
            yield batch, [Answer(self.tokenizer.decode(d.token_ids, skip_special_tokens=True), d.new_tokens,
                                 seconds, len(batch)) for d in decoded]


def read_jsonl_resumable(path: Path) -> list[dict]:
    """A predictions file as written so far. A torn last line (what an interrupted write leaves) is reported
    and dropped, and the file is rewritten without it, so the run resumes from there."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                print(f"{shown(path)}: dropped a torn last line ({len(line)} characters, line {number}: an "
                      "interrupted write); resuming from there")
                path.write_text("".join(lines[:-1]), encoding="utf-8")
                break
            raise
    return rows


class Resumable:
    """A JSONL file of rows keyed by position, plus `<name>.run.json` saying what made them (`identity`).
    Rows from another model, inputs or settings are never mixed with new ones: the file starts over."""

    def __init__(self, path: Path, identity: dict[str, Any], expected: Sequence[dict[str, Any]],
                 fresh: bool = False) -> None:
        """`expected[i]`: fields row i must carry (its query, its reference) for an old row to be kept."""
        self.path, self.identity = path, identity
        self.meta = path.with_name(path.name.removesuffix(".jsonl") + ".run.json")
        self.done: dict[int, dict] = {}
        previous = json.loads(self.meta.read_text()) if self.meta.exists() and not fresh else None
        if previous is not None and previous != identity:
            changed = sorted(key for key in identity.keys() | previous.keys() if identity.get(key) != previous.get(key))
            print(f"{shown(path)}: made with another {', '.join(changed)}; starting it over")
        elif previous is not None:
            for row in read_jsonl_resumable(path):
                index = row.get("index", -1)
                if not 0 <= index < len(expected) or any(row.get(k) != v for k, v in expected[index].items()):
                    print(f"{shown(path)}: row {index} does not match the input there; starting it over")
                    self.done = {}
                    break
                self.done[index] = row
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.done:
            path.write_text("")
        write_json_atomic(self.meta, identity)

    def append(self, rows: Sequence[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        for row in rows:
            self.done[row["index"]] = row

    def sort(self) -> list[dict]:
        """Once every row is in: the file rewritten in input order (batches run longest prompt first)."""
        rows = [self.done[i] for i in sorted(self.done)]
        write_text_atomic(self.path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return rows


def run_resumable(generator: Generator, queries: Sequence[str], store: Resumable, batch_size: int, desc: str,
                  row: Callable[[int, Answer], dict]) -> list[dict]:
    """Answer the queries not in `store` yet, appending each batch; all rows, in input order."""
    todo = [i for i in range(len(queries)) if i not in store.done]
    with tqdm(total=len(queries), initial=len(queries) - len(todo), desc=desc, unit="ex") as bar:
        for positions, answers in generator.answer([queries[i] for i in todo], batch_size):
            store.append([row(todo[p], a) for p, a in zip(positions, answers, strict=True)])
            bar.update(len(positions))
    return store.sort()
