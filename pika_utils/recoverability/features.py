"""Recoverability of failures (chapter 9), the numeric half: per-token junction scores of a
failed trace, the junction window, the three problem-level features, the regimes and the
training-free routing rule (after Islah et al., arXiv 2606.05145), and whether a run holds
enough problems of each regime to decide the paper's claims. Pure numpy, no models: the model half (teacher-forced log-probabilities, interventions, generation) is ``recoverability.run``.

Notation: S is the specialist that wrote the failed trace, A its reference (in the paper the
ancestor S was post-trained from). At token t of S's trace x, with log-probabilities at the
sampling temperature T::

    Delta_path(t) = log p_S(x_t) - log p_A(x_t)
    G_cov(t)      = log( sum_{y in topk_A(t)} p_A(y) / sum_{y in topk_A(t)} p_S(y) )
    J(t)          = max(0, Delta_path) + max(0, G_cov)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..core import scale

FEATURES = ("spread", "concentration", "dispersion")
INTERVENTIONS = ("retry", "dense_steer", "sparse_steer", "random_sparse", "temp_lift")
BOUNDED = ("dense_steer", "sparse_steer", "random_sparse", "temp_lift")
REGIMES = ("SAMPLING", "STEERABLE", "HARD")
# the rule: the feature with the largest z-score picks its intervention
RULE = {"spread": "dense_steer", "concentration": "sparse_steer", "dispersion": "temp_lift"}
RULE_FALLBACK = "random_sparse"


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Log-probabilities at ``temperature`` along the last axis."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return z - _logsumexp(z)[..., None]


def token_scores(logp_s: np.ndarray, logp_a: np.ndarray, tokens: Sequence[int], top_k: int) -> dict[str, np.ndarray]:
    """Delta_path, G_cov and J at every token of one trace.

    ``logp_s`` and ``logp_a`` are [T, V] log-probabilities (at the sampling temperature) of S and A
    at the positions that predict ``tokens`` (length T); the top-k set is A's, per position."""
    logp_s, logp_a = np.asarray(logp_s, np.float64), np.asarray(logp_a, np.float64)
    tokens = np.asarray(tokens, dtype=np.int64)
    if logp_s.shape != logp_a.shape or logp_s.ndim != 2 or len(tokens) != logp_s.shape[0]:
        raise ValueError(f"need [T, V] log-probabilities of equal shape and T tokens, got {logp_s.shape}, "
                         f"{logp_a.shape} and {len(tokens)} tokens")
    if len(tokens) == 0:
        e = np.zeros(0)
        return {"delta_path": e, "g_cov": e, "J": e}
    k = int(min(max(1, top_k), logp_a.shape[1]))
    rows = np.arange(len(tokens))
    delta = logp_s[rows, tokens] - logp_a[rows, tokens]
    top = np.argpartition(-logp_a, k - 1, axis=1)[:, :k]
    g = _logsumexp(np.take_along_axis(logp_a, top, 1)) - _logsumexp(np.take_along_axis(logp_s, top, 1))
    return {"delta_path": delta, "g_cov": g, "J": junction_score(delta, g)}


def junction_score(delta_path: np.ndarray, g_cov: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, np.asarray(delta_path, float)) + np.maximum(0.0, np.asarray(g_cov, float))


def junction_window(J: Sequence[float], half_width: int) -> tuple[int, int]:
    """The half-open window [lo, hi) of ``half_width`` tokens either side of argmax J, cut at the
    trace's ends; (0, 0) for an empty trace."""
    J = np.asarray(J, float)
    if len(J) == 0:
        return (0, 0)
    t = int(np.argmax(J))
    return (max(0, t - int(half_width)), min(len(J), t + int(half_width) + 1))


