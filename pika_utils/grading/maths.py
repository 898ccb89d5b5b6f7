"""One grader for every chapter: pull a model's final answer out of its text, compare it with gold.

Integers, decimals and plain fractions are compared exactly in-process (the fast path the rollout
engine lives on). Everything else goes to math-verify in a long-lived worker subprocess with a hard
deadline (``verify_worker``).
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import pandas as pd

from .verify_worker import WORKER as _WORKER  # noqa: F401 - the shared worker (tests read its counters)
from .verify_worker import slow_compare


@dataclass(frozen=True)
class Grade:
    """The verdict on one output, with the reason kept so that failures can be audited."""

    correct: bool
    extracted: str | None  # answer string pulled from the output; None if none was found
    reason: str  # "match", "mismatch", "no_answer", "no_output", "unparseable_answer",
    #              "unparseable_gold", "timeout", "verifier_crashed"


# --------------------------------------------------------------------------- extraction

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
#: A number that does not start inside a word or another number; a minus sign only when it cannot be
#: a binary minus ("5-7" gives 7, "= -7" gives -7). An "a/b" fraction is kept whole.
_NUMBER_RE = re.compile(rf"(?:(?<![\w.)\]}}])[-−])?(?<![\w.,])(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?(?![\d])")
_LEAD_NUMBER_RE = re.compile(rf"^(?:\\?\$\s*)?([-−+]?\s*(?:{_NUM})(?:\s*/\s*\d+)?)(\s*(?:\\?%|percent))?(?![\w^\\{{(+*=-])")
_ANSWER_CUE_RE = re.compile(r"(?i)(?:final\s+answer|the\s+answer|answer)\s*(?:is\b\s*:?|:|=)\s*([^\n]*)")
_GSM_RE = re.compile(r"####\s*([^\n]*)")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def _matching_brace(s: str, open_at: int) -> int | None:
    """Index of the brace closing the one at ``open_at``, or None if the braces never balance."""
    depth = 0
    for i in range(open_at, len(s)):
        if s[i] == "{" and (i == 0 or s[i - 1] != "\\"):
            depth += 1
        elif s[i] == "}" and (i == 0 or s[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return i
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed, non-empty ``\\boxed{...}`` (or ``\\boxed 5``)."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        j = m.end()
        if j < len(text) and text[j] == "{":
            k = _matching_brace(text, j)
            content = text[j + 1:k] if k is not None else ""
        else:
            content = re.match(r"[^\s$]*", text[j:]).group(0)
        if content.strip():
            return content.strip()
    return None


def _answer_span(content: str) -> str | None:
    """The answer at the start of the text after a cue ("The answer is ..."): a number with its
    percent sign, a ``$...$`` formula, or the words up to the end of the sentence."""
    s = content.strip().lstrip("*").strip()
    m = _LEAD_NUMBER_RE.match(s)
    if m:
        return (m.group(1) + (m.group(2) or "")).replace(" ", "")
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(open_):
            end = s.find(close, len(open_))
            if end > len(open_):
                return s[len(open_):end].strip()
    s = re.split(r"\.(?:\s|$)", s, maxsplit=1)[0].strip().rstrip(".").strip("*").strip()
    return s or None


def extract_answer(text: str) -> str | None:
    """The model's final answer as a raw string: the last ``\\boxed{}``, else a GSM8K ``#### x``,
    else "Final answer: x" / "the answer is x", else the last number; None if there is none."""
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_GSM_RE, _ANSWER_CUE_RE):
        hits = [h for h in pattern.findall(text) if h.strip()]
        if hits and (span := _answer_span(hits[-1])):
            return span
    numbers_ = _NUMBER_RE.findall(text)
    return numbers_[-1].replace("−", "-").replace(" ", "") if numbers_ else None


# --------------------------------------------------------------------------- normalisation

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_DROP = (r"\left", r"\right", r"\displaystyle", r"\!", r"\,", r"\;", r"\:", "\\ ", "~", "\u00a0")


def _clean(answer: str) -> str:
    """Strip what never changes an answer's value: math delimiters, a whole-answer ``\\boxed``,
    dollar signs, spacing commands, ``\\dfrac``, degree marks, a trailing period, ``x =``."""
    s = answer.strip().replace("−", "-")
    for _ in range(3):  # peel nested wrappers such as "$\boxed{...}$"
        before = s
        s = s.strip().rstrip(".").strip()
        for open_, close in _DELIMS:
            if s.startswith(open_) and s.endswith(close) and len(s) > len(open_) + len(close):
                s = s[len(open_):-len(close)].strip()
        m = _BOX_RE.match(s)
        if m and s[m.end():m.end() + 1] == "{" and _matching_brace(s, m.end()) == len(s) - 1:
            s = s[m.end() + 1:-1].strip()
        if s == before:
            break
    for token in _DROP:
        s = s.replace(token, " " if token.startswith("\\") and token[1:].isalpha() else "")
    s = s.replace("{,}", ",").replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    s = s.replace(r"\$", "").replace("$", "").replace(r"\%", "%")
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d)|\\sqrt\s+([a-zA-Z])", lambda m: r"\sqrt{" + (m.group(1) or m.group(2)) + "}", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*(?=[^=]+$)", "", s)  # "x = 5" -> "5"
    return re.sub(r"\s+", " ", s).strip()


_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm)\s*\{([^{}]*)\}")
_MAX_NUMBER_CHARS = 200  # longer strings go to math-verify (and int() refuses >4300 digits)
_NOT_UNITS = {"pi", "sqrt", "frac", "cdot", "times", "or", "and", "infty"}
_INT_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_DEC_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{\s*([+-]?\d+)\s*\}\{\s*([+-]?\d+)\s*\}")
_SLASH_RE = re.compile(r"([+-]?\d+)\s*/\s*([+-]?\d+)")


def _as_number(clean: str) -> Fraction | None:
    """The exact rational value of a plain numeric answer ("1,000", "-0.5", "\\frac{3}{4}",
    "3/4", "10%", "72 dollars"), or None for anything that needs symbolic comparison."""
    if len(clean) > _MAX_NUMBER_CHARS:
        return None
    s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1) + " ", clean).strip()
    s = re.sub(r"\s*(?:%|percent)$", "", s)
    m = re.fullmatch(r"(.*?[\d}])\s*([a-zA-Z][a-zA-Z\s./]*)", s)
    if m:  # trailing unit words: "72 dollars", "5 km/h"; one letter ("2x") is a variable, not a unit
        tokens = re.findall(r"[a-zA-Z]+", m.group(2))
        if any(len(t) == 1 or t.lower() in _NOT_UNITS for t in tokens):
            return None
        s = m.group(1)
    s = s.strip()
    if _INT_RE.fullmatch(s):
        return Fraction(int(s.replace(",", "")))
    if _DEC_RE.fullmatch(s):
        return Fraction(s)
    for regex in (_FRAC_RE, _SLASH_RE):
        f = regex.fullmatch(s)
        if f:
            sign, num, den = (f.groups() if regex is _FRAC_RE else ("", *f.groups()))
            if int(den) == 0:
                return None
            value = Fraction(int(num), int(den))
            return -value if sign == "-" else value
    return None


def _canon_text(clean: str) -> str:
    """A spacing-insensitive key for answers compared as text ("A(\\pm 1, 0)" == "A(\\pm1,0)")."""
    return re.sub(r"\s+", "", _TEXT_CMD_RE.sub(lambda m: m.group(1), clean))


def normalize_gold(answer: str) -> str:
    """A gold answer in one canonical spelling: the text after a GSM8K ``####``, without math
    delimiters or dollar signs, and integers without leading zeros or thousands commas."""
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool) and math.isfinite(answer):
        answer = str(int(answer)) if float(answer).is_integer() else str(answer)
    if not isinstance(answer, str):
        raise TypeError(f"gold answer {answer!r} is a {type(answer).__name__}; pass the answer as a string")
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    s = _clean(answer)
    value = _as_number(s)
    if value is not None and value.denominator == 1 and _INT_RE.fullmatch(s.replace(" ", "")):
        return str(value.numerator)
    return s



# --------------------------------------------------------------------------- comparison


def _split_top_level(s: str) -> list[str]:
    """Split at commas outside brackets: "\\lambda=2, A(\\pm 1, 0)" -> two parts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    return [*parts, s[start:].strip()]


