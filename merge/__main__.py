"""Merge the adapter a recipe trained into its full-precision base, shard by shard, with proofs of faithfulness.

    python -m merge [--config <recipe>] [--dtype float32|bfloat16|auto] [--out <dir>]

Writes <output_dir>/merged/ (loadable as is by transformers, vLLM and llama.cpp's converter) as one set, and writes
nothing if a proof fails: every adapted matrix is checked as stored (merge/streaming.py), and where the model is
small enough to hold in float32, the merged model's logits are checked against base + adapter (merge/proof.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoConfig, GenerationConfig

from contract.config import Recipe, add_stage_arguments, config_from_args, sha256_file, shown
from contract.errors import UserError, run_cli
from contract.outputs import replaced_directory
from contract.prompt import system_prompt
from contract.rows import stop_token_ids
from contract.state import ADAPTER_WEIGHTS, require_complete
from contract.tokenizer import SENTENCEPIECE_FILE, load_tokenizer
from merge.proof import logit_proof, probe_examples
from merge.streaming import read_adapter, stream_merge, tensor_shapes, weight_map

# A model whose float32 weights take at most this is "small": float32 costs little disk, and the logit proof's
# float32 models fit a rented box's RAM one at a time. Larger models (the 27B: 108 GB in float32) merge in bfloat16,
# their checkpoint's own dtype, and are proven matrix by matrix only. RESULTS.md measures what bfloat16 costs.
SMALL_MODEL_BYTES = 8 * 2**30
# Max |logit| difference between the merged model and base + adapter, by the dtype the merge is stored in: float32
# reproduces the unmerged computation up to summation order; bfloat16 rounds every merged weight once.
DEFAULT_TOLERANCE = {"bfloat16": 2.0, "float32": 1e-3}
# Files of the base that a merged directory needs besides weights, config and tokenizer.
BASE_FILES = ("NOTICE", SENTENCEPIECE_FILE, "preprocessor_config.json", "processor_config.json")


def base_directory(base: str) -> Path:
    """The base checkpoint's directory: local, or the Hub cache's snapshot that training downloaded."""
    if Path(base).is_dir():
        return Path(base)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(base))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise UserError(f"{base}: not in the Hub cache and not a local directory; merge where it trained, or "
                        "download it (HF_HUB_OFFLINE=0 HF_TOKEN=...)") from err


def write_companions(base_dir: Path, out: Path, dtype: str, tokenizer) -> None:
    """Everything of a model directory but the weights: config (in the merge's dtype), the training tokenizer and
    chat template, a generation config that stops at the end of the model's turn, the licence and vocabulary files."""
    config = AutoConfig.from_pretrained(str(base_dir))
    config.dtype = dtype
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    try:
        generation = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        generation = GenerationConfig()
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    generation.eos_token_id = sorted({*filter(None, eos), *stop_token_ids(tokenizer)})
    generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(out)
    for name in BASE_FILES:
        if (base_dir / name).exists():
            shutil.copy(base_dir / name, out / name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "merge")
    parser.add_argument("--base", help="full-precision base (default: the recipe's base_model)")
    parser.add_argument("--adapter", type=Path, help="adapter dir (default: the recipe's output_dir)")
    parser.add_argument("--out", type=Path, help="default: <output_dir>/merged")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    options = config.merge
    recipe = Recipe.load(config.path("recipe"))
    base = args.base or recipe.base_model
    adapter = args.adapter or recipe.output_dir
    out = args.out or recipe.merged_dir
    require_complete(adapter)
    loras = read_adapter(adapter)  # a missing or torn adapter is named before anything else is loaded
    tokenizer = load_tokenizer(adapter, fix=f"{shown(adapter)} has no tokenizer: is it the output_dir of a "
                               "finished `make train`? Pass --adapter <dir> otherwise")
    base_dir = base_directory(base)
    fp32_bytes = 4 * sum(torch.Size(s).numel() for s in tensor_shapes(base_dir, weight_map(base_dir)).values())
    small = fp32_bytes <= SMALL_MODEL_BYTES
    dtype = options.dtype if options.dtype != "auto" else ("float32" if small else "bfloat16")
    print(f"merging {shown(adapter)} into {base} ({fp32_bytes / 2**30:.1f} GiB in float32) in {dtype}", flush=True)
    start = time.perf_counter()
    with replaced_directory(out) as staging:
        matrices = stream_merge(base_dir, loras, adapter, staging, getattr(torch, dtype))
        print(matrices.summary(), flush=True)
        write_companions(base_dir, staging, dtype, tokenizer)
        if small:
            tolerance = options.tolerance if options.tolerance is not None else DEFAULT_TOLERANCE[dtype]
            probes = probe_examples(recipe.eval_file, tokenizer, system_prompt(config), options.probes)
            logits = logit_proof(base_dir, adapter, staging, probes, tolerance)
            print(logits.summary(), flush=True)
            logit_record = {**asdict(logits), "passed": logits.passed}
        else:
            logits = None
            logit_record = {"skipped": f"the model takes {fp32_bytes / 2**30:.0f} GiB in float32: proven matrix by "
                            "matrix only"}
            print(f"logit proof skipped: {logit_record['skipped']}", flush=True)
        passed = matrices.passed and (logits is None or logits.passed)
        if not passed:
            raise UserError(f"nothing written: the merged model does not reproduce base + adapter ({shown(out)} is "
                            "left as it was)")
        record = {"passed": passed, "dtype": dtype, "matrices": {**asdict(matrices), "passed": matrices.passed},
                  "logits": logit_record, "seconds": round(time.perf_counter() - start, 1), "base": base,
                  "adapter": shown(adapter), "adapter_sha256": sha256_file(adapter / ADAPTER_WEIGHTS),
                  "recipe": shown(recipe.path), "config": config.as_record()}
        (staging / "merge_proof.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"merged model -> {shown(out)} (its card, README.md: `make push PUSH_ARGS=--dry-run` or `make export`)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
