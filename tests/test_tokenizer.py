"""The Gemma 3 tokenizer rebuilt from the GGUF is BPE and matches Gemma 3's ids (transformers' own GGUF
conversion gets this wrong)."""

from __future__ import annotations

import json


def test_bos_and_bpe_merges_match_gemma3(tokenizer) -> None:
    assert tokenizer("Hello world").input_ids == [2, 9259, 1902]


def test_turn_markers_and_roles_are_single_tokens(tokenizer) -> None:
    ids = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>", "user", "model"])
    assert ids == [105, 106, 2364, 4368]
    assert tokenizer("<start_of_turn>user", add_special_tokens=False).input_ids == [105, 2364]


def test_chat_template_folds_system_into_first_user_turn(tokenizer) -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nBe terse.\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_json_round_trips_through_encode_decode(tokenizer) -> None:
    answer = '{"scenario":"iot","intent":"iot_hue_lightoff","entities":[{"type":"house_place","value":"kitchen"}]}'
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == answer


def test_base_model_directory_is_self_contained(base_model_dir) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model", "chat_template.jinja",
                 "generation_config.json", "NOTICE"):
        assert (base_model_dir / name).exists(), name


def test_the_sentencepiece_model_tokenizes_like_the_tokenizer(base_model_dir, tokenizer, sample_records) -> None:
    """tokenizer.model (what llama.cpp's converter reads) and tokenizer.json agree on ordinary text; only literal
    special-token text differs, which sentencepiece never parses."""
    from sentencepiece import SentencePieceProcessor

    pieces = SentencePieceProcessor(model_file=str(base_model_dir / "tokenizer.model"))
    texts = ["Hello world", "  two  spaces\n\n\nthree newlines\ttab 12345 ünïcödé 😀"]
    texts += [r["query"] for r in sample_records[:200]] + [json.dumps(r["data"]) for r in sample_records[:200]]
    for text in texts:
        assert pieces.encode(text) == tokenizer(text, add_special_tokens=False).input_ids, text
