"""The best single member: the one reference every router (and every intervention rule) is
compared with, chosen by ONE rule on the data it is given.

Why a module of its own: the book had four copies of this choice and a fifth tie rule, and some
copies chose on all outcomes or on the test split, so the reference a router was scored against
had itself seen the test outcomes. Callers pass the outcomes the choice may see (a training split,
or the training folds of a cross-fit), never the problems the comparison is scored on.

It lives on the ground floor so that every stage can call it: routers (``routing``) and the
recoverability chapter's interventions (``recoverability``, a sibling floor of ``routing``).

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


def fold_best(outcomes: pd.DataFrame, folds: pd.Series) -> pd.DataFrame:
    """Each problem's reference in a cross-fit: always answering with the best member chosen
    (``best_member``) on the OTHER folds, never on the problem's own fold. ``folds`` maps
    problem_id -> fold. One row per problem: problem_id, member, correct, cost, routing_cost (0),
    cost_with_routing (= cost), fold and ``best`` (the member its fold chose)."""
    need = ["member", "problem_id", "correct", "cost"]
    missing = [c for c in need if c not in outcomes.columns]
    if missing:
        raise ValueError(f"fold_best: outcomes lack column(s) {missing}; they have {list(outcomes.columns)}")
    fold_of = folds.reindex(outcomes["problem_id"]).to_numpy()
    if pd.isna(fold_of).any():
        raise ValueError(f"fold_best: {int(pd.isna(fold_of).sum())} outcome row(s) have a problem with no fold")
    out = []
    for f in sorted(pd.unique(fold_of)):
        held = fold_of == f
        member = best_member(outcomes[~held])["member"]
        rows = outcomes[held & (outcomes["member"] == member).to_numpy()]
        out.append(pd.DataFrame({"problem_id": rows["problem_id"].to_numpy(), "member": member,
                                 "correct": rows["correct"].astype(float).to_numpy(),
                                 "cost": rows["cost"].astype(float).to_numpy(), "routing_cost": 0.0,
                                 "cost_with_routing": rows["cost"].astype(float).to_numpy(), "fold": f, "best": member}))
    return pd.concat(out, ignore_index=True).sort_values("problem_id").reset_index(drop=True)