def _rounded_repeating(a: str, va: Fraction, b: str, vb: Fraction) -> bool:
    """True when one side is a decimal and the other a fraction with no finite decimal form
    (0.333333 vs 1/3): math-verify's rounding rule decides those, not exact equality."""
    def repeating(v: Fraction) -> bool:
        d = v.denominator
        for prime in (2, 5):
            while d % prime == 0:
                d //= prime
        return d != 1
    return ("." in a and repeating(vb)) or ("." in b and repeating(va))


def _compare(gold: str, pred: str, timeout_s: float, symmetric: bool = False) -> str:
    """Verdict on two cleaned answers: exact numbers first, then text, then math-verify."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} must be positive (seconds for one comparison)")
    g, p = _as_number(gold), _as_number(pred)
    if g is not None and p is not None and (g == p or not _rounded_repeating(gold, g, pred, p)):
        return "match" if g == p else "mismatch"
    if _canon_text(gold) == _canon_text(pred):
        return "match"
    gold_parts = _split_top_level(gold)
    if len(gold_parts) > 1 and any("=" in part for part in gold_parts):
        # math-verify reads "\lambda=2\sqrt{2}, A(\pm 1, 0)" as 0; compare such answers part by part
        pred_parts = _split_top_level(pred)
        if len(pred_parts) != len(gold_parts):
            return "mismatch"
        verdicts = [_compare(_clean(a), _clean(b), timeout_s, symmetric) for a, b in zip(gold_parts, pred_parts)]
        if all(v == "match" for v in verdicts):
            return "match"
        return "timeout" if "timeout" in verdicts else "mismatch"
    return slow_compare(gold, pred, timeout_s, symmetric)


def _missing(x: object) -> bool:
    """None or a float NaN: how pandas spells "no answer" once a column has been stored."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def answers_equivalent(a: str, b: str, *, timeout_s: float = 5.0) -> bool:
    """True if two answers (raw, LaTeX or GSM8K ``####`` form) are mathematically equal; False
    when they differ, cannot be parsed, run past ``timeout_s``, or either is missing (None/NaN)."""
    if _missing(a) or _missing(b):
        return False
    return _compare(normalize_gold(a), normalize_gold(b), timeout_s, symmetric=True) == "match"


