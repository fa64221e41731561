"""Decoding: the shared prompt prefix computed once gives exactly the answers of each prompt decoded alone
(checked against transformers' own generate), constrained greedy picks exactly the best allowed token, and
grounded decoding only ever writes spans of the query."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from contract.config import load_config
from contract.prompt import prompt_token_ids, system_prompt
from contract.rows import stop_token_ids
from inference.constraints import SchemaGrammar, query_spans
from inference.decoding import Decoder, _Constraint, shared_prefix_length
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prompts(tokenizer, sample_records) -> tuple[list[str], list[list[int]]]:
    prompt = system_prompt(load_config(REPO_ROOT / "pipeline.yaml"))
    queries = [r["query"] for r in sample_records[:7]]
    return queries, [prompt_token_ids(tokenizer, q, prompt) for q in queries]


def tiny(tokenizer, window: int) -> Gemma3ForCausalLM:
    torch.manual_seed(1)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=window,
                              layer_types=["sliding_attention", "full_attention"], pad_token_id=0,
                              bos_token_id=2, eos_token_id=1)
    return Gemma3ForCausalLM(config).eval()


def alone(model, tokenizer, prompt: list[int], max_new: int) -> list[int]:
    """transformers' generate on one unpadded prompt: the reference."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=stop_token_ids(tokenizer), pad_token_id=0)[0, len(prompt):].tolist()
    return [t for t in out if t not in stop_token_ids(tokenizer)][:max_new]


def test_the_shared_prefix_is_what_every_prompt_starts_with(prompts) -> None:
    _, ids = prompts
    length = shared_prefix_length(ids)
    assert length > 50 and all(p[:length] == ids[0][:length] for p in ids)
    assert any(p[length] != ids[0][length] for p in ids)


@pytest.mark.parametrize("window", [4096, 64], ids=["prefix-cached", "sliding-window-fallback"])
def test_batched_answers_with_the_prefix_computed_once_equal_each_prompt_alone(tokenizer, prompts, window):
    model = tiny(tokenizer, window)
    _, ids = prompts
    decoder = Decoder(model, tokenizer.pad_token_id, stop_token_ids(tokenizer), max_new_tokens=12,
                      prefix=ids[0][:shared_prefix_length(ids)])
    assert (decoder._prefix_for(ids) > 0) == (window == 4096)
    batched, _ = decoder.decode(ids)
    assert [d.token_ids for d in batched] == [alone(model, tokenizer, p, 12) for p in ids]


def test_grounded_decoding_only_writes_spans_of_the_query(tokenizer, prompts, schema, tiny_gemma3) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float32).eval()
    queries, ids = prompts
    # A random model may well close the list at once; requiring one entity makes it write values every time,
    # so the grounding constraint is exercised on every query rather than by luck of the weights.
    schema = copy.deepcopy(schema)
    schema["properties"]["entities"]["minItems"] = 1
    grammar = SchemaGrammar(tokenizer, schema, model.get_output_embeddings().weight.shape[0], max_string_chars=48,
                            max_items=2, grounded_values=True)
    decoder = Decoder(model, tokenizer.pad_token_id, stop_token_ids(tokenizer), max_new_tokens=400,
                      prefix=ids[0][:shared_prefix_length(ids)])
    decoded, _ = decoder.decode(ids, [grammar.matcher(q) for q in queries])
    values = 0
    for query, answer in zip(queries, decoded, strict=True):
        assert answer.stopped  # the budget fits two 48-character values, so every answer is complete
        data = json.loads(tokenizer.decode(answer.token_ids))  # a random model, yet valid JSON
        for entity in data["entities"]:
            assert entity["value"] in query_spans(query, 48), (query, entity)
            values += 1
    assert values >= len(queries)


def test_constrained_greedy_keeps_an_allowed_choice_and_replaces_a_refused_one_by_the_best_allowed_token(
        tokenizer, schema) -> None:
    vocab = len(tokenizer)
    grammar = SchemaGrammar(tokenizer, schema, vocab, max_string_chars=48, max_items=2, grounded_values=False)
    matchers = [grammar.matcher("q") for _ in range(3)]
    allowed_first = tokenizer.convert_tokens_to_ids('{"')  # a JSON object must open; "hello" cannot
    refused_first = tokenizer.convert_tokens_to_ids("hello")
    torch.manual_seed(0)
    logits = torch.randn(3, vocab)
    logits[0, allowed_first] = 50.0  # row 0: the model's own choice is allowed
    logits[1, refused_first] = 50.0  # row 1: refused, and random logits decide among the allowed
    original = logits.clone()
    # The reference: the whole vocabulary-wide mask applied to every constrained row, then argmax.
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(3, vocab)
    for i, matcher in enumerate(matchers[:2]):
        matcher.fill_next_token_bitmask(bitmask, i)
    masked = logits.clone()
    xgr.apply_token_bitmask_inplace(masked, bitmask, vocab_size=vocab, indices=[0, 1])
    expected = masked.argmax(-1).tolist()

    tokens = _Constraint(matchers, vocab).greedy(logits, rows=[0, 1])  # row 2 is done: no grammar
    assert tokens[0] == allowed_first and tokens[1] != refused_first
    assert tokens[:2] == expected[:2] and tokens[2] == int(original[2].argmax())
    assert torch.equal(logits, original)  # the model's logits are not modified
