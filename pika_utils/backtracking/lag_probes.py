"""Token-level probes at temporal lags: does the activation at token t say whether the chain
backtracks at token t + lag?

Protocol (seed 003's, with its leaks closed): for each (layer, lag) a class-weighted L2 logistic
probe with a bias, fit on the *train chains*, its C and its decision threshold (best F1) chosen
on the *validation chains*, reported once on the *test chains*. Chains are split, never tokens:
neighbouring tokens of one chain are nearly the same vector, so a token split would leak.
Pairs (activation[t], label[t + lag]) are formed inside each chain only; a pair whose target
falls outside its chain is dropped, nothing wraps. Intervals resample chains. Baselines under the
same protocol: the current token's identity and its relative position in the chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..core import store
from ..core.metrics import auroc

#: Seed 003's validation results (Llama-3.1-8B base reading R1-Distill-Llama-8B chains):
#: AUROC and F1 by lag at layer 12, its best layer; random-guess F1 ~ 0.019.
SEED_RESULTS = pd.DataFrame({
    "lag": [0, 4, 8, 12, 16, 20, 24, 32, 40, 48],
    "auroc": [0.957, 0.936, 0.911, 0.891, 0.868, 0.850, 0.835, 0.808, 0.790, 0.786],
    "f1": [0.295, 0.220, 0.174, 0.167, 0.147, 0.135, 0.133, 0.104, 0.108, 0.109],
})
SEED_BASE_RATE = 0.022
#: Fewer backtracking sentences than this in the test chains: the chapter draws no verdict.
MIN_TEST_EVENTS = 50


def lag_pairs(pos: np.ndarray, n_tokens: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (source t, target t + lag) for tokens stored chain after chain in position
    order (``pos``: position in its chain, ``n_tokens``: its chain's length). Only pairs inside
    one chain are kept: 0 <= pos + lag < n_tokens."""
    pos, n_tokens = np.asarray(pos), np.asarray(n_tokens)
    src = np.flatnonzero((pos + lag >= 0) & (pos + lag < n_tokens))
    return src, src + lag


