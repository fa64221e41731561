"""Which grammar engine for schema-constrained decoding on Gemma 3's 262k vocabulary? Measures, for
xgrammar and llguidance side by side: tokenizer setup, schema compilation, and the per-token cost of
computing the allowed-token mask while walking the reference answers of the eval set.

    python -m experiments.grammar_engines [--model models/gemma-3-270m] [--examples 50]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from contract.config import REPO_ROOT, load_config
from contract.prompt import answer_text
from contract.records import load_records
from contract.rows import stop_token_ids
from contract.schema import bounded_schema, load_schema
from contract.tokenizer import load_tokenizer


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def xgrammar_engine(tokenizer, schema_json: str, vocab: int):
    import xgrammar as xgr

    info, setup = timed(lambda: xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab,
                                                                    stop_token_ids=stop_token_ids(tokenizer)))
    grammar, compile_s = timed(lambda: xgr.GrammarCompiler(info).compile_json_schema(
        schema_json, any_whitespace=False, separators=(",", ":")))
    bitmask = xgr.allocate_token_bitmask(1, vocab)

    def walk(tokens: list[int]) -> None:
        matcher = xgr.GrammarMatcher(grammar)
        for token in tokens:
            matcher.fill_next_token_bitmask(bitmask)
            assert matcher.accept_token(token), "reference answer rejected"

    return setup, compile_s, walk


def llguidance_engine(tokenizer, schema_json: str, vocab: int):
    import llguidance
    import llguidance.hf
    import llguidance.torch

    lltok, setup = timed(lambda: llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab))
    grammar, compile_s = timed(lambda: llguidance.LLMatcher.grammar_from_json_schema(
        schema_json, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}))
    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)

    def walk(tokens: list[int]) -> None:
        matcher = llguidance.LLMatcher(lltok, grammar)
        for token in tokens:
            llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
            assert matcher.consume_token(token), f"reference answer rejected: {matcher.get_error()}"

    return setup, compile_s, walk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models/gemma-3-270m")
    parser.add_argument("--examples", type=int, default=50)
    args = parser.parse_args()
    config = load_config()
    schema = load_schema(config.path("schema_path"))
    schema_json = json.dumps(bounded_schema(schema, 64, 8))
    tokenizer = load_tokenizer(args.model)
    vocab = len(tokenizer)
    records = load_records(config.path("raw_data"))[: args.examples]
    # The answers' JSON tokens (each engine has its own idea of the stop token, so it is left out).
    answers = [tokenizer(answer_text(r["data"], schema), add_special_tokens=False).input_ids for r in records]
    n_tokens = sum(map(len, answers))
    print(f"vocabulary {vocab:,}; {len(answers)} reference answers, {n_tokens} tokens")
    print(f"{'engine':<12}{'tokenizer setup s':>19}{'compile s':>11}{'mask µs/token':>15}")
    results = {}
    for name, engine in (("xgrammar", xgrammar_engine), ("llguidance", llguidance_engine)):
        setup, compile_s, walk = engine(tokenizer, schema_json, vocab)
        _, walk_s = timed(lambda walk=walk: [walk(tokens) for tokens in answers])
        results[name] = walk_s / n_tokens * 1e6
        print(f"{name:<12}{setup:>19.2f}{compile_s:>11.3f}{results[name]:>15.1f}")
    print(f"llguidance / xgrammar per-token mask time: {results['llguidance'] / results['xgrammar']:.2f}x")


if __name__ == "__main__":
    main()
