"""A user's graded outcomes: one file per member (``read_outcomes_file``), or one file of several
members (``read_outcome_log``, a ``member`` column: what ``pika route --evaluate`` reads). Every
broken rule is an ``InputError`` naming the file, the column and the rows (counted from 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .files import InputError, _rows, near_misses, read_table
from .sources import _norm_question

#: Columns of a user's outcomes file: one of the problem keys, the grade, and what it cost.
OUTCOME_KEYS = ("problem_id", "question")
OUTCOME_OPTIONAL = ("response", "output_tokens", "input_tokens")


_GRADES = {"true": 1, "false": 0, "1": 1, "0": 0}


def _grade(v) -> int | None:
    """A grade as 0/1: a boolean, the number 0 or 1, or that as text (a CSV cell); else None."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer, float, np.floating)) and v in (0, 1):
        return int(v)
    return _GRADES.get(v.strip().lower()) if isinstance(v, str) else None


def read_outcomes_file(path: str | Path, problems: pd.DataFrame, *, name: str | None = None) -> pd.DataFrame:
    """A user's graded outcomes, one row per problem: ``problem_id`` or ``question`` (matched to
    ``problems``), ``correct`` (true/false or 0/1), and ``response`` or ``output_tokens``. Every
    broken rule is an ``InputError`` naming the file, the column and the rows (counted from 1)."""
    path = Path(path)
    df = read_table(path, what=f"outcomes file of {name or path.stem}")
    return check_outcomes(df, problems, where=str(path), csv=path.suffix.lower() == ".csv")


def check_outcomes(df: pd.DataFrame, problems: pd.DataFrame, *, where: str, csv: bool = False,
                   by: str | None = None) -> pd.DataFrame:
    """``read_outcomes_file``'s rules on a table already read; with ``by`` (a column such as
    ``member``), one graded outcome per problem *and* value of ``by``, which the result keeps."""
    df = df.reset_index(drop=True)
    keys = [k for k in OUTCOME_KEYS if k in df.columns]
    known = (*OUTCOME_KEYS, "correct", *OUTCOME_OPTIONAL, *((by,) if by else ()))
    near = near_misses(df.columns, known)
    hint = "".join(f"; did you mean {k!r} for {c!r}?" for c, k in near.items())
    if not keys or "correct" not in df.columns or not any(c in df.columns for c in ("response", "output_tokens")) \
            or (by and by not in df.columns):
        raise InputError(f"{where}: an outcomes file needs a problem key ({' or '.join(OUTCOME_KEYS)}, e.g. "
                         "'math500-007'), 'correct', and 'response' or 'output_tokens'"
                         + (f", and {by!r}" if by else "") + f"; it has columns {list(df.columns)}{hint}")
    if near:  # a column that would be ignored but looks like a known one
        raise InputError(f"{where}: column(s) " + ", ".join(f"{c!r} (did you mean {k!r}?)" for c, k in near.items())
                         + "; rename them, or remove them if they are something else")
    errors: list[str] = []

    def rows(mask) -> str:  # a file's rows count from 1
        return _rows(df, np.asarray(mask, dtype=bool), None, first_row=1)

    if csv:  # a CSV's cells are text: an empty cell is missing
        df = df.replace("", None)
    grade = df["correct"].map(_grade)
    if grade.isna().any():
        errors.append(f"column 'correct' must be true/false or 0/1: {rows(grade.isna())}")
    df = df.assign(correct=grade)
    if "output_tokens" in df.columns:
        t = pd.to_numeric(df["output_tokens"], errors="coerce")
        bad = df["output_tokens"].notna() & ~(t.notna() & (t >= 0) & (t == np.floor(t.fillna(0))))
        if bad.any():
            errors.append(f"column 'output_tokens' must be a whole number >= 0: {rows(bad)}")
    if "input_tokens" in df.columns:
        t = pd.to_numeric(df["input_tokens"], errors="coerce")
        bad = df["input_tokens"].notna() & ~(t.notna() & (t >= 0) & (t == np.floor(t.fillna(0))))
        if bad.any():
            errors.append(f"column 'input_tokens' must be a whole number >= 0 (or empty: the question's tokens): {rows(bad)}")
    if "response" in df.columns:
        bad = df["response"].notna() & ~df["response"].map(lambda v: isinstance(v, str))
        if bad.any():
            errors.append(f"column 'response' must be text: {rows(bad)}")
    cost_missing = pd.Series(True, index=df.index)
    for c in ("response", "output_tokens"):
        if c in df.columns:
            cost_missing &= df[c].isna()
    if cost_missing.any():
        errors.append(f"neither 'response' nor 'output_tokens' is given (the cost is unknown): {rows(cost_missing)}")
    key = "problem_id" if "problem_id" in df.columns else "question"
    if key == "problem_id":
        ids = df["problem_id"].astype(str)
        unknown = ~ids.isin(set(problems["problem_id"]))
    else:
        by_q = {_norm_question(q): pid for q, pid in zip(problems["question"], problems["problem_id"])}
        ids = df["question"].map(lambda q: by_q.get(_norm_question(q)) if isinstance(q, str) else None)
        unknown = ids.isna()
    if unknown.any():
        errors.append(f"column {key!r}: {int(unknown.sum())} row(s) match no problem of the set "
                      f"({len(problems)} problems): {rows(unknown)}")
    if by:
        bad = df[by].isna() | ~df[by].map(lambda v: isinstance(v, str) and bool(v.strip()))
        if bad.any():
            errors.append(f"column {by!r} must name the member (text): {rows(bad)}")
    dup = (pd.DataFrame({"k": ids, "b": df[by].astype(str).str.strip()}) if by else pd.DataFrame({"k": ids})
           ).duplicated(keep=False)
    dup = dup.to_numpy() & ~np.asarray(unknown, dtype=bool)
    if dup.any():
        errors.append(f"column {key!r}: the same problem appears more than once"
                      + (f" for one {by}" if by else "") + f" (one graded outcome per problem): {rows(dup)}")
    if errors:
        raise InputError(f"{where}: " + "; ".join(errors))
    out = pd.DataFrame({"problem_id": ids.to_numpy(), "correct": df["correct"].astype(int).to_numpy()})
    if by:
        out.insert(0, by, df[by].astype(str).str.strip().to_numpy())
    for c in OUTCOME_OPTIONAL:
        if c in df.columns:
            out[c] = df[c].to_numpy()
    return out
