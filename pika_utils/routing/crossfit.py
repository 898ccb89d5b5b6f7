"""Cross-fitting: every problem scored by a probe, and routed by a router, that never saw it.

A 150-problem test split leaves intervals wide. Cross-fitting splits the problems into folds;
for each held-out fold the probe's layer, position and alpha are chosen, the probe fitted and
Platt-calibrated, and the router's lambda chosen, all on the other folds only. Every problem then
carries one honest out-of-fold probability and one honest routing decision, and intervals rest
on all the problems. The same code serves the reader's activations and the text-only router."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..core.metrics import auroc
from ..probes.linear import ALPHAS, LinearProbe, PlattScaler, sweep
from . import evaluation as M
from . import rules as R

#: The rules a fold's lambda may be chosen by, on the training folds' own out-of-fold scores.
RULES = ("most_accurate", "most_accurate_within_cost", "cheapest_at_best_accuracy")


def make_folds(problem_ids: Sequence[str], n_folds: int = 5, seed: int = 0, strata: Sequence | None = None) -> pd.Series:
    """A fold (0..n_folds-1) for each problem, balanced within each stratum (e.g. the human level)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    ids = np.asarray(problem_ids)
    if n_folds < 2 or n_folds > len(ids):
        raise ValueError(f"n_folds={n_folds}: need 2 <= n_folds <= {len(ids)} (the number of problems)")
    fold = np.empty(len(ids), dtype=int)
    split = (StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(ids, np.asarray(strata))
             if strata is not None else KFold(n_folds, shuffle=True, random_state=seed).split(ids))
    for f, (_, held) in enumerate(split):
        fold[held] = f
    return pd.Series(fold, index=pd.Index(ids, name="problem_id"), name="fold")


def _inner_split(idx: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    strat = y[idx] if min((y[idx] == 1).sum(), (y[idx] == 0).sum()) >= 2 else None
    a, b = train_test_split(idx, test_size=0.25, random_state=seed, stratify=strat)
    return np.sort(a), np.sort(b)


def _oof_logits(X: np.ndarray, y: np.ndarray, idx: np.ndarray, alpha: float, n_inner: int, seed: int) -> np.ndarray:
    """Logits for ``idx`` from probes fitted on the other inner folds (fixed cell and alpha)."""
    from sklearn.model_selection import StratifiedKFold

    out = np.empty(len(idx))
    k = max(2, min(n_inner, int(min((y[idx] == 1).sum(), (y[idx] == 0).sum()))))
    for a, b in StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, y[idx].astype(int)):
        out[b] = LinearProbe("classification", alpha).fit(X[idx[a]], y[idx[a]]).decision_function(X[idx[b]])
    return out


def _fit_fold(features, layers, positions, y, tr, te, alphas, n_inner, seed):
    """One outer fold: choose, fit and calibrate on ``tr``; score ``te`` (held) and ``tr`` (inner)."""
    if min((y[tr] == 1).sum(), (y[tr] == 0).sum()) < 2 * n_inner:  # a member (almost) always right or wrong
        base = float(y[tr].mean())
        return np.full(len(te), base), np.full(len(tr), base), {"layer": -1, "position": -1, "alpha": np.nan,
                                                                  "probe": "constant (training base rate)"}
    a, b = _inner_split(tr, y, seed)
    best = sweep(features, layers, positions, y, a, b, "classification", alphas, seed=seed).best
    X = features(best["layer"], best["position"])
    s_tr = _oof_logits(X, y, tr, best["alpha"], n_inner, seed)
    platt = PlattScaler().fit(s_tr, y[tr])
    s_te = LinearProbe("classification", best["alpha"]).fit(X[tr], y[tr]).decision_function(X[te])
    return platt.transform(s_te), platt.transform(s_tr), {"layer": best["layer"], "position": best["position"],
                                                          "alpha": best["alpha"], "probe": "linear"}


