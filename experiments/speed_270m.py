"""Training throughput of the 270M recipe, one change at a time, side by side in one run: tokens/s, examples/s
and MFU (experiments/flops.py) of each variant, timed by the same step timer over the same steps of the same data.

    python -m experiments.speed_270m [--steps 40] [variant ...]      # on a GPU, after `make data`

Each variant is the shipped recipe plus the overrides below; the table goes to stdout and, with the raw
numbers, to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from tabulate import tabulate
from transformers import AutoConfig

from contract.config import OFFLINE_ENV, REPO_ROOT, Recipe, load_config, resolve
from contract.rows import read_rows
from contract.tokenizer import load_tokenizer
from experiments.flops import Geometry, train_flops
from training.recipes import load_recipe, parse_overrides, recipe_variant

VARIANTS: dict[str, tuple[str, dict]] = {
    "shipped": ("the recipe as shipped", {}),
    "cudnn-default": ("cuDNN SDPA left on (the NaN bug's backend; the guard off so it runs)",
                      {"cudnn_sdpa": "enable", "stop_on_non_finite": False}),
    "eager": ("eager attention instead of sdpa", {"attn_implementation": "eager"}),
    "full-head": ("output layer at every position", {"loss_positions_only": False}),
    "no-checkpointing": ("gradient checkpointing off", {"gradient_checkpointing": False}),
    "pad-8": ("batches padded to a multiple of 8 instead of 64", {"pad_to_multiple_of": 8}),
    "batch-32": ("micro-batch 32 instead of 16 (the same examples in half the steps)", {"micro_batch_size": 32,
                                                                      "gradient_accumulation_steps": 1}),
    "batch-64": ("micro-batch 64 instead of 16 (the same examples in a quarter of the steps)",
                 {"micro_batch_size": 64, "gradient_accumulation_steps": 1}),
}
TIMER = "experiments.step_timer.StepTimerPlugin"


def token_counts(train_file: Path, tokenizer) -> tuple[float, float]:
    """Mean tokens per example and mean labelled tokens (answer + end of turn) per example of the train file."""
    rows = read_rows(train_file.read_text())
    answers = tokenizer([r.answer for r in rows], add_special_tokens=False)["input_ids"]
    texts = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False)
             for line in train_file.read_text().splitlines()]
    totals = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return sum(map(len, totals)) / len(rows), sum(len(a) + 1 for a in answers) / len(rows)


def run_variant(name: str, overrides: dict, base: dict, steps: int, workdir: Path) -> dict:
    recipe = recipe_variant(base, {**overrides, "max_steps": steps, "evals_per_epoch": 0, "saves_per_epoch": 0,
                                   "logging_steps": 5, "save_total_limit": None,
                                   "auto_resume_from_checkpoints": False,
                                   "plugins": [*base["plugins"], TIMER],
                                   "output_dir": str(workdir / name)})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    timer = workdir / f"{name}.timer.json"
    log = workdir / f"{name}.log"
    with log.open("w") as sink:
        status = subprocess.run([sys.executable, "-m", "training", "--config", str(path)], cwd=REPO_ROOT,
                                stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, **OFFLINE_ENV, "STEP_TIMER_OUT": str(timer)}).returncode
    result = json.loads(timer.read_text()) if timer.exists() else {"error": f"exit {status}; see {log}"}
    return {"variant": name, **result, "micro_batch": recipe["micro_batch_size"],
            "overrides": overrides, "exit": status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help=f"default: all of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--peak-tflops", type=float, help="bf16 matmul peak (default: measured here)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value",
                        help="recipe overrides for every variant (a CPU check: base_model=<tiny model>)")
    args = parser.parse_args(argv)
    config = load_config()
    recipe_path = config.path("recipe")
    base = recipe_variant(load_recipe(recipe_path), parse_overrides([f"--{s}" for s in args.set]))
    recipe = Recipe.load(recipe_path)
    workdir = REPO_ROOT / "outputs/bench-speed-270m"
    workdir.mkdir(parents=True, exist_ok=True)
    if args.peak_tflops is None:
        from experiments.matmul_peak import tflops

        args.peak_tflops = max(tflops(8192, 8192, 8192) for _ in range(3))
    tokens_per_example, loss_per_example = token_counts(recipe.train_file, load_tokenizer(recipe.tokenizer))
    geometry = Geometry.of(AutoConfig.from_pretrained(resolve(base["base_model"])))
    rows = []
    for name in args.variants or list(VARIANTS):
        what, overrides = VARIANTS[name]
        result = run_variant(name, overrides, base, args.steps, workdir)
        if "tokens_per_s" in result:
            merged = {**base, **overrides}
            flops = train_flops(geometry, result["tokens_per_s"], result["tokens_per_s"] * loss_per_example /
                                tokens_per_example, tokens_per_example, full_finetune=not merged.get("adapter"),
                                lora_rank=merged.get("lora_r", 0), head_on_loss_only=merged["loss_positions_only"])
            result |= {"examples_per_s": result["tokens_per_s"] / tokens_per_example,
                       "flops_per_s": flops["total"], "mfu": flops["total"] / (args.peak_tflops * 1e12),
                       "flops_by_part": flops}
        rows.append({"what": what, **result})
        print(f"{name}: " + (f"{result['tokens_per_s']:.0f} tokens/s, MFU {result['mfu']:.1%}"
                             if "mfu" in result else result.get("error", "?")), flush=True)
    table = tabulate([[r["variant"], r["what"], f"{r.get('tokens_per_s', 0):.0f}", f"{r.get('examples_per_s', 0):.1f}",
                       f"{r.get('mfu', 0):.1%}", f"{r.get('peak_reserved_gib') or 0:.1f}"] for r in rows],
                     headers=["variant", "change", "tokens/s", "examples/s", "MFU", "peak reserved GiB"],
                     tablefmt="github")
    print(f"\n{args.steps} steps each; tokens/example {tokens_per_example:.0f} ({loss_per_example:.0f} labelled); "
          f"peak {args.peak_tflops:.0f} TFLOP/s\n{table}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"peak_tflops": args.peak_tflops, "tokens_per_example": tokens_per_example,
                                    "labelled_tokens_per_example": loss_per_example, "steps": args.steps,
                                    "prompt": str(config.system_prompt), "variants": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
