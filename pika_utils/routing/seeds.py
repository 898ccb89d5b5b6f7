"""Intervals that carry the refit: a cross-fitted estimate repeated over fold assignments.

A cross-fitted estimate depends on which problems share a fold: another fold seed refits every
probe (its layer, position, alpha and calibration) and every router setting on other training
sets. An interval that resamples problems under one fold assignment leaves that variance out.

The rule used here: the whole cross-fit is repeated for every fold seed; the estimate is the mean
over seeds; the interval is the percentile interval of the bootstrap **pooled across seeds**: each
draw resamples the problems once (the same draw for every seed, so paired comparisons stay
paired) and evaluates every seed's statistic on it, and the percentiles are taken over all
seeds x draws together. That pooled distribution is a mixture of the per-seed bootstrap
distributions, so its spread is the within-seed (problem) spread plus the spread between seeds:
it is the distribution of the estimate when both the problems and the fold assignment are drawn
at random, which is what a reader who re-runs the book with another seed faces. It was preferred
to the widest seed's interval, which ignores where the other seeds' estimates lie, and to a
refit per bootstrap draw, which would cost 1,000 cross-fits. To be sure that the interval covers
the seed spread whatever the draws, it is widened where needed to contain every seed's own
estimate (the hull); the chapter shows each seed's estimate and interval beside it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd


@dataclass
class SeedInterval:
    """An estimate over fold seeds: the mean, the seed-pooled interval, and each seed's own
    estimate and bootstrap interval (``per_seed``). Unpacks as (estimate, low, high)."""

    estimate: float
    low: float
    high: float
    n: int
    per_seed: pd.DataFrame = field(default_factory=pd.DataFrame)  # seed, estimate, low, high

    def __iter__(self) -> Iterator[float]:
        return iter((self.estimate, self.low, self.high))

    @property
    def spread(self) -> tuple[float, float]:
        """The lowest and highest seed's estimate."""
        return float(self.per_seed["estimate"].min()), float(self.per_seed["estimate"].max())


def pooled_interval(stats: Mapping[int, Callable[[np.ndarray], float]], n: int, *, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> SeedInterval:
    """``stats[s](idx)`` is fold seed ``s``'s statistic on the problems ``idx`` (positions 0..n-1
    in one shared order; a resample repeats some). See the module docstring for the rule."""
    if not stats:
        raise ValueError("no fold seeds: nothing to estimate")
    full = np.arange(n)
    point = {s: float(f(full)) for s, f in stats.items()}
    rng = np.random.default_rng(seed)
    draws = np.full((len(stats), n_boot), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        for i, f in enumerate(stats.values()):
            draws[i, b] = f(idx)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    rows = []
    for i, s in enumerate(stats):
        d = draws[i][np.isfinite(draws[i])]
        lo, hi = np.percentile(d, q) if len(d) else (np.nan, np.nan)
        rows.append({"seed": s, "estimate": point[s], "low": float(lo), "high": float(hi)})
    per_seed = pd.DataFrame(rows)
    pooled = draws[np.isfinite(draws)]
    est = float(np.nanmean(list(point.values())))
    if not len(pooled) or not np.isfinite(est):
        return SeedInterval(est, np.nan, np.nan, n, per_seed)
    lo, hi = (float(v) for v in np.percentile(pooled, q))
    finite = [v for v in point.values() if np.isfinite(v)]
    return SeedInterval(est, min(lo, *finite), max(hi, *finite), n, per_seed)
