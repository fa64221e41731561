"""Upload the merged model, with its card, to the Hugging Face Hub.

    HF_TOKEN=... python -m release.push --repo you/your-model [--dry-run]

The token is read from the environment only. What goes up is an explicit list (the plan, printed first): weights,
configs, tokenizer, chat template, NOTICE, the card, the merge proof, and GGUF files if exported; never optimizer
states, checkpoints or training arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from contract.config import Recipe, add_stage_arguments, config_from_args, shown
from contract.errors import UserError, run_cli
from merge.streaming import INDEX, SINGLE
from release.card import latest_metrics, write_card

# Besides the weights: what a model directory needs to be used, and what says how it was made.
COMPANIONS = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "NOTICE", "README.md", "merge_proof.json", "Modelfile",
              "gguf_parity.json", "preprocessor_config.json", "processor_config.json")


def upload_plan(model_dir: Path) -> list[Path]:
    """The files that go up, by name: the weights the merge wrote (its index, or model.safetensors), the GGUF files
    the export checked (gguf_parity.json), and the companions. A stray file in the directory (a copied optimizer
    state, another checkpoint's shard) never goes up."""
    index = model_dir / INDEX
    weights = [INDEX, *sorted(set(json.loads(index.read_text())["weight_map"].values()))] if index.exists() \
        else [SINGLE]
    parity = model_dir / "gguf_parity.json"
    gguf = [f["file"] for f in json.loads(parity.read_text())["files"]] if parity.exists() else []
    return sorted(model_dir / name for name in {*weights, *gguf, *COMPANIONS} if (model_dir / name).is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument("--repo", required=True, help="the Hub repository, owner/name")
    parser.add_argument("--model", type=Path, help="merged model dir (default: <output_dir>/merged)")
    parser.add_argument("--metrics", type=Path, help="metrics.json for the card (default: reports/<recipe>/)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="write the card and print the plan; upload nothing")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    recipe = Recipe.load(config.path("recipe"))
    model_dir = args.model.absolute() if args.model else recipe.merged_dir
    if not (model_dir / "merge_proof.json").exists():
        raise UserError(f"{shown(model_dir)}: no merged model with a merge proof there; run `make merge` first")
    write_card(model_dir, config, recipe, latest_metrics(config, recipe, args.metrics))
    plan = upload_plan(model_dir)
    print(f"upload to {args.repo}: " + ", ".join(p.name for p in plan))
    if args.dry_run:
        return 0
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise UserError("HF_TOKEN is not set: export it (a write token from huggingface.co/settings/tokens)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(args.repo, private=args.private, exist_ok=True)
    api.upload_folder(repo_id=args.repo, folder_path=str(model_dir), allow_patterns=[p.name for p in plan])
    print(f"pushed {len(plan)} files to https://huggingface.co/{args.repo}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