def grade(output: str, gold: str, *, timeout_s: float = 5.0) -> Grade:
    """Grade one model output against its gold answer; bad outputs get a reason, never an error."""
    if not isinstance(output, str):
        return Grade(False, None, "no_output")
    gold_clean = normalize_gold(gold)
    extracted = extract_answer(output)
    if not gold_clean:
        return Grade(False, extracted, "unparseable_gold")
    if extracted is None:
        return Grade(False, None, "no_answer")
    verdict = _compare(gold_clean, _clean(extracted), timeout_s)
    return Grade(verdict == "match", extracted, verdict)


def majority_vote(answers: Sequence[str | None], *, timeout_s: float = 5.0) -> str | None:
    """The most common answer, counting equivalent spellings ("0.5", "\\frac{1}{2}") together,
    as that group's first spelling. A tie at the top is no majority (None), so the label never
    depends on the order of the samples; None too when no sample has an answer."""
    groups: list[list] = []  # [first spelling, its cleaned form, exact value or None, count]
    by_value: dict[Fraction, list] = {}
    for a in answers:
        if _missing(a):
            continue
        clean = normalize_gold(a)
        value = _as_number(clean)
        group = by_value.get(value) if value is not None else None
        if group is None:
            group = next((g for g in groups if (value is None or g[2] is None)
                          and _compare(g[1], clean, timeout_s, symmetric=True) == "match"), None)
        if group is None:
            group = [a, clean, value, 0]
            groups.append(group)
            if value is not None:
                by_value[value] = group
        group[3] += 1
    if not groups:
        return None
    top = max(g[3] for g in groups)
    leaders = [g for g in groups if g[3] == top]
    return leaders[0][0] if len(leaders) == 1 else None


def grade_frame(df: pd.DataFrame, output_col: str = "text", gold_col: str = "answer") -> pd.DataFrame:
    """A copy of ``df`` with columns extracted, correct and grade_reason, one grade per row."""
    missing = [c for c in (output_col, gold_col) if c not in df.columns]
    if missing:
        raise KeyError(f"grade_frame needs columns {missing}; the frame has {list(df.columns)}. "
                       "Pass output_col=/gold_col= to name the model-output and gold-answer columns")
    grades = [grade(o, g) for o, g in zip(df[output_col], df[gold_col])]
    out = df.copy()
    out["extracted"] = pd.Series([g.extracted for g in grades], index=df.index, dtype=object)
    out["correct"] = pd.Series([g.correct for g in grades], index=df.index, dtype=bool)
    out["grade_reason"] = pd.Series([g.reason for g in grades], index=df.index, dtype=object)
    return out
