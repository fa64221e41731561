"""Merge a LoRA adapter into the full-precision base checkpoint one shard at a time, and prove every merged matrix.

Memory is bounded by a shard, not the model: each shard of the base is read, every weight the adapter adapts gets
W' = W + s·B·A (computed in float32, rounded once to the output dtype), and the shard is written under its own name
with every other tensor as it was. A 27B checkpoint of 5 GB shards merges in about two shards of RAM, on no GPU.

The proof that scales: after a shard is written, each adapted matrix is read back *as stored* and compared bit for bit
with W + s·B·A recomputed from the base shard and the adapter, so a merge that skipped, misplaced or mis-scaled a
matrix cannot pass; every adapter matrix must have been merged exactly once. What the output dtype's rounding costs
is reported beside it (`delta_error`: how far the stored change W' - W is from the exact s·B·A), not hidden.

Why not `axolotl merge-lora`: its default `memory_efficient` method rounds every weight of a QLoRA run to NF4 before
merging, and on multimodal Gemma 3 (the 4B-27B checkpoints) it writes the untouched base (the adapter is silently
dropped). Why not PEFT's `merge_and_unload`: it needs the whole model in memory (108 GB in float32 for the 27B).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from contract.config import shown
from contract.errors import UserError
from contract.state import ADAPTER_WEIGHTS

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Path segments that transformers adds or drops between a checkpoint's tensor names and the loaded model's module
# names (the 27B checkpoint says `language_model.model.layers.0...` and `vision_tower.vision_model...`; the loaded
# model, and so the adapter, `model.language_model.layers.0...` and `model.vision_tower...`).
WRAPPER_SEGMENTS = {"model", "vision_model"}


class AdapterMismatch(UserError):
    """The adapter was not trained on this base model."""


def canonical(name: str) -> str:
    """A tensor or module name without the wrapper segments, for matching adapter names to checkpoint names."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_SEGMENTS)


@dataclass(frozen=True)
class Lora:
    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float


def read_adapter(adapter_dir: Path) -> dict[str, Lora]:
    """The adapter's LoRA pairs by the module they adapt (its name as the loaded model calls it). Anything this merge
    cannot express exactly (DoRA, biases, per-module ranks, modules saved whole) is refused, never dropped."""
    config_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / ADAPTER_WEIGHTS
    if not weights_path.exists():
        raise UserError(f"{shown(weights_path)}: no adapter there; train first (`make train`) or pass --adapter <dir>")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{shown(weights_path)}: not a readable safetensors file ({err}); the run that wrote it was "
                        "probably interrupted: train again") from err
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{shown(config_path)}: missing or not JSON ({err.__class__.__name__}); train again") from err
    unsupported = [key for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "fan_in_fan_out")
                   if config.get(key)] + (["bias"] if config.get("bias", "none") != "none" else [])
    if unsupported:
        raise UserError(f"{shown(config_path)}: {', '.join(unsupported)} set; the streaming merge handles plain LoRA "
                        "(the recipes' adapters) only")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            raise UserError(f"{shown(weights_path)}: `{key}` is not a LoRA matrix; the streaming merge handles plain "
                            "LoRA only")
        module, kind = key.split(".lora_")[0].removeprefix("base_model.model."), key.split(".lora_")[1][0]
        pairs.setdefault(module, {})[kind] = tensor
    loras = {}
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise UserError(f"{shown(weights_path)}: {module} has lora_{''.join(pair)} only")
        rank = pair["A"].shape[0]
        alpha = config["lora_alpha"]
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        loras[module] = Lora(pair["A"], pair["B"], scale)
    return loras


def weight_map(base_dir: Path) -> dict[str, str]:
    """Tensor name -> shard file of a safetensors checkpoint (sharded with an index, or one file)."""
    if (base_dir / INDEX).exists():
        return json.loads((base_dir / INDEX).read_text())["weight_map"]
    if (base_dir / SINGLE).exists():
        with safe_open(str(base_dir / SINGLE), framework="pt") as f:
            return dict.fromkeys(f.keys(), SINGLE)
    raise UserError(f"{shown(base_dir)}: no safetensors checkpoint ({INDEX} or {SINGLE}) to merge into")


