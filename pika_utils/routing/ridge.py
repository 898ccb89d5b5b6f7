"""Cross-fitted linear probes in closed form: ridge with an intercept, on features standardised
on the training fold, its layer, position and alpha chosen by an inner k-fold inside the training
fold, for many targets (pool members) at once.

Why not the paper's protocol here. The paper's probe is a bias-free L2 logistic with alpha picked
on one validation split. Cross-fitted over the recorded pool's 500 problems that protocol chose
layers from 2 to 26 and alphas from 0.01 to 1e4 across the folds of one member, and the TF-IDF
baseline (no intercept on non-negative features) chose alpha = 1e4 in several folds, where Platt
scaling then flattened its probabilities to constants. The question the recorded pool asks is
whether a small reader's state predicts a member's outcome better than the question's words, not
whether a bias-free probe does, so both methods here get an intercept (rows centred on the
training rows' mean) and the activations are standardised with the training fold's statistics
(StandardScaler's rule). A least-squares probe on 0/1 labels ranks like the logistic one and is
closed-form: for a cell (layer, position), every alpha and every member come from one kernel of
the training rows, so five fold seeds cost what one logistic sweep did.

``alpha`` is relative: the penalty is alpha times the mean squared norm of a centred training row,
so one grid (the profile's ``alphas``) serves standardised activations (norm^2 about d) and TF-IDF
rows (norm about 1) alike."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, stats

from ..probes.linear import PlattScaler

#: Inner folds inside each training fold (the selection of layer, position and alpha).
N_INNER = 5


def standardised_gram(X, train_rows: np.ndarray, *, scale: bool = True) -> np.ndarray:
    """The (n, n) Gram matrix of every row, after standardising the columns with the training
    rows' mean and SD (``scale``; constant columns keep SD 1). Sparse input (TF-IDF) is not
    scaled: its Gram is taken as it is (the centring for the intercept happens later)."""
    if hasattr(X, "tocsr"):
        return np.asarray((X @ X.T).toarray(), dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    mu = X[train_rows].mean(0)
    Z = X - mu
    if scale:
        sd = X[train_rows].std(0)
        Z = Z / np.where(sd > 0, sd, 1.0)
    return Z @ Z.T


def _centred(G: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of rows ``a`` (training) and ``b`` (scored) after centring every row on the mean
    of rows ``a``: the intercept, fitted unpenalised."""
    r = G[:, a].mean(1)  # x_i . mu_a for every row i
    g = r[a].mean()
    Kaa = G[np.ix_(a, a)] - r[a][:, None] - r[a][None, :] + g
    Kba = G[np.ix_(b, a)] - r[b][:, None] - r[a][None, :] + g
    return Kaa, Kba


