"""Budget forcing: let the model think for at most B tokens, then close the thought, append an
answer cue and generate a short answer, so every rollout ends in a gradable answer.

Works on any backend through its ``generate`` (two calls: the thinking, then the answers), so
the transformers and vLLM backends share it. B = 0 is a direct answer: the cue comes at once.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from .sampling import Completion


def check_budget(budget: int, answer_cue: str, tokenizer, context: int | None = None,
                 answer_tokens: int = 0, prompt_tokens: int = 0) -> None:
    """Reject a negative budget, one the context cannot hold, or a cue the tokenizer cannot
    encode faithfully (it would be replaced by unknown tokens or silently changed)."""
    if budget < 0:
        raise ValueError(f"reasoning budget must be >= 0 tokens, got {budget}")
    if context is not None and prompt_tokens + budget + answer_tokens > context:
        raise ValueError(f"budget {budget} + answer {answer_tokens} + prompt {prompt_tokens} tokens exceeds "
                         f"the model's context of {context} tokens; lower the budget")
    if not answer_cue.strip():
        raise ValueError("the answer cue is empty: the model would not be told to answer")
    ids = tokenizer(answer_cue, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    back = tokenizer.decode(ids)
    if (unk is not None and unk in ids) or back.strip() != answer_cue.strip():
        raise ValueError(f"the tokenizer cannot encode the answer cue {answer_cue!r} (it decodes back as {back!r}); "
                         "choose a cue in the model's vocabulary")


def generate_with_budget(backend, prompts: Sequence[str], cfg, seed: int) -> list[list]:
    """K budget-forced rollouts per prompt: (1) sample K thoughts of at most ``cfg.budget``
    tokens, (2) append ``cfg.think_close`` and ``cfg.answer_cue`` and generate at most
    ``cfg.answer_tokens`` answer tokens for each thought. Returns Completions whose text is
    the whole rollout, with thinking/answer token counts and whether the budget was hit."""
    k, budget = cfg.k, int(cfg.budget)
    if budget > 0:
        thoughts = backend.generate(prompts, dataclasses.replace(cfg, max_new_tokens=budget, budget=None, stop=()), seed)
    else:
        thoughts = [[Completion("", 0, "stop") for _ in range(k)] for _ in prompts]
    cue = cfg.think_close + cfg.answer_cue
    follow = [p + t.text + cue for p, ts in zip(prompts, thoughts) for t in ts]
    answer_cfg = dataclasses.replace(cfg, k=1, max_new_tokens=cfg.answer_tokens, budget=None,
                                     temperature=cfg.answer_temperature)
    answers = backend.generate(follow, answer_cfg, seed + 1)
    cue_tokens = backend.count_tokens([cue])[0]
    out = []
    for i, ts in enumerate(thoughts):
        row = []
        for j, t in enumerate(ts):
            a = answers[i * k + j][0]
            row.append(Completion(
                text=t.text + cue + a.text, output_tokens=t.output_tokens + cue_tokens + a.output_tokens,
                finish_reason=a.finish_reason, thinking_tokens=t.output_tokens, answer_tokens=a.output_tokens,
                budget_hit=budget > 0 and t.finish_reason == "length", answer_text=cfg.answer_cue + a.text,
            ))
        out.append(row)
    return out
