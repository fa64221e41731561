"""Which unlabeled queries to label next: the ones the trained model is least sure of, spread over the kinds of
request, each with the model's proposed answer (labeling becomes correcting).

    python -m labeling.suggest --input pool.txt --output to_label.jsonl [--count 50] [--model DIR | --adapter DIR]

--input: one query per line, or JSONL with a "query" per line (as `make predict` reads it). Queries already in
raw_data.json (up to case, spacing and Unicode form) and repeats within the pool are skipped. The model answers
each query under the schema; its certainty is the smallest margin, over the answer's tokens, between the token it
wrote and its best alternative: the decision it was least sure of (a label, an entity's type, where a span ends).
Queries are grouped by their wording (TF-IDF of character n-grams, k-means: scikit-learn), and the ranking takes the
least certain query of each group in turn, so a batch is not fifty paraphrases of one request.
Writes to_label.jsonl in rank order: rank, query, proposed answer, its schema validity, score, reason, group.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from contract.config import Recipe, add_stage_arguments, config_from_args, shown
from contract.errors import UserError, run_cli
from contract.outputs import jsonl, write_text_atomic
from contract.prompt import control_tokens, system_prompt
from contract.records import load_records
from contract.schema import load_schema, validator
from evaluation.predict import read_queries
from evaluation.scoring import parse_prediction
from inference.generate import Answer, Generator
from inference.models import add_model_arguments, load_model, model_source
from preprocess.checks import normalized

KEY = re.compile(r'"([^"]+)":')


def known_queries(path: Path) -> set[str]:
    """The normalized queries of the labeled records (malformed records are `make data`'s to report)."""
    records = load_records(path)
    return {normalized(r["query"]) for r in records if isinstance(r, dict) and isinstance(r.get("query"), str)}


def new_queries(pool: Sequence[str], known: set[str]) -> list[str]:
    """The pool without labeled queries and without repeats, in pool order."""
    seen, kept = set(known), []
    for query in pool:
        if normalized(query) not in seen:
            seen.add(normalized(query))
            kept.append(query)
    return kept


def least_sure(answer: Answer, tokenizer) -> tuple[float, str]:
    """(score, reason): the score is minus the smallest margin (higher: less sure); the reason names the decision."""
    if not answer.margins:
        return 0.0, "no answer tokens"
    step = int(np.argmin(answer.margins))
    before = tokenizer.decode(list(answer.token_ids[:step]), skip_special_tokens=True)
    keys = KEY.findall(before)
    written = tokenizer.decode([answer.token_ids[step]], skip_special_tokens=True)
    where = f"`{keys[-1]}`" if keys else "the start of the answer"
    return -answer.margins[step], f"least sure at {where}: wrote {written!r} (margin {answer.margins[step]:.2f})"


def diverse_order(queries: Sequence[str], scores: Sequence[float], groups: int, seed: int
                  ) -> tuple[list[int], list[int]]:
    """(positions in rank order, group of each query): groups by wording, then the least sure query of each group in
    turn, groups taken in the order of their least sure member."""
    if len(queries) == 1:
        return [0], [0]
    groups = max(1, min(groups, len(queries)))
    features = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(queries)
    labels = KMeans(n_clusters=groups, n_init=4, random_state=seed).fit_predict(features).tolist()
    members = {g: sorted((i for i in range(len(queries)) if labels[i] == g), key=lambda i: (-scores[i], i))
               for g in set(labels)}
    turn = sorted(members, key=lambda g: (-scores[members[g][0]], members[g][0]))
    order: list[int] = []
    while any(members.values()):
        order += [members[g].pop(0) for g in turn if members[g]]
    return order, labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, "decoding")
    parser.add_argument("--input", type=Path, required=True, help="unlabeled queries: .txt (one per line) or .jsonl")
    parser.add_argument("--output", type=Path, required=True, help="to_label.jsonl")
    parser.add_argument("--count", type=int, default=50, help="how many to suggest (and how many groups of wording)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    recipe = Recipe.load(config.path("recipe"))
    output = args.output.absolute()
    if output == args.input.absolute() or (output.exists() and not args.overwrite):
        raise UserError(f"{shown(output)}: exists (or is the --input); pass --overwrite or choose another --output")
    schema = load_schema(config.path("schema_path"))
    prompt = system_prompt(config)
    source = model_source(recipe, args, config.decoding.quantize)
    model, tokenizer = load_model(*source, quantize=config.decoding.quantize)
    pool = new_queries(read_queries(args.input, control_tokens(tokenizer)), known_queries(config.path("raw_data")))
    if not pool:
        raise UserError(f"{shown(args.input)}: every query is already labeled in {shown(config.path('raw_data'))}")
    generator = Generator.build(model, tokenizer, prompt, schema, True, config.decoding)
    answers: list[Answer | None] = [None] * len(pool)
    for positions, batch in generator.answer(pool, config.decoding.batch_size, margins=True):
        for position, answer in zip(positions, batch, strict=True):
            answers[position] = answer
    sure = [least_sure(answer, tokenizer) for answer in answers]
    order, groups = diverse_order(pool, [score for score, _ in sure], args.count, config.seed)
    check = validator(schema)
    rows = []
    for rank, i in enumerate(order[:args.count], 1):
        parsed = parse_prediction(answers[i].text, check)
        rows.append({"rank": rank, "query": pool[i], "proposed": parsed.value if parsed.is_json else answers[i].text,
                     "schema_valid": parsed.conforms, "score": round(sure[i][0], 4), "reason": sure[i][1],
                     "group": groups[i]})
    write_text_atomic(output, jsonl(rows))
    print(f"{len(rows)} of {len(pool)} new queries to label, least sure first, by group -> {shown(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
