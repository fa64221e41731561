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
        return "Not evaluated yet: `make eval`, then `make push` (or `python -m postprocess.card`) rewrites this card."
    rows = ["| variant | schema valid | exact match | " + " | ".join(
        f"{k} accuracy" for k in next(iter(metrics["variants"].values()))["field_accuracy"]) + " |"]
    rows.append("|" + "---|" * (3 + len(next(iter(metrics["variants"].values()))["field_accuracy"])))
    for variant, m in metrics["variants"].items():
        rows.append(f"| {variant} | {m['schema_valid']:.1%} | {m['exact_match']:.1%} | "
                    + " | ".join(f"{v:.1%}" for v in m["field_accuracy"].values()) + " |")
    return "\n".join(rows) + f"\n\nOn {metrics['context']['data']}; {metrics['context']['decoding']}."


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

Merge: {proof['examples']} eval prompts, merged logits within {proof['max_abs_logit_diff']:.3g} of base + adapter
(tolerance {proof['tolerance']:g}; the adapter moves logits by up to {proof['adapter_effect']:.3g}).

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

vLLM (not run here: vLLM needs a newer torch than the GPU machines this was built on), with the schema as
structured output:

```bash
vllm serve {shown(model_dir)} --generation-config auto
# request: {{"messages": [{{"role": "system", "content": <the prompt above>}}, {{"role": "user", "content": "..."}}],
#           "response_format": {{"type": "json_schema", "json_schema": {{"name": "answer", "schema": <the schema>}}}}}}
```

Trained by `{shown(recipe.path)}` with the settings recorded in `merge_proof.json`.
"""


def write_card(model_dir: Path, config: PipelineConfig, recipe: Recipe, metrics: dict[str, Any] | None) -> Path:
    path = model_dir / "README.md"
    write_text_atomic(path, model_card(model_dir, config, recipe, metrics))
    return path
