"""Answer new queries with the fine-tuned model, with the prompt it was trained on; schema-constrained by default.

    python -m evaluation.predict --input queries.txt --output answers.jsonl [--model <merged dir> | --adapter <dir>]

--input: a text file (one query per line) or JSONL (one {"query": ...} per line). Every line is answered or
named in an error: an empty line, a line that is not valid UTF-8 or JSON, or a query whose prompt is longer
than the recipe's sequence_len stops the run before any model is loaded, with every such line listed.
--output: JSONL, one {"line", "query", "answer", "schema_valid"} per input line, in input order; an
interrupted run resumes where it stopped (same model, input and settings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from contract.config import Recipe, add_stage_arguments, config_from_args, sha256_file, shown
from contract.errors import UserError, run_cli
from contract.prompt import control_tokens, control_tokens_in, prompt_token_ids, system_prompt
from contract.records import read_text
from contract.schema import load_schema, validator
from contract.tokenizer import load_tokenizer
from evaluation.scoring import parse_prediction
from inference.generate import Generator
from inference.models import add_model_arguments, fingerprint, is_quantized, load_model, model_source
from inference.store import Resumable, run_resumable


def read_queries(path: Path, controls: Sequence[str] = ()) -> list[str]:
    """The queries of a .txt (one per line) or .jsonl ({"query": ...} per line) file; every bad line is named, a line
    holding a control token (`<end_of_turn>`, ...) among them."""
    lines = read_text(path).splitlines()
    queries, problems = [], []
    for number, line in enumerate(lines, 1):
        text = line
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError as err:
                problems.append(f"line {number}: not JSON ({err.msg})")
                continue
            text = row.get("query") if isinstance(row, dict) else None
            if not isinstance(text, str):
                problems.append(f"line {number}: needs a \"query\" string")
                continue
        if not text.strip():
            problems.append(f"line {number}: empty; remove it or put a query there")
        elif found := control_tokens_in(text, list(controls)):
            problems.append(f"line {number}: contains {found[0]!r}, which the model reads as a control token")
        queries.append(text.strip())
    if not lines:
        problems.append("the file is empty")
    if problems:
        raise UserError(f"{shown(path)}: " + "; ".join(problems[:20])
                        + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
    return queries


def check_lengths(queries: Sequence[str], tokenizer, prompt: str, sequence_len: int, path: Path) -> None:
    sizes = [(n, len(prompt_token_ids(tokenizer, q, prompt))) for n, q in enumerate(queries, 1)]
    if long := [f"line {n}: the prompt is {size} tokens" for n, size in sizes if size > sequence_len]:
        raise UserError(f"{shown(path)}: " + "; ".join(long[:10]) + f", over the recipe's sequence_len "
                        f"{sequence_len}: the model never saw inputs that long")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "predict", "decoding")
    parser.add_argument("--input", type=Path, required=True, help="queries: .txt (one per line) or .jsonl")
    parser.add_argument("--output", type=Path, required=True, help="answers, JSONL")
    add_model_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="discard answers already in --output")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    options = config.decoding
    recipe = Recipe.load(config.path("recipe"))
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    source = model_source(recipe, args, config.decoding.quantize)
    output = args.output.absolute()
    if output.resolve() == args.input.resolve():
        raise UserError(f"{shown(output)}: --output is the --input file; answers go to another file")
    tokenizer = load_tokenizer(args.adapter or source[0], fix="pass --model <merged dir> (`make merge` writes one) "
                               "or --adapter <training output_dir>")
    queries = read_queries(args.input, control_tokens(tokenizer))
    check_lengths(queries, tokenizer, prompt, recipe.sequence_len, args.input)

    model, tokenizer = load_model(*source, quantize=options.quantize)
    generator = Generator.build(model, tokenizer, prompt, schema, config.predict.constrained, options)
    identity = {"model": fingerprint(*source, quantized=is_quantized(model)), "input_sha256": sha256_file(args.input),
                "system_prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "decoding": {**options.model_dump(mode="json"), **config.predict.model_dump(mode="json")}}
    store = Resumable(output, identity, [{"query": q} for q in queries], args.fresh)
    check = validator(schema)

    def row(index: int, answer) -> dict:
        parsed = parse_prediction(answer.text, check)
        return {"index": index, "line": index + 1, "query": queries[index],
                "answer": parsed.value if parsed.is_json else None, "schema_valid": parsed.conforms,
                **({} if parsed.is_json else {"raw": answer.text})}

    rows = run_resumable(generator, queries, store, options.batch_size, "predict", row)
    valid = sum(r["schema_valid"] for r in rows)
    print(f"{len(rows)} answers ({valid} schema-valid) -> {shown(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
