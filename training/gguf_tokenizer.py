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
SPIECE_SPACE = "\u2581"
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


def gguf_vocab(gguf_path: Path) -> dict[str, list]:
    """The GGUF's own vocabulary: pieces, scores and sentencepiece piece types, id by id."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    return {
        "pieces": list(fields["tokenizer.ggml.tokens"].contents()),
        "scores": list(fields["tokenizer.ggml.scores"].contents()),
        "types": list(fields["tokenizer.ggml.token_type"].contents()),
    }


def sentencepiece_model(pieces: list[str], scores: list[float], types: list[int]) -> bytes:
    """Gemma 3's `tokenizer.model` (a sentencepiece BPE model with byte fallback) from the GGUF's vocabulary.

    llama.cpp's GGUF converter reads the vocabulary from this file (the Hub checkpoints ship it; the GGUF
    does not). llama.cpp's converter writes user-defined pieces with plain spaces; sentencepiece keeps "▁".
    """
    # transformers' copy of the proto compiles against the protobuf runtime that transformers pins;
    # sentencepiece's own copy needs a newer one.
    from transformers.utils import sentencepiece_model_pb2_new as sp

    model = sp.ModelProto()
    for piece, score, kind in zip(pieces, scores, types, strict=True):
        model.pieces.add(piece=piece.replace(" ", SPIECE_SPACE) if kind == USER_DEFINED else piece,
                         score=score, type=kind)
    spec = model.trainer_spec
    spec.model_type = sp.TrainerSpec.BPE
    spec.vocab_size = len(pieces)
    spec.byte_fallback = True
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = (pieces.index(p) for p in ("<pad>", "<eos>", "<bos>", "<unk>"))
    spec.pad_piece, spec.eos_piece, spec.bos_piece, spec.unk_piece = "<pad>", "<eos>", "<bos>", "<unk>"
    # Gemma 3 does no normalisation and adds no dummy prefix; spaces become "▁".
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()
