"""The model card (README.md in the merged model's directory): what the model is, what it was trained on and how,
how well it does, and how to run it with the same prompt and the schema as response format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contract.config import PipelineConfig, Recipe, shown
from contract.outputs import write_text_atomic
from contract.prompt import compact_json, system_prompt
from contract.schema import load_schema

HEADLINE = ("schema_valid", "exact_match")


def metrics_table(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "Not evaluated yet: `make eval`, then `make push` (or `python -m release.card`) rewrites this card."
    rows = ["| variant | schema valid | exact match | " + " | ".join(
        f"{k} accuracy" for k in next(iter(metrics["variants"].values()))["field_accuracy"]) + " |"]
    rows.append("|" + "---|" * (3 + len(next(iter(metrics["variants"].values()))["field_accuracy"])))
    for variant, m in metrics["variants"].items():
        rows.append(f"| {variant} | {m['schema_valid']:.1%} | {m['exact_match']:.1%} | "
                    + " | ".join(f"{v:.1%}" for v in m["field_accuracy"].values()) + " |")
    return "\n".join(rows) + f"\n\nOn {metrics['context']['data']}; {metrics['context']['decoding']}."


def gguf_section(model_dir: Path) -> str:
    parity_file = model_dir / "gguf_parity.json"
    if not parity_file.exists():
        return ("GGUF for llama.cpp / Ollama / LM Studio: `make export` writes it here, with a parity check against "
                "this model.")
    parity = json.loads(parity_file.read_text())
    rows = "\n".join(f"| `{f['file']}` | {f['same_prompt_tokens']}/{f['examples']} | "
                     f"{f['same_answers']}/{f['examples']} | {f['correct']}/{f['examples']} |" for f in parity["files"])
    return f"""GGUF (llama.cpp, Ollama, LM Studio), checked against this model on {parity['files'][0]['examples']} eval
examples (greedy; `gguf_parity.json`; the HF model itself: {parity['hf']['correct']} equal to the label):

| file | prompt tokens identical | answers identical | answers equal to the label |
|---|---|---|---|
{rows}

llama-cpp-python, with the schema enforced by llama.cpp's grammar (the GGUF carries the chat template):

```python
from llama_cpp import Llama
llm = Llama("{parity['modelfile']}", n_ctx=1024)
llm.create_chat_completion(messages=[{{"role": "system", "content": PROMPT}}, {{"role": "user", "content": query}}],
                           response_format={{"type": "json_object", "schema": SCHEMA}}, temperature=0)
```

Ollama (not run here), with the prompt in the `Modelfile` and the schema as `format`:

```bash
ollama create my-extractor -f Modelfile
curl http://localhost:11434/api/chat -d '{{"model": "my-extractor", "stream": false, "format": SCHEMA,
  "messages": [{{"role": "user", "content": "turn off the kitchen lights"}}]}}'
```"""


def merge_line(proof: dict[str, Any]) -> str:
    """What merge_proof.json proves, in a sentence."""
    matrices, logits = proof["matrices"], proof["logits"]
    line = (f"{matrices['exact']} of {matrices['matrices']} adapted matrices stored exactly as W + s·B·A in "
            f"{proof['dtype']}")
    if "skipped" in logits:
        return line + "."
    return (line + f"; on {logits['examples']} eval prompts the merged logits are within "
            f"{logits['max_abs_logit_diff']:.3g} of base + adapter (tolerance {logits['tolerance']:g}; the adapter "
            f"moves logits by up to {logits['adapter_effect']:.3g}).")


def model_card(model_dir: Path, config: PipelineConfig, recipe: Recipe, metrics: dict[str, Any] | None) -> str:
    proof = json.loads((model_dir / "merge_proof.json").read_text())
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    return f"""---
base_model: {recipe.base_model}
license: gemma
tags: [gemma3, json, structured-output, axolotl]
---

# {model_dir.parent.name}: query → JSON

Gemma 3 fine-tuned with [Axolotl](https://github.com/axolotl-ai-cloud/axolotl) to answer a query with one JSON
object that conforms to the schema below. Base model: `{recipe.base_model}`. Gemma is provided under and subject to
the Gemma Terms of Use (ai.google.dev/gemma/terms): see `NOTICE`.

## Quality

{metrics_table(metrics)}

Merge: {merge_line(proof)}

## The prompt and the schema

The model was trained with this system prompt (Gemma 3 folds it into the first user turn; the chat template
in this directory does it) and the query as the user turn:

```text
{prompt}
```

Answers follow this JSON Schema (`x-copy-from-query` marks values copied from the query):

```json
{compact_json(schema)}
```

## Run it

transformers, with the schema enforced (xgrammar), as this repo's `make predict` does:

```bash
python -m evaluation.predict --model {shown(model_dir)} --input queries.txt --output answers.jsonl
```

{gguf_section(model_dir)}

vLLM (not run here: vLLM needs a newer torch than the GPU machines this was built on), with the schema as
structured output:

```bash
vllm serve {shown(model_dir)} --generation-config auto
# request: {{"messages": [{{"role": "system", "content": <the prompt above>}}, {{"role": "user", "content": "..."}}],
#           "response_format": {{"type": "json_schema", "json_schema": {{"name": "answer", "schema": <the schema>}}}}}}
```

Trained by `{shown(recipe.path)}` with the settings recorded in `merge_proof.json`.
"""


def latest_metrics(config: PipelineConfig, recipe: Recipe, metrics_file: Path | None = None) -> dict[str, Any] | None:
    """The recipe's last `make eval` metrics (reports/<recipe>/metrics.json), if there are any."""
    path = metrics_file or config.locate(config.eval.reports_dir) / recipe.path.stem / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_card(model_dir: Path, config: PipelineConfig, recipe: Recipe, metrics: dict[str, Any] | None) -> Path:
    path = model_dir / "README.md"
    write_text_atomic(path, model_card(model_dir, config, recipe, metrics))
    return path
