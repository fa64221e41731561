"""Loading a model to answer with: a merged directory, or a base plus a LoRA adapter (unmerged, as trained).

Where it runs: bf16 on a GPU where the model fits, fp32 on a CPU (bf16 matmuls are slow there). Where a model would
not fit the GPU in bf16 (the 27B: ~55 GB against a 24 GB card), it is loaded in 4-bit NF4 with the quantization
QLoRA trained under (Axolotl's settings), and the stage says so in one line. `decoding.quantize` in pipeline.yaml:
`auto` (that rule), `none` (never: a model that does not fit fails), `nf4` (always).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from contract.config import Recipe, shown
from contract.errors import UserError
from contract.state import adapter_complete, require_complete
from contract.tokenizer import load_tokenizer

# Weights are not all a decoding process holds: the key/value cache of a batch, activations and the allocator's
# slack come on top. A model is placed in bf16 only if its weights take at most this share of the free GPU memory.
WEIGHT_SHARE = 0.8


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model / --adapter: which fine-tuned model answers (evaluation's `tuned`, prediction)."""
    parser.add_argument("--model", help="merged model dir (default: <output_dir>/merged)")
    parser.add_argument("--adapter", type=Path, help="the recipe's base + this adapter (unmerged) instead")


def nf4_config() -> BitsAndBytesConfig:
    """4-bit NF4 with double quantization and bf16 compute: what Axolotl loads a QLoRA base with (load_in_4bit), so
    a QLoRA adapter on this base is the model exactly as it was trained."""
    return BitsAndBytesConfig(load_in_4bit=True, llm_int8_threshold=6.0, llm_int8_has_fp16_weight=False,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True,
                              bnb_4bit_quant_type="nf4", bnb_4bit_quant_storage=torch.bfloat16)


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_bytes(model: str | Path) -> int:
    """The model's weights in bf16, counted from its config on the meta device (no weights are read)."""
    try:
        config = AutoConfig.from_pretrained(str(model))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read a model config from {model} ({err.__class__.__name__}): pass --model <merged "
                        "dir> (`make merge` writes one) or --adapter <dir>") from err
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return 2 * sum(p.numel() for p in skeleton.parameters())  # parameters() counts tied weights once


def gpu_budget() -> int:
    """Bytes this process may still take on the GPU: free memory, within a per-process cap where one is set."""
    free, _ = torch.cuda.mem_get_info()
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)()
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return min(free, int(fraction * total) - torch.cuda.memory_reserved())


@dataclass(frozen=True)
class Placement:
    device: str
    quantized: bool
    reason: str  # one line, printed when the stage chooses quantization itself


def placement(model: str | Path, quantize: str) -> Placement:
    """Where and how `model` is loaded under `decoding.quantize`."""
    device = pick_device()
    if quantize == "nf4":
        return Placement(device, True, "decoding.quantize: nf4")
    if quantize == "none" or device == "cpu":
        return Placement(device, False, "full precision")
    need, budget = bf16_bytes(model), gpu_budget()
    if need <= WEIGHT_SHARE * budget:
        return Placement(device, False, "fits in bf16")
    return Placement(device, True, f"{shown(Path(model)) if Path(model).exists() else model} needs "
                     f"{need / 2**30:.1f} GiB in bf16 and this GPU has {budget / 2**30:.1f} GiB free: loading it in "
                     "4-bit NF4 (pipeline.yaml decoding.quantize: none refuses instead)")


def model_source(recipe: Recipe, args: argparse.Namespace, quantize: str) -> tuple[str | Path, Path | None]:
    """(model, adapter) that `tuned` means: --adapter on the recipe's base, --model, or by default the merged model.
    Where the recipe trained a QLoRA adapter and the merged model would be loaded quantized (or was not made), the
    default is that adapter on the NF4 base instead: the model exactly as trained, not a rounding of the merged
    weights (RESULTS.md: 2.9 points of exact match on the 270M)."""
    if args.adapter:
        return recipe.base_model, args.adapter
    if args.model:
        return args.model, None
    merged = recipe.merged_dir
    if recipe.load_in_4bit and adapter_complete(recipe.output_dir) and (
            quantize == "nf4" or not (merged / "config.json").exists() or placement(merged, quantize).quantized):
        return recipe.base_model, recipe.output_dir
    return merged, None


def load_model(model: str | Path, adapter: Path | None = None, quantize: str = "auto"
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (and its tokenizer: the adapter's where there is one) ready to decode, placed by `placement`."""
    if adapter is not None:
        require_complete(adapter)
    tokenizer = load_tokenizer(adapter or model, fix="pass --model <merged dir> (`make merge` writes one) or "
                               "--adapter <training output_dir>")
    where = placement(model, quantize)
    if where.quantized and quantize == "auto":
        print(where.reason, file=sys.stderr, flush=True)
    if where.quantized:
        kwargs = {"quantization_config": nf4_config(), "dtype": torch.bfloat16, "device_map": {"": where.device}}
    else:
        kwargs = {"dtype": torch.bfloat16 if where.device == "cuda" else torch.float32}
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
    except OSError as err:
        raise UserError(f"cannot load a model from {model} ({err}): pass --model <merged dir> or --adapter <dir>") \
            from err
    if not where.quantized:
        loaded = loaded.to(where.device)
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter))
    loaded.eval()
    return loaded, tokenizer


def is_quantized(model: PreTrainedModel) -> bool:
    """Loaded in 4 bits (a PEFT model answers for its base)."""
    return bool(getattr(model, "is_loaded_in_4bit", False))


def fingerprint(model: str | Path, adapter: Path | None, quantized: bool = False) -> str:
    """Identifies the weights cheaply: file names, sizes and modification times (a retrained or re-merged model
    differs), or the hub name; and whether they were quantized at load (other answers)."""
    digest = hashlib.sha256(b"nf4" if quantized else b"")
    for source in filter(None, [model, adapter]):
        path = Path(source)
        digest.update(str(path.resolve() if path.exists() else source).encode())
        for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*config.json")) if path.is_dir() else []:
            stat = weights.stat()
            digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