def chain_split(chain_ids: Sequence[str], fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> dict[str, str]:
    """Each chain to 'train', 'val' or 'test' (a seeded shuffle of the chains, every split at
    least one chain when there are three or more)."""
    ids = sorted(set(chain_ids))
    if len(ids) < 3:
        raise ValueError(f"need at least 3 chains to split into train/val/test, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = max(1, int(round(fractions[1] * len(ids))))
    n_test = max(1, int(round(fractions[2] * len(ids))))
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{len(ids)} chains leave none for training with fractions {list(fractions)}")
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return {ids[i]: names[j] for j, i in enumerate(order)}


def f1_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    pred = score >= threshold
    tp = float(np.sum(pred & (y == 1)))
    denom = float(np.sum(pred) + np.sum(y == 1))
    return 2 * tp / denom if denom else 0.0


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best F1 (chosen on validation chains)."""
    from sklearn.metrics import precision_recall_curve

    if y.sum() == 0:
        return float(np.inf)
    p, r, t = precision_recall_curve(y, score)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)[:-1]
    return float(t[int(np.argmax(f1))])


def weighted_metrics(y: np.ndarray, score: np.ndarray, chain_idx: np.ndarray, counts: np.ndarray,
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and F1 (at ``threshold``) when chain c's tokens count ``counts[b, c]`` times, for
    every row b of ``counts`` at once: a bootstrap draw of chains without copying tokens. For
    every pair of chains (c, c') the Mann-Whitney count of c's positives over c''s negatives
    (ties one half) is computed once; a draw's count is then ``w P w'``, so each draw costs
    (chains x chains), not tokens, and memory grows with the tokens, not tokens x chains."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    chain_idx = np.asarray(chain_idx)
    w = np.asarray(counts, dtype=float)
    n_ch = w.shape[1]
    pos_s, pos_c = score[y], chain_idx[y]
    pair = np.zeros((n_ch, n_ch))
    for c2 in np.unique(chain_idx[~y]):
        neg = np.sort(score[~y & (chain_idx == c2)])
        below = np.searchsorted(neg, pos_s, side="left")
        ties = np.searchsorted(neg, pos_s, side="right") - below
        pair[:, c2] = np.bincount(pos_c, weights=below + 0.5 * ties, minlength=n_ch)
    u = np.einsum("bc,cd,bd->b", w, pair, w)
    tot_p = w @ np.bincount(chain_idx[y], minlength=n_ch)
    tot_n = w @ np.bincount(chain_idx[~y], minlength=n_ch)
    pred = score >= threshold
    tp = w @ np.bincount(chain_idx[y & pred], minlength=n_ch)
    flagged = w @ np.bincount(chain_idx[pred], minlength=n_ch)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((tot_p > 0) & (tot_n > 0), u / (tot_p * tot_n), np.nan)
        f1 = 2 * tp / (flagged + tot_p)
    return auc, f1


def chain_draws(n_chains: int, n_boot: int, seed: int, block: int = 200):
    """Bootstrap draws of chains with replacement, in blocks: each a (draws, n_chains) array of how
    often every chain was drawn (the weights ``weighted_metrics`` takes)."""
    rng = np.random.default_rng(seed)
    for b0 in range(0, n_boot, block):
        draws = rng.integers(0, n_chains, (min(block, n_boot - b0), n_chains))
        yield np.stack([np.bincount(d, minlength=n_chains) for d in draws])


def chain_bootstrap(y: np.ndarray, score: np.ndarray, chain: np.ndarray, threshold: float, *, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95, block: int = 200) -> dict[str, float]:
    """Percentile intervals of AUROC and F1 (at a fixed threshold) resampling *chains* with
    replacement: each draw weights every token by how often its chain was drawn."""
    _, cidx = np.unique(chain, return_inverse=True)
    n_chains = int(cidx.max()) + 1 if len(cidx) else 0
    aucs, f1s = [], []
    for counts in chain_draws(n_chains, n_boot, seed, block):
        a, f = weighted_metrics(y, score, cidx, counts, threshold)
        aucs.append(a)
        f1s.append(f)
    out = {}
    for name, vals in (("auroc", np.concatenate(aucs)), ("f1", np.concatenate(f1s))):
        vals = vals[np.isfinite(vals)]
        lo, hi = np.percentile(vals, [(1 - level) / 2 * 100, (1 + level) / 2 * 100]) if len(vals) else (np.nan, np.nan)
        out[f"{name}_low"], out[f"{name}_high"] = float(lo), float(hi)
    return out


@dataclass
class LagFit:
    """One fitted probe (or baseline) at one lag: its metrics and its test scores."""

    row: dict
    test_score: np.ndarray
    test_rows: np.ndarray  # source rows (token t) of the test pairs
    model: object = None


def _fit_logistic(Xtr, ytr, Xva, yva, Cs: Sequence[float], seed: int):
    """Class-weighted L2 logistic with a bias, C chosen by validation AUROC."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for C in Cs:
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=300, random_state=seed)
        clf.fit(Xtr, ytr)
        a = auroc(yva, clf.decision_function(Xva))
        if best is None or (np.isfinite(a) and not (a <= best[0])):
            best = (a, C, clf)
    return best[2], best[1]


def _thin_train(train: np.ndarray, y: np.ndarray, max_tokens: int | None, seed: int) -> np.ndarray:
    """At most ``max_tokens`` training pairs (more only where positives alone would fill it: then
    as many negatives as positives): every positive, and a seeded sample of negatives (the fit is
    class-weighted, so thinning the majority class changes little but its cost)."""
    idx = np.flatnonzero(train)
    if max_tokens is None or len(idx) <= max_tokens:
        return train
    pos, neg = idx[y[idx] == 1], idx[y[idx] == 0]
    n_neg = min(len(neg), max(max_tokens - len(pos), len(pos)))  # never fewer negatives than positives
    keep = np.r_[pos, np.random.default_rng(seed).choice(neg, n_neg, replace=False)]
    out = np.zeros_like(train)
    out[keep] = True
    return out


def fit_lag(X: np.ndarray, labels: np.ndarray, tokens: pd.DataFrame, split: np.ndarray, lag: int, *,
            Cs: Sequence[float] = (0.01, 0.1, 1.0), n_boot: int = 1000, seed: int = 0, name: str = "probe",
            max_train_tokens: int | None = None) -> LagFit:
    """Fit one probe of ``X`` (features of token t) for ``labels[t + lag]``: train on train
    chains (at most ``max_train_tokens`` pairs: every positive and a seeded sample of the rest),
    C and threshold on val chains, metrics on test chains with chain-bootstrap intervals.
    ``X`` may be dense or scipy-sparse; it is standardised with the train tokens' statistics
    when dense."""
    src, tgt = lag_pairs(tokens["pos"].to_numpy(), tokens["n_tokens"].to_numpy(), lag)
    y = labels[tgt].astype(int)
    sp = split[src]
    parts = {s: sp == s for s in ("train", "val", "test")}
    counts = {s: (int(m.sum()), int(y[m].sum())) for s, m in parts.items()}
    parts["train"] = _thin_train(parts["train"], y, max_train_tokens, seed)
    row = {"probe": name, "lag": lag, **{f"n_{s}": c[0] for s, c in counts.items()},
           **{f"pos_{s}": c[1] for s, c in counts.items()}, "n_train_fit": int(parts["train"].sum())}
    if any(c[1] == 0 or c[1] == c[0] for c in counts.values()):
        row.update(auroc=np.nan, f1=np.nan, note="a split has one class only")
        return LagFit(row, np.array([]), src[parts["test"]])
    Xs = X[src]
    Xtr, Xva, Xte = Xs[parts["train"]], Xs[parts["val"]], Xs[parts["test"]]
    if isinstance(Xtr, np.ndarray):
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
        Xtr, Xva, Xte = (Xtr - mu) / sd, (Xva - mu) / sd, (Xte - mu) / sd
    clf, C = _fit_logistic(Xtr, y[parts["train"]], Xva, y[parts["val"]], Cs, seed)
    s_va, s_te = clf.decision_function(Xva), clf.decision_function(Xte)
    thr = best_threshold(y[parts["val"]], s_va)
    y_te = y[parts["test"]]
    chains = tokens["chain_id"].to_numpy()[src[parts["test"]]]
    row.update(C=C, threshold=thr, val_auroc=auroc(y[parts["val"]], s_va), auroc=auroc(y_te, s_te),
               f1=f1_at(y_te, s_te, thr), base_rate=float(y_te.mean()),
               **chain_bootstrap(y_te, s_te, chains, thr, n_boot=n_boot, seed=seed))
    return LagFit(row, s_te, src[parts["test"]], clf)


def token_id_features(tokens: pd.DataFrame):
    """One-hot token identity (sparse), for the unigram baseline."""
    from scipy import sparse

    ids = tokens["token_id"].to_numpy()
    vocab, col = np.unique(ids, return_inverse=True)
    return sparse.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), col)), shape=(len(ids), len(vocab)))


