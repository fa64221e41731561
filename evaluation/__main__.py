"""Generate answers for held-out queries with the training prompt, score them, write <reports_dir>/<run>/.

    python -m evaluation [--model outputs/gemma3-270m-lora/merged] [--variants tuned,tuned+constrained,base]

Variants: `tuned` (--model, or the recipe's base with --adapter), `base` (the recipe's untuned base_model),
each optionally `+constrained` (schema-constrained decoding). Interrupt at any time: a rerun with the same
--run resumes where it stopped, as long as the model, the data and the decoding settings are the same (else
that variant starts over, and says why). Every option has a default in pipeline.yaml's `eval:` section.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.config import (
    PipelineConfig,
    Recipe,
    add_stage_arguments,
    config_from_args,
    sha256_file,
    shown,
)
from contract.errors import UserError, run_cli
from contract.outputs import write_json_atomic
from contract.prompt import system_prompt
from contract.records import load_records, read_text
from contract.rows import read_rows
from contract.schema import load_schema, validator
from evaluation.report import training_log, write_report
from evaluation.scoring import Metrics, example_verdicts, score
from inference.generate import Generator
from inference.models import add_model_arguments, fingerprint, is_quantized, load_model, model_source, pick_device
from inference.store import Resumable, run_resumable


def load_examples(path: Path, schema: dict) -> list[dict]:
    """eval.jsonl (chat rows) or a raw_data-style JSON array of {"query", "data"}; every reference must satisfy
    the schema (a label outside it would be scored as if the model could have produced it)."""
    if path.suffix == ".jsonl":
        examples = [{"query": e.query, "data": json.loads(e.answer)} for e in read_rows(read_text(path))]
    else:
        examples = load_records(path)
    check = validator(schema)
    bad = [(i, error.message) for i, e in enumerate(examples) for error in check.iter_errors(e.get("data"))]
    if bad:
        shown_bad = "; ".join(f"record {i}: {message}" for i, message in bad[:3])
        raise UserError(f"{shown(path)}: {len({i for i, _ in bad})} reference(s) do not satisfy the schema, e.g. "
                        f"{shown_bad}; evaluate on data that `make data` accepts")
    return examples


def speed(rows: list[dict]) -> dict[str, Any]:
    seconds = sum(r["batch_seconds"] / r["batch_size"] for r in rows)
    batches = sorted({(r["batch_seconds"], r["batch_size"]) for r in rows})
    p50, p90, p99 = np.percentile([s for s, _ in batches], [50, 90, 99])
    return {"examples_per_s": len(rows) / seconds, "tokens_per_s": sum(r["new_tokens"] for r in rows) / seconds,
            "latency_s": {"p50": p50, "p90": p90, "p99": p99}, "device": pick_device()}


def run_variant(variant: str, model, tokenizer, examples: list[dict], config: PipelineConfig, prompt: str,
                schema: dict, out: Path, identity: dict[str, Any], fresh: bool) -> list[dict]:
    options = config.decoding
    constrained = variant.endswith("+constrained")
    generator = Generator.build(model, tokenizer, prompt, schema, constrained, options)
    decoding = {"constrained": constrained, "grounded": constrained and options.grounded,
                "max_new_tokens": options.max_new_tokens, "max_string_chars": options.max_string_chars,
                "max_items": options.max_items}
    store = Resumable(out / f"predictions-{variant}.jsonl", {**identity, "decoding": decoding},
                      [{"query": e["query"], "reference": e["data"]} for e in examples], fresh)
    check = validator(schema)

    def row(index: int, answer) -> dict:
        example = examples[index]
        return {"index": index, "query": example["query"], "reference": example["data"], "output": answer.text,
                "new_tokens": answer.new_tokens, "batch_seconds": answer.batch_seconds,
                "batch_size": answer.batch_size, **example_verdicts(answer.text, example["data"], check)}

    return run_resumable(generator, [e["query"] for e in examples], store, options.batch_size, variant, row)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "eval", "decoding")
    add_model_arguments(parser)  # what `tuned` is
    parser.add_argument("--data", type=Path, help="eval.jsonl or a raw_data-format file (default: the recipe's eval)")
    parser.add_argument("--run", help="report name (default: the recipe's name); reruns resume")
    parser.add_argument("--fresh", action="store_true", help="discard earlier predictions of this run")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    options = config.eval
    recipe = Recipe.load(config.path("recipe"))
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    data = args.data or recipe.eval_file
    examples = load_examples(data, schema)[: options.limit]
    out = config.locate(options.reports_dir) / (args.run or recipe.path.stem)
    out.mkdir(parents=True, exist_ok=True)

    quantize = config.decoding.quantize
    sources = {"tuned": model_source(recipe, args, quantize), "base": (recipe.base_model, None)}
    common = {"data_sha256": sha256_file(data), "examples": len(examples),
              "system_prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16]}
    metrics: dict[str, Metrics] = {}
    failures: dict[str, list[dict]] = {}
    kinds = list(dict.fromkeys(v.split("+")[0] for v in options.variants))
    loaded_as: dict[str, str] = {}
    for kind in kinds:
        model, tokenizer = load_model(*sources[kind], quantize=quantize)
        loaded_as[kind] = " (4-bit NF4)" if is_quantized(model) else ""
        identity = {**common, "model": fingerprint(*sources[kind], quantized=is_quantized(model))}
        for variant in (v for v in options.variants if v.split("+")[0] == kind):
            rows = run_variant(variant, model, tokenizer, examples, config, prompt, schema, out, identity, args.fresh)
            result = score([r["output"] for r in rows], [r["reference"] for r in rows], schema, config.main_label)
            metrics[variant] = Metrics(**{**result.__dict__, "speed": speed(rows)})
            failures[variant] = [r for r in rows if r["json_error"] or r["schema_error"]][:10]
        del model

    context = {"recipe": shown(recipe.path), "data": f"{shown(Path(data))} ({len(examples)} examples)",
               "models": "; ".join(f"{kind} = {' + adapter '.join(shown(Path(s)) for s in sources[kind] if s)}"
                                   f"{loaded_as[kind]}"
                                   for kind in kinds),
               "decoding": f"greedy, batch {config.decoding.batch_size}, max {config.decoding.max_new_tokens} new "
                           "tokens, "
                           f"{pick_device()}",
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    write_json_atomic(out / "metrics.json", {"variants": {v: m.to_json() for v, m in metrics.items()},
                                             "context": context, "config": config.as_record()})
    report = write_report(out, f"Evaluation: {out.name}", context, metrics, failures, training_log(recipe.output_dir))
    for variant, m in metrics.items():
        print(f"{variant}: " + ", ".join(f"{name} {100 * value:.1f} %" for name, value in m.headline().items())
              + f"; {m.speed['examples_per_s']:.2f} examples/s")
    print(f"report -> {shown(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
