"""One grader for every chapter: pull a model's final answer out of its text, compare it with gold.

Integers, decimals and plain fractions are compared exactly in-process (the fast path the rollout
engine lives on). Everything else goes to math-verify in a long-lived worker subprocess with a hard
deadline: math-verify's own timeouts use ``signal.alarm``, which fails outside the main thread.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import numbers
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import pandas as pd


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


# --------------------------------------------------------------------------- math-verify worker

_REPO_ROOT = Path(__file__).resolve().parent.parent
_STARTUP_S = 120.0  # first import of sympy on a cold, busy 2-core machine
_GRACE_S = 0.5  # lets the worker's own soft timeout win before the hard kill


def _worker_main() -> None:
    """Serve comparisons line by line on stdin/stdout (JSON). Runs in the worker's main thread,
    so math-verify's signal-based timeouts work there as a soft limit."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything sympy prints goes to stderr, never into the protocol
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def parsed(s: str, soft: int) -> list:
        latex = s if any(t in s for t in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"
        try:
            return parse(latex, extraction_config=config, parsing_timeout=soft, raise_on_error=True)
        except Exception:  # noqa: BLE001 - an unparseable string is an answer, not a crash
            return []

    def compare(req: dict) -> str:
        soft = req["soft"]
        try:
            gold = parsed(req["gold"], soft)
            if not gold:
                return "unparseable_gold"
            pred = parsed(req["pred"], soft)
            if not pred:
                return "unparseable_answer"
            pairs = [(gold, pred), (pred, gold)] if req["symmetric"] else [(gold, pred)]
            for g, p in pairs:
                try:
                    if verify(g, p, timeout_seconds=soft, raise_on_error=True):
                        return "match"
                except Exception:  # noqa: BLE001 - sympy errors mean "not shown equal"
                    continue
            # only the raw-string fallback came back: the text was not read as mathematics
            if all(isinstance(x, str) for x in gold):
                return "unparseable_gold"
            return "unparseable_answer" if all(isinstance(x, str) for x in pred) else "mismatch"
        except TimeoutException:
            return "timeout"

    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a notebook interrupt is for the kernel; we end with stdin
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        proto.write(json.dumps({"status": compare(json.loads(line))}) + "\n")


class _Worker:
    """A math-verify subprocess shared by all threads; killed and restarted when it overruns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = -1
        self._buf = b""
        self.requests = 0  # how many comparisons reached math-verify (the fast path skips it)
        self.restarts = 0

    def _readline(self, deadline: float) -> str | None:
        """One protocol line, or None when the deadline passes or the worker has died."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def _start(self) -> None:
        paths = [str(_REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        boot = "from pika_utils.grading import _worker_main; _worker_main()"
        self._proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
        self._owner_pid, self._buf = os.getpid(), b""
        if self._readline(time.monotonic() + _STARTUP_S) is None:
            self.stop()
            raise RuntimeError(f"the math-verify grading worker did not start ({sys.executable}); "
                               "check that `python -c 'import math_verify'` works in this environment")

    def stop(self) -> None:
        if self._proc is not None and self._owner_pid == os.getpid():
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def compare(self, gold: str, pred: str, timeout_s: float, *, symmetric: bool,
                soft_timeout_s: float | None = None) -> str:
        """math-verify's verdict on two cleaned answers, or "timeout" past ``timeout_s`` seconds."""
        request = {"gold": gold, "pred": pred, "symmetric": symmetric,
                   "soft": max(1, math.ceil(soft_timeout_s if soft_timeout_s is not None else timeout_s))}
        with self._lock:
            if self._proc is None or self._owner_pid != os.getpid() or self._proc.poll() is not None:
                if self._owner_pid != os.getpid():
                    self._proc = None  # inherited through fork: the parent's worker is not ours
                self._start()
            self.requests += 1
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
                line = self._readline(time.monotonic() + timeout_s + _GRACE_S)
            except OSError:  # the worker died between requests (e.g. killed for memory)
                line = None
            if line is None:
                crashed = self._proc.poll() is not None
                self.stop()
                self.restarts += 1
                return "verifier_crashed" if crashed else "timeout"
            return json.loads(line)["status"]


_WORKER = _Worker()
atexit.register(_WORKER.stop)
_CACHE: OrderedDict[tuple[str, str, bool], str] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 100_000
_DEFINITIVE = {"match", "mismatch", "unparseable_gold", "unparseable_answer"}


def _slow_compare(gold: str, pred: str, timeout_s: float, symmetric: bool) -> str:
    """math-verify through the worker, remembering definitive verdicts (never timeouts)."""
    key = (gold, pred, symmetric)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    status = _WORKER.compare(gold, pred, timeout_s, symmetric=symmetric)
    if status in _DEFINITIVE:
        with _CACHE_LOCK:
            _CACHE[key] = status
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return status


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
    return _slow_compare(gold, pred, timeout_s, symmetric)


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
    """The most common answer, counting equivalent spellings ("0.5", "\\frac{1}{2}") together;
    ties go to the answer seen first. Returns that group's first spelling, or None."""
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
    return max(groups, key=lambda g: g[3])[0]  # max keeps the first of equal counts


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
