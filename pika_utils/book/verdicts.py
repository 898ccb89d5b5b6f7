"""The book's verdicts: each chapter records the paper's claims it tests (our estimate with its 95%
interval, the number of problems or events it rests on, what it is compared with, and the rule
that decides it), and the closing chapter reads them back into one table. A verdict is computed
from the interval, never written by hand: reproduced, not reproduced, or undecided.

Three kinds of row. A *direction* claim (the effect lies on the paper's side of a null); a *size*
claim (the effect has the paper's size: its interval lies within the paper's range, give or take
a margin); a claim with a *condition* (a second comparison that must hold too, such as "at no
lower accuracy" beside "for less cost", or "better than the simpler rule that could explain it").
A comparison with a baseline that is constant on the test items says nothing beyond "above
chance", so it is refused (``EmptyComparison``) and recorded as *dropped*, with its reason."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import store
from ..core.metrics import is_constant

VERDICTS = ("reproduced", "not reproduced", "undecided")


class EmptyComparison(ValueError):
    """A claim against a baseline that is constant on the test items: it compares with chance."""


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, tested at this book's scale.

    ``direction`` +1: the paper says the quantity exceeds ``null``; -1: that it stays below it.
    ``margin``: the smallest effect that matters; an interval that excludes every effect of at
    least that size in the paper's direction means *not reproduced*. ``paper_low``/``paper_high``
    make it a size claim against the paper's range. ``condition``: a second comparison (keys
    quantity, estimate, low, high and optionally null, direction, margin) that must hold too, or a
    list of them.
    ``n``: the problems (or events) the interval rests on; ``versus``: what it is compared with."""

    claim_id: str
    chapter: str
    claim: str
    paper: str
    quantity: str
    estimate: float
    low: float
    high: float
    null: float = 0.0
    direction: int = 1
    margin: float = 0.02
    n: int | None = None
    note: str = ""
    versus: str = ""
    paper_low: float | None = None
    paper_high: float | None = None
    condition: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = field(default=None, hash=False)

    @property
    def kind(self) -> str:
        return kind_of(asdict(self))

    @property
    def verdict(self) -> str:
        return verdict_of(asdict(self))


def decide(estimate: float, low: float, high: float, null: float = 0.0, direction: int = 1,
           margin: float = 0.02) -> str:
    """Reproduced when the whole interval lies on the paper's side of ``null``; not reproduced
    when it excludes every effect of size ``margin`` or more on that side; undecided otherwise
    (and whenever the estimate or interval is missing)."""
    if not _finite(estimate, low, high):
        return "undecided"
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    lo, hi = (low - null, high - null) if direction == 1 else (null - high, null - low)
    if lo > 0:
        return "reproduced"
    if hi < margin:
        return "not reproduced"
    return "undecided"


def decide_size(estimate: float, low: float, high: float, paper_low: float | None, paper_high: float | None,
                margin: float = 0.05) -> str:
    """The paper's size: reproduced when the whole interval lies within its range widened by
    ``margin``; not reproduced when the interval misses the range altogether; undecided when it
    overlaps the range but is too wide to say (and whenever a number is missing)."""
    if not _finite(estimate, low, high):
        return "undecided"
    p_lo = -math.inf if paper_low is None else paper_low
    p_hi = math.inf if paper_high is None else paper_high
    if high < p_lo or low > p_hi:
        return "not reproduced"
    if low >= p_lo - margin and high <= p_hi + margin:
        return "reproduced"
    return "undecided"


def _field(row: Mapping[str, Any], key: str, default=None):
    """A stored claim's field, with None or NaN (a column a table filled in) read as missing."""
    v = row.get(key)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else v


def kind_of(row: Mapping[str, Any]) -> str:
    """'size' when the claim names the paper's range, else 'direction'."""
    return "size" if _field(row, "paper_low") is not None or _field(row, "paper_high") is not None else "direction"


def verdict_of(row: Mapping[str, Any]) -> str:
    """The verdict of a stored claim (a Claim's fields): its own rule, then its condition's; a
    condition that fails fails the claim, one that is undecided leaves it undecided."""
    def _get(key, default=None):
        return _field(row, key, default)

    if kind_of(row) == "size":
        own = decide_size(row["estimate"], row["low"], row["high"], _get("paper_low"), _get("paper_high"),
                          float(_get("margin", 0.05)))
    else:
        own = decide(row["estimate"], row["low"], row["high"], float(_get("null", 0.0)), int(_get("direction", 1)),
                     float(_get("margin", 0.02)))
    conds = row.get("condition")
    conds = [conds] if isinstance(conds, Mapping) else list(conds) if isinstance(conds, (list, tuple)) else []
    verdicts = [own] + [decide(c["estimate"], c["low"], c["high"], float(c.get("null", 0.0)), int(c.get("direction", 1)),
                               float(c.get("margin", 0.02))) for c in conds]
    if "not reproduced" in verdicts:
        return "not reproduced"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "undecided"


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) for v in values)


