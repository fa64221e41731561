"""What starting `make train` costs for one process: Axolotl run in our process (the default since 2026-12-03)
against `accelerate launch -m axolotl.cli.train` (a second interpreter, as before), the same effective recipe with
one optimizer step, no eval and no checkpoints, each run preparing the data afresh; alternated, side by side.

    python -m experiments.train_startup [--rounds 2] --out experiments/results/270m-speed/train-startup-cpu.json
        # after `make data`
    python -m experiments.train_startup --set micro_batch_size=1      # on a CPU: a one-example step, start-up dominates
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from contract.config import REPO_ROOT, run_env
from experiments.pipeline_270m import hardware
from training.__main__ import DRY_RUN_RECIPE, launch_command

WORKDIR = REPO_ROOT / "outputs/bench-train-startup"
ONE_STEP = ["--max_steps=1", "--evals_per_epoch=0", "--saves_per_epoch=0", "--save_total_limit=null",
            "--auto_resume_from_checkpoints=false"]


def timed(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, **run_env()})
    return time.perf_counter() - start


def one_run(launcher: str, run: int, extra: list[str]) -> float:
    out = WORKDIR / f"{launcher}-{run}"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [*ONE_STEP, *extra, f"--output_dir={out.relative_to(REPO_ROOT)}",
                 f"--dataset_prepared_path={(out / 'prepared').relative_to(REPO_ROOT)}"]
    train = [sys.executable, "-m", "training", *overrides]
    if launcher == "in-process":
        return timed(train, WORKDIR / f"{launcher}-{run}.log")
    # before: the same recipe check, then the launcher that `make train` still uses for several processes
    checked = timed([*train, "--dry-run"], WORKDIR / f"{launcher}-{run}-check.log")
    command, _ = launch_command(out / DRY_RUN_RECIPE, 1, torch.cuda.is_available())
    return checked + timed(command, WORKDIR / f"{launcher}-{run}.log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="more recipe overrides")
    args = parser.parse_args(argv)
    extra = [f"--{setting}" for setting in args.set]
    WORKDIR.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = {"in-process": [], "accelerate launch": []}
    for run in range(args.rounds):
        for launcher in seconds:
            seconds[launcher].append(round(one_run(launcher.replace(" ", "-"), run, extra), 1))
            print(f"round {run + 1}, {launcher}: {seconds[launcher][-1]} s", flush=True)
    means = {launcher: statistics.mean(values) for launcher, values in seconds.items()}
    result = {"command": f"python -m experiments.train_startup --rounds {args.rounds}"
                         + (f" --set {' '.join(args.set)}" if args.set else ""),
              "hardware": hardware(), "seconds": seconds,
              "mean_s": means, "saved_s": means["accelerate launch"] - means["in-process"]}
    print(f"make train with 1 step: in-process {means['in-process']:.1f} s, accelerate launch "
          f"{means['accelerate launch']:.1f} s: {result['saved_s']:.1f} s saved per run")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