def trace_features(J: Sequence[float], logit_var: Sequence[float]) -> dict[str, float]:
    """One trace's share of tokens with J > 0, log10(max J / mean J) and log10 of the logit
    variance at the junction (NaN where undefined: an empty trace, or J = 0 everywhere)."""
    J, var = np.asarray(J, float), np.asarray(logit_var, float)
    if len(J) == 0:
        return {"spread": np.nan, "concentration": np.nan, "dispersion": np.nan, "tokens": 0}
    mean = J.mean()
    conc = float(np.log10(J.max() / mean)) if mean > 0 else np.nan
    disp = float(np.log10(var[int(np.argmax(J))])) if var[int(np.argmax(J))] > 0 else np.nan
    return {"spread": float((J > 0).mean()), "concentration": conc, "dispersion": disp, "tokens": len(J)}


def problem_features(traces: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, float]:
    """The three features of a problem from its failed traces (each with ``J`` and ``logit_var``):
    spread pooled over all their tokens; concentration and dispersion averaged over the traces
    where they are defined (0 when none is: J = 0 everywhere, e.g. S = A)."""
    per = [trace_features(t["J"], t["logit_var"]) for t in traces]
    n = sum(p["tokens"] for p in per)
    spread = sum(p["spread"] * p["tokens"] for p in per if p["tokens"]) / n if n else 0.0
    out = {"spread": float(spread)}
    for f in ("concentration", "dispersion"):
        vals = [p[f] for p in per if np.isfinite(p[f])]
        out[f] = float(np.mean(vals)) if vals else 0.0
    return out


def zscores(X: np.ndarray) -> np.ndarray:
    """Each column z-scored across problems (a constant column scores 0)."""
    X = np.asarray(X, float)
    sd = X.std(axis=0)
    return np.where(sd > 0, (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)


def route(Z: np.ndarray, features: Sequence[str] = FEATURES) -> list[str]:
    """The rule on z-scores [n, 3]: the largest z-score's intervention; the random-position sparse
    steer when every z-score is <= 0."""
    Z = np.atleast_2d(np.asarray(Z, float))
    return [RULE_FALLBACK if np.all(z <= 0) else RULE[features[int(np.argmax(z))]] for z in Z]


def regime(rescued: Mapping[str, bool]) -> str:
    """SAMPLING when retry rescues; STEERABLE when retry does not and a bounded intervention
    does; HARD when nothing does."""
    if rescued["retry"]:
        return "SAMPLING"
    return "STEERABLE" if any(rescued[b] for b in BOUNDED if b in rescued) else "HARD"


def cv_regime_accuracy(X: np.ndarray, y: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Leave-one-problem-out predictions of the regime: a standardised multinomial logistic
    regression on the features, and the majority regime of the training fold. Returns the
    per-problem hits (1/0) of each, for bootstrap intervals over problems."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = np.asarray(X, float), np.asarray(y)
    if X.ndim == 1:
        X = X[:, None]
    hit, maj = np.zeros(len(y)), np.zeros(len(y))
    for i in range(len(y)):
        tr = np.arange(len(y)) != i
        labels, counts = np.unique(y[tr], return_counts=True)
        if len(labels) == 0:
            continue
        majority = labels[np.argmax(counts)]
        maj[i] = majority == y[i]
        if len(labels) < 2:
            hit[i] = majority == y[i]
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed))
        clf.fit(X[tr], y[tr])
        hit[i] = clf.predict(X[i:i + 1])[0] == y[i]
    return {"model": hit, "majority": maj}


def _ci(metric, *arrays, n_boot: int, seed: int) -> tuple[float, float, float]:
    from ..core.metrics import bootstrap_ci

    if len(arrays[0]) == 0:
        return (np.nan, np.nan, np.nan)
    return bootstrap_ci(metric, *[np.asarray(a, float) for a in arrays], n_boot=n_boot, seed=seed)


