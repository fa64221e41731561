"""GGUF export of the real Gemma 3 270M: llama.cpp tokenizes our prompts to our ids, its greedy answers equal the
HF model's, the vocabulary is Gemma's own, and the Ollama Modelfile renders the training prompt.

Needs llama.cpp (`make export-setup`, which `make test` runs first)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from contract.config import load_config
from contract.prompt import prompt_messages, system_prompt
from release.export import Parity, ollama_file, ollama_template
from tests.conftest import REPO_ROOT, write_project
from training.base_model import gguf_path
from training.gguf_tokenizer import gguf_vocab

pytestmark = pytest.mark.slow
PARITY_EXAMPLES = 20


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_records, base_model_dir):
    root = tmp_path_factory.mktemp("export")
    pipeline, config = write_project(root, sample_records[:400], base_model_dir)
    stage = ["--pipeline", str(pipeline), "--config", str(config)]
    subprocess.run([sys.executable, "-m", "preprocess", *stage], cwd=REPO_ROOT, check=True, capture_output=True)
    # The base weights stand in for a merged model: the same architecture, vocabulary and template.
    result = subprocess.run(
        [sys.executable, "-m", "release.export", *stage, "--model", str(base_model_dir), "--out",
         str(root / "gguf"), "--outtypes", "f16,q8_0", "--parity-examples", str(PARITY_EXAMPLES),
         "--max-new-tokens", "32"],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "gguf"


def test_export_writes_the_gguf_files_the_modelfile_and_the_parity_report(exported) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {"model-f16.gguf", "model-q8_0.gguf", "Modelfile", "gguf_parity.json"} <= names
    assert not any(name.endswith(".partial") for name in names)
    report = json.loads((exported / "gguf_parity.json").read_text())
    assert f"FROM ./{report['modelfile']}\n" in (exported / "Modelfile").read_text()


def test_ollama_gets_the_smallest_file_that_answers_as_the_hf_model() -> None:
    def result(name: str, same: int) -> Parity:
        return Parity(f"model-{name}.gguf", 20, 20, same, 0, 1.0, [])

    assert ollama_file([result("f16", 20), result("q8_0", 18), result("q4_k_m", 0)]) == "model-q8_0.gguf"
    assert ollama_file([result("f16", 20), result("q8_0", 17)]) == "model-f16.gguf"
    assert ollama_file([result("q8_0", 12), result("q4_k_m", 9)]) == "model-q8_0.gguf"


def test_llama_cpp_tokenizes_every_prompt_to_our_ids(exported) -> None:
    for result in json.loads((exported / "gguf_parity.json").read_text())["files"]:
        assert result["examples"] == PARITY_EXAMPLES
        assert result["same_prompt_tokens"] == PARITY_EXAMPLES, result["file"]


def test_f16_greedy_answers_equal_the_hf_model_answers(exported) -> None:
    f16 = next(r for r in json.loads((exported / "gguf_parity.json").read_text())["files"]
               if r["file"] == "model-f16.gguf")
    assert f16["same_answers"] == PARITY_EXAMPLES, f16["mismatches"]


def test_the_exported_vocabulary_is_gemmas_own(exported) -> None:
    from gguf import GGUFReader

    fields = GGUFReader(str(exported / "model-f16.gguf")).fields
    original = gguf_vocab(gguf_path())
    assert list(fields["tokenizer.ggml.tokens"].contents()) == original["pieces"]
    assert list(fields["tokenizer.ggml.scores"].contents()) == original["scores"]
    assert list(fields["tokenizer.ggml.token_type"].contents()) == original["types"]


def test_the_gguf_carries_the_chat_template(exported, tokenizer) -> None:
    from gguf import GGUFReader

    fields = GGUFReader(str(exported / "model-f16.gguf")).fields
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template


def test_the_ollama_template_renders_exactly_the_training_prompt(tokenizer) -> None:
    prompt = system_prompt(load_config(REPO_ROOT / "pipeline.yaml"))
    query = "wake me up at seven tomorrow"
    filled = ollama_template(tokenizer).replace("{{ .System }}", prompt).replace("{{ .Prompt }}", query)
    expected = tokenizer.apply_chat_template(prompt_messages(query, prompt), tokenize=False,
                                             add_generation_prompt=True)
    assert tokenizer.bos_token + filled == expected
