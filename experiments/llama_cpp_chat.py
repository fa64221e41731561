"""A GGUF answering through llama-cpp-python's chat API, with and without the schema as response_format (llama.cpp's
grammar): the answer and seconds per query, as README "Use the model" quotes them.

    python -m experiments.llama_cpp_chat outputs/quickstart-cpu/merged/model-q8_0.gguf "turn off the kitchen lights"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from contract.config import load_config, resolve
from contract.prompt import system_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("queries", nargs="+")
    parser.add_argument("--pipeline", type=Path, default=Path("pipeline.yaml"))
    args = parser.parse_args()
    from llama_cpp import Llama

    config = load_config(resolve(args.pipeline))
    schema = json.loads(config.path("schema_path").read_text())
    prompt = system_prompt(config)
    llm = Llama(str(args.gguf), n_ctx=1024, verbose=False)
    for query in args.queries:
        messages = [{"role": "system", "content": prompt}, {"role": "user", "content": query}]
        for name, extra in (("schema", {"response_format": {"type": "json_object", "schema": schema}}), ("free", {})):
            start = time.perf_counter()
            out = llm.create_chat_completion(messages=messages, temperature=0, max_tokens=128, **extra)
            answer = out["choices"][0]["message"]["content"]
            print(f"{name:6} {time.perf_counter() - start:4.1f} s  {query} -> {answer}")


if __name__ == "__main__":
    main()
