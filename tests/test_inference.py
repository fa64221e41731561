"""Loading a model to answer with: in 4-bit NF4 where asked (or where it would not fit the GPU), the QLoRA adapter on
the NF4 base by default when the merged model would be quantized, and a decoding batch that runs out of memory
halved rather than lost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from contract.config import Recipe, load_config
from contract.prompt import system_prompt
from contract.schema import validator
from evaluation.scoring import parse_prediction
from inference.generate import Generator
from inference.models import is_quantized, load_model, model_source
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
DECODING = load_config(REPO_ROOT / "pipeline.yaml").decoding.model_copy(
    update={"max_new_tokens": 96, "max_string_chars": 16, "max_items": 2})


def test_a_model_loaded_in_nf4_answers_schema_valid_under_constraints(tiny_gemma3, schema, sample_records) -> None:
    model, tokenizer = load_model(tiny_gemma3, quantize="nf4")
    assert is_quantized(model) and type(model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    prompt = system_prompt(load_config(REPO_ROOT / "pipeline.yaml"))
    generator = Generator.build(model, tokenizer, prompt, schema, True, DECODING)
    queries = [r["query"] for r in sample_records[:4]]
    answers = [a for _, batch in generator.answer(queries, batch_size=2) for a in batch]
    assert len(answers) == 4 and all(parse_prediction(a.text, validator(schema)).conforms for a in answers)


def test_on_a_cpu_auto_keeps_full_precision(tiny_gemma3) -> None:
    model, _ = load_model(tiny_gemma3, quantize="auto")
    assert not is_quantized(model) and model.dtype == torch.float32


def qlora_recipe(tmp_path: Path, adapter_done: bool, merged: bool) -> Recipe:
    output = tmp_path / "out"
    output.mkdir()
    if adapter_done:
        (output / "adapter_model.safetensors").write_bytes(b"weights")
        (output / "training_state.json").write_text(json.dumps({"status": "complete"}))
    if merged:
        (output / "merged").mkdir()
        (output / "merged/config.json").write_text("{}")
    return Recipe(path=tmp_path / "r.yaml", base_model="google/gemma-3-27b-it", tokenizer="google/gemma-3-27b-it",
                  sequence_len=1024, train_file=tmp_path / "t.jsonl", eval_file=tmp_path / "e.jsonl",
                  output_dir=output, load_in_4bit=True)


NO_FLAGS = argparse.Namespace(model=None, adapter=None)


def test_a_qlora_run_without_a_merged_model_is_answered_by_its_adapter_on_the_nf4_base(tmp_path) -> None:
    recipe = qlora_recipe(tmp_path, adapter_done=True, merged=False)
    assert model_source(recipe, NO_FLAGS, "auto") == ("google/gemma-3-27b-it", recipe.output_dir)
    assert model_source(recipe, NO_FLAGS, "nf4") == ("google/gemma-3-27b-it", recipe.output_dir)


def test_explicit_choices_win_and_an_unfinished_adapter_is_never_picked(tmp_path) -> None:
    recipe = qlora_recipe(tmp_path, adapter_done=False, merged=False)
    assert model_source(recipe, NO_FLAGS, "auto") == (recipe.merged_dir, None)
    chosen = argparse.Namespace(model="my/merged", adapter=None)
    assert model_source(recipe, chosen, "nf4") == ("my/merged", None)


def test_a_batch_that_runs_out_of_memory_is_halved_and_every_query_answered(tiny_gemma3, schema, sample_records,
                                                                              monkeypatch, capsys) -> None:
    import inference.decoding as decoding

    model, tokenizer = load_model(tiny_gemma3)
    generator = Generator.build(model, tokenizer, "SYSTEM", schema, False, DECODING)
    real = decoding.Decoder.decode

    def small_gpu(self, prompts, matchers=None, margins=False):
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, prompts, matchers, margins)

    monkeypatch.setattr(decoding.Decoder, "decode", small_gpu)
    queries = [r["query"] for r in sample_records[:5]]
    answered = sorted(i for positions, _ in generator.answer(queries, batch_size=8) for i in positions)
    assert answered == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "batch of 5 ran out of GPU memory; continuing with batches of 4" in err and "batches of 2" in err


def test_answer_likelihoods_in_a_batch_equal_each_answer_scored_alone(tiny_gemma3) -> None:
    from contract.prompt import prompt_token_ids
    from contract.rows import END_OF_TURN
    from inference.likelihood import answer_logprobs

    model, tokenizer = load_model(tiny_gemma3)
    answers = ['{"intent":"alarm_set"}', '{"intent":"alarm_query","entities":[{"type":"time","value":"seven"}]}']
    batched = answer_logprobs(model, tokenizer, "SYSTEM", "wake me at seven", answers)
    prompt = prompt_token_ids(tokenizer, "wake me at seven", "SYSTEM")
    for answer, score in zip(answers, batched, strict=True):
        ids = tokenizer(answer + END_OF_TURN, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = model(input_ids=torch.tensor([prompt + ids])).logits.float().log_softmax(-1)[0]
        alone = sum(logprobs[len(prompt) - 1 + j, token].item() for j, token in enumerate(ids))
        assert score == pytest.approx(alone, abs=1e-3)
