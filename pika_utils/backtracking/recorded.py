"""Chapter 8 on real reasoning chains: windows of a recorded reasoning model's chains of thought.

A small reader never has to write: it reads chains that a 27B model trained to reason at length
wrote on MATH-500 (``problems.recorded``, member ``sky-t1-27b-long``). Reading whole chains (a
median of about 2,100 tokens) is too slow on a CPU, and backtracking is rare in a chain's first
tokens, so each chain contributes one **window** of ``window`` tokens at a seeded random offset
(independent of the labels), read after the problem's prompt and the ``context`` chain tokens just
before it. Labels come from the annotator run on the *whole* chain, so a sentence that starts
before the window keeps its label inside it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from . import labels as BL
from ..core.prompts import chat_prompt
from ..problems.recorded import recorded_chains


def recorded_windows(tokenizer, n_chains: int, window: int, context: int, *, seed: int = 0,
                     member: str = "sky-t1-27b-long") -> pd.DataFrame:
    """One window per sampled chain: chain_id, problem_id, prefix (the question's chat prompt and
    the context before the window), text (the window), offset (the window's first character in
    the whole chain), full_text, correct, chain_tokens, window_start (tokens, by ``tokenizer``)."""
    if window < 8 or context < 0:
        raise ValueError(f"window={window} (at least 8 tokens) and context={context} (at least 0)")
    ch = recorded_chains(member)
    ch = ch.sample(n=min(int(n_chains), len(ch)), random_state=seed).sort_values("problem_id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rows = []
    for r in ch.itertuples():
        offs = tokenizer(r.response, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        n = len(offs)
        if n == 0:
            continue
        s = int(rng.integers(0, max(1, n - window + 1)))
        e, c = min(n, s + window), max(0, s - context)
        w0, w1, c0 = offs[s][0], offs[e - 1][1], offs[c][0]
        rows.append({"chain_id": f"{r.problem_id}@{s}", "problem_id": r.problem_id,
                     "prefix": chat_prompt(tokenizer, r.question) + r.response[c0:w0], "text": r.response[w0:w1],
                     "offset": w0, "full_text": r.response, "correct": bool(r.correct), "chain_tokens": n,
                     "window_start": s, "level": r.level})
    out = pd.DataFrame(rows)
    sents = [window_sentences(t, o, len(w)) for t, o, w in zip(out["full_text"], out["offset"], out["text"])]
    out["n_sentences"] = [len(x) for x in sents]
    out["n_backtracking"] = [sum(s.backtracking for s in x) for x in sents]
    return out


def window_sentences(full_text: str, offset: int, length: int) -> list[BL.Sentence]:
    """The whole chain's annotated sentences that overlap the window, with spans relative to the
    window's text (clipped to it)."""
    out = []
    for s in BL.annotate(full_text):
        a, b = s.start - offset, s.end - offset
        if b > 0 and a < length:
            a, b = max(0, a), min(length, b)
            out.append(replace(s, start=a, end=b, text=full_text[offset + a:offset + b]))
    return out
