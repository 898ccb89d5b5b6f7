"""Pooled probes over every prompt token, as the paper's code offers besides its EOI probes.

Each probe maps a prompt's (T, d) token activations to one scalar: an attention pooling, or a
linear read-out per token followed by a max, a soft max or a rolling-window max. They are small
torch models trained with AdamW and early stopping on a validation split; inputs are LEFT-padded
(as ``ActivationSet.tokens`` returns them) and pads never contribute.
"""
from __future__ import annotations

import copy
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ..core.metrics import auroc, spearman
from .linear import check_labels

POOLINGS: tuple[str, ...] = ("attention", "linear_then_max", "linear_then_softmax", "linear_then_rolling_max")
TASKS = ("regression", "classification")
_PREDICT_BATCH = 256


# ---------------------------------------------------------------------------------------------
# The network


class _PooledNet(torch.nn.Module):
    """Per-token linear scores (and attention logits), pooled over the real tokens. The feature
    standardisation is folded into the weights, so no standardised copy of X is ever made."""

    def __init__(self, d: int, pooling: str, window: int, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.pooling, self.window = pooling, int(window)
        self.w = torch.nn.Linear(d, 1)
        self.q = torch.nn.Linear(d, 1, bias=False) if pooling == "attention" else None
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def _head(self, lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """lin((x - mean) / scale) per token, as one matrix-vector product on the raw x
        (a (d,) vector is much faster on CPU than a (d, k) matrix, forward and backward)."""
        w = lin.weight[0] / self.scale
        b = (lin.bias[0] if lin.bias is not None else 0.0) - self.mean @ w
        return x @ w + b  # (B, T)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        s = self._head(self.w, x)
        if self.pooling == "attention":
            # w . sum_t a_t x_t + b == sum_t a_t (w . x_t + b), since the a_t sum to one
            a = masked_softmax(self._head(self.q, x), m)
            return (a * s.masked_fill(~m, 0.0)).sum(1)
        return pool_scores(s, m, self.pooling, self.window)


def masked_softmax(z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 with pads at exactly zero weight. Written out by hand: on a busy small
    CPU the fused kernel's threading overhead made it the slowest op of a training step."""
    z = z.masked_fill(~m, float("-inf"))
    e = torch.exp(z - z.amax(1, keepdim=True).detach())
    return e / e.sum(1, keepdim=True)


def pool_scores(s: torch.Tensor, m: torch.Tensor, pooling: str, window: int = 4) -> torch.Tensor:
    """Pool per-token scores ``s`` (B, T) over the real tokens ``m`` (B, T) into (B,)."""
    if pooling == "linear_then_max":
        return s.masked_fill(~m, float("-inf")).amax(1)
    if pooling == "linear_then_softmax":
        a = masked_softmax(s, m)
        return (a * s.masked_fill(~m, 0.0)).sum(1)
    if pooling == "linear_then_rolling_max":
        mf = m.to(s.dtype)
        z = s.masked_fill(~m, 0.0)
        mean_all = z.sum(1) / mf.sum(1)  # prompts shorter than the window: the plain mean
        if s.shape[1] < window:
            return mean_all
        win_sum = z.unfold(1, window, 1).sum(-1)  # (B, T - window + 1)
        full = mf.unfold(1, window, 1).sum(-1) == window  # windows of real tokens only
        best = (win_sum / window).masked_fill(~full, float("-inf")).amax(1)
        return torch.where(full.any(1), best, mean_all)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


# ---------------------------------------------------------------------------------------------
# Input checks


def check_tokens(X, mask=None, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    """X as float32 (N, T, d) and its bool mask (default: tokens whose vector is not all zero),
    with every problem named that would make the pooling meaningless."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise ValueError(f"{name} must be (problems, tokens, features), got shape {X.shape}; "
                         "use ActivationSet.tokens(layer) for pooled probes")
    X = X.astype(np.float32, copy=False)
    if mask is None:
        M = np.any(X != 0, axis=-1)
    else:
        M = np.asarray(mask)
        if M.shape != X.shape[:2]:
            raise ValueError(f"the mask for {name} has shape {M.shape}, but {name} has shape {X.shape}: "
                             f"the mask must be (problems, tokens) = {X.shape[:2]}")
        M = M.astype(bool, copy=False)
    empty = np.flatnonzero(~M.any(1))
    if len(empty):
        raise ValueError(f"{len(empty)} row(s) of {name} have no real token in the mask (e.g. rows "
                         f"{empty[:5].tolist()}): drop those problems or pass the right mask")
    if not all(np.isfinite(X[i:i + 64][M[i:i + 64]]).all() for i in range(0, len(X), 64)):
        raise ValueError(f"{name} contains NaN or infinite values at real tokens")
    return X, M


def _crop(X: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop leading columns that are padding in every row (left padding): less work, same answer."""
    first = int(np.argmax(M.any(0)))
    return X[:, first:], M[:, first:]


def token_moments(X: np.ndarray, M: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over the real tokens, in float64 and in row chunks so that a
    large X is never copied whole."""
    d = X.shape[-1]
    s1, s2, n = np.zeros(d), np.zeros(d), 0
    for i in range(0, len(X), chunk):
        t = X[i:i + chunk][M[i:i + chunk]].astype(np.float64)
        s1 += t.sum(0)
        s2 += (t * t).sum(0)
        n += len(t)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    std[std < 1e-8] = 1.0  # constant features: leave them unscaled
    return mean.astype(np.float32), std.astype(np.float32)


def _metric(task: str):
    return spearman if task == "regression" else auroc


# ---------------------------------------------------------------------------------------------
# The estimator


class PooledProbe(BaseEstimator):
    """A probe that pools over all prompt tokens (``pooling`` in POOLINGS), trained with AdamW and
    early stopping on validation Spearman (regression) or AUROC (classification)."""

    def __init__(self, pooling: str = "attention", task: str = "regression", weight_decay: float = 1e-2,
                 lr: float = 1e-3, max_epochs: int = 200, patience: int = 10, batch_size: int = 32,
                 window: int = 4, seed: int = 0, device: str | None = None) -> None:
        self.pooling = pooling
        self.task = task
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.window = window
        self.seed = seed
        self.device = device

    # -- fitting ----------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be 'regression' or 'classification', got {self.task!r}")
        for name in ("max_epochs", "patience", "batch_size", "window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    def _device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def fit(self, X, y, mask=None, eval_set: tuple | None = None) -> "PooledProbe":
        """Fit on (X, y, mask); early-stop on ``eval_set=(X_val, y_val[, mask_val])`` or, without
        it, on a seeded 20% of the training rows. The best epoch's weights are kept."""
        self._check_params()
        X, M = check_tokens(X, mask, "X")
        y = check_labels(y, self.task, "y")
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} labels but X has {len(X)} rows")
        if eval_set is None:
            tr, va = self._holdout(y)
            Xv, yv, Mv = X[va], y[va], M[va]
            X, y, M = X[tr], y[tr], M[tr]
            check_labels(y, self.task, "y (after holding out 20% for validation)")
        else:
            if not 2 <= len(eval_set) <= 3:
                raise ValueError("eval_set must be (X_val, y_val) or (X_val, y_val, mask_val)")
            Xv, Mv = check_tokens(eval_set[0], eval_set[2] if len(eval_set) == 3 else None, "X_val")
            yv = np.asarray(eval_set[1], dtype=float)
            if np.isnan(yv).any():
                raise ValueError(f"y_val contains {int(np.isnan(yv).sum())} NaN value(s); drop those problems first")
            if self.task == "classification" and not set(np.unique(yv)) <= {0.0, 1.0}:
                raise ValueError(f"y_val for a binary probe must be 0/1, got values {np.unique(yv)[:5]}")
            if len(yv) != len(Xv):
                raise ValueError(f"y_val has {len(yv)} labels but X_val has {len(Xv)} rows")
        if Xv.shape[-1] != X.shape[-1]:
            raise ValueError(f"X_val has {Xv.shape[-1]} features, X has {X.shape[-1]}")
        X, M = _crop(X, M)
        Xv, Mv = _crop(Xv, Mv)

        torch.manual_seed(self.seed)
        dev = self._device()
        self.n_features_in_ = X.shape[-1]
        self.mean_, self.scale_ = token_moments(X, M)
        if self.task == "regression":  # a standardised target keeps lr sane for any units
            self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        else:
            self.y_mean_, self.y_scale_ = 0.0, 1.0
            self.classes_ = np.array([0, 1])
        net = _PooledNet(self.n_features_in_, self.pooling, self.window, self.mean_, self.scale_).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.MSELoss() if self.task == "regression" else torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(int(self.seed))

        yt = ((y - self.y_mean_) / self.y_scale_).astype(np.float32)
        yv_std = torch.as_tensor((yv - self.y_mean_) / self.y_scale_, dtype=torch.float32)
        metric = _metric(self.task)
        history, best_key, best_state, best_epoch = [], None, None, 0
        for epoch in range(1, int(self.max_epochs) + 1):
            net.train()
            order = torch.randperm(len(X), generator=gen).numpy()
            total = 0.0
            for i in range(0, len(order), int(self.batch_size)):
                idx = order[i:i + int(self.batch_size)]
                # numpy's gather: torch's threaded one stalls on a busy 2-core machine
                out = net(torch.from_numpy(X[idx]).to(dev), torch.from_numpy(M[idx]).to(dev))
                loss = loss_fn(out, torch.from_numpy(yt[idx]).to(dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            val_out = _forward(net, Xv, Mv, dev)
            val_loss = float(loss_fn(val_out, yv_std))
            score = metric(yv, val_out.numpy())
            history.append({"epoch": epoch, "train_loss": total / len(X), "val_loss": val_loss, "val_score": score})
            # a finite metric beats a NaN one; ties and NaN metrics fall back to the val loss
            key = (score if np.isfinite(score) else -np.inf, -val_loss)
            if best_key is None or key > best_key:
                best_key, best_epoch = key, epoch
                best_state = copy.deepcopy(net.state_dict())
            elif epoch - best_epoch >= int(self.patience):
                break
        net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.best_epoch_ = best_epoch
        self.history_ = pd.DataFrame(history)
        return self

    def _holdout(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A seeded 20% validation split (stratified for classification when possible)."""
        n = len(y)
        if n < 5:
            raise ValueError(f"only {n} training rows: pass eval_set, or at least 5 rows so 20% can be held out")
        strat = None
        if self.task == "classification" and np.bincount(y.astype(int)).min() >= 2:
            strat = y.astype(int)
        tr, va = train_test_split(np.arange(n), test_size=0.2, random_state=int(self.seed), stratify=strat)
        return np.sort(tr), np.sort(va)

    # -- predicting -------------------------------------------------------------------------

    def decision_function(self, X, mask=None) -> np.ndarray:
        """Raw scores (regression, in the target's units) or logits (classification), (N,)."""
        check_is_fitted(self, "net_")
        X, M = check_tokens(X, mask, "X")
        if X.shape[-1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[-1]} features, the probe was fitted on {self.n_features_in_}")
        X, M = _crop(X, M)
        out = _forward(self.net_, X, M, next(self.net_.parameters()).device).numpy().astype(np.float64)
        return out * self.y_scale_ + self.y_mean_

    def predict(self, X, mask=None) -> np.ndarray:
        s = self.decision_function(X, mask)
        return s if self.task == "regression" else (s > 0).astype(int)

    def predict_proba(self, X, mask=None) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("predict_proba is only defined for task='classification'")
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X, mask)))
        return np.column_stack([1.0 - p, p])

    def score(self, X, y, mask=None) -> float:
        """Spearman for regression, AUROC for classification: the paper's selection metrics."""
        return _metric(self.task)(np.asarray(y, dtype=float), self.decision_function(X, mask))

    # -- saving -----------------------------------------------------------------------------

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """Every fitted array (weights, standardisation, target scaling), for safetensors."""
        check_is_fitted(self, "net_")
        out = {f"net.{k}": v.detach().cpu().numpy().copy() for k, v in self.net_.state_dict().items()}
        out["y_mean"] = np.array([self.y_mean_], dtype=np.float64)
        out["y_scale"] = np.array([self.y_scale_], dtype=np.float64)
        return out

    def state_params(self) -> dict:
        """JSON-able constructor parameters plus fitted scalars, the sidecar to state_dict_numpy."""
        check_is_fitted(self, "net_")
        return {**self.get_params(), "n_features_in_": int(self.n_features_in_), "best_epoch_": int(self.best_epoch_)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, np.ndarray]) -> "PooledProbe":
        """Rebuild a fitted probe from ``state_params()`` (or ``get_params()``) and
        ``state_dict_numpy()``; predictions are identical to the saved probe's."""
        init = {k: v for k, v in params.items() if k in cls._get_param_names()}
        probe = cls(**init)
        probe._check_params()
        missing = [k for k in ("net.w.weight", "net.w.bias", "net.mean", "net.scale", "y_mean", "y_scale") if k not in tensors]
        if probe.pooling == "attention" and "net.q.weight" not in tensors:
            missing.append("net.q.weight")
        if missing:
            raise ValueError(f"the saved tensors lack {missing}: they were not written by PooledProbe.state_dict_numpy")
        mean, scale = np.asarray(tensors["net.mean"]), np.asarray(tensors["net.scale"])
        net = _PooledNet(len(mean), probe.pooling, probe.window, mean, scale)
        net.load_state_dict({k[4:]: torch.as_tensor(np.asarray(v)) for k, v in tensors.items() if k.startswith("net.")})
        net.to(probe._device()).eval()
        probe.net_ = net
        probe.n_features_in_ = len(mean)
        probe.mean_, probe.scale_ = mean.astype(np.float32), scale.astype(np.float32)
        probe.y_mean_, probe.y_scale_ = float(tensors["y_mean"][0]), float(tensors["y_scale"][0])
        probe.best_epoch_ = int(params.get("best_epoch_", -1))
        if probe.task == "classification":
            probe.classes_ = np.array([0, 1])
        return probe


@torch.no_grad()
def _forward(net: _PooledNet, X: np.ndarray, M: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Evaluation-mode outputs in batches, on the CPU."""
    was_training = net.training
    net.eval()
    outs = [net(torch.from_numpy(np.ascontiguousarray(X[i:i + _PREDICT_BATCH])).to(dev),
                torch.from_numpy(np.ascontiguousarray(M[i:i + _PREDICT_BATCH])).to(dev)).cpu()
            for i in range(0, len(X), _PREDICT_BATCH)]
    net.train(was_training)
    return torch.cat(outs)


# ---------------------------------------------------------------------------------------------
# Sweep


def pooled_sweep(X, M, y, train_idx, val_idx, test_idx, task: str, poolings: Sequence[str] = POOLINGS,
                 seed: int = 0, probe_params: dict | None = None) -> pd.DataFrame:
    """Fit every pooling on train with early stopping on val; val and test metric per pooling.
    ``probe_params`` go to every PooledProbe (lr, weight_decay, max_epochs, ...)."""
    X, M = check_tokens(X, M, "X")
    y = np.asarray(y, dtype=float)
    train_idx, val_idx, test_idx = (np.asarray(i, dtype=int) for i in (train_idx, val_idx, test_idx))
    if len(val_idx) < 2:
        raise ValueError(f"the validation split has {len(val_idx)} example(s); at least 2 are needed for early stopping")
    Xtr, Mtr, Xva, Mva, Xte, Mte = X[train_idx], M[train_idx], X[val_idx], M[val_idx], X[test_idx], M[test_idx]
    rows = []
    for pooling in poolings:
        t0 = time.perf_counter()
        probe = PooledProbe(pooling=pooling, task=task, seed=seed, **(probe_params or {}))
        probe.fit(Xtr, y[train_idx], Mtr, eval_set=(Xva, y[val_idx], Mva))
        rows.append({
            "pooling": pooling,
            "val_score": probe.score(Xva, y[val_idx], Mva),
            "test_score": probe.score(Xte, y[test_idx], Mte) if len(test_idx) else float("nan"),
            "best_epoch": probe.best_epoch_,
            "seconds": time.perf_counter() - t0,
        })
    return pd.DataFrame(rows, columns=["pooling", "val_score", "test_score", "best_epoch", "seconds"])
