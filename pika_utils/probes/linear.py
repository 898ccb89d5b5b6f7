"""Linear probes on activations, scikit-learn style, and the fast ridge sweep.

The paper's protocol: ridge for continuous targets, L2 logistic for binary ones, no bias term,
alpha from 1e-3..1e4 picked on the validation split (Spearman or AUROC), the best layer and
position picked on validation only, Platt scaling fitted on validation for binary probes.

``fit_intercept=True`` adds an unpenalised intercept (ridge on centred features and targets; the
logistic's own intercept). The paper's probes stay bias-free; the surface baselines (TF-IDF, whose
features are all non-negative, so a bias-free fit must spend its weights on the base rate) take
the intercept, so a probe is never compared with a handicapped baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from ..core.metrics import auroc, spearman

ALPHAS: tuple[float, ...] = tuple(10.0 ** e for e in range(-3, 5))


def check_labels(y, task: str, name: str = "labels") -> np.ndarray:
    """Labels as a float array; NaN, a single class or a constant target are errors."""
    y = np.asarray(y, dtype=float)
    if np.isnan(y).any():
        raise ValueError(f"{name} contain {int(np.isnan(y).sum())} NaN value(s); drop those problems first")
    if task == "classification":
        classes = np.unique(y)
        if not set(classes) <= {0.0, 1.0}:
            raise ValueError(f"{name} for a binary probe must be 0/1, got values {classes[:5]}")
        if len(classes) < 2:
            raise ValueError(f"{name} have a single class ({classes[0]:.0f}): a binary probe needs both "
                             "successes and failures; use more problems or another target")
    elif np.all(y == y[0]):
        raise ValueError(f"{name} are constant ({y[0]}): there is nothing to predict")
    return y


def _fit_logistic(clf: LogisticRegression, X, y) -> bool:
    """Fit, catching sklearn's ConvergenceWarning: whether the solver converged is a result to
    record (``converged_``) and report, not a warning to print into a chapter."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X, y)
    others = [w for w in caught if not issubclass(w.category, ConvergenceWarning)]
    for w in others:  # anything else is re-raised as it was
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return len(others) == len(caught)


class LinearProbe(BaseEstimator):
    """A linear probe: ridge for ``task='regression'``, L2 logistic regression for
    ``task='classification'``; ``alpha`` is the L2 strength (C = 1/alpha for the logistic).
    Bias-free (the paper's probe) unless ``fit_intercept`` (an unpenalised intercept)."""

    def __init__(self, task: str = "regression", alpha: float = 1.0, max_iter: int = 2000,
                 fit_intercept: bool = False) -> None:
        self.task = task
        self.alpha = alpha
        self.max_iter = max_iter
        self.fit_intercept = fit_intercept

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        y = check_labels(y, self.task)
        if self.task == "regression":
            mx, my = (X.mean(0), y.mean()) if self.fit_intercept else (0.0, 0.0)
            self.coef_ = ridge_path(X - mx, y - my, [self.alpha])[:, 0]
            self.intercept_ = float(my - np.dot(mx, self.coef_)) if self.fit_intercept else 0.0
            self.converged_, self.n_iter_ = True, 0  # closed form
        else:
            clf = _logistic(C=1.0 / self.alpha, max_iter=self.max_iter, fit_intercept=self.fit_intercept)
            self.converged_ = _fit_logistic(clf, X, y.astype(int))
            self.n_iter_ = int(np.max(clf.n_iter_))
            self.coef_ = clf.coef_[0]
            self.intercept_ = float(clf.intercept_[0]) if self.fit_intercept else 0.0
            self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        return X @ self.coef_ + getattr(self, "intercept_", 0.0)

    def predict(self, X) -> np.ndarray:
        s = self.decision_function(X)
        return s if self.task == "regression" else (s > 0).astype(int)

    def predict_proba(self, X) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("predict_proba is only defined for task='classification'")
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def score(self, X, y) -> float:
        """Spearman for regression, AUROC for classification: the paper's selection metrics."""
        return probe_metric(self.task)(np.asarray(y, dtype=float), self.decision_function(X))


class RegressionProbe(LinearProbe, RegressorMixin):
    def __init__(self, alpha: float = 1.0, max_iter: int = 2000) -> None:
        super().__init__("regression", alpha, max_iter)


class ClassificationProbe(LinearProbe, ClassifierMixin):
    def __init__(self, alpha: float = 1.0, max_iter: int = 2000) -> None:
        super().__init__("classification", alpha, max_iter)


