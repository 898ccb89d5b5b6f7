"""Grading code, as EvalPlus does: pull the program out of a model's reply (fenced block or bare
code), run it in the operating-system sandbox on the tests' inputs only, take its return values
(or what it printed) back as plain data, and judge them outside it: with the problem's own tests
replayed in a process that holds no program code, or, for stdin/stdout problems, by comparing
printed tokens here. Reasons: pass, syntax_error, assertion (a wrong answer), exception, timeout,
memory, forbidden, exit_before_tests, output_limit, crash, or no_code when the reply holds none."""
from __future__ import annotations

import ast
import hashlib
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


def _context(question: str) -> str:
    """A question that is Python (a HumanEval prompt: imports, helpers, the signature) is run
    before the tests, as the original harness did; a question in prose is not."""
    return question if _parses(question) else ""


def is_stdio(tests: str, entry_point: str) -> bool:
    return not entry_point and tests.lstrip().startswith("[")


def call_kind(tests: str) -> str:
    """How the tests call the program: ``Solution().<entry>`` (LeetCode style) or the function."""
    return "method" if re.search(r"\bSolution\(\)", tests) else "function"


class TestTableError(ValueError):
    """A problem's tests could not be turned into cases: the problem's fault, never the model's."""


_RECORDED: dict[str, list[dict]] = {}


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def record_calls(problems: pd.DataFrame, limits: sandbox.Limits = GRADING_LIMITS, workers: int | None = None,
                 progress: bool = False) -> dict[str, list[dict]]:
    """The calls each function problem's tests make (arguments as plain data), recorded once per
    problem by running the tests with the reference solution (or, without one, a stand-in that
    lets every assert pass) in the sandbox. Keyed by problem_id; remembered for the process."""
    todo, keys = [], {}
    for p in problems.to_dict("records"):
        if is_stdio(p["tests"], p["entry_point"]):
            continue
        ref = None if str(p["answer"]).startswith("(no reference") else p["answer"]
        keys[p["problem_id"]] = k = _key(p["tests"], p["entry_point"], ref or "", p["question"])
        if k not in _RECORDED:
            todo.append((p["problem_id"], k, {"mode": "record", "tests": p["tests"], "context": _context(p["question"]),
                                               "entry_point": p["entry_point"], "reference": ref,
                                               "call": call_kind(p["tests"])}))
    runs = sandbox.run_many_raw([r for _, _, r in todo], limits, workers, progress=progress, desc="recording tests")
    for (pid, k, _), run in zip(todo, runs):
        r = sandbox.read_answer(run, limits)
        if r.status != "ok":
            raise TestTableError(f"problem {pid}: its tests could not be recorded with its reference solution "
                                 f"({r.status}: {r.detail or r.stdout[-300:]}); fix or drop the problem")
        _RECORDED[k] = r.answer["calls"]
    return {pid: _RECORDED[k] for pid, k in keys.items()}


def _stdio_cases(tests: str, pid: str) -> list[dict]:
    try:
        cases = json.loads(tests)
        assert isinstance(cases, list) and all(isinstance(c, dict) and isinstance(c.get("input"), str)
                                              and isinstance(c.get("output"), str) for c in cases)
    except (ValueError, AssertionError):
        raise TestTableError(f"problem {pid}: its tests are not a JSON list of {{input, output}} texts") from None
    return cases


def _compare_printed(results: list[dict], cases: list[dict]) -> tuple[str, str]:
    """Outside the sandbox: each case's printed tokens against the expected ones."""
    if not isinstance(results, list) or len(results) != len(cases):
        return "crash", f"the answer does not hold one printed text for each of the {len(cases)} cases"
    for i, (r, c) in enumerate(zip(results, cases)):
        if not isinstance(r, dict) or not isinstance(r.get("printed"), str):
            return "crash", f"case {i}: no printed text"
        if r.get("error"):
            return "exception", f"case {i}: {str(r['error'])[:300]}"
        if r["printed"].split() != c["output"].split():
            return "assertion", f"case {i}: printed {r['printed'][:200]!r}, expected {c['output'][:200]!r}"
    return "pass", ""


def grade_codes(outputs: Sequence[str], problems: pd.DataFrame, problem_ids: Sequence[str], *,
                limits: sandbox.Limits = GRADING_LIMITS, workers: int | None = None,
                progress: bool = False) -> list[CodeGrade]:
    """Grade each output against its problem's tests. The program runs in the sandbox on the test
    inputs only and hands back plain data; the tests judge that data in another sandboxed process
    that holds no program code. Expected outputs never meet the program."""
    by_id = problems.set_index("problem_id") if "problem_id" in problems.columns else problems
    missing = sorted(set(problem_ids) - set(by_id.index))
    if missing:
        raise KeyError(f"no problem rows for {missing[:5]}")
    grades: list[CodeGrade | None] = [None] * len(outputs)
    needed = by_id.loc[sorted(set(problem_ids))].reset_index()
    calls = record_calls(needed, limits, workers, progress=False) if len(outputs) else {}
    requests, where, cases = [], [], {}  # cases: each stdio problem's {input, output} list, parsed once
    for i, (text, pid) in enumerate(zip(outputs, problem_ids)):
        p = by_id.loc[pid]
        code = extract_code(text, p["entry_point"])
        if code is None:
            grades[i] = CodeGrade(False, None, "no_code", "the reply holds no program")
            continue
        if is_stdio(p["tests"], p["entry_point"]):
            if pid not in cases:
                cases[pid] = _stdio_cases(p["tests"], pid)
            requests.append({"mode": "stdio", "program": code, "inputs": [c["input"] for c in cases[pid]]})
        else:
            requests.append({"mode": "run", "program": f"{_prelude(p['question'])}\n\n{code}\n",
                             "entry_point": p["entry_point"], "calls": calls[pid], "call": call_kind(p["tests"])})
        where.append((i, pid, code))
    ran = [sandbox.read_answer(r, limits) for r in
           sandbox.run_many_raw(requests, limits, workers, progress=progress, desc="running programs")]
    checks, check_where = [], []
    for (i, pid, code), r in zip(where, ran):
        p = by_id.loc[pid]
        if r.status == "pass":  # the harness never says so in these modes: something else wrote it
            grades[i] = CodeGrade(False, code, "crash", "a forged answer (the program wrote its own verdict)")
        elif r.status != "ok":
            grades[i] = CodeGrade(False, code, r.status if r.status in REASONS else "crash", r.detail)
        elif is_stdio(p["tests"], p["entry_point"]):
            status, detail = _compare_printed(r.answer.get("results"), cases[pid])
            grades[i] = CodeGrade(status == "pass", code, status, detail)
        elif not isinstance(r.answer.get("results"), list) or len(r.answer["results"]) != len(calls[pid]):
            grades[i] = CodeGrade(False, code, "crash", "the answer does not hold one result per call")
        else:
            checks.append({"mode": "check", "tests": p["tests"], "entry_point": p["entry_point"],
                           "context": _context(p["question"]), "call": call_kind(p["tests"]),
                           "calls": calls[pid], "results": r.answer["results"]})
            check_where.append((i, code))
    for (i, code), run in zip(check_where, sandbox.run_many_raw(checks, limits, workers, progress=progress,
                                                                desc="checking answers")):
        r = sandbox.read_answer(run, limits)
        status = {"checker_error": "exception"}.get(r.status, r.status)
        grades[i] = CodeGrade(status == "pass", code, status if status in REASONS else "crash", r.detail)
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
