"""Grading code: pull the program out of a model's reply (fenced block or bare code), join it
with the problem's tests, run it in the sandbox (never in our process), and keep the verdict's
reason: pass, syntax_error, assertion, exception, timeout, memory, forbidden, exit_before_tests,
output_limit, crash, or no_code when the reply holds no program at all."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from . import sandbox

#: Every grading verdict: the sandbox's, and no_code when a reply holds no program.
REASONS = (*sandbox.REASONS, "no_code")
#: Limits for graded programs: HumanEval's tests finish in well under a second.
GRADING_LIMITS = sandbox.Limits(wall_s=6.0, cpu_s=4, memory_mb=512, file_mb=1)

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START_RE = re.compile(r"^(?:def |class |import |from \S+ import |@)", re.M)
_IMPORT_LINE_RE = re.compile(r"^(?:from\s+[\w.]+\s+import\s+[^\n]+|import\s+[\w., ]+)$", re.M)


@dataclass(frozen=True)
class CodeGrade:
    correct: bool
    code: str | None
    reason: str
    detail: str = ""


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(text: str, entry_point: str = "") -> str | None:
    """The program in a reply: the fenced block that defines ``entry_point`` (else the longest
    Python block; an unclosed last fence, as when generation stopped at the token limit, runs to
    the end), or, without fences, the reply from its first line of code on. None if no code."""
    if not isinstance(text, str) or not text.strip():
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    blocks = [(lang, b) for lang, b in blocks if lang in ("", "python", "py", "python3") and b.strip()]
    if blocks:
        defines = [b for _, b in blocks if entry_point and re.search(rf"^\s*(?:def|class)\s+{re.escape(entry_point)}\b", b, re.M)]
        return (defines[0] if defines else max((b for _, b in blocks), key=len)).strip("\n")
    if _parses(text):
        return text.strip("\n")
    m = _CODE_START_RE.search(text)
    return text[m.start():].strip("\n") if m else None


def _prelude(question: str) -> str:
    """Import lines of a HumanEval-style prompt (``from typing import List``), put before the
    candidate so a complete function that forgot them is judged on its logic."""
    return "\n".join(_IMPORT_LINE_RE.findall(question))


def is_stdio(tests: str, entry_point: str) -> bool:
    return not entry_point and tests.lstrip().startswith("[")


def _stdio_program(code: str, cases_json: str) -> str:
    """A harness that runs the candidate as a script once per case, stdin from the case, and
    compares the printed tokens with the expected output."""
    return (
        "import io as _io, sys as _sys, json as _json\n"
        f"_src = {code!r}\n"
        f"_cases = _json.loads({cases_json!r})\n"
        "_code = compile(_src, '<program>', 'exec')\n"
        "for _i, _c in enumerate(_cases):\n"
        "    _sys.stdin = _io.TextIOWrapper(_io.BytesIO(_c['input'].encode()))\n"
        "    _out, _old = _io.StringIO(), _sys.stdout\n"
        "    _sys.stdout = _out\n"
        "    try:\n"
        "        exec(_code, {'__name__': '__main__'})\n"
        "    finally:\n"
        "        _sys.stdout = _old\n"
        "    assert _out.getvalue().split() == _c['output'].split(), "
        "f'case {_i}: printed {_out.getvalue()[:200]!r}, expected {_c[\"output\"][:200]!r}'\n")


def build_program(code: str, question: str, tests: str, entry_point: str) -> str:
    """The program the sandbox runs: prelude, candidate, then the tests (or the stdin harness)."""
    if is_stdio(tests, entry_point):
        json.loads(tests)  # a broken test table is our error, not the model's
        return _stdio_program(code, tests)
    return f"{_prelude(question)}\n\n{code}\n\n\n{tests}\n"


def grade_codes(outputs: Sequence[str], problems: pd.DataFrame, problem_ids: Sequence[str], *,
                limits: sandbox.Limits = GRADING_LIMITS, workers: int | None = None,
                progress: bool = False) -> list[CodeGrade]:
    """Grade each output against its problem's tests, running the programs in parallel."""
    by_id = problems.set_index("problem_id") if "problem_id" in problems.columns else problems
    missing = sorted(set(problem_ids) - set(by_id.index))
    if missing:
        raise KeyError(f"no problem rows for {missing[:5]}")
    grades: list[CodeGrade | None] = [None] * len(outputs)
    programs, where = [], []
    for i, (text, pid) in enumerate(zip(outputs, problem_ids)):
        p = by_id.loc[pid]
        code = extract_code(text, p["entry_point"])
        if code is None:
            grades[i] = CodeGrade(False, None, "no_code", "the reply holds no program")
            continue
        programs.append(build_program(code, p["question"], p["tests"], p["entry_point"]))
        where.append((i, code))
    for (i, code), r in zip(where, sandbox.run_many(programs, limits, workers, progress=progress)):
        grades[i] = CodeGrade(r.passed, code, r.status, r.detail)
    return grades


def grade_code_frame(df: pd.DataFrame, problems: pd.DataFrame, output_col: str = "text", **kw) -> pd.DataFrame:
    """A copy of ``df`` (rows with problem_id and an output) with ``extracted`` (None: a program
    has no short answer to vote on; the code is in the output), ``correct`` and ``grade_reason``."""
    grades = grade_codes(df[output_col].tolist(), problems, df["problem_id"].tolist(), **kw)
    out = df.copy()
    out["extracted"] = pd.Series([None] * len(df), index=df.index, dtype=object)
    out["correct"] = pd.Series([g.correct for g in grades], index=df.index, dtype=bool)
    out["grade_reason"] = pd.Series([g.reason for g in grades], index=df.index, dtype=object)
    return out


def reference_check(problems: pd.DataFrame, **kw) -> pd.DataFrame:
    """Run each problem's reference solution (its ``answer``) against its own tests: every one
    must pass, or the problem (or the sandbox) is broken."""
    has_ref = problems[~problems["answer"].str.startswith("(no reference")]
    grades = grade_codes([f"```python\n{a}\n```" for a in has_ref["answer"]], has_ref,
                         has_ref["problem_id"].tolist(), **kw)
    return pd.DataFrame({"problem_id": has_ref["problem_id"].to_numpy(), "correct": [g.correct for g in grades],
                         "reason": [g.reason for g in grades], "detail": [g.detail for g in grades]})
