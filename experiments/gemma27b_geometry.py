"""A random-weight stand-in for google/gemma-3-27b-it, saved as the real repository is: its config.json, the
`Gemma3ForConditionalGeneration` wrapper with its vision tower, the real tensor names (`language_model.model.*`,
`vision_tower.vision_model.*`, `multi_modal_projector.*`) in bf16, ~5 GB safetensors shards with their index, and the
Gemma 3 tokenizer and chat template (the 270M's: the same 262k vocabulary) with the image-marker tokens named. Every
27B measurement loads it in place of the 54 GB download; only the weights' values are not the real ones.

Shards are generated and written one at a time (on the GPU where there is one: seconds per shard), so building the
full 62 layers needs one shard of RAM and 55 GB of disk. `--layers` keeps the geometry at a smaller depth.

    python -m experiments.gemma27b_geometry --tokenizer models/gemma-3-270m --out /data/g27-62
    python -m experiments.gemma27b_geometry --layers 8 --tokenizer models/gemma-3-270m --out models/g27-8
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor

# google/gemma-3-27b-it's config.json as published (transformers 4.50 wrote it; later versions read it as is).
CONFIG_27B: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504, "model_type": "gemma3_text",
        "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
        "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False,
    },
}
GENERATION_27B = {"bos_token_id": 2, "do_sample": True, "eos_token_id": [1, 106], "pad_token_id": 0, "top_k": 64,
                  "top_p": 0.95}
FULL_DEPTH = 62
# The same layout at toy widths: tests and a CPU dry run of the GPU session.
TOY: dict[str, Any] = {
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "head_dim": 32, "query_pre_attn_scalar": 32},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
                      "image_size": 28},
    "mm_tokens_per_image": 4,
}
# transformers 4.50's save_pretrained default ("5GB"), which the published shards follow.
SHARD_BYTES = 5 * 10**9
# The loaded model's module prefixes -> the published checkpoint's tensor prefixes.
CHECKPOINT_PREFIXES = [("model.language_model.", "language_model.model."),
                       ("model.vision_tower.", "vision_tower.vision_model."),
                       ("model.multi_modal_projector.", "multi_modal_projector.")]


def config_dict(layers: int = FULL_DEPTH, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The published config, at `layers` text layers (the 5 sliding : 1 global pattern is kept by the config)."""
    config = copy.deepcopy(CONFIG_27B)
    config["text_config"]["num_hidden_layers"] = layers
    for key, value in (overrides or {}).items():  # sections are updated, top-level values replaced
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def geometry(layers: int) -> Gemma3Config:
    return Gemma3Config(**config_dict(layers))


def matmul_params(layers: int) -> int:
    """Weights a text token is multiplied by: every layer's projections plus the (tied) output layer. The
    embedding lookup is not a matmul; the vision tower does not run on text."""
    text = geometry(layers).text_config
    h, hd, inter = text.hidden_size, text.head_dim, text.intermediate_size
    attention = h * hd * (2 * text.num_attention_heads + 2 * text.num_key_value_heads)  # q, o + k, v
    return layers * (attention + 3 * h * inter) + text.vocab_size * h


def checkpoint_name(name: str) -> str:
    for runtime, published in CHECKPOINT_PREFIXES:
        if name.startswith(runtime):
            return published + name[len(runtime):]
    return name


def tensor_specs(config: Gemma3Config) -> list[tuple[str, torch.Size]]:
    """(published name, shape) of every stored tensor, in the model's module order; the output layer is tied to the
    embedding and not stored."""
    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(config)
    return [(checkpoint_name(name), tensor.shape) for name, tensor in model.state_dict().items()
            if name != "lm_head.weight"]


def shard_plan(specs: list[tuple[str, torch.Size]], max_bytes: int) -> list[list[tuple[str, torch.Size]]]:
    """Consecutive tensors per shard, a new shard where the next tensor would pass `max_bytes` (bf16)."""
    shards: list[list[tuple[str, torch.Size]]] = [[]]
    size = 0
    for name, shape in specs:
        nbytes = 2 * shape.numel()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def initial_value(name: str, shape: torch.Size, generator: torch.Generator, device: str) -> torch.Tensor:
    """What an untrained model holds: Gemma's RMSNorm weights 0 (they scale by 1 + w), SigLIP's LayerNorm weights 1,
    biases 0, everything else N(0, 0.02)."""
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16, device=device)
    if "norm" in name:
        siglip_layer_norm = "vision_tower" in name and ("layer_norm" in name or "post_layernorm" in name)
        return (torch.ones if siglip_layer_norm else torch.zeros)(shape, dtype=torch.bfloat16, device=device)
    return torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=generator)


def shards(config: Gemma3Config, max_bytes: int, device: str, seed: int
           ) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(file name, tensors on the CPU) shard by shard."""
    plan = shard_plan(tensor_specs(config), max_bytes)
    generator = torch.Generator(device).manual_seed(seed)
    for number, members in enumerate(plan, 1):
        name = f"model-{number:05d}-of-{len(plan):05d}.safetensors"
        yield name, {key: initial_value(key, shape, generator, device).cpu() for key, shape in members}


def write(out: Path, tokenizer_dir: Path, layers: int = FULL_DEPTH, max_bytes: int = SHARD_BYTES,
          config_overrides: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The stand-in checkpoint in `out`; returns a summary (tensors, bytes, shards, seconds)."""
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    raw = config_dict(layers, config_overrides)
    out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for name, tensors in shards(Gemma3Config(**raw), max_bytes, device, seed):
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(GENERATION_27B, indent=2) + "\n")
    # The multimodal processor needs the image marker tokens named, as in the 27B checkpoint's tokenizer.
    AutoTokenizer.from_pretrained(tokenizer_dir, extra_special_tokens={
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    }).save_pretrained(out)
    for extra in ("tokenizer.model", "NOTICE"):  # the sentencepiece vocabulary (GGUF export) and the licence
        if (tokenizer_dir / extra).exists():
            shutil.copy(tokenizer_dir / extra, out / extra)
    Gemma3ImageProcessor().save_pretrained(out)
    return {"out": str(out), "layers": layers, "tensors": len(weight_map), "bytes": total,
            "shards": len(set(weight_map.values())), "seconds": round(time.perf_counter() - start, 1),
            "device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=FULL_DEPTH)
    parser.add_argument("--tokenizer", type=Path, required=True, help="a Gemma 3 tokenizer dir (models/gemma-3-270m)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shard-bytes", type=int, default=SHARD_BYTES)
    parser.add_argument("--toy", action="store_true", help="toy widths and ~4 MB shards (the layout at CPU speed)")
    args = parser.parse_args()
    if args.toy:
        print(json.dumps(write(args.out, args.tokenizer, args.layers, 4_000_000, TOY)))
    else:
        print(json.dumps(write(args.out, args.tokenizer, args.layers, args.shard_bytes)))


if __name__ == "__main__":
    main()
