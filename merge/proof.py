"""The logit proof, where the model fits in memory: on eval prompts followed by their answers, the merged model's
logits must equal base + adapter's (PEFT, unmerged) within a tolerance, and the adapter's own effect on the logits
must be far larger than that difference, so a merge that dropped the adapter cannot pass. Both run in float32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from contract.prompt import prompt_token_ids
from contract.rows import END_OF_TURN, read_rows


def probe_examples(eval_file: Path, tokenizer, prompt: str, count: int) -> list[list[int]]:
    """Eval prompts followed by their reference answers: the proof covers the tokens the model will emit."""
    probes = []
    for example in read_rows(eval_file.read_text(encoding="utf-8"))[:count]:
        answer = tokenizer(example.answer + END_OF_TURN, add_special_tokens=False).input_ids
        probes.append(prompt_token_ids(tokenizer, example.query, prompt) + answer)
    return probes


@dataclass(frozen=True)
class LogitProof:
    examples: int
    positions: int
    max_abs_logit_diff: float  # merged vs base+adapter
    top1_agreement: float  # share of positions where both pick the same next token
    adapter_effect: float  # max |logit| change the adapter makes over the bare base
    tolerance: float

    @property
    def passed(self) -> bool:
        """Within tolerance, and closer to base+adapter than the bare base is."""
        return self.max_abs_logit_diff <= self.tolerance and self.adapter_effect > 10 * self.max_abs_logit_diff

    def summary(self) -> str:
        return (f"logit proof {'PASSED' if self.passed else 'FAILED'}: on {self.examples} eval examples "
                f"({self.positions} positions) the merged model's logits differ from base+adapter by at most "
                f"{self.max_abs_logit_diff:.4g} (tolerance {self.tolerance:g}), top-1 agreement "
                f"{self.top1_agreement:.2%}; the adapter itself moves logits by up to {self.adapter_effect:.4g}")


@torch.no_grad()
def _logits(model: PreTrainedModel, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    return [model(input_ids=ids).logits.float() for ids in batches]


def _load(path: str | Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def logit_proof(base: str | Path, adapter_dir: Path, merged_dir: Path, probe_ids: list[list[int]],
                tolerance: float) -> LogitProof:
    """Base, base + adapter and the merged model on the same probes, on the CPU in float32, one model at a time."""
    from peft import PeftModel

    batches = [torch.tensor([ids]) for ids in probe_ids]
    model = _load(base)
    bare = _logits(model, batches)
    with_adapter = _logits(PeftModel.from_pretrained(model, str(adapter_dir)), batches)
    del model
    after = _logits(_load(merged_dir), batches)
    positions = sum(ids.shape[1] for ids in batches)
    pairs = list(zip(after, with_adapter, strict=True))
    return LogitProof(
        examples=len(batches), positions=positions,
        max_abs_logit_diff=max((a - b).abs().max().item() for a, b in pairs),
        top1_agreement=sum((a.argmax(-1) == b.argmax(-1)).sum().item() for a, b in pairs) / positions,
        adapter_effect=max((a - b).abs().max().item() for a, b in zip(with_adapter, bare, strict=True)),
        tolerance=tolerance,
    )
