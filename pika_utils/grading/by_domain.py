"""The one place that picks a grader by the problem's domain: maths answers are compared
(``maths``), programs are run against their tests in the sandbox (``code``)."""
from __future__ import annotations

import pandas as pd

from . import code, maths


def domains(df: pd.DataFrame) -> pd.Series:
    """Each problem's domain ('math' where the table has no domain column)."""
    return df["domain"].fillna("math") if "domain" in df.columns else pd.Series("math", index=df.index)


def grade_frame(df: pd.DataFrame, problems: pd.DataFrame, output_col: str = "text",
                gold_col: str = "answer") -> pd.DataFrame:
    """A copy of ``df`` (one row per output, with problem_id) with extracted, correct and
    grade_reason, each row graded by its problem's domain."""
    problems = problems if "problem_id" in problems.columns else problems.reset_index()
    domain = df["problem_id"].map(dict(zip(problems["problem_id"], domains(problems)))).fillna("math")
    is_code = domain.eq("code").to_numpy()
    if not is_code.any():
        return maths.grade_frame(df, output_col=output_col, gold_col=gold_col)
    parts = [code.grade_code_frame(df[is_code], problems, output_col=output_col)]
    if (~is_code).any():
        parts.append(maths.grade_frame(df[~is_code], output_col=output_col, gold_col=gold_col))
    return pd.concat(parts).loc[df.index]
