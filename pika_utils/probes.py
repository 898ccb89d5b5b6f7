"""Linear probes on activations, scikit-learn style, and the fast ridge sweep.

The paper's protocol: ridge for continuous targets, L2 logistic for binary ones, no bias term,
alpha from 1e-3..1e4 picked on the validation split (Spearman or AUROC), the best layer and
position picked on validation only, Platt scaling fitted on validation for binary probes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from .metrics import auroc, spearman

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
    """A bias-free linear probe: ridge for ``task='regression'``, L2 logistic regression for
    ``task='classification'``; ``alpha`` is the L2 strength (C = 1/alpha for the logistic)."""

    def __init__(self, task: str = "regression", alpha: float = 1.0, max_iter: int = 2000) -> None:
        self.task = task
        self.alpha = alpha
        self.max_iter = max_iter

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        y = check_labels(y, self.task)
        if self.task == "regression":
            self.coef_ = ridge_path(X, y, [self.alpha])[:, 0]
            self.converged_ = True  # closed form
        else:
            clf = LogisticRegression(C=1.0 / self.alpha, fit_intercept=False, max_iter=self.max_iter)
            self.converged_ = _fit_logistic(clf, X, y.astype(int))
            self.n_iter_ = int(np.max(clf.n_iter_))
            self.coef_ = clf.coef_[0]
            self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        return X @ self.coef_

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
    """Validation scores for every (layer, position, alpha) and the chosen cell."""

    table: pd.DataFrame  # layer, position, alpha, val_score
    best: dict


def sweep(
    features: Callable[[int, int], np.ndarray],
    layers: Sequence[int],
    positions: Sequence[int],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    task: str,
    alphas: Sequence[float] = ALPHAS,
) -> SweepResult:
    """Score every layer, EOI position and alpha on the validation split and pick the best on
    validation only. ``features(layer, position)`` returns the (N, d) matrix for all problems."""
    y = np.asarray(y, dtype=float)
    ytr = check_labels(y[train_idx], task, "training labels")
    if len(val_idx) < 2:
        raise ValueError(f"the validation split has {len(val_idx)} example(s); at least 2 are needed to pick alpha")
    yva = y[val_idx]
    metric = probe_metric(task)
    rows = []
    for layer in layers:
        for pos in positions:
            X = features(layer, pos)
            if task == "regression":
                W = ridge_path(X[train_idx], ytr, alphas)
                preds = X[val_idx] @ W
                for a, p in zip(alphas, preds.T):
                    rows.append({"layer": layer, "position": pos, "alpha": a, "val_score": metric(yva, p)})
            else:  # strongest regularisation first, each fit warm-started from the last
                clf = LogisticRegression(fit_intercept=False, max_iter=2000, warm_start=True)
                for a in sorted(alphas, reverse=True):
                    converged = _fit_logistic(clf.set_params(C=1.0 / a), X[train_idx], ytr.astype(int))
                    rows.append({"layer": layer, "position": pos, "alpha": a,
                                 "val_score": metric(yva, X[val_idx] @ clf.coef_[0]), "converged": converged})
    table = pd.DataFrame(rows)
    ok = table.dropna(subset=["val_score"])
    if ok.empty:
        raise ValueError("every validation score is NaN (a constant target on the validation split?)")
    best = ok.sort_values(["val_score", "alpha"], ascending=[False, False]).iloc[0].to_dict()
    best["layer"], best["position"] = int(best["layer"]), int(best["position"])
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


# --------------------------------------------------------------------------------------------
# Saving and loading without pickle: weights in safetensors, everything else in JSON.


def save_probe(path, coef: np.ndarray, info: dict) -> None:
    """Write ``probe.safetensors`` (the weight vector) and ``probe.json`` (layer, position,
    alpha, Platt coefficients, hashes, versions) into folder ``path``."""
    from pathlib import Path

    from safetensors.numpy import save_file

    from . import store

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".probe.safetensors.tmp"
    save_file({"coef": np.asarray(coef, dtype=np.float64)}, str(tmp))
    tmp.replace(path / "probe.safetensors")
    store.write_json(path / "probe.json", {**info, "versions": store.versions(), "saved": store.now_iso()})


def load_probe(path) -> tuple[np.ndarray, dict]:
    """The weight vector and the JSON description of a saved probe."""
    from pathlib import Path

    from safetensors.numpy import load_file

    from . import store

    path = Path(path)
    if not (path / "probe.safetensors").exists():
        raise FileNotFoundError(f"{path} holds no saved probe (probe.safetensors + probe.json)")
    return load_file(str(path / "probe.safetensors"))["coef"], store.read_json(path / "probe.json")