def _collect(parts) -> tuple[pd.DataFrame, pd.DataFrame]:
    held = pd.concat([h for h, _, _ in parts], ignore_index=True).sort_values("row").reset_index(drop=True)
    held.attrs["chosen"] = pd.DataFrame([c for _, _, c in parts])
    return held, pd.concat([i for _, i, _ in parts], ignore_index=True)


def crossfit_probe(features: Callable[[int, int], np.ndarray], layers: Sequence[int], positions: Sequence[int],
                   y: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = ALPHAS, n_inner: int = 4,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold calibrated probabilities of a binary probe: for each outer fold, the cell and
    alpha chosen (``probes.sweep``) and the probe fitted on the other folds, Platt-scaled on their
    own inner out-of-fold logits. Returns ``held`` (row, fold, p: every row once, scored by the
    probe of its fold; ``attrs['chosen']`` per fold) and ``inner`` (row, fold, p: the training
    rows of each fold, scored out-of-fold inside it, for choosing a router's setting)."""
    y, folds = np.asarray(y, dtype=float), np.asarray(folds)
    parts = []
    for f in np.unique(folds):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        p_te, p_tr, chosen = _fit_fold(features, layers, positions, y, tr, te, alphas, n_inner, seed)
        parts.append((pd.DataFrame({"row": te, "fold": f, "p": p_te}), pd.DataFrame({"row": tr, "fold": f, "p": p_tr}),
                      {"fold": int(f), **chosen}))
    return _collect(parts)


def crossfit_tfidf(questions: Sequence[str], y: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = ALPHAS,
                   n_inner: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The text-only router's probabilities: TF-IDF of the question (vocabulary fitted on the
    training folds only) with the same cross-fitted logistic protocol."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    q = np.asarray(list(questions), dtype=object)
    y, folds = np.asarray(y, dtype=float), np.asarray(folds)
    parts = []
    for f in np.unique(folds):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        X = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(q[tr]).transform(q).toarray()
        p_te, p_tr, chosen = _fit_fold(lambda layer, pos: X, [0], [0], y, tr, te, alphas, n_inner, seed)
        parts.append((pd.DataFrame({"row": te, "fold": f, "p": p_te}), pd.DataFrame({"row": tr, "fold": f, "p": p_tr}),
                      {"fold": int(f), **chosen}))
    return _collect(parts)


def member_scores(held: pd.DataFrame, inner: pd.DataFrame, problem_ids: Sequence[str], member: str) -> pd.DataFrame:
    """One member's long table: problem_id, fold (the outer fold), role ('held' or 'inner'), p."""
    ids = np.asarray(problem_ids)
    return pd.concat([held.assign(role="held"), inner.assign(role="inner")], ignore_index=True).assign(
        member=member, problem_id=lambda d: ids[d["row"].to_numpy()])[["member", "problem_id", "fold", "role", "p"]]


def pick_setting(sweep_: pd.DataFrame, singles: pd.DataFrame, rule: str, cost: str = "cost_with_routing") -> pd.Series:
    """The sweep row ``rule`` chooses against the best single member (``RULES``)."""
    best = singles.sort_values(["accuracy", "cost"], ascending=[False, True], kind="stable").iloc[0]
    if rule == "most_accurate":
        return sweep_.sort_values(["accuracy", cost], ascending=[False, True], kind="stable").iloc[0]
    if rule == "most_accurate_within_cost":
        ok = sweep_[sweep_[cost] <= best["cost"] * (1 + 1e-12)]
        ok = ok if len(ok) else sweep_
        return ok.sort_values(["accuracy", cost], ascending=[False, True], kind="stable").iloc[0]
    ok = sweep_[sweep_["accuracy"] >= best["accuracy"] - 1e-12]
    if ok.empty:  # no setting reaches it on the training folds: the most accurate one
        return sweep_.sort_values(["accuracy", cost], ascending=[False, True], kind="stable").iloc[0]
    return ok.sort_values([cost, "accuracy"], ascending=[True, False], kind="stable").iloc[0]


def _fold_tables(scores: pd.DataFrame, outcomes: pd.DataFrame, folds: pd.Series, f) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold ``f`` as a train/test split: outcomes with ``split``, and each problem's probability
    (inner out-of-fold on the training folds, held-out on the fold itself)."""
    split = np.where(folds.reindex(outcomes["problem_id"]).to_numpy() == f, "test", "train")
    o = outcomes[list(R.OUTCOME_COLUMNS)].assign(split=split)
    s = scores[scores["fold"] == f]
    return o, pd.concat([s[s["role"] == "inner"], s[s["role"] == "held"]])[["member", "problem_id", "p"]]


def crossfit_route(scores: pd.DataFrame, outcomes: pd.DataFrame, folds: pd.Series, *, rule: str,
                   prefill=None, kind: str = "utility", lambdas=R.DEFAULT_LAMBDAS, grid=np.linspace(0, 1, 11),
                   cost: str = "cost_with_routing") -> pd.DataFrame:
    """The utility router (or the cascade, cheapest member first) on every problem, its setting
    chosen per fold by ``rule`` on the training folds (their inner out-of-fold scores, realised
    outcomes and costs) and applied to the held-out fold: one row per problem (problem_id,
    member, correct, cost, cost_with_routing, fold, setting)."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; choose one of {RULES}")
    if kind not in ("utility", "cascade"):
        raise ValueError(f"kind={kind!r}; choose 'utility' or 'cascade'")
    out = []
    for f in sorted(folds.unique()):
        o, probs = _fold_tables(scores, outcomes, folds, f)
        singles = M.single_members(o, split="train")
        if kind == "utility":
            sw = R.utility_sweep(probs, o, lambdas, prefill_cost=prefill, split="train")
        else:
            sw = R.cascade_sweep(probs, o, grid, order=list(singles["member"]), prefill_cost=prefill, split="train")
        pick = pick_setting(sw, singles, rule, cost)
        routed = R.replay(pick, probs, o, prefill_cost=prefill, split="test")
        setting = {k: pick[k] for k in pick.index if k == "lam" or k.startswith("threshold:")}
        out.append(routed.assign(fold=f, setting=str({k: round(float(v), 4) for k, v in setting.items()})))
    return pd.concat(out, ignore_index=True).sort_values("problem_id").reset_index(drop=True)


def crossfit_sweep(scores: pd.DataFrame, outcomes: pd.DataFrame, folds: pd.Series, *, prefill=None,
                   lambdas=R.DEFAULT_LAMBDAS) -> pd.DataFrame:
    """The utility router's cost-accuracy curve over every problem: at each lambda, each fold's
    held-out problems routed with that fold's probes and training costs (no setting is chosen,
    so nothing is tuned on the problems scored), pooled over folds."""
    parts = []
    for f in sorted(folds.unique()):
        o, probs = _fold_tables(scores, outcomes, folds, f)
        sw = R.utility_sweep(probs, o, lambdas, prefill_cost=prefill, split="test")
        parts.append(sw.assign(n=int((o["split"] == "test").sum() / o["member"].nunique())))
    sw = pd.concat(parts, ignore_index=True)
    cols = [c for c in sw.columns if c in ("accuracy", "cost", "cost_with_routing") or c.startswith("share:")]
    pooled = sw.groupby("lam").apply(lambda g: pd.Series(np.average(g[cols], axis=0, weights=g["n"]), index=cols),
                                     include_groups=False).reset_index()
    return pooled.assign(router="utility (cross-fitted)")


def held_auroc(scores: pd.DataFrame, outcomes: pd.DataFrame, member: str) -> float:
    """A member's cross-fitted AUROC over every problem (each scored by a probe that never saw it)."""
    s = scores[(scores["member"] == member) & (scores["role"] == "held")]
    m = s.merge(outcomes[outcomes["member"] == member], on=["member", "problem_id"], validate="1:1")
    return auroc(m["correct"], m["p"])
