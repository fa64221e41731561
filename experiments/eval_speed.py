"""Where evaluation's time goes: examples/s of `python -m evaluation`'s decoder at several batch sizes, plain,
constrained and constrained + grounded (each scored), after one untimed warm-up batch (CUDA/Triton start-up is
paid once per process, not per example), then a torch profile of one constrained batch: GPU busy time against
wall time and the operators that take it.

    python -m experiments.eval_speed --adapter outputs/sweep/final-s42/model \
        --out experiments/results/270m-speed/eval-speed-h200.json

The adapter is merged in memory (what `make merge` writes decodes the same); the queries are the eval split's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from contract.config import Recipe, load_config, shown
from contract.prompt import system_prompt
from contract.records import read_text
from contract.rows import read_rows
from contract.schema import load_schema
from evaluation.scoring import score
from inference.generate import Generator
from inference.models import load_model

VARIANTS = {"plain": (False, False), "constrained": (True, False), "grounded": (True, True)}


def timed(generator: Generator, queries: list[str], batch_size: int) -> tuple[dict[str, Any], list[str]]:
    """Wall seconds for all queries (grammar set-up included), the decoder's own seconds, and the answers."""
    start = time.perf_counter()
    decode_s, tokens = 0.0, 0
    texts = [""] * len(queries)
    for positions, answers in generator.answer(queries, batch_size):
        decode_s += answers[0].batch_seconds
        tokens += sum(a.new_tokens for a in answers)
        for position, answer in zip(positions, answers, strict=True):
            texts[position] = answer.text
    wall = time.perf_counter() - start
    return {"examples_per_s": len(queries) / wall, "decode_examples_per_s": len(queries) / decode_s,
            "wall_s": round(wall, 2), "decode_s": round(decode_s, 2), "new_tokens": tokens}, texts


def profile(generator: Generator, queries: list[str], batch_size: int, rows: int = 25) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        for _ in generator.answer(queries[:batch_size], batch_size):
            pass
    wall = time.perf_counter() - start
    events = prof.key_averages()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    busy_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    return {"wall_s": wall, "gpu_busy_s": busy_us / 1e6,
            "by_gpu_time": events.table(sort_by=sort, row_limit=rows),
            "by_cpu_time": events.table(sort_by="self_cpu_time_total", row_limit=rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="a training output dir (LoRA adapter)")
    parser.add_argument("--pipeline", type=Path, default=Path("pipeline.yaml"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--profile", default="grounded", choices=[*VARIANTS, "none"])
    parser.add_argument("--limit", type=int, help="only the first N eval queries (a CPU check)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    config = load_config(args.pipeline)
    recipe = Recipe.load(config.path("recipe"))
    # The base the adapter was trained on (the recipe's, unless a test trained it on another)
    base = json.loads((args.adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model, tokenizer = load_model(base or recipe.base_model, args.adapter)
    model = model.merge_and_unload()
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    examples = read_rows(read_text(recipe.eval_file))[: args.limit]
    queries, references = [e.query for e in examples], [json.loads(e.answer) for e in examples]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result: dict[str, Any] = {"device": device, "torch": torch.__version__, "adapter": shown(args.adapter),
                              "examples": len(queries), "prompt": shown(config.path("system_prompt")),
                              "command": f"python -m experiments.eval_speed --adapter {shown(args.adapter)} "
                                         "--batch-sizes " + " ".join(map(str, args.batch_sizes)), "runs": []}
    generators = {}
    for variant in args.variants:
        constrained, grounded = VARIANTS[variant]
        options = config.decoding.model_copy(update={"grounded": grounded})
        generators[variant] = generator = Generator.build(model, tokenizer, prompt, schema, constrained, options)
        for _ in generator.answer(queries[:8], 8):  # warm-up: kernels, Triton's bitmask kernel, allocator
            pass
        for batch_size in args.batch_sizes:
            speed, texts = timed(generator, queries, batch_size)
            # Scored too: the same answers at every batch size is a check, and grounded vs not is a result.
            quality = score(texts, references, schema, config.main_label).headline()
            run = {"variant": variant, "batch_size": batch_size, **speed,
                   **{k: quality[k] for k in ("exact match", "intent accuracy", "entities f1 (micro)") if k in quality}}
            print(json.dumps(run), flush=True)
            result["runs"].append(run)
    if args.profile != "none":
        variant = args.profile if args.profile in generators else args.variants[-1]
        batch_size = max(args.batch_sizes)
        found = profile(generators[variant], queries, batch_size)
        result["profile"] = {"variant": variant, "batch_size": min(batch_size, len(queries)),
                             "wall_s": found["wall_s"], "gpu_busy_s": found["gpu_busy_s"]}
        print(f"profile of one {variant} batch of {min(batch_size, len(queries))}: wall {found['wall_s']:.2f} s, "
              f"GPU busy {found['gpu_busy_s']:.2f} s")
        print(found["by_gpu_time"])
        print(found["by_cpu_time"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
