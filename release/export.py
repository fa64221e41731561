"""Export the merged model to GGUF (llama.cpp, Ollama, LM Studio) and prove the export answers as the HF model does.

    python -m release.export [--model outputs/<recipe>/merged] [--outtypes f16,q8_0]

Writes beside the model (or in --out): `model-<outtype>.gguf` with Gemma 3's chat template inside, an Ollama
`Modelfile` that renders the training prompt, and `gguf_parity.json`: on the first eval examples, whether
llama.cpp tokenizes each prompt to our ids, and how many of its greedy answers equal the HF model's.

The conversion is llama.cpp's own `convert_hf_to_gguf.py`, from the llama-cpp-python source that
`make export-setup` builds (its version is the installed one's); q4_k_m is quantized from f16 by llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from contract.config import REPO_ROOT, PipelineConfig, Recipe, add_stage_arguments, config_from_args, shown
from contract.errors import UserError, run_cli
from contract.outputs import write_text_atomic
from contract.prompt import prompt_messages, system_prompt
from contract.rows import Example, read_rows, stop_token_ids
from contract.schema import load_schema, validator
from contract.tokenizer import SENTENCEPIECE_FILE, load_tokenizer
from release.card import latest_metrics, write_card

TOOLS_DIR = REPO_ROOT / ".tools"
# Types the converter writes itself; k-quants are quantized from its f16 output.
CONVERTER_TYPES = ("f16", "bf16", "q8_0")
LLAMA_FTYPE = {"q4_k_m": 15}  # llama.h: LLAMA_FTYPE_MOSTLY_Q4_K_M
LLAMA_SIZE_ORDER = ("q4_k_m", "q8_0", "f16", "bf16")  # smallest first


def gguf_name(outtype: str) -> str:
    return f"model-{outtype}.gguf"


def llama_cpp_source() -> Path:
    """The llama.cpp tree vendored in the llama-cpp-python sdist that `make export-setup` unpacked and built."""
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise UserError("llama-cpp-python is not installed: run `make export-setup` (builds llama.cpp, ~7 min on "
                        "2 cores)") from None
    source = TOOLS_DIR / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "convert_hf_to_gguf.py").exists():
        raise UserError(f"{shown(source)}: llama.cpp's converter is missing; run `make export-setup`")
    return source


def converter_input(model_dir: Path, tokenizer: Any, staging: Path) -> Path:
    """The model directory as llama.cpp's converter reads it: every file linked, plus a tokenizer_config.json that
    lists the added tokens (transformers 5 no longer writes them there; without them the converter turns
    Gemma's user-defined pieces such as "\\n\\n" into ordinary ones and llama.cpp tokenizes differently)."""
    if not (model_dir / SENTENCEPIECE_FILE).exists():
        raise UserError(f"{shown(model_dir)}: no {SENTENCEPIECE_FILE} (llama.cpp reads the vocabulary from it). "
                        "Run `make base-model` and `make merge` again: both write it now")
    for path in model_dir.iterdir():
        if path.is_file() and path.suffix != ".gguf":
            (staging / path.name).symlink_to(path.resolve())
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        str(i): {"content": t.content, "special": t.special, "normalized": t.normalized, "lstrip": t.lstrip,
                 "rstrip": t.rstrip, "single_word": t.single_word}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())
    }
    (staging / "tokenizer_config.json").unlink()
    (staging / "tokenizer_config.json").write_text(json.dumps(config))
    return staging


def convert(source: Path, model_input: Path, outtype: str, out_file: Path) -> None:
    """One GGUF file, written under a temporary name and renamed: a failed conversion leaves nothing behind."""
    partial = out_file.with_suffix(".partial")
    if outtype in CONVERTER_TYPES:
        command = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_input), "--outtype", outtype,
                   "--outfile", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise UserError(f"llama.cpp's converter failed on {shown(model_input)} ({outtype}):\n"
                            + result.stderr[-3000:])
    else:
        import llama_cpp

        with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
            f16 = Path(tmp) / gguf_name("f16")
            convert(source, model_input, "f16", f16)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = LLAMA_FTYPE[outtype]
            params.nthread = os.cpu_count() or 1
            if llama_cpp.llama_model_quantize(str(f16).encode(), str(partial).encode(), params) != 0:
                partial.unlink(missing_ok=True)
                raise UserError(f"llama.cpp could not quantize {shown(f16)} to {outtype}")
    partial.rename(out_file)


