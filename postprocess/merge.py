"""Merge a LoRA/QLoRA adapter into the full-precision base with PEFT, and prove the merged model computes what
base + adapter computes.

Why not `axolotl merge-lora`: its default `memory_efficient` method rounds every weight of a QLoRA run to
NF4 before merging, and on multimodal Gemma 3 (the 4B-27B checkpoints) it writes the untouched base
(the adapter is silently dropped). Loading the unquantized base and calling PEFT's merge is exact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from contract.config import shown
from contract.errors import UserError
from contract.outputs import replaced_directory
from contract.rows import stop_token_ids
from contract.tokenizer import SENTENCEPIECE_FILE

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterMismatch(UserError):
    """The adapter was not trained on this base model."""


def adapter_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.exists():
        raise UserError(f"{shown(path)}: no adapter there; train first (`make train`) or pass --adapter <dir>")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise UserError(f"{shown(path)}: not a readable safetensors file ({err}); the run that wrote it was "
                        "probably interrupted: train again") from err


def check_adapter_fits(model: PreTrainedModel, adapter_dir: Path) -> None:
    """Every adapted module must exist in the base with matching in/out features. PEFT alone would either
    fail with a size-mismatch trace or, for a missing module, skip it silently."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    modules = dict(model.named_modules())
    problems = []
    for key, shape in adapter_shapes(adapter_dir).items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        name = key.split(".lora_")[0].removeprefix("base_model.model.")
        module = modules.get(name)
        if module is None or not hasattr(module, "in_features"):
            problems.append(f"{name}: no such linear layer in the base")
        elif ".lora_A." in key and shape[1] != module.in_features:
            problems.append(f"{name}: adapter expects {shape[1]} input features, base has {module.in_features}")
        elif ".lora_B." in key and shape[0] != module.out_features:
            problems.append(f"{name}: adapter expects {shape[0]} output features, base has {module.out_features}")
    if problems:
        raise AdapterMismatch(
            f"the adapter in {shown(adapter_dir)} (trained on {config.get('base_model_name_or_path')!r}) does not "
            f"fit this base model: {len(problems)} problem(s), e.g. " + "; ".join(problems[:3])
        )


@dataclass(frozen=True)
class MergeProof:
    examples: int
    positions: int
    max_abs_logit_diff: float  # merged vs base+adapter
    top1_agreement: float  # share of positions where both pick the same next token (reported: bf16 ties flip)
    adapter_effect: float  # max |logit| change the adapter makes over the bare base
    tolerance: float

    @property
    def passed(self) -> bool:
        """Within tolerance, and closer to base+adapter than the bare base is: a merge that dropped the
        adapter (or an adapter that does nothing) cannot pass."""
        return self.max_abs_logit_diff <= self.tolerance and self.adapter_effect > 10 * self.max_abs_logit_diff

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"merge proof {verdict}: on {self.examples} eval examples ({self.positions} positions) the merged "
                f"model's logits differ from base+adapter by at most {self.max_abs_logit_diff:.4g} "
                f"(tolerance {self.tolerance:g}), top-1 agreement {self.top1_agreement:.2%}; "
                f"the adapter itself moves logits by up to {self.adapter_effect:.4g}")


@torch.no_grad()
def _logits(model: PreTrainedModel, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    return [model(input_ids=ids).logits.float() for ids in batches]


def merge_with_proof(base: str, adapter_dir: Path, probe_ids: list[list[int]], dtype: torch.dtype,
                     tolerance: float) -> tuple[PreTrainedModel, MergeProof]:
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    model.eval()
    check_adapter_fits(model, adapter_dir)
    batches = [torch.tensor([ids]) for ids in probe_ids]
    bare = _logits(model, batches)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    with_adapter = _logits(peft_model, batches)
    merged = peft_model.merge_and_unload()
    after = _logits(merged, batches)
    positions = sum(ids.shape[1] for ids in batches)
    pairs = list(zip(after, with_adapter, strict=True))
    proof = MergeProof(
        examples=len(batches),
        positions=positions,
        max_abs_logit_diff=max((a - b).abs().max().item() for a, b in pairs),
        top1_agreement=sum((a.argmax(-1) == b.argmax(-1)).sum().item() for a, b in pairs) / positions,
        adapter_effect=max((a - b).abs().max().item() for a, b in zip(with_adapter, bare, strict=True)),
        tolerance=tolerance,
    )
    return merged, proof


def base_file(base: str, name: str) -> Path | None:
    """A file of the base model: in its local directory, or in the Hub cache it was loaded from."""
    if Path(base).is_dir():
        return Path(base) / name if (Path(base) / name).exists() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(base, name)
    return Path(cached) if isinstance(cached, str) else None


def save_merged(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, base: str, out_dir: Path,
                proof: MergeProof, record: dict[str, Any]) -> None:
    """A self-contained HF directory, written whole or not at all: weights, tokenizer + chat template,
    generation config that stops at the end of the model's turn, the licence notice, and the proof with the
    settings that made it. `tokenizer`: the one the adapter was trained with (Axolotl saves it beside the adapter)."""
    with replaced_directory(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        generation = model.generation_config or GenerationConfig()
        eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
        generation.eos_token_id = sorted({*filter(None, eos), *stop_token_ids(tokenizer)})
        generation.pad_token_id = tokenizer.pad_token_id
        generation.save_pretrained(staging)
        for name in ("NOTICE", SENTENCEPIECE_FILE, "preprocessor_config.json", "processor_config.json"):
            if (source := base_file(base, name)) is not None:
                shutil.copy(source, staging / name)
        (staging / "merge_proof.json").write_text(
            json.dumps({**asdict(proof), "passed": proof.passed, **record}, indent=2) + "\n")
