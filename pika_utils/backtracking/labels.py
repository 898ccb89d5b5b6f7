"""Which sentences of a chain of thought backtrack, and which tokens belong to them.

A *backtracking* sentence is one where the writer decides its current line is wrong and changes
it (Venhoff et al.'s "backtracking" label): it opens with a cue such as "Wait", "Hmm",
"Actually", "Alternatively", "But wait", "No, ...", "Let me re-check", "Oops", "Hold on", or says
"I made a mistake" / "let me redo/correct". A sentence that only *checks* ("Check: 2+3=5, correct")
is verification, not backtracking, and is not marked; nor is a cue followed by a confirmation
("Wait, this is correct."), nor a chain's first sentence.

``annotate`` is the rule-based annotator (no model, reproducible, tested on written examples);
``token_labels`` turns its sentence spans into one label per token through the tokenizer's
character offsets; ``llm_annotate`` is the optional model-based annotator with the six labels
of Venhoff et al., and ``cohen_kappa`` measures how often the two agree beyond chance.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.store import show_progress

#: Openers of a backtracking sentence (matched at its start, after list/markdown markers).
BACKTRACK_OPENERS = (
    r"wait\b", r"hmm+\b", r"hm+\b", r"actually\b", r"alternatively\b", r"but wait\b", r"oh wait\b",
    r"no\s*[,.!]", r"oops\b", r"hold on\b", r"on second thought\b", r"scratch that\b",
    r"let me re-?(?:check|consider|think|examine|evaluate|calculate|compute|do|verify)\b",
    r"let me double[- ]check\b", r"let me try (?:again|another|a different)\b",
    r"let me (?:correct|redo|fix)\b", r"that'?s (?:not right|wrong|incorrect)\b",
    r"this is (?:not right|wrong|incorrect)\b", r"i made (?:a|an) (?:mistake|error)\b",
    r"correction\s*:", r"mistake\s*:",
)
#: Phrases that mark backtracking anywhere in a sentence.
BACKTRACK_ANYWHERE = (
    r"\bi made (?:a|an) (?:mistake|error)\b", r"\bthere(?:'s| is) (?:a|an) (?:mistake|error)\b",
    r"\blet me (?:redo|correct)\b", r"\bthat (?:step )?(?:is|was) (?:wrong|incorrect)\b",
    r"\bi was wrong\b",
)
_LEAD = r"^[\s>*_#\-•]*(?:\(?\d+[.)]\s+|step \d+\s*[:.]\s*)?[\s*_]*"
_OPEN_RE = re.compile(_LEAD + "(?:" + "|".join(BACKTRACK_OPENERS) + ")", re.IGNORECASE)
_ANY_RE = re.compile("|".join(BACKTRACK_ANYWHERE), re.IGNORECASE)
# a sentence ends at . ! ? (followed by space or end) or at a line break
_END_RE = re.compile(r"(?<=[.!?])\s+|\n+")

#: The six sentence labels of Venhoff et al. (2025), for the LLM annotator.
VENHOFF_LABELS = ("initializing", "deduction", "adding-knowledge", "example-testing",
                  "uncertainty-estimation", "backtracking")


@dataclass(frozen=True)
class Sentence:
    start: int  # character span in the chain's text, whitespace trimmed
    end: int
    text: str
    backtracking: bool = False


def split_sentences(text: str) -> list[Sentence]:
    """Sentences with their character spans: split after . ! ? followed by whitespace, and at
    line breaks (a decimal point such as 3.5 is not a break). Empty pieces are dropped."""
    out, pos = [], 0
    for m in [*_END_RE.finditer(text), None]:
        stop = m.start() if m is not None else len(text)
        piece = text[pos:stop]
        lead = len(piece) - len(piece.lstrip())
        body = piece.strip()
        if body:
            s = pos + lead
            out.append(Sentence(s, s + len(body), body))
        if m is not None:
            pos = m.end()
    return out


#: A sentence that confirms a step ("Wait, this is correct.") goes back on nothing.
_CONFIRM_RE = re.compile(r"\b(?:is|are|was|it'?s|that'?s|this'?s)\s+(?:indeed\s+|also\s+)?(?:correct|right)\b"
                         r"|\bindeed\b|\bchecks out\b", re.IGNORECASE)


def is_backtracking(sentence: str) -> bool:
    """True if the sentence opens with a backtracking cue or says it made a mistake, unless it
    only confirms a step ("Wait, this is correct.")."""
    if _CONFIRM_RE.search(sentence) and not _ANY_RE.search(sentence):
        return False
    return bool(_OPEN_RE.match(sentence) or _ANY_RE.search(sentence))


def annotate(text: str) -> list[Sentence]:
    """Every sentence of ``text`` with its rule-based backtracking label. The first sentence of
    a chain is never backtracking: there is no earlier step to go back on (small models told to
    write "Wait," when a step is wrong often open with "Wait, let's solve this step by step")."""
    return [Sentence(s.start, s.end, s.text, i > 0 and is_backtracking(s.text))
            for i, s in enumerate(split_sentences(text))]


def token_labels(offsets: Sequence[tuple[int, int]], sentences: Sequence[Sentence]) -> np.ndarray:
    """One 0/1 label per token: 1 when the token's character span overlaps a backtracking
    sentence. ``offsets`` are the tokenizer's (start, end) per token of the same text; tokens
    with an empty span (special tokens) get 0."""
    labels = np.zeros(len(offsets), dtype=np.int8)
    spans = [(s.start, s.end) for s in sentences if s.backtracking]
    for i, (a, b) in enumerate(offsets):
        if b > a and any(a < e and b > s for s, e in spans):
            labels[i] = 1
    return labels


def chain_tokens(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a chain's text (no special tokens) and each token's character offsets."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def label_chain(tokenizer, text: str) -> dict:
    """A chain's sentences, token ids and token labels (the reader's tokenisation)."""
    sents = annotate(text)
    ids, offsets = chain_tokens(tokenizer, text)
    return {"sentences": sents, "input_ids": ids, "offsets": offsets, "labels": token_labels(offsets, sents)}


# --------------------------------------------------------------------------- LLM annotator

LLM_INSTRUCTION = (
    "You label one sentence from a step-by-step solution with its reasoning behaviour. Labels:\n"
    "initializing: restates the problem or plans the approach\n"
    "deduction: derives a new fact or computes a step\n"
    "adding-knowledge: recalls a fact, formula or definition\n"
    "example-testing: tries a concrete example or checks a value\n"
    "uncertainty-estimation: states doubt or confidence\n"
    "backtracking: decides a previous step was wrong and changes approach\n"
    "Reply with the label only."
)


def llm_annotate(lm, texts: Sequence[str], *, batch_size: int = 16, context_chars: int = 300,
                 progress: bool = False) -> list[list[str]]:
    """Label every sentence of every chain with one of ``VENHOFF_LABELS`` using an instruct
    model: the model's log-likelihood of each label's text after a prompt holding the recent
    context and the sentence; the most likely label wins (no free text to parse)."""
    import torch
    from tqdm import tqdm

    from ..core.prompts import chat_prompt

    tok = lm.tokenizer
    items = []  # (chain, prompt)
    for ci, text in enumerate(texts):
        for s in split_sentences(text):
            ctx = text[max(0, s.start - context_chars):s.start]
            msg = f"Context: ...{ctx}\n\nSentence: {s.text}"
            items.append((ci, chat_prompt(tok, msg, "", LLM_INSTRUCTION)))
    label_ids = [tok(lab, add_special_tokens=False)["input_ids"] for lab in VENHOFF_LABELS]
    out: list[list[str]] = [[] for _ in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for b in tqdm(range(0, len(items), batch_size), desc="LLM annotator", disable=not show_progress(progress)):
        chunk = items[b:b + batch_size]
        seqs, meta = [], []
        for ci, prompt in chunk:
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            for li, lab in enumerate(label_ids):
                seqs.append(p + lab)
                meta.append((len(p), len(lab)))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):  # right padding: positions start at 0 for every row
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.inference_mode():
            logp = torch.log_softmax(lm.model(input_ids=ids.to(lm.model.device),
                                              attention_mask=mask.to(lm.model.device)).logits.float(), -1).cpu()
        scores = []
        for i, (n_p, n_l) in enumerate(meta):
            tgt = ids[i, n_p:n_p + n_l]
            scores.append(float(logp[i, n_p - 1:n_p - 1 + n_l].gather(-1, tgt[:, None]).sum()))
        scores = np.array(scores).reshape(len(chunk), len(VENHOFF_LABELS))
        for (ci, _), row in zip(chunk, scores):
            out[ci].append(VENHOFF_LABELS[int(np.argmax(row))])
    return out


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two annotators' labels on the same items: (observed agreement - chance
    agreement) / (1 - chance agreement); NaN when chance agreement is 1 (one label throughout)."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"cohen_kappa needs two equally long, non-empty label lists ({len(a)} vs {len(b)})")
    cats = np.union1d(a, b)
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return float("nan") if pe == 1 else (po - pe) / (1 - pe)