def ollama_template(tokenizer: Any) -> str:
    """Ollama's TEMPLATE, cut from the chat template itself so it renders exactly the training prompt: the
    system prompt folded into the first user turn (Gemma 3 has no system role). No <bos>: llama.cpp adds it."""
    system, query = "\x00SYSTEM\x00", "\x00PROMPT\x00"
    text = tokenizer.apply_chat_template(prompt_messages(query, system), tokenize=False, add_generation_prompt=True)
    return text.removeprefix(tokenizer.bos_token).replace(system, "{{ .System }}").replace(query, "{{ .Prompt }}")


def ollama_file(results: Sequence[Parity], agreement: float = 0.9) -> str:
    """The smallest file that answers as the HF model does on at least 90 % of the examples (4-bit 270M may not),
    else the most faithful one."""
    faithful = [r for r in results if r.agreement >= agreement]
    if not faithful:
        return max(results, key=lambda r: r.agreement).file
    return min(faithful, key=lambda r: LLAMA_SIZE_ORDER.index(r.file.removeprefix("model-").removesuffix(".gguf"))).file


def modelfile(gguf_file: str, tokenizer: Any, prompt: str, context: int) -> str:
    template = ollama_template(tokenizer)
    for text in (prompt, template):
        if '"""' in text:
            raise UserError('the system prompt contains """, which an Ollama Modelfile cannot quote')
    stops = "".join(f'PARAMETER stop "{tokenizer.convert_ids_to_tokens(i)}"\n' for i in stop_token_ids(tokenizer))
    return f"""# Ollama: `ollama create my-extractor -f Modelfile`, then `ollama run my-extractor "<query>"`;
# pass the schema as "format" in API requests to enforce it. Written by `python -m release.export`.
FROM ./{gguf_file}
TEMPLATE \"\"\"{template}\"\"\"
SYSTEM \"\"\"{prompt}\"\"\"
{stops}PARAMETER temperature 0
PARAMETER num_ctx {context}
"""


@dataclass(frozen=True)
class Parity:
    file: str
    examples: int
    same_prompt_tokens: int  # llama.cpp's tokenization of the rendered prompt == our ids
    same_answers: int  # greedy answers (decoded text) equal to the HF model's
    correct: int  # answers equal to the label (as parsed JSON)
    llama_cpp_seconds: float
    mismatches: list[dict[str, str]]

    @property
    def agreement(self) -> float:
        return self.same_answers / self.examples


def llama_cpp_answers(gguf_file: Path, texts: Sequence[str], stops: Sequence[int], max_new_tokens: int,
                      context: int) -> tuple[list[list[int]], list[list[int]], float]:
    """(prompt ids, greedy answer ids) per prompt text, as a llama.cpp user gets them: its own tokenizer
    (special tokens parsed), then greedy decoding to a stop token."""
    from llama_cpp import Llama

    llm = Llama(str(gguf_file), n_ctx=context, n_threads=os.cpu_count(), verbose=False, seed=0)
    prompts, answers = [], []
    start = time.perf_counter()
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        answer: list[int] = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in stops or len(answer) == max_new_tokens:
                break
            answer.append(token)
        prompts.append(ids)
        answers.append(answer)
    return prompts, answers, time.perf_counter() - start