def position_features(tokens: pd.DataFrame) -> np.ndarray:
    """Relative position in the chain (and its square, and log absolute position); for windows
    of longer chains, the position in the whole chain (``chain_pos``, ``chain_tokens``)."""
    pos = tokens["chain_pos"].to_numpy() if "chain_pos" in tokens else tokens["pos"].to_numpy()
    n = tokens["chain_tokens"].to_numpy() if "chain_tokens" in tokens else tokens["n_tokens"].to_numpy()
    rel = pos / np.maximum(n - 1, 1)
    return np.c_[rel, rel ** 2, np.log1p(pos)].astype(float)


#: Columns of ``lag_sweep``'s table (NaN where a split had one class only).
RESULT_COLUMNS = ("probe", "layer", "lag", "auroc", "auroc_low", "auroc_high", "f1", "f1_low", "f1_high",
                  "val_auroc", "threshold", "C", "base_rate", "n_train", "n_val", "n_test",
                  "pos_train", "pos_val", "pos_test", "note")


def lag_sweep(acts, labels: np.ndarray, split_of: dict[str, str], lags: Sequence[int], *,
              Cs: Sequence[float] = (0.01, 0.1, 1.0), n_boot: int = 1000, seed: int = 0,
              baselines: bool = True, progress: bool = True, max_train_tokens: int | None = None,
              tokens: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Every (layer, lag) probe of a ``TokenActivationSet`` and, per lag, the token-identity
    and position baselines. Returns the table and the fits (for plotting scores on chains)."""
    from tqdm import tqdm

    tokens = acts.tokens if tokens is None else tokens  # e.g. with chain_pos for windows
    split = tokens["chain_id"].map(split_of).to_numpy()
    if pd.isna(split).any():
        raise ValueError("some chains of the activations have no split")
    rows, fits = [], {}
    jobs = [(f"layer {layer}", layer) for layer in acts.layers]
    if baselines:
        jobs += [("token identity", "token"), ("position", "position")]
    bar = tqdm(total=len(jobs) * len(lags), desc="lag probes", disable=not store.show_progress(progress))
    for name, what in jobs:
        X = acts.layer(what) if isinstance(what, int) else (
            token_id_features(tokens) if what == "token" else position_features(tokens))
        for lag in lags:
            fit = fit_lag(X, labels, tokens, split, int(lag), Cs=Cs, n_boot=n_boot, seed=seed, name=name,
                          max_train_tokens=max_train_tokens)
            fit.row["layer"] = what if isinstance(what, int) else np.nan
            rows.append(fit.row)
            fits[(name, int(lag))] = fit
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows)
    return table.reindex(columns=[*RESULT_COLUMNS, *[c for c in table.columns if c not in RESULT_COLUMNS]]), fits


def paired_difference(a: LagFit, lag_a: int, b: LagFit, lag_b: int, labels: np.ndarray, tokens: pd.DataFrame, *,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Test AUROC of fit ``a`` (at ``lag_a``) minus that of fit ``b`` (at ``lag_b``), with a
    percentile interval from resampling test *chains* with replacement, the same draws for both."""
    if not len(a.test_score) or not len(b.test_score):
        return float("nan"), float("nan"), float("nan")
    chain = tokens["chain_id"].to_numpy()
    ids, inv = np.unique(np.r_[chain[a.test_rows], chain[b.test_rows]], return_inverse=True)
    ca, cb = inv[:len(a.test_rows)], inv[len(a.test_rows):]
    ya, yb = labels[a.test_rows + lag_a], labels[b.test_rows + lag_b]
    point = auroc(ya, a.test_score) - auroc(yb, b.test_score)
    diffs = []
    for counts in chain_draws(len(ids), n_boot, seed):
        diffs.append(weighted_metrics(ya, a.test_score, ca, counts, np.inf)[0]
                     - weighted_metrics(yb, b.test_score, cb, counts, np.inf)[0])
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    lo, hi = np.percentile(d, [(1 - level) / 2 * 100, (1 + level) / 2 * 100]) if len(d) else (np.nan, np.nan)
    return float(point), float(lo), float(hi)
