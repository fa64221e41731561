"""Batched greedy decoding that computes the shared part of the prompts once.

Every prompt starts with the same tokens (the chat template and the system prompt); only the query and what
follows differ. The shared prefix is run through the model once and its key/value cache copied into each
batch; each row's own tokens follow it, left-padded (the padding sits between the prefix and the row's
tokens, masked out, with position ids that skip it), so every row computes exactly what it would alone.

Sliding-window layers count cache slots, padding included: where prefix + row + answer could exceed the
window, a batch falls back to plain left padding, which is exact. Optional grammar matchers (xgrammar)
constrain each row's next token.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class Decoded:
    token_ids: list[int]  # the answer, without the stop token
    stopped: bool  # ended with a stop token (not at the token limit)
    # with margins=True: per answer token, log p(chosen) - log p(best other token) under the model's own
    # distribution: small (or negative, where the grammar overrode the model) at the decisions it was unsure of
    margins: tuple[float, ...] = ()

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids) + self.stopped


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    first = prompts[0]
    length = min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return max(length, 0)


def sliding_window(model: PreTrainedModel) -> int | None:
    config = model.config.get_text_config()
    if getattr(config, "sliding_window", None) and "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return int(config.sliding_window)
    return None


class Decoder:
    def __init__(self, model: PreTrainedModel, pad_id: int, stop_ids: Sequence[int], max_new_tokens: int,
                 prefix: Sequence[int] = ()) -> None:
        self.model, self.pad_id, self.stop_ids = model, pad_id, set(stop_ids)
        self.max_new_tokens, self.prefix = max_new_tokens, list(prefix)
        self.device = next(model.parameters()).device
        self.window = sliding_window(model)
        self._prefix_cache: DynamicCache | None = None

    def _prefix_for(self, prompts: Sequence[Sequence[int]]) -> int:
        """How much of the shared prefix this batch can take from the cache (0: none)."""
        p = len(self.prefix)
        if not p or any(list(prompt[:p]) != self.prefix or len(prompt) <= p for prompt in prompts):
            return 0
        if self.window and max(map(len, prompts)) + self.max_new_tokens > self.window:
            return 0  # padding inside the window would shift what a sliding layer sees
        return p

    def _cache(self, batch: int) -> DynamicCache:
        if self._prefix_cache is None:
            ids = torch.tensor([self.prefix], device=self.device)
            self._prefix_cache = self.model(input_ids=ids, use_cache=True,
                                            past_key_values=DynamicCache(config=self.model.config)).past_key_values
        cache = copy.deepcopy(self._prefix_cache)
        cache.batch_repeat_interleave(batch)
        return cache

    @torch.inference_mode()
    def decode(self, prompts: Sequence[Sequence[int]], matchers: Sequence[Any] | None = None, margins: bool = False
               ) -> tuple[list[Decoded], float]:
        """Greedy answers for a batch of tokenized prompts, and the wall-clock seconds they took."""
        start = time.perf_counter()
        rows = len(prompts)
        p = self._prefix_for(prompts)
        own = [list(prompt[p:]) for prompt in prompts]
        width = max(map(len, own))
        ids = torch.tensor([[self.pad_id] * (width - len(o)) + o for o in own], device=self.device)
        own_mask = torch.tensor([[0] * (width - len(o)) + [1] * len(o) for o in own], device=self.device)
        positions = (p + own_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones(rows, p, dtype=own_mask.dtype, device=self.device), own_mask], dim=1)
        cache = self._cache(rows) if p else DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         cache_position=torch.arange(p, p + width, device=self.device), use_cache=True,
                         logits_to_keep=1)
        constraint = _Constraint(matchers, out.logits.shape[-1]) if matchers else None
        answers: list[list[int]] = [[] for _ in range(rows)]
        confidence: list[list[float]] = [[] for _ in range(rows)]
        done = [False] * rows
        next_position = positions[:, -1:] + 1
        for step in range(self.max_new_tokens):
            logits = out.logits[:, -1, :]
            active = [i for i in range(rows) if not done[i]]
            tokens = constraint.greedy(logits, active) if constraint else logits.argmax(-1).tolist()
            step_margins = token_margins(logits, tokens) if margins else None
            for i in active:
                if tokens[i] in self.stop_ids:
                    done[i] = True
                else:
                    answers[i].append(tokens[i])
                    if step_margins is not None:
                        confidence[i].append(step_margins[i])
            if constraint:
                constraint.accept(active, [tokens[i] for i in active])
            if all(done) or step == self.max_new_tokens - 1:
                break
            fed = torch.tensor([[t if not d else self.pad_id] for t, d in zip(tokens, done, strict=True)],
                               device=self.device)
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(input_ids=fed, attention_mask=mask, position_ids=next_position, past_key_values=cache,
                             cache_position=torch.tensor([p + width + step], device=self.device), use_cache=True)
            next_position = next_position + 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [Decoded(a, d, tuple(c)) for a, d, c in zip(answers, done, confidence, strict=True)], \
            time.perf_counter() - start


def token_margins(logits: torch.Tensor, chosen: Sequence[int]) -> list[float]:
    """Per row: log p(chosen token) - log p(the best other token)."""
    logprobs = logits.float().log_softmax(-1)
    top2 = logprobs.topk(2, dim=-1)
    picked = logprobs.gather(-1, torch.tensor(chosen, device=logits.device)[:, None])[:, 0]
    best_other = torch.where(top2.indices[:, 0] == torch.tensor(chosen, device=logits.device), top2.values[:, 1],
                             top2.values[:, 0])
    return (picked - best_other).tolist()


class _Constraint:
    """Per-row xgrammar matchers. Greedy decoding needs the grammar only where the model's own choice breaks it:
    each step fills the allowed-token bitmask of the active rows (in parallel threads, on the CPU), looks up the
    bit of each row's unconstrained argmax, and masks the logits of the refused rows only. The result is exactly
    the argmax of fully masked logits (the best allowed token), without moving and applying a vocabulary-wide
    mask for every row at every step (a trained model's choice is almost always allowed)."""

    def __init__(self, matchers: Sequence[Any], vocab: int) -> None:
        import xgrammar as xgr

        self.xgr, self.matchers, self.vocab = xgr, list(matchers), vocab
        self.bitmask = xgr.allocate_token_bitmask(len(matchers), vocab)
        self.batch = xgr.BatchGrammarMatcher()

    def greedy(self, logits: torch.Tensor, rows: list[int]) -> list[int]:
        """The next token of every row: under its grammar for `rows`, the plain argmax for the others."""
        tokens = logits.argmax(-1).tolist()
        if not rows:
            return tokens
        self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in rows], self.bitmask, indices=rows)
        chosen = torch.tensor([tokens[i] for i in rows])
        words = self.bitmask[torch.tensor(rows), chosen >> 5]  # 32 tokens per int32 word
        refused = [row for row, bit in zip(rows, ((words >> (chosen & 31)) & 1).tolist(), strict=True) if not bit]
        if refused:
            masked = logits[refused]  # a copy: the model's logits stay as they are
            self.xgr.apply_token_bitmask_inplace(masked, self.bitmask[refused].to(logits.device),
                                                 vocab_size=self.vocab)
            for row, token in zip(refused, masked.argmax(-1).tolist(), strict=True):
                tokens[row] = token
        return tokens

    def accept(self, rows: list[int], tokens: list[int]) -> None:
        self.xgr.BatchGrammarMatcher.batch_accept_token([self.matchers[i] for i in rows], tokens)
