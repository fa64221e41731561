"""Train with Axolotl: the recipe (plus CPU settings where there is no GPU, plus your overrides) is written to
<output_dir>/recipe.yaml, checked, and trained: in this process for one process (Axolotl's own entry point, as
`axolotl train --launcher python`), with `accelerate launch -m axolotl.cli.train` (GPUs) or torchrun (CPU ranks)
for several.

    python -m training [--config <recipe>] [--num-processes 2] [--key=value ...]

<output_dir>/training_state.json says whether the run is running, failed (and why) or complete; merge and
evaluation refuse an adapter whose run did not complete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from contract.config import add_stage_arguments, config_from_args, resolve, run_env, shown
from contract.errors import UserError, run_cli
from contract.outputs import write_json_atomic
from contract.state import NON_FINITE_REPORT, STATE
from training.recipe_check import check
from training.recipes import data_fingerprint, effective_recipe, load_recipe, parse_overrides

# Where --dry-run leaves the effective recipe it checked: never recipe.yaml, which is a real run's record.
DRY_RUN_RECIPE = "recipe.dry-run.yaml"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def launch_command(recipe_file: Path, num_processes: int, on_gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment that train `recipe_file` with Axolotl in `num_processes` processes.
    GPUs: `accelerate launch` (one process per GPU; DeepSpeed/FSDP come from the recipe). CPU ranks: torchrun with
    Accelerate told to stay on the CPU (gloo), as `accelerate launch --cpu` would start a single process."""
    if num_processes > 1 and not on_gpu:
        return ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
                 "-m", "axolotl.cli.train", str(recipe_file)],
                {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"})
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if num_processes > 1:
        command.append("--multi_gpu")
    return [*command, "-m", "axolotl.cli.train", str(recipe_file)], {}


def train_in_process(recipe_file: Path) -> None:
    """What `accelerate launch -m axolotl.cli.train` runs, in this interpreter: for one process the launcher only
    starts a second Python that imports torch, transformers and Axolotl again (11 s on 2 CPU cores:
    experiments/train_startup.py)."""
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.train import do_train

    do_train(load_cfg(str(recipe_file)), TrainerCliArgs())


def train(recipe_file: Path, output_dir: Path, num_processes: int, on_gpu: bool) -> str | None:
    """Train; None on success, else why it failed (the plugin's NaN report where there is one)."""
    report = output_dir / NON_FINITE_REPORT
    report.unlink(missing_ok=True)  # an earlier run's
    if num_processes == 1:
        try:
            train_in_process(recipe_file)
            return None
        except SystemExit as err:  # what the launched Axolotl would have exited with
            if err.code in (0, None):
                return None
            failure = f"Axolotl exited with status {err.code}; the log above says why"
        except Exception as err:
            if not report.exists():
                traceback.print_exc()
            failure = f"{type(err).__name__}: {err}"
    else:
        command, launch_env = launch_command(recipe_file, num_processes, on_gpu)
        print("$ " + " ".join(command), flush=True)
        status = subprocess.run(command, env={**os.environ, **launch_env}).returncode  # os.environ has run_env() (main)
        if status == 0:
            return None
        failure = f"Axolotl exited with status {status}; the log above says why"
    return json.loads(report.read_text())["message"] if report.exists() else failure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--num-processes", type=int, default=1, help="data-parallel processes (GPUs, or CPU ranks)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"write the effective recipe as <output_dir>/{DRY_RUN_RECIPE}, check it, do not train")
    parser.add_argument("--preprocess-only", action="store_true",
                        help="only Axolotl's tokenization and label masking (`axolotl preprocess`), to inspect it")
    args, rest = parser.parse_known_args(argv)
    os.environ.update(run_env())  # before Axolotl and huggingface_hub are imported: they read it once
    config = config_from_args(args)
    on_gpu = torch.cuda.is_available()
    recipe = effective_recipe(load_recipe(config.path("recipe")), parse_overrides(rest), on_gpu)
    output_dir = resolve(recipe["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = output_dir / "recipe.yaml"
    # Checked under another name first: output_dir/recipe.yaml only ever holds what was checked and then ran (a dry
    # run or a failed check leaves a finished run's record as it was).
    candidate = output_dir / ".recipe.candidate.yaml"
    base_recipe = shown(config.path("recipe"))
    candidate.write_text(f"# effective recipe: {base_recipe} + overrides {rest or 'none'}"
                         f"{'' if on_gpu else ' + CPU settings'}\n" + yaml.safe_dump(recipe, sort_keys=False))
    problems = [problem.replace(str(candidate), shown(recipe_file)).replace(shown(candidate), shown(recipe_file))
                for problem in check(candidate)]
    if problems:
        candidate.unlink()
        raise UserError("the recipe has problems:\n  " + "\n  ".join(problems))
    if args.dry_run:
        candidate.replace(output_dir / DRY_RUN_RECIPE)
        print(f"ok: {shown(output_dir / DRY_RUN_RECIPE)}")
        return 0
    candidate.replace(recipe_file)
    if args.preprocess_only:
        command = [sys.executable, "-m", "axolotl.cli.preprocess", str(recipe_file)]
        return subprocess.run(command).returncode  # in this environment, run_env() included

    state = {"status": "running", "started": now(), "recipe": shown(recipe_file),
             "base_recipe": base_recipe, "data_sha256": data_fingerprint(recipe),
             "processes": args.num_processes}
    write_json_atomic(output_dir / STATE, state)
    try:
        reason = train(recipe_file, output_dir, args.num_processes, on_gpu)
    except KeyboardInterrupt:
        write_json_atomic(output_dir / STATE, {**state, "status": "failed", "finished": now(),
                                               "reason": "interrupted"})
        raise
    if reason is None:
        write_json_atomic(output_dir / STATE, {**state, "status": "complete", "finished": now()})
        print(f"trained: {shown(output_dir)}")
        return 0
    write_json_atomic(output_dir / STATE, {**state, "status": "failed", "finished": now(), "reason": reason})
    raise UserError(f"training failed: {reason}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
