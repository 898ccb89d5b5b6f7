"""The best single member: the one reference every router (and every intervention rule) is
compared with, chosen by ONE rule on the data it is given.

Why a module of its own: the book had four copies of this choice and a fifth tie rule, and some
copies chose on all outcomes or on the test split, so the reference a router was scored against
had itself seen the test outcomes. Callers pass the outcomes the choice may see (a training split,
or the training folds of a cross-fit), never the problems the comparison is scored on.

The rule: the highest accuracy; among members whose accuracies are equal (to 1e-12), the lowest
mean cost; among those, the first in the order given (a per-member table's row order; for long
outcomes, members sorted by name)."""
from __future__ import annotations

import numpy as np
import pandas as pd

#: Accuracies closer than this are equal (means over the same problems, summed in another order).
TIE_TOL = 1e-12


def best_of(table: pd.DataFrame, *, accuracy: str = "accuracy", cost: str | None = "cost",
            name: str = "member") -> pd.Series:
    """The best row of a per-member (or per-arm) table with ``name`` and ``accuracy`` columns
    and optionally ``cost`` (``cost=None``: no cost, ties go to the first row). Refused when the
    table is empty or every accuracy is missing."""
    need = [name, accuracy] + ([cost] if cost else [])
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"best_of: the table lacks column(s) {missing}; it has {list(table.columns)}")
    t = table.reset_index(drop=True)
    acc = pd.to_numeric(t[accuracy], errors="coerce").to_numpy(float)
    if not len(t) or not np.isfinite(acc).any():
        raise ValueError("best_of: no member has an accuracy to choose on (an empty table, or every accuracy NaN)")
    top = np.nanmax(acc)
    tied = np.flatnonzero(np.isfinite(acc) & (acc >= top - TIE_TOL))
    if cost and len(tied) > 1:
        c = pd.to_numeric(t.loc[tied, cost], errors="coerce").to_numpy(float)
        c = np.where(np.isfinite(c), c, np.inf)
        tied = tied[c <= c.min()]
    return t.loc[int(tied[0])]


def best_member(outcomes: pd.DataFrame, *, cost: str = "cost") -> pd.Series:
    """The best member on long outcomes (``member, problem_id, correct`` and ``cost``): its
    ``member``, ``accuracy``, mean ``cost`` and the ``n`` problems it was chosen on. Pass only
    the outcomes the choice may see (e.g. ``outcomes[outcomes['split'] == 'train']``)."""
    need = ["member", "problem_id", "correct", cost]
    missing = [c for c in need if c not in outcomes.columns]
    if missing:
        raise ValueError(f"best_member: outcomes lack column(s) {missing}; they have {list(outcomes.columns)}")
    if outcomes.empty:
        raise ValueError("best_member: no outcomes to choose on (is the split empty?)")
    per = (outcomes.assign(correct=outcomes["correct"].astype(float))
           .groupby("member", sort=True)
           .agg(accuracy=("correct", "mean"), cost=(cost, "mean"), n=("problem_id", "nunique"))
           .reset_index())
    return best_of(per)
