"""The whole 270M pipeline as `make data train merge eval` runs it, from fresh outputs (the base model already
built), each stage timed; with training throughput, MFU and the scores. Writes one JSON that the README quotes.

    python -m experiments.pipeline_270m --out experiments/results/270m-speed/pipeline-h200.json [--eval-batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig

from contract.config import OFFLINE_ENV, REPO_ROOT, Recipe, load_config, resolve, shown
from contract.tokenizer import load_tokenizer
from experiments.flops import Geometry, train_flops
from experiments.speed_270m import TIMER, token_counts
from training.recipes import load_recipe, parse_overrides, recipe_variant

WORKDIR = REPO_ROOT / "outputs/bench-pipeline-270m"


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, help="bf16 matmul peak (default: measured here)")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="recipe overrides for every stage (a CPU check: base_model=<tiny model>)")
    parser.add_argument("--eval-args", default="", help="more flags for the eval stage (a CPU check: --limit 4)")
    args = parser.parse_args(argv)

    shutil.rmtree(WORKDIR, ignore_errors=True)
    config = load_config()
    base = load_recipe(config.path("recipe"))
    overrides = {"plugins": [*base["plugins"], TIMER], **parse_overrides([f"--{s}" for s in args.set])}
    recipe = recipe_variant(base, overrides, workdir=WORKDIR.relative_to(REPO_ROOT))
    recipe_file, pipeline_file = WORKDIR / "recipe.yaml", WORKDIR / "pipeline.yaml"
    WORKDIR.mkdir(parents=True)
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    settings = yaml.safe_load(resolve("pipeline.yaml").read_text())
    settings["recipe"], settings["eval"]["reports_dir"] = str(recipe_file), str(WORKDIR / "reports")
    pipeline_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    stage = ["--pipeline", str(pipeline_file)]
    timer = WORKDIR / "timer.json"
    stages = {
        "data": [sys.executable, "-m", "preprocess", *stage],
        "train": [sys.executable, "-m", "training", *stage],
        "merge": [sys.executable, "-m", "merge", *stage],
        "eval": [sys.executable, "-m", "evaluation", *stage, "--variants", "tuned+constrained", "--batch-size",
                 str(args.eval_batch_size), "--run", "pipeline", "--fresh", *args.eval_args.split()],
    }
    seconds = {}
    env = {**os.environ, **OFFLINE_ENV, "STEP_TIMER_OUT": str(timer)}
    for name, command in stages.items():
        start = time.perf_counter()
        with (WORKDIR / f"{name}.log").open("w") as log:
            status = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {seconds[name]} s (exit {status})", flush=True)
        if status:
            print((WORKDIR / f"{name}.log").read_text()[-3000:])
            return 1
    seconds["total"] = round(sum(seconds.values()), 1)

    loaded = Recipe.load(recipe_file)
    step = json.loads(timer.read_text())
    if "tokens_per_s" not in step:
        print(f"step timer: {step}")
        return 1
    tokens_per_example, labelled = token_counts(loaded.train_file, load_tokenizer(loaded.tokenizer))
    if args.peak_tflops is None and torch.cuda.is_available():
        from experiments.matmul_peak import tflops

        args.peak_tflops = max(tflops(8192, 8192, 8192) for _ in range(3))
    flops = train_flops(Geometry.of(AutoConfig.from_pretrained(loaded.base_model)), step["tokens_per_s"],
                        step["tokens_per_s"] * labelled / tokens_per_example, tokens_per_example,
                        full_finetune=not recipe.get("adapter"), lora_rank=recipe.get("lora_r", 0),
                        head_on_loss_only=bool(recipe.get("loss_positions_only")))
    metrics = json.loads((WORKDIR / "reports/pipeline/metrics.json").read_text())["variants"]["tuned+constrained"]
    stats = json.loads((loaded.data_dir / "stats.json").read_text())
    result = {
        "hardware": hardware(),
        "command": f"python -m experiments.pipeline_270m --out {shown(args.out)} "
                   f"--eval-batch-size {args.eval_batch_size}"
                   + (f" --set {' '.join(args.set)}" if args.set else ""),
        "prompt": shown(config.path("system_prompt")),
        "tokens_per_example": stats["tokens_per_example"],
        "pipeline_seconds": seconds,
        "train_tokens_per_s": step["tokens_per_s"],
        "train_examples_per_s": step["tokens_per_s"] / tokens_per_example,
        "train_flops_per_s": flops,
        "peak_tflops": args.peak_tflops,
        "mfu": flops["total"] / (args.peak_tflops * 1e12) if args.peak_tflops else None,
        "eval_examples_per_s": metrics["speed"]["examples_per_s"],
        "eval_batch_size": args.eval_batch_size,
        "schema_valid": metrics["schema_valid"],
        "exact_match": metrics["exact_match"],
        "intent_accuracy": metrics["field_accuracy"]["intent"],
        "entity_f1": metrics["extraction"]["entities"]["micro"]["f1"],
        "recipe": recipe,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "recipe"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
