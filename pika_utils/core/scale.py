"""Whether a test set is large enough to decide a claim at all.

A claim about a binary outcome (a program passes or not, a failure is steerable or not) rests on
the problems of its rarer outcome: with five failing test problems no interval can separate a
probe's AUROC of 0.85 from chance. Chapters whose profile gives fewer than ``MIN_PER_OUTCOME``
problems of some outcome say so and record the claim as not tested at this scale (with what
would decide it), instead of printing intervals that span everything."""
from __future__ import annotations

import math
from typing import Mapping

#: The fewest problems of each outcome a claim is tested on (the issue's rule of thumb: with 30 of
#: each, a 95% AUROC interval is about +-0.1 wide, narrow enough to tell 0.85 from 0.5).
MIN_PER_OUTCOME = 30


def shortfall(counts: Mapping[str, int], min_each: int = MIN_PER_OUTCOME) -> str | None:
    """None when every outcome in ``counts`` has at least ``min_each`` problems; otherwise one
    clause naming every count and the rule, e.g. '2 passing and 4 failing test problems (at
    least 30 of each are needed)'."""
    if min_each < 1:
        raise ValueError(f"min_each must be a positive number of problems, got {min_each}")
    if counts and all(int(v) >= min_each for v in counts.values()):
        return None
    parts = [f"{int(v)} {k}" for k, v in counts.items()] or ["no problems"]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"
    return f"{listed} (at least {min_each} of each are needed)"


def problems_needed(rate: float, fraction: float = 1.0, min_each: int = MIN_PER_OUTCOME) -> int | None:
    """How many problems a profile must hold so that a split taking ``fraction`` of them has
    ``min_each`` of the rarer outcome, when that outcome occurs at ``rate``; None when the rate
    is 0 or 1 (no number of such problems would do: the outcome never occurs)."""
    rarer = min(float(rate), 1.0 - float(rate))
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not rarer > 0:  # 0, or NaN (no problems measured)
        return None
    return int(math.ceil(round(min_each / (rarer * fraction), 6)))  # 1 - 0.9 is not 0.1 in floating point
