"""The one place that picks a grader by the problem's domain: maths answers are compared
(``grading``), programs are run against their tests in the sandbox (``code_grading``)."""
from __future__ import annotations

import pandas as pd

from . import code_grading, grading
from .problem_table import domains


def grade_frame(df: pd.DataFrame, problems: pd.DataFrame, output_col: str = "text",
                gold_col: str = "answer") -> pd.DataFrame:
    """A copy of ``df`` (one row per output, with problem_id) with extracted, correct and
    grade_reason, each row graded by its problem's domain."""
    problems = problems if "problem_id" in problems.columns else problems.reset_index()
    domain = df["problem_id"].map(dict(zip(problems["problem_id"], domains(problems)))).fillna("math")
    code = domain.eq("code").to_numpy()
    if not code.any():
        return grading.grade_frame(df, output_col=output_col, gold_col=gold_col)
    parts = [code_grading.grade_code_frame(df[code], problems, output_col=output_col)]
    if (~code).any():
        parts.append(grading.grade_frame(df[~code], output_col=output_col, gold_col=gold_col))
    return pd.concat(parts).loc[df.index]