def _folder(profile: str) -> Path:
    return store.data_dir() / "verdicts" / "".join(c if c.isalnum() or c in "-_." else "_" for c in str(profile))


def _check(claim: Claim, baseline_scores) -> None:
    where = f"claim {claim.claim_id!r} ({claim.claim})"
    if claim.n is None or isinstance(claim.n, bool) or not isinstance(claim.n, (int, np.integer)) or claim.n < 1:
        raise ValueError(f"{where}: n must be the number of problems or events it rests on (a positive integer), "
                         f"got {claim.n!r}")
    for name in ("estimate", "low", "high"):
        v = getattr(claim, name)
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{where}: {name} must be a number (NaN where it cannot be computed), got {v!r}")
    if baseline_scores is not None and is_constant(baseline_scores):
        raise EmptyComparison(f"{where}: the baseline it is compared with ({claim.versus or 'unnamed'}) gives every "
                              "test item the same score, so the comparison only says 'above chance'; "
                              "record it with verdicts.drop instead")


def start_chapter(profile: str, chapter: str) -> None:
    """Forget what ``chapter`` recorded in an earlier run (claims and dropped ones alike), so a
    claim it no longer makes, or now drops, does not linger in the verdict table."""
    folder = _folder(profile)
    for f in [*folder.glob("*.json"), *(folder / "dropped").glob("*.json")]:
        if store.read_json(f).get("chapter") == chapter:
            f.unlink()


def record(profile: str, claim: Claim, baseline_scores: Sequence[float] | np.ndarray | None = None) -> Path:
    """Store one tested claim for ``profile`` (the last run of a chapter replaces its claims).
    Refused without ``n``, and (``EmptyComparison``) when ``baseline_scores``, the compared
    method's scores on the test items, are constant."""
    _check(claim, baseline_scores)
    folder = _folder(profile)
    (folder / "dropped" / f"{claim.claim_id}.json").unlink(missing_ok=True)
    row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) and k != "n" else v) for k, v in asdict(claim).items()}
    row["n"] = int(claim.n)
    return store.write_json(folder / f"{claim.claim_id}.json",
                            {**row, "kind": claim.kind, "verdict": claim.verdict, "recorded": store.now_iso(),
                             "versions": store.versions()})


def drop(profile: str, claim_id: str, chapter: str, claim: str, reason: str) -> Path:
    """Record that a claim was not tested, and why (a constant baseline, too few events...):
    chapter 11 counts these beside the verdicts, so nothing disappears without a word."""
    folder = _folder(profile)
    (folder / f"{claim_id}.json").unlink(missing_ok=True)
    return store.write_json(folder / "dropped" / f"{claim_id}.json",
                            {"claim_id": claim_id, "chapter": chapter, "claim": claim, "reason": reason,
                             "recorded": store.now_iso()})


def table(profile: str) -> pd.DataFrame:
    """Every claim recorded for ``profile``, in chapter order, with its kind and verdict."""
    rows = [store.read_json(f) for f in sorted(_folder(profile).glob("*.json"))]
    if not rows:
        return pd.DataFrame(columns=["chapter", "claim", "paper", "estimate", "low", "high", "n", "kind", "verdict"])
    df = pd.DataFrame(rows)
    for col, default in (("versus", ""), ("paper_low", None), ("paper_high", None), ("condition", None)):
        if col not in df:
            df[col] = default
    records = df.to_dict("records")
    df["kind"] = [kind_of(r) for r in records]
    df["verdict"] = [verdict_of(r) for r in records]
    return df.sort_values(["chapter", "claim_id"]).reset_index(drop=True)


def dropped(profile: str) -> pd.DataFrame:
    """The claims a chapter did not test, with its reason."""
    rows = [store.read_json(f) for f in sorted((_folder(profile) / "dropped").glob("*.json"))]
    return (pd.DataFrame(rows).sort_values(["chapter", "claim_id"]).reset_index(drop=True) if rows
            else pd.DataFrame(columns=["claim_id", "chapter", "claim", "reason"]))