def tensor_shapes(base_dir: Path, names: dict[str, str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for shard in sorted(set(names.values())):
        with safe_open(str(base_dir / shard), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})  # noqa: SIM118
    return {key: shapes[key] for key in names}


def match_adapter(loras: dict[str, Lora], shapes: dict[str, tuple[int, ...]], adapter_dir: Path) -> dict[str, Lora]:
    """Checkpoint tensor name -> the LoRA pair that adapts it. Every pair must find exactly one weight of its shape."""
    by_canonical: dict[str, list[str]] = {}
    for key in shapes:
        if key.endswith(".weight"):
            by_canonical.setdefault(canonical(key.removesuffix(".weight")), []).append(key)
    matched, problems = {}, []
    for module, lora in loras.items():
        keys = by_canonical.get(canonical(module), [])
        expected = (lora.b.shape[0], lora.a.shape[1])
        if len(keys) != 1:
            problems.append(f"{module}: {'no' if not keys else len(keys)} matching weight(s) in the base")
        elif shapes[keys[0]] != expected:
            problems.append(f"{module}: the adapter expects {expected}, the base has {shapes[keys[0]]}")
        else:
            matched[keys[0]] = lora
    if problems:
        raise AdapterMismatch(f"the adapter in {shown(adapter_dir)} does not fit this base model: {len(problems)} "
                              "problem(s), e.g. " + "; ".join(problems[:3]))
    return matched


def merged_weight(weight: torch.Tensor, lora: Lora, dtype: torch.dtype) -> torch.Tensor:
    """W + s·B·A in float32 (PEFT's order: (B @ A) * s), rounded once to `dtype`."""
    return (weight.float() + (lora.b.float() @ lora.a.float()) * lora.scale).to(dtype)


@dataclass(frozen=True)
class MatrixProof:
    matrices: int  # adapted matrices, each merged once and checked as stored
    exact: int  # of those, stored bit for bit as W + s·B·A rounded to the output dtype
    delta_error: float  # max over matrices of |(W' - W) - s·B·A| / |s·B·A| (Frobenius): what the rounding costs
    dtype: str

    @property
    def passed(self) -> bool:
        return self.matrices > 0 and self.exact == self.matrices

    def summary(self) -> str:
        return (f"matrix proof {'PASSED' if self.passed else 'FAILED'}: {self.exact} of {self.matrices} adapted "
                f"matrices stored exactly as W + s·B·A in {self.dtype}; the stored change differs from s·B·A by at "
                f"most {self.delta_error:.3g} of its norm (the {self.dtype} rounding)")


def _check_shard(base_shard: Path, out_shard: Path, adapted: dict[str, Lora], dtype: torch.dtype
                 ) -> tuple[int, float]:
    """(matrices stored exactly, max delta error) of one written shard, read back from disk tensor by tensor."""
    exact, worst = 0, 0.0
    with safe_open(str(base_shard), framework="pt") as base, safe_open(str(out_shard), framework="pt") as out:
        for key, lora in adapted.items():
            weight, stored = base.get_tensor(key), out.get_tensor(key)
            exact += bool(torch.equal(stored, merged_weight(weight, lora, dtype)))
            delta = (lora.b.float() @ lora.a.float()) * lora.scale
            applied = stored.float() - weight.float()
            worst = max(worst, ((applied - delta).norm() / delta.norm().clamp_min(1e-30)).item())
    return exact, worst


def stream_merge(base_dir: Path, loras: dict[str, Lora], adapter_dir: Path, out_dir: Path, dtype: torch.dtype,
                 progress: Callable[[str], None] = print) -> MatrixProof:
    """Write the merged checkpoint's shards (and index) into `out_dir`; the proof of every adapted matrix.
    `loras`: the adapter in `adapter_dir`, as `read_adapter` returns it."""
    names = weight_map(base_dir)
    adapted = match_adapter(loras, tensor_shapes(base_dir, names), adapter_dir)
    shards = sorted(set(names.values()))
    exact, worst, sizes = 0, 0.0, 0
    for number, shard in enumerate(shards, 1):
        tensors = load_file(str(base_dir / shard))
        here = {key: adapted[key] for key in tensors if key in adapted}
        for key, lora in here.items():
            tensors[key] = merged_weight(tensors[key], lora, dtype)
        # the whole model in the output dtype, not only the merged matrices (a no-op where the base has it already)
        tensors = {key: t.to(dtype) if t.is_floating_point() else t for key, t in tensors.items()}
        sizes += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(out_dir / shard), metadata={"format": "pt"})
        del tensors
        done, error = _check_shard(base_dir / shard, out_dir / shard, here, dtype)
        exact, worst = exact + done, max(worst, error)
        progress(f"shard {number}/{len(shards)} {shard}: {len(here)} matrices merged, {done} stored exactly")
    if (base_dir / INDEX).exists():
        (out_dir / INDEX).write_text(json.dumps({"metadata": {"total_size": sizes}, "weight_map": names}, indent=2)
                                     + "\n")
    return MatrixProof(matrices=len(adapted), exact=exact, delta_error=worst, dtype=str(dtype).removeprefix("torch."))