def rescue_summary(df, n_boot: int = 1000, seed: int = 0):
    """Rescue rate (eval seed, best-of-n at equal sampled tokens) of each intervention, the rule, a
    random intervention and the best single one, on all failed problems and on the Steerable-Hard
    subset (retry did not rescue on the regime seed), with bootstrap intervals over problems."""
    import pandas as pd

    arms = [*INTERVENTIONS, "rule", "random", "best_single"]
    rows = []
    for subset, d in (("all failed", df), ("Steerable-Hard", df[df["steerable_hard"]] if len(df) else df)):
        for a in arms:
            est, lo, hi = _ci(np.mean, d[f"rescue_{a}"] if len(d) else [], n_boot=n_boot, seed=seed)
            rows.append({"subset": subset, "arm": a, "n": len(d), "rescue": est, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def lift_summary(df, n_boot: int = 1000, seed: int = 0):
    """The rule's rescue minus always-retry's, the best single intervention's, the success-rate
    router's (retry where the pass rate was above 0, else the best single intervention) and a
    random intervention's (paired over problems), on all failed problems and on Steerable-Hard."""
    import pandas as pd

    rows = []
    for subset, d in (("all failed", df), ("Steerable-Hard", df[df["steerable_hard"]] if len(df) else df)):
        for other in ("retry", "best_single", "rate_router", "random"):
            a = d["rescue_rule"] if len(d) else []
            b = d[f"rescue_{other}"] if len(d) else []
            est, lo, hi = _ci(lambda x, y: float(np.mean(x) - np.mean(y)), a, b, n_boot=n_boot, seed=seed)
            rows.append({"subset": subset, "rule minus": other, "n": len(d), "lift": est, "low": lo, "high": hi})
    return pd.DataFrame(rows)


def classification_summary(df, n_boot: int = 1000, seed: int = 0):
    """Leave-one-problem-out regime accuracy from the three features, from the success rate alone
    (chapter 1's pass rate) and of the majority regime, and the features' lift over the majority."""
    import pandas as pd

    if len(df) < 3:
        return pd.DataFrame(columns=["classifier", "accuracy", "low", "high", "n"]), {}
    feats = cv_regime_accuracy(df[list(FEATURES)].to_numpy(), df["regime"], seed)
    rate = cv_regime_accuracy(df[["success_rate"]].to_numpy(), df["regime"], seed)
    hits = {"three features": feats["model"], "success rate alone": rate["model"], "majority regime": feats["majority"]}
    rows = [{"classifier": k, **dict(zip(("accuracy", "low", "high"), _ci(np.mean, v, n_boot=n_boot, seed=seed))),
             "n": len(v)} for k, v in hits.items()]
    lift = _ci(lambda x, y: float(np.mean(x) - np.mean(y)), feats["model"], feats["majority"], n_boot=n_boot, seed=seed)
    return pd.DataFrame(rows), {"lift_over_majority": lift, "hits": hits}


#: What each of the chapter's claims is measured on: the regimes whose problems it needs. The
#: features claim classifies all three; the rule's lift is measured on Steerable-Hard failures
#: (retry did not rescue), which must hold both problems a bounded intervention rescued and
#: problems nothing rescued.
CLAIM_REGIMES = {"c9-features": REGIMES, "c9-rule": ("STEERABLE", "HARD")}


def scale_reasons(df, min_each: int = scale.MIN_PER_OUTCOME) -> dict[str, str | None]:
    """Per claim (``CLAIM_REGIMES``): None where the results table ``df`` holds at least
    ``min_each`` failed problems of every regime the claim rests on; otherwise why it is not
    tested at this scale, with the counts and how many failed problems would decide it."""
    counts = {r: int((df["regime"] == r).sum()) if len(df) else 0 for r in REGIMES}
    out = {}
    for claim, regimes in CLAIM_REGIMES.items():
        short = scale.shortfall({f"{r}": counts[r] for r in regimes}, min_each)
        if short is None:
            out[claim] = None
            continue
        rarest = min(counts[r] for r in regimes) / len(df) if len(df) else 0.0
        grow = (f"at the regime shares here, about {int(np.ceil(min_each / rarest))} failed problems would give "
                f"{min_each} of the rarest" if rarest > 0 else
                "this run has none of " + ", ".join(r for r in regimes if counts[r] == 0)
                + ", so more problems like these would not do")
        out[claim] = (f"not tested at this scale: {len(df)} failed problems, regimes {short}. What would decide it: "
                      f"the paper profile (up to 500 failed problems of Qwen2.5-Math-1.5B against its own base model, "
                      f"the paper's setting; the paper used 1,423 failures); {grow}.")
    return out
