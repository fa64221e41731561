"""How much a model believes given answers: the log-probability of each whole answer text (and the end of the turn)
after the training prompt, teacher-forced. What label auditing compares candidate labels by."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from contract.prompt import prompt_token_ids
from contract.rows import END_OF_TURN


@torch.inference_mode()
def answer_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, system_prompt: str, query: str,
                    answers: Sequence[str], batch_size: int = 64) -> list[float]:
    """log p(answer + <end_of_turn> | prompt) for each answer text, summed over its tokens."""
    prompt = prompt_token_ids(tokenizer, query, system_prompt)
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(answers), batch_size):
        chunk = [tokenizer(text + END_OF_TURN, add_special_tokens=False).input_ids
                 for text in answers[start:start + batch_size]]
        width = len(prompt) + max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, device=device)
        mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for row, answer in enumerate(chunk):  # right padding: every row's prompt at the same positions
            ids[row, :len(prompt) + len(answer)] = torch.tensor(prompt + answer, device=device)
            mask[row, :len(prompt) + len(answer)] = 1
        # The output layer only where an answer token is predicted (the last `keep` positions): over Gemma's 262k-token
        # vocabulary the prompt's positions would cost most of the work.
        keep = width - len(prompt) + 1
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()
        logprobs = logits - logits.logsumexp(-1, keepdim=True)
        for row, answer in enumerate(chunk):
            positions = torch.arange(len(answer), device=device)  # logits[:, j] predicts token len(prompt) + j
            targets = torch.tensor(answer, device=device)
            scores.append(logprobs[row, positions, targets].sum().item())
    return scores