def ridge_predict(G: np.ndarray, Y: np.ndarray, a: np.ndarray, b: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Ridge with an intercept fitted on rows ``a`` of kernel ``G`` for every column of ``Y`` and
    every (relative) alpha, predicting rows ``b``: (len(alphas), len(b), Y's columns)."""
    Kaa, Kba = _centred(G, a, b)
    Ya = Y[a]
    ybar = Ya.mean(0)
    scale = max(float(np.trace(Kaa)) / len(a), 1e-12)
    out = np.empty((len(alphas), len(b), Y.shape[1]))
    eye = np.eye(len(a))
    for i, alpha in enumerate(alphas):
        c = linalg.cho_solve(linalg.cho_factor(Kaa + alpha * scale * eye, check_finite=False), Ya - ybar,
                             check_finite=False)
        out[i] = Kba @ c + ybar
    return out


def _u_parts(P: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U of the scores ``P`` (..., m, T) for 0/1 labels ``Y`` (m, T), and n1 * n0
    per target: the pieces of an AUROC that can be summed over folds."""
    ranks = stats.rankdata(P, axis=-2)
    n1 = Y.sum(0)
    u = (ranks * Y).sum(-2) - n1 * (n1 + 1) / 2
    return u, n1 * (len(Y) - n1)


def inner_folds(rows: np.ndarray, n_inner: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold splits of the training rows, shared by every member (so every member's
    screen reuses the same kernels)."""
    from sklearn.model_selection import KFold

    return [(rows[i], rows[j]) for i, j in KFold(n_inner, shuffle=True, random_state=seed).split(rows)]


@dataclass
class Screen:
    """One training fold's inner cross-validation: AUROC (cells, alphas, targets), pooled over the
    inner folds by summing each fold's pairs, and the out-of-fold predictions of the training
    rows (cells, alphas, rows, targets)."""

    auc: np.ndarray
    oof: np.ndarray


def screen(gram: Callable[[int], np.ndarray], n_cells: int, Y: np.ndarray, tr: np.ndarray,
           alphas: Sequence[float], n_inner: int = N_INNER, seed: int = 0) -> Screen:
    """Every cell's kernel (``gram(i)``), every alpha and every target scored by inner k-fold
    cross-validation over the training rows ``tr`` (sorted) only."""
    splits = inner_folds(tr, n_inner, seed)
    oof = np.empty((n_cells, len(alphas), len(tr), Y.shape[1]))
    u = np.zeros((n_cells, len(alphas), Y.shape[1]))
    pairs = np.zeros(Y.shape[1])
    for c in range(n_cells):
        G = gram(c)
        for a, b in splits:
            P = ridge_predict(G, Y, a, b, alphas)
            oof[c][:, np.searchsorted(tr, b), :] = P
            du, dp = _u_parts(P, Y[b])
            u[c] += du
            if c == 0:
                pairs += dp
    with np.errstate(invalid="ignore", divide="ignore"):
        return Screen(u / pairs, oof)


def choose(auc: np.ndarray, cells: Sequence, alphas: Sequence[float]) -> list[dict]:
    """Per target, the cell and alpha with the highest inner AUROC; a tie goes to the strongest
    alpha, then the earliest cell (the stated rule, not a float's last digits)."""
    out = []
    order = np.argsort(-np.asarray(alphas, dtype=float), kind="stable")
    for t in range(auc.shape[-1]):
        a = np.nan_to_num(auc[:, :, t], nan=-np.inf)
        best = a.max()
        hits = [(c, i) for i in order for c in range(a.shape[0]) if a[c, i] >= best - 1e-12]
        c, i = hits[0]
        out.append({"cell": cells[c], "cell_index": c, "alpha_index": int(i), "alpha": float(alphas[i]),
                    "inner_auroc": float(auc[c, i, t])})
    return out


def crossfit(gram_for: Callable[[np.ndarray], Callable[[int], np.ndarray]], cells: Sequence, Y: np.ndarray,
             folds: np.ndarray, alphas: Sequence[float], *, n_inner: int = N_INNER, seed: int = 0
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every row scored by a probe that never saw it, for every target (column of ``Y``).

    For each outer fold: ``gram_for(training rows)`` gives each cell's kernel (standardised on
    those rows); the cell and alpha are chosen per target by inner k-fold (``screen``, ``choose``);
    the probe at that choice is fitted on all the training rows; its raw scores (``score``) rank
    the held-out rows, and Platt scaling fitted on the training rows' inner out-of-fold scores
    maps them to probabilities (``p``) for routing. A target with fewer than ``2 * n_inner`` of
    either outcome in the training rows gets its training base rate (constant). Returns ``held``
    (row, fold, target, score, p), ``inner`` (the training rows of every fold scored out of fold
    inside it, for choosing a router's setting) and ``chosen`` (fold, target, cell, alpha,
    inner_auroc)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small dense solves: one BLAS thread is several times faster on a shared CPU
        return _crossfit(gram_for, cells, np.asarray(Y, dtype=float), np.asarray(folds), alphas, n_inner, seed)


def inner_choices(gram: Callable[[int], np.ndarray], cells: Sequence, Y: np.ndarray, tr: np.ndarray,
                  alphas: Sequence[float], n_inner: int = N_INNER, seed: int = 0) -> list[dict]:
    """Per target (column of ``Y``), what the training rows ``tr`` choose: the cell and alpha of
    the inner k-fold screen (``screen``, ``choose``), the training rows' out-of-fold scores there
    (``oof``) and the Platt scaling fitted on them (``platt``). A target with fewer than
    ``2 * n_inner`` of either outcome in the training rows (almost always right or wrong) gets
    ``platt`` None: a constant, its training base rate, is its best guess."""
    sc = screen(gram, len(cells), Y, tr, alphas, n_inner, seed)
    picks = choose(sc.auc, cells, alphas)
    for t, pick in enumerate(picks):
        y = Y[tr, t]
        if min((y == 1).sum(), (y == 0).sum()) < 2 * n_inner:
            pick.update(oof=None, platt=None)
            continue
        oof = sc.oof[pick["cell_index"], pick["alpha_index"], :, t]
        pick.update(oof=oof, platt=PlattScaler().fit(oof, y))
    return picks


def _crossfit(gram_for, cells, Y, folds, alphas, n_inner, seed):
    held, inner, chosen = [], [], []
    for f in np.unique(folds):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        gram = gram_for(tr)
        for t, pick in enumerate(inner_choices(gram, cells, Y, tr, alphas, n_inner, seed)):
            if pick["platt"] is None:  # a member (almost) always right or wrong: a constant is its best guess
                base = float(Y[tr, t].mean())
                s_te, p_te, s_tr, p_tr = (np.full(len(te), base), np.full(len(te), base),
                                          np.full(len(tr), base), np.full(len(tr), base))
                pick = {"cell": None, "alpha": np.nan, "inner_auroc": np.nan, "probe": "constant (training base rate)"}
            else:
                s_tr = pick["oof"]
                s_te = ridge_predict(gram(pick["cell_index"]), Y[:, [t]], tr, te, [pick["alpha"]])[0, :, 0]
                p_te, p_tr = pick["platt"].transform(s_te), pick["platt"].transform(s_tr)
                pick = {**pick, "probe": "ridge, intercept"}
            held.append(pd.DataFrame({"row": te, "fold": f, "target": t, "score": s_te, "p": p_te}))
            inner.append(pd.DataFrame({"row": tr, "fold": f, "target": t, "score": s_tr, "p": p_tr}))
            chosen.append({"fold": int(f), "target": t, "cell": pick["cell"], "alpha": pick["alpha"],
                           "inner_auroc": pick["inner_auroc"], "probe": pick["probe"]})
    return (pd.concat(held, ignore_index=True), pd.concat(inner, ignore_index=True), pd.DataFrame(chosen))


def ridge_weights(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """The probe ``ridge_predict`` fits on *every* row of ``X`` (standardised on them, intercept
    unpenalised, relative ``alpha``), as weights on the raw features and an intercept: its score
    of a new row x is ``x @ coef + intercept``, so it can be saved as a plain weight vector."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = (X - mu) / sd
    K = Z @ Z.T
    scale = max(float(np.trace(K)) / len(X), 1e-12)
    ybar = float(y.mean())
    c = linalg.cho_solve(linalg.cho_factor(K + alpha * scale * np.eye(len(X)), check_finite=False), y - ybar,
                         check_finite=False)
    coef = (Z.T @ c) / sd
    return coef, ybar - float(mu @ coef)
