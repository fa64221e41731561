"""Gemma 3's tokenizer, rebuilt correctly from a GGUF file.

transformers' own GGUF tokenizer conversion gives Gemma 3 a Unigram model ("Hello world" ->
Hello|▁w|or|ld, and no <bos>). Gemma 3 is BPE with byte fallback: we rebuild that from the GGUF's own
pieces and scores, the way transformers converts Gemma's sentencepiece model.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from transformers import GemmaTokenizer
from transformers.tokenization_utils_base import generate_merges

# sentencepiece / GGUF piece types
CONTROL, USER_DEFINED = 3, 4
# Gemma 3's chat template is the one Axolotl registers as `gemma3` (identical to the -it checkpoints').
CHAT_TEMPLATE_NAME = "gemma3"


def gemma3_chat_template() -> str:
    from axolotl.utils.chat_templates import get_chat_template

    return get_chat_template(CHAT_TEMPLATE_NAME)


def tokenizer_from_gguf_vocab(pieces: list[str], scores: list[float], types: list[int]) -> GemmaTokenizer:
    vocab = {piece: index for index, piece in enumerate(pieces)}
    if "\t" not in vocab:  # as transformers' Gemma converter: tab falls back to its byte piece
        vocab["\t"] = vocab["<0x09>"]
    merges = generate_merges(vocab, dict(zip(pieces, scores, strict=True)))
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False)
    # Control pieces (<start_of_turn>, <end_of_turn>, ...) are special; user-defined ones are never split.
    tokenizer.add_tokens([
        AddedToken(piece, normalized=False, special=kind == CONTROL)
        for piece, kind in zip(pieces, types, strict=True)
        if kind in (CONTROL, USER_DEFINED)
    ])
    tokenizer.chat_template = gemma3_chat_template()
    return tokenizer


def tokenizer_from_gguf(gguf_path: Path) -> GemmaTokenizer:
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    return tokenizer_from_gguf_vocab(
        pieces=list(fields["tokenizer.ggml.tokens"].contents()),
        scores=list(fields["tokenizer.ggml.scores"].contents()),
        types=list(fields["tokenizer.ggml.token_type"].contents()),
    )