def probe_metric(task: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return spearman if task == "regression" else auroc


def ridge_path(X: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Bias-free ridge weights for every alpha from ONE eigendecomposition of the smaller Gram
    matrix: (d, len(alphas)). With N <= d, X X^T = U L U^T and w = X^T U (L + a)^-1 U^T y;
    otherwise X^T X = V L V^T and w = V (L + a)^-1 V^T X^T y. The same weights as a thin SVD,
    for a fraction of its cost."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64)[None, :]
    if X.shape[0] <= X.shape[1]:
        lam, U = np.linalg.eigh(X @ X.T)
        return X.T @ (U @ ((U.T @ y)[:, None] / (np.clip(lam, 0, None)[:, None] + a)))
    lam, V = np.linalg.eigh(X.T @ X)
    return V @ ((V.T @ (X.T @ y))[:, None] / (np.clip(lam, 0, None)[:, None] + a))


@dataclass
class SweepResult:
    """Selection scores for every (layer, position, alpha), the chosen cell, and how it was chosen."""

    table: pd.DataFrame  # layer, position, alpha, val_score (mean over folds), val_se
    best: dict  # layer, position, alpha, val_score, val_se, selection


#: Below these, a validation split is too small to choose on: cross-validate over train+val.
MIN_VAL_CLASS = 10  # members of the rarer class (binary targets)
MIN_VAL_N = 40  # problems (continuous targets)


def split_too_small(y_val: np.ndarray, task: str) -> bool:
    """True when a validation split cannot rank probe settings reliably (e.g. one positive)."""
    y_val = np.asarray(y_val, dtype=float)
    if task == "classification":
        return int(min((y_val == 1).sum(), (y_val == 0).sum())) < MIN_VAL_CLASS
    return len(y_val) < MIN_VAL_N or len(np.unique(y_val)) < 3


def _folds(idx: np.ndarray, y: np.ndarray, task: str, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "classification":
        n_min = int(min((y[idx] == 1).sum(), (y[idx] == 0).sum()))
        if n_min < 2:  # some fold would train on one class
            raise ValueError(f"{n_min} example(s) of the rarer class in train+val: too few to cross-validate "
                             "a binary probe (each fold needs both classes to train on)")
        k = min(n_folds, n_min)
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, y[idx].astype(int))
    else:
        splitter = KFold(max(2, min(n_folds, len(idx) // 4)), shuffle=True, random_state=seed).split(idx)
    return [(idx[a], idx[b]) for a, b in splitter]


def _fold_scores(features, cells, y, fit_idx, eval_idx, task, alphas, *, least_squares: bool = False,
                 fit_intercept: bool = False) -> list[dict]:
    """Every alpha's held-out score at each (layer, position) cell: ridge (closed form, every
    alpha from one eigendecomposition) for regression, or with ``least_squares`` as a screen for a
    binary target; warm-started L2 logistic fits otherwise. With ``fit_intercept``, ridge on
    features and targets centred on the fitting rows (an unpenalised intercept)."""
    metric = probe_metric(task)
    ytr = check_labels(y[fit_idx], task, "training labels")
    rows = []
    for layer, pos in cells:
        X = features(layer, pos)
        if task == "regression" or least_squares:
            mx = X[fit_idx].mean(0) if fit_intercept else 0.0
            my = ytr.mean() if fit_intercept else 0.0
            preds = (X[eval_idx] - mx) @ ridge_path(X[fit_idx] - mx, ytr - my, alphas)
            rows += [{"layer": layer, "position": pos, "alpha": a, "score": metric(y[eval_idx], s)}
                     for a, s in zip(alphas, preds.T)]
        else:  # strongest regularisation first, each fit warm-started from the last
            clf = _logistic(warm_start=True, fit_intercept=fit_intercept)
            for a in sorted(alphas, reverse=True):
                converged = _fit_logistic(clf.set_params(C=1.0 / a), X[fit_idx], ytr.astype(int))
                s = X[eval_idx] @ clf.coef_[0] + (clf.intercept_[0] if fit_intercept else 0.0)
                rows.append({"layer": layer, "position": pos, "alpha": a, "converged": converged,
                             "score": metric(y[eval_idx], s)})
    return rows


#: Binary targets: every (layer, position) is screened by a least-squares probe over the whole alpha
#: grid (closed form), and the logistic probe's alphas are scored on this many best cells only.
SCREEN_KEEP = 3


def _score_table(per_fold: list[list[dict]]) -> pd.DataFrame:
    keys = ["layer", "position", "alpha"]
    scores = pd.concat([pd.DataFrame(f).assign(fold=i) for i, f in enumerate(per_fold)])
    table = scores.groupby(keys, as_index=False)["score"].agg(
        val_score="mean", val_se=lambda s: s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else 0.0)
    if "converged" in scores:
        table = table.merge(scores.groupby(keys, as_index=False)["converged"].all(), on=keys)
    return table


#: Validation scores closer than this to the best are a tie (two of 816 validation pairs move an
#: AUROC by about 0.0025): the earliest layer among them is chosen, so a refit in another dtype or
#: with a converged solver picks the same cell.
TIE_TOL = 0.005


def _logistic(**kw) -> LogisticRegression:
    return LogisticRegression(**{"fit_intercept": False, "max_iter": 2000, **kw})


def sweep(
    features: Callable[[int, int], np.ndarray],
    layers: Sequence[int],
    positions: Sequence[int],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    task: str,
    alphas: Sequence[float] = ALPHAS,
    *,
    n_folds: int = 5,
    seed: int = 0,
    fit_intercept: bool = False,
) -> SweepResult:
    """Score every layer, EOI position and alpha and pick one, never looking at test. On the
    validation split when it is large enough; otherwise by ``n_folds``-fold cross-validation over
    train+val, keeping the strongest regularisation within one standard error of the best.
    ``features(layer, position)`` returns the (N, d) matrix for all problems."""
    y = np.asarray(y, dtype=float)
    check_labels(y[train_idx], task, "training labels")
    if len(val_idx) < 2:
        raise ValueError(f"the validation split has {len(val_idx)} example(s); at least 2 are needed to pick alpha")
    cv = split_too_small(y[val_idx], task)
    folds = _folds(np.concatenate([train_idx, val_idx]), y, task, n_folds, seed) if cv else [(train_idx, val_idx)]
    cells = [(layer, pos) for layer in layers for pos in positions]
    screen = None
    if task == "classification" and len(cells) > SCREEN_KEEP:
        screen = _score_table([_fold_scores(features, cells, y, a, b, task, alphas, least_squares=True,
                                            fit_intercept=fit_intercept) for a, b in folds])
        ranked = screen.groupby(["layer", "position"])["val_score"].max().sort_values(ascending=False, kind="stable")
        cells = list(ranked.index[:SCREEN_KEEP])
    table = _score_table([_fold_scores(features, cells, y, a, b, task, alphas, fit_intercept=fit_intercept)
                          for a, b in folds])
    ok = table.dropna(subset=["val_score"])
    if ok.empty:
        raise ValueError("every validation score is NaN (a constant target on the validation split?)")
    top = ok.sort_values(["val_score", "alpha"], ascending=[False, False]).iloc[0]
    # near-ties are settled by a stated rule, not by the last digits of a float: among the cells
    # within one standard error (cross-validation) or TIE_TOL (one validation split) of the best,
    # the earliest layer, then the strongest alpha, then the best score
    tol = float(top["val_se"]) if cv and np.isfinite(top["val_se"]) else TIE_TOL
    near = ok[ok["val_score"] >= top["val_score"] - tol]
    top = near.sort_values(["layer", "alpha", "val_score"], ascending=[True, False, False], kind="stable").iloc[0]
    best = top.to_dict()
    best["layer"], best["position"] = int(best["layer"]), int(best["position"])
    best["near_ties"] = int(len(near[["layer", "position"]].drop_duplicates()))
    best["selection"] = (f"{len(folds)}-fold cross-validation over train+val (validation split too small), "
                         "within one SE of the best: the earliest layer, the strongest alpha" if cv else
                         f"validation split, within {TIE_TOL} of the best: the earliest layer, the strongest alpha")
    if screen is not None:
        best["selection"] += (f"; logistic alphas on the {SCREEN_KEEP} best of {len(screen) // len(alphas)} "
                              "layer-position cells of a least-squares screen")
        table = pd.concat([table.assign(stage="logistic"), screen.assign(stage="screen (least squares)")],
                          ignore_index=True)
    return SweepResult(table, best)


class PlattScaler:
    """Maps a probe's logits to calibrated probabilities with a 1-d logistic fit on validation."""

    def fit(self, logits, y):
        y = check_labels(y, "classification", "validation labels")
        lr = LogisticRegression(C=1e6, max_iter=1000)
        self.converged_ = _fit_logistic(lr, np.asarray(logits, dtype=float).reshape(-1, 1), y.astype(int))
        self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def transform(self, logits) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a_ * np.asarray(logits, dtype=float) + self.b_)))
