"""Cross-fitting: every problem scored by a probe, and routed by a router, that never saw it.

A 150-problem test split leaves intervals wide. Cross-fitting splits the problems into folds;
for each held-out fold the probe's layer, position and alpha are chosen (by an inner k-fold), the
probe fitted and Platt-calibrated, and the router's lambda chosen, all on the other folds only
(``ridge``). Every problem then carries one honest out-of-fold score and one honest routing
decision, and intervals rest on all the problems. The same code serves the reader's activations
and the text-only router. A ranking is measured within folds (``fold_auroc``): different folds'
probes put their scores on different scales, so they are never pooled as one ranking."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from scipy import stats

from ..probes.linear import ALPHAS
from . import evaluation as M
from . import ridge as RG
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


def fold_auroc(y, score, folds) -> float:
    """AUROC counted within folds: every (success, failure) pair of the same fold, pooled over
    folds (the fold-stratified estimate). Scores from different folds' probes are never compared,
    so no fold's scale (or its calibration) can raise or flatten another's ranking. NaN scores are
    left out; NaN when no fold holds both outcomes."""
    y = np.asarray(y, dtype=float)
    s = np.asarray(score, dtype=float)
    f = np.asarray(folds)
    keep = np.isfinite(s) & np.isfinite(y)
    y, s, f = y[keep], s[keep], f[keep]
    if len(y) == 0:
        return float("nan")
    _, f = np.unique(f, return_inverse=True)
    # within-fold ranks in one pass: a key that orders by fold, then by score (ties kept), ranked
    # once; an item's rank is then its rank within its fold plus the size of the folds before it
    key = f * (len(s) + 1.0) + stats.rankdata(s)
    ranks = stats.rankdata(key)
    size = np.bincount(f)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    pos = y > 0.5
    n1 = np.bincount(f[pos], minlength=len(size)).astype(float)
    n0 = size - n1
    u = np.bincount(f[pos], weights=ranks[pos] - offset[f[pos]], minlength=len(size)) - n1 * (n1 + 1) / 2
    pairs = n1 * n0
    return float(u[pairs > 0].sum() / pairs.sum()) if pairs.sum() > 0 else float("nan")


def activation_gram(features: Callable[[int, int], np.ndarray], cells: Sequence[tuple[int, int]]):
    """``gram_for`` of ``ridge.crossfit`` over activation cells: each cell's features read once
    (``features(layer, position)``), standardised on each training fold."""
    cache: dict = {}

    def feats(cell):
        if cell not in cache:
            cache[cell] = np.asarray(features(*cell), dtype=np.float32)
        return cache[cell]

    def gram_for(tr):
        return lambda i: RG.standardised_gram(feats(cells[i]), tr)
    return gram_for


def tfidf_gram(questions: Sequence[str]):
    """``gram_for`` of the text-only method: TF-IDF of the question (word 1-2-grams, sublinear tf),
    its vocabulary and weights fitted on each training fold's questions only."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    q = np.asarray(list(questions), dtype=object)

    def gram_for(tr):
        G = RG.standardised_gram(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(q[tr]).transform(q), tr)
        return lambda i: G
    return gram_for


def _as_single(held, inner, chosen, cells=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    held = held.drop(columns="target").sort_values("row").reset_index(drop=True)
    ch = chosen.drop(columns="target")
    if cells is not None:
        ch = ch.assign(layer=[c[0] if c else -1 for c in ch["cell"]], position=[c[1] if c else -1 for c in ch["cell"]])
    held.attrs["chosen"] = ch.drop(columns="cell")
    return held, inner.drop(columns="target")


def crossfit_probe(features: Callable[[int, int], np.ndarray], layers: Sequence[int], positions: Sequence[int],
                   y: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = ALPHAS, n_inner: int = RG.N_INNER,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold scores of a binary probe on activations (``ridge.crossfit``: intercept,
    features standardised on the training folds, layer, position and alpha by inner k-fold).
    Returns ``held`` (row, fold, score, p: every row once, scored by the probe of its fold;
    ``attrs['chosen']`` per fold) and ``inner`` (row, fold, score, p: the training rows of each
    fold, scored out of fold inside it, for choosing a router's setting)."""
    cells = [(int(layer), int(pos)) for layer in layers for pos in positions]
    out = RG.crossfit(activation_gram(features, cells), cells, np.asarray(y, float)[:, None], folds, alphas,
                      n_inner=n_inner, seed=seed)
    return _as_single(*out, cells=cells)


def crossfit_tfidf(questions: Sequence[str], y: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = ALPHAS,
                   n_inner: int = RG.N_INNER, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The text-only method's out-of-fold scores: TF-IDF of the question with the same cross-fitted
    ridge (intercept, alpha chosen by inner k-fold inside the training folds)."""
    out = RG.crossfit(tfidf_gram(questions), [None], np.asarray(y, float)[:, None], folds, alphas,
                      n_inner=n_inner, seed=seed)
    return _as_single(*out)


def member_scores(held: pd.DataFrame, inner: pd.DataFrame, problem_ids: Sequence[str], member: str) -> pd.DataFrame:
    """One member's long table: problem_id, fold (the outer fold), role ('held' or 'inner'),
    score (the probe's raw output: ranks within a fold) and p (calibrated: for routing)."""
    ids = np.asarray(problem_ids)
    return pd.concat([held.assign(role="held"), inner.assign(role="inner")], ignore_index=True).assign(
        member=member, problem_id=lambda d: ids[d["row"].to_numpy()])[["member", "problem_id", "fold", "role", "score",
                                                                       "p"]]


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
    """A member's cross-fitted AUROC over every problem (each scored by a probe that never saw
    it), counted within folds (``fold_auroc``) on the raw scores."""
    s = scores[(scores["member"] == member) & (scores["role"] == "held")]
    m = s.merge(outcomes[outcomes["member"] == member], on=["member", "problem_id"], validate="1:1")
    return fold_auroc(m["correct"], m["score"], m["fold"])
