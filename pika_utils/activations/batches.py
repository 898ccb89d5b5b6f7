"""How prompts become the model's input for activation reads and sampling alike: the
end-of-instruction tokens of a chat template, token ids with a context check, batches (fixed, or
packed to a token budget, in length order) and left padding with mask-derived positions."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.prompts import chat_prompts


def eoi_token_count(tokenizer, suffix: str = "", system_prompt: str | None = None) -> int:
    """How many tokens the chat template puts after the user's text, found by rendering a
    probe message and locating where its text ends in the token offsets."""
    marker = "zq marker zq"
    prompt = chat_prompts(tokenizer, [marker], suffix, system_prompt)[0]
    end = prompt.rfind(marker) + len(marker)
    if suffix.strip():
        end = prompt.rfind(suffix.strip()) + len(suffix.strip())
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    after = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s >= end]
    if not after:
        raise ValueError("the chat template adds no tokens after the user's text; there is no "
                         "end-of-instruction position to read")
    return len(enc["input_ids"]) - after[0]


def eoi_tokens(tokenizer, suffix: str = "", system_prompt: str | None = None) -> list[str]:
    """The end-of-instruction tokens themselves, for showing the reader what is read."""
    n = eoi_token_count(tokenizer, suffix, system_prompt)
    ids = tokenizer(chat_prompts(tokenizer, ["x"], suffix, system_prompt)[0], add_special_tokens=False)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids[-n:])


def tokenize_prompts(tokenizer, prompts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids of every prompt, computed once per run (batching, sorting and the batches
    themselves reuse them), with an error naming any prompt longer than the model's context."""
    ids = [list(x) for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    if max_length is not None:
        too_long = [i for i, x in enumerate(ids) if len(x) > max_length]
        if too_long:
            raise ValueError(f"prompt(s) {too_long[:5]} are longer ({max(len(ids[i]) for i in too_long)} tokens) "
                             f"than the model's context of {max_length} tokens; shorten or drop them")
    return ids


def length_order(tokenizer, prompts: Sequence[str]) -> np.ndarray:
    """Prompt indices by token count (stable): batches of similar lengths waste less on padding."""
    return np.argsort([len(x) for x in tokenize_prompts(tokenizer, prompts)], kind="stable")


def fixed_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices in length order (stable), cut every ``batch_size`` prompts: the original batching."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int], token_budget: int) -> list[np.ndarray]:
    """Indices packed so that each left-padded batch holds at most ``token_budget`` tokens
    (rows x longest prompt). Longest prompts first (stable), so the widest batch runs first and a
    budget too large for the device fails at once; a prompt longer than the budget goes alone."""
    if token_budget < 1:
        raise ValueError(f"token_budget must be a positive number of tokens, got {token_budget}")
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray] = []
    start = 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)  # the first row of a batch is its longest
        n = max(1, token_budget // width)
        out.append(order[start:start + n])
        start += n
    return out


def padded_from_ids(ids: Sequence[Sequence[int]], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and mask-derived position ids for a left-padded batch, so every
    prompt's tokens sit at the positions they would have alone."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        if len(x):
            input_ids[i, width - len(x):] = torch.as_tensor(x, dtype=torch.long)
            mask[i, width - len(x):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}


def left_padded_batch(tokenizer, prompts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """``padded_from_ids`` of freshly tokenised prompts (for callers holding text, not ids)."""
    return padded_from_ids(tokenize_prompts(tokenizer, prompts, max_length), tokenizer.pad_token_id)
