"""The book's verdicts: each chapter records the paper's claims it tests (our estimate with its 95%
interval and the rule that decides it), and the closing chapter reads them back into one table.
A verdict is computed from the interval, never written by hand: reproduced, not reproduced, or
undecided (the interval is too wide to say)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..core import store

VERDICTS = ("reproduced", "not reproduced", "undecided")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, tested at this book's scale.

    ``direction`` +1: the paper says the quantity exceeds ``null``; -1: that it stays below it.
    ``margin``: the smallest effect that matters; an interval that excludes every effect of at
    least that size in the paper's direction means *not reproduced*."""

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

    @property
    def verdict(self) -> str:
        return decide(self.estimate, self.low, self.high, self.null, self.direction, self.margin)


def decide(estimate: float, low: float, high: float, null: float = 0.0, direction: int = 1,
           margin: float = 0.02) -> str:
    """Reproduced when the whole interval lies on the paper's side of ``null``; not reproduced
    when it excludes every effect of size ``margin`` or more on that side; undecided otherwise
    (and whenever the estimate or interval is missing)."""
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in (estimate, low, high)):
        return "undecided"
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    lo, hi = (low - null, high - null) if direction == 1 else (null - high, null - low)
    if lo > 0:
        return "reproduced"
    if hi < margin:
        return "not reproduced"
    return "undecided"


def _folder(profile: str) -> Path:
    return store.data_dir() / "verdicts" / "".join(c if c.isalnum() or c in "-_." else "_" for c in str(profile))


def record(profile: str, claim: Claim) -> Path:
    """Store one tested claim for ``profile`` (the last run of a chapter replaces its claims)."""
    return store.write_json(_folder(profile) / f"{claim.claim_id}.json",
                            {**asdict(claim), "verdict": claim.verdict, "recorded": store.now_iso(),
                             "versions": store.versions()})


def table(profile: str) -> pd.DataFrame:
    """Every claim recorded for ``profile``, in chapter order, with its verdict."""
    files = sorted(_folder(profile).glob("*.json"))
    rows = [store.read_json(f) for f in files]
    if not rows:
        return pd.DataFrame(columns=["chapter", "claim", "paper", "estimate", "low", "high", "verdict"])
    df = pd.DataFrame(rows)
    df["verdict"] = [decide(r.estimate, r.low, r.high, r.null, r.direction, r.margin) for r in df.itertuples()]
    return df.sort_values(["chapter", "claim_id"]).reset_index(drop=True)