def parity(gguf_files: Sequence[Path], model_dir: Path, examples: Sequence[Example], prompt: str, schema: dict,
           max_new_tokens: int, context: int) -> tuple[list[Parity], dict[str, Any]]:
    """Each GGUF's answers against the HF model's (and both against the labels) on the same examples."""
    from evaluation.scoring import example_verdicts
    from inference.generate import Generator
    from inference.models import load_model

    check = validator(schema)

    def correct(answers: Sequence[str]) -> int:
        """Answers equal to their label, as evaluation's exact match counts them."""
        return sum(example_verdicts(answer, json.loads(example.answer), check)["exact_match"]
                   for answer, example in zip(answers, examples, strict=True))

    queries = [example.query for example in examples]
    model, tokenizer = load_model(model_dir)
    generator = Generator(model, tokenizer, prompt, max_new_tokens)
    expected_prompts = generator.prompts(queries)
    start = time.perf_counter()
    expected = [""] * len(queries)
    for batch, answers in generator.answer(queries, batch_size=len(queries)):
        for i, answer in zip(batch, answers, strict=True):
            expected[i] = answer.text
    hf = {"correct": correct(expected),
          "seconds": round(time.perf_counter() - start, 1)}
    texts = [tokenizer.apply_chat_template(prompt_messages(q, prompt), tokenize=False, add_generation_prompt=True)
             for q in queries]
    results = []
    for gguf_file in gguf_files:
        prompts, answers, seconds = llama_cpp_answers(gguf_file, texts, stop_token_ids(tokenizer), max_new_tokens,
                                                      context)
        got = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        results.append(Parity(
            file=gguf_file.name, examples=len(queries),
            same_prompt_tokens=sum(p == e for p, e in zip(prompts, expected_prompts, strict=True)),
            same_answers=sum(g == e for g, e in zip(got, expected, strict=True)),
            correct=correct(got),
            llama_cpp_seconds=round(seconds, 1),
            mismatches=[{"query": q, "hf": e, "llama_cpp": g}
                        for q, e, g in zip(queries, expected, got, strict=True) if g != e][:5],
        ))
    return results, hf


def export(config: PipelineConfig, recipe: Recipe, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    options = config.export
    if not recipe.eval_file.exists():
        raise UserError(f"{shown(recipe.eval_file)} is missing (the parity check decodes eval examples): `make data`")
    source = llama_cpp_source()
    tokenizer = load_tokenizer(model_dir)
    prompt = system_prompt(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        model_input = converter_input(model_dir, tokenizer, Path(tmp))
        for outtype in options.outtypes:
            files.append(out_dir / gguf_name(outtype))
            print(f"converting {shown(model_dir)} -> {shown(files[-1])}", flush=True)
            convert(source, model_input, outtype, files[-1])
    examples = read_rows(recipe.eval_file.read_text(encoding="utf-8"))[:options.parity_examples]
    print(f"parity: greedy answers of the HF model and of each GGUF on {len(examples)} eval examples", flush=True)
    results, hf = parity(files, model_dir, examples, prompt, load_schema(config.path("schema_path")),
                         config.decoding.max_new_tokens, recipe.sequence_len + config.decoding.max_new_tokens)
    chosen = ollama_file(results)
    write_text_atomic(out_dir / "Modelfile", modelfile(chosen, tokenizer, prompt, recipe.sequence_len))
    report = {
        "model": shown(model_dir), "llama_cpp_python": metadata.version("llama_cpp_python"),
        "max_new_tokens": config.decoding.max_new_tokens, "hf": hf, "modelfile": chosen,
        "files": [{**asdict(r), "agreement": r.agreement} for r in results],
        "config": config.as_record(),
    }
    write_text_atomic(out_dir / "gguf_parity.json", json.dumps(report, indent=2) + "\n")
    print(f"HF model: {hf['correct']}/{len(examples)} equal to the label, {hf['seconds']} s")
    for r in results:
        print(f"{r.file}: prompt tokens identical {r.same_prompt_tokens}/{r.examples}, greedy answers identical "
              f"{r.same_answers}/{r.examples} ({r.agreement:.0%}), {r.correct}/{r.examples} equal to the label, "
              f"{r.llama_cpp_seconds} s")
    print(f"Modelfile -> {chosen}")
    if out_dir == model_dir and (model_dir / "merge_proof.json").exists():  # a merged model: its card lists the files
        write_card(model_dir, config, recipe, latest_metrics(config, recipe))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "export", "decoding")
    parser.add_argument("--model", type=Path, help="HF model dir (default: <output_dir>/merged)")
    parser.add_argument("--out", type=Path, help="where the GGUF files go (default: the model dir)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    recipe = Recipe.load(config.path("recipe"))
    model_dir = args.model.absolute() if args.model else recipe.merged_dir
    if not (model_dir / "config.json").exists():
        raise UserError(f"{shown(model_dir)}: not a model directory; run `make merge` first or pass --model")
    report = export(config, recipe, model_dir, args.out.absolute() if args.out else model_dir)
    if any(f["same_prompt_tokens"] < f["examples"] for f in report["files"]):
        raise UserError("llama.cpp tokenizes some prompts differently from the HF tokenizer: see gguf_parity.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
