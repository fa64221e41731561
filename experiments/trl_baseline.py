"""The plain QLoRA a user would write without this repo, to compare our 27B recipe against: TRL's SFTTrainer
+ bitsandbytes NF4, LoRA r16 on all linear layers, no packing, the default attention, batch 1, gradient
checkpointing and 8-bit AdamW (without those two it cannot fit 24 GB at all), loss on the answer only
(prompt/completion format). Same data, same chat template, same step timer as the Axolotl run.

    python -m experiments.trl_baseline --model models/g27-8 --data data/experiments/train.jsonl --steps 24 --out t.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForImageTextToText, AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer

from experiments.step_timer import StepTimer


def prompt_completion(path: Path) -> Dataset:
    rows = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": m[:2], "completion": m[2:]} for m in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="chat-format JSONL, as `make data` writes")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--out", type=Path, help="step timer JSON")
    args = parser.parse_args()

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForImageTextToText.from_pretrained(args.model, quantization_config=quantization,
                                                        dtype=torch.bfloat16,
                                                        device_map={"": 0 if torch.cuda.is_available() else "cpu"})
    config = SFTConfig(
        output_dir="outputs/trl-baseline", max_steps=args.steps, per_device_train_batch_size=1,
        gradient_accumulation_steps=1, learning_rate=1e-4, bf16=torch.cuda.is_available(), gradient_checkpointing=True,
        optim="adamw_8bit", max_length=args.max_length, packing=False, logging_steps=1, save_strategy="no",
        report_to="none", dataset_num_proc=1, seed=42,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=prompt_completion(args.data),
        processing_class=AutoTokenizer.from_pretrained(args.model),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
        callbacks=[StepTimer(args.out)],
    )
    trainer.train()


if __name__ == "__main__":
    main()
