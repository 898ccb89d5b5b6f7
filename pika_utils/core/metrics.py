"""Metrics shared by every chapter: pass@k, majority accuracy, AUROC, Spearman, calibration,
bootstrap intervals. Pure functions on arrays, so every chapter computes a number the same way."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): chance that at least one of k draws without
    replacement from n samples, c of them correct, is correct."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k), computed as a stable product
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def auroc(y_true: Sequence[int], score: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of target ``a`` and prediction ``b``; NaN when the target is
    constant (nothing to rank), 0 when only the prediction is (a constant carries no ranking:
    a length baseline on questions of one length is at chance, not undefined)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]):
        return float("nan")
    if np.all(b == b[0]):
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def spearman_ceiling(y: Sequence[float]) -> float:
    """The highest Spearman a tie-free predictor can reach against ``y``: ties in the target (most
    success rates exactly 0, say) keep it below 1, so a probe's score is read against it."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2 or np.all(y == y[0]):
        return float("nan")
    return spearman(y, stats.rankdata(y, method="ordinal"))


def ece(y_true: Sequence[int], prob: Sequence[float], n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins: the gap between confidence and
    frequency, weighted by how many predictions fall in each bin."""
    y, p = np.asarray(y_true, dtype=float), np.clip(np.asarray(prob, dtype=float), 0, 1)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(total)


def brier(y_true: Sequence[int], prob: Sequence[float]) -> float:
    """Mean squared error of predicted probabilities."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(prob, dtype=float)
    return float(np.mean((p - y) ** 2))


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Sequence,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap interval, resampling rows of ``arrays`` together."""
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    point = metric(*arrs)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        v = metric(*(a[idx] for a in arrs))
        if np.isfinite(v):
            draws.append(v)
    if not draws:
        return float(point), float("nan"), float("nan")
    lo, hi = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(point), float(lo), float(hi)


def is_constant(scores) -> bool:
    """True when a method gives every item the same score (e.g. prompt length on a source whose
    prompts all have the same length): a comparison with it is a comparison with chance."""
    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    return len(s) == 0 or bool(np.ptp(s) == 0)
