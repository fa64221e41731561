"""Training rows of a given token length, for the sequence-length memory table of experiments/gpu_27b.sh: the shipped
system prompt and a real answer, with a request made of the sample's queries strung together until the whole
row (chat template included) is `--tokens` long, give or take a query's length below it.

    python -m experiments.long_rows --tokens 4096 --rows 8 --out outputs/g27-seq/4096.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contract.records import read_text
from contract.rows import read_rows, training_row
from contract.tokenizer import load_tokenizer


def row_tokens(tokenizer, row: dict) -> int:
    return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False))


def long_row(tokenizer, system_prompt: str, queries: list[str], answer: str, tokens: int) -> dict:
    """The row with the most queries (reused in turn) that stays within `tokens`: a binary search on the count."""

    def row(count: int) -> dict:
        return training_row(" ".join(queries[i % len(queries)] for i in range(count)), answer, system_prompt)

    low, high = 1, 2
    while row_tokens(tokenizer, row(high)) <= tokens:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if row_tokens(tokenizer, row(middle)) <= tokens else (low, middle)
    return row(low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--data", type=Path, default=Path("data/processed/train.jsonl"))
    parser.add_argument("--tokenizer", default="models/gemma-3-270m")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer, fix="run `make base-model`")
    rows = [json.loads(line) for line in read_text(args.data).splitlines() if line.strip()]
    system_prompt = rows[0]["messages"][0]["content"]
    examples = read_rows(read_text(args.data))
    out = [long_row(tokenizer, system_prompt, [e.query for e in examples[i:] + examples[:i]], examples[i].answer,
                    args.tokens) for i in range(args.rows)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in out))
    print(f"{args.out}: {len(out)} rows of {min(row_tokens(tokenizer, r) for r in out)}-"
          f"{max(row_tokens(tokenizer, r) for r in out)} tokens (limit {args.tokens})")


if __name__ == "__main__":
    main()
