"""Generate answers for held-out queries with the training prompt, score them, write reports/<run>/.

    python -m evaluation --config axolotl_configs/gemma3-270m-lora.yaml --model outputs/gemma3-270m-lora/merged \
        --variants tuned,tuned+constrained,base

Variants: `tuned` (--model, or the recipe's base with --adapter), `base` (the recipe's untuned base_model),
each optionally `+constrained` (schema-constrained decoding). Interrupt at any time: a rerun with the same
--run resumes where it stopped (predictions are appended batch by batch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from tqdm import tqdm

from evaluation.generate import SchemaConstraint, generate, load_model, pick_device, vocab_size
from evaluation.report import training_log, write_report
from evaluation.scoring import example_verdicts, score
from preprocess.checks import load_records
from preprocess.config import REPO_ROOT, Pipeline, Recipe, add_stage_arguments
from preprocess.prompt import load_system_prompt, prompt_token_ids

VARIANTS = ("tuned", "tuned+constrained", "base", "base+constrained")


def load_examples(path: Path) -> list[dict]:
    """eval.jsonl (chat messages) or a raw_data-style JSON array of {"query", "data"}."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
        return [{"query": m[1]["content"], "data": json.loads(m[2]["content"])} for m in rows]
    return load_records(path)


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98]}


def read_done(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["index"]: row for row in rows}


def run_variant(variant: str, model, tokenizer, examples: list[dict], system_prompt: str, schema: dict,
                out_file: Path, args: argparse.Namespace) -> list[dict]:
    batch_size, max_new_tokens = args.batch_size, args.max_new_tokens
    done = read_done(out_file)
    todo = [i for i in range(len(examples)) if i not in done]
    constraint = (SchemaConstraint(tokenizer, schema, vocab_size(model), args.max_string_chars, args.max_items)
                  if variant.endswith("+constrained") else None)
    validator = Draft202012Validator(schema)
    # Longest prompts first: batches of similar length waste less padding.
    todo.sort(key=lambda i: -len(examples[i]["query"]))
    with out_file.open("a") as sink, tqdm(total=len(examples), initial=len(done), desc=variant, unit="ex") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [prompt_token_ids(tokenizer, examples[i]["query"], system_prompt) for i in batch]
            generations, seconds = generate(model, tokenizer, prompts, max_new_tokens, constraint)
            for i, generation in zip(batch, generations, strict=True):
                row = {"index": i, "query": examples[i]["query"], "reference": examples[i]["data"],
                       "output": generation.text, "new_tokens": generation.new_tokens,
                       "batch_seconds": seconds, "batch_size": len(batch),
                       **example_verdicts(generation.text, examples[i]["data"], validator)}
                done[i] = row
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            bar.update(len(batch))
    return [done[i] for i in range(len(examples))]


def speed(rows: list[dict]) -> dict[str, Any]:
    seconds = sum(r["batch_seconds"] / r["batch_size"] for r in rows)
    batches = {(r["batch_seconds"], r["batch_size"]) for r in rows}
    return {"examples_per_s": len(rows) / seconds, "tokens_per_s": sum(r["new_tokens"] for r in rows) / seconds,
            "latency_s": percentiles([s for s, _ in batches]), "device": pick_device()}


def describe(model: str | Path, adapter: Path | None) -> str:
    return f"{model} + adapter {adapter}" if adapter else str(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--model", help="merged model dir for `tuned` (default: <output_dir>/merged)")
    parser.add_argument("--adapter", type=Path, help="score the recipe's base + this adapter as `tuned` instead")
    parser.add_argument("--data", type=Path, help="eval.jsonl or a raw_data-format file (default: the recipe's eval)")
    parser.add_argument("--variants", default="tuned", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--run", help="report name under reports/ (default: the recipe's name); reruns resume")
    parser.add_argument("--fresh", action="store_true", help="discard earlier predictions of this run")
    parser.add_argument("--limit", type=int, help="only the first N examples")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-string-chars", type=int, default=64,
                        help="constrained decoding: bound on free-text strings (the sample's longest value: 52)")
    parser.add_argument("--max-items", type=int, default=8,
                        help="constrained decoding: bound on array lengths (the sample's longest: 6)")
    args = parser.parse_args(argv)

    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    recipe, pipeline = Recipe.load(args.config), Pipeline.load(args.pipeline)
    schema = json.loads(pipeline.schema.read_text())
    system_prompt = load_system_prompt(pipeline.system_prompt, pipeline.schema)
    data = args.data or recipe.eval_file
    examples = load_examples(data)[: args.limit]
    out = REPO_ROOT / "reports" / (args.run or recipe.path.stem)
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for old in out.glob("predictions-*.jsonl"):
            old.unlink()

    tuned = (recipe.base_model, args.adapter) if args.adapter else (args.model or recipe.output_dir / "merged", None)
    sources = {"tuned": tuned, "base": (recipe.base_model, None)}
    metrics: dict[str, dict] = {}
    failures: dict[str, list[dict]] = {}
    kinds = list(dict.fromkeys(v.split("+")[0] for v in variants))
    for kind in kinds:
        model, tokenizer = load_model(*sources[kind])
        for variant in (v for v in variants if v.split("+")[0] == kind):
            rows = run_variant(variant, model, tokenizer, examples, system_prompt, schema,
                               out / f"predictions-{variant}.jsonl", args)
            metrics[variant] = {**score([r["output"] for r in rows], [r["reference"] for r in rows], schema,
                                        pipeline.main_label), "speed": speed(rows)}
            failures[variant] = [r for r in rows if r["json_error"] or r["schema_error"]][:10]
        del model

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    context = {"recipe": str(args.config), "data": f"{data} ({len(examples)} examples)",
               "models": "; ".join(f"{kind} = {describe(*sources[kind])}" for kind in kinds),
               "decoding": f"greedy, batch {args.batch_size}, max {args.max_new_tokens} new tokens, {pick_device()}",
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    report = write_report(out, f"Evaluation: {out.name}", context, metrics, failures, training_log(recipe.output_dir))
    for variant, m in metrics.items():
        print(f"{variant}: json {m['json_valid']:.1%}, schema {m['schema_valid']:.1%}, exact {m['exact_match']:.1%}, "
              + ", ".join(f"{f} {a:.1%}" for f, a in m["field_accuracy"].items()))
    print(f"report -> {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
