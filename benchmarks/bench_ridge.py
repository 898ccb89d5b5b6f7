"""Ridge alpha sweep: ``pika_utils.probes.ridge_path`` (one thin SVD per layer, every alpha from
it) against a loop of scikit-learn ``Ridge(alpha=a, fit_intercept=False).fit`` over every layer
and alpha, on the same data: N=200 training rows, d=576, 31 layers, ``probes.ALPHAS``.

    .venv/bin/python benchmarks/bench_ridge.py [--data real|random] [--repeats 5]

``--data real`` (the default) uses SmolLM2-135M EOI activations of 300 arithmetic-ladder
problems (target: the designed difficulty), extracted once into the cache folder (about a
minute the first time); ``--data random`` uses seeded Gaussian features with a planted linear
signal. Held-out predictions of both must agree to 1e-6 (exit 1 otherwise). Prints, last,
``ridge_sweep_speedup: <sklearn s / ours s>`` measured in this run (best of N, interleaved).
"""
from __future__ import annotations

import argparse
import time
import warnings
from typing import Callable

import numpy as np
from sklearn.linear_model import Ridge

from pika_utils.probes.linear import ALPHAS, ridge_path

TOLERANCE = 1e-6


def random_data(n_train: int, n_test: int, d: int, n_layers: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(layers, N, d) features and (N,) targets: a planted direction whose strength grows with
    depth, plus noise, so the sweep has something to find."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.normal(size=n)
    w = rng.normal(size=d) / np.sqrt(d)
    X = rng.normal(size=(n_layers, n, d))
    X += (np.linspace(0.0, 2.0, n_layers)[:, None, None] * y[None, :, None]) * w[None, None, :]
    return X, y


def real_data(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """SmolLM2-135M activations at the last EOI token, every layer, for ladder problems; target:
    designed difficulty. Cached by extract_activations' key, so a rerun only reads files."""
    from pika_utils.core import store
    from pika_utils.problems import tasks
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations
    from pika_utils.models.registry import load_model
    from pika_utils.core.prompts import DIRECT_SUFFIX

    n = n_train + n_test
    problems = tasks.load_problems({"ladder": {"n_per_level": -(-n // 6)}})
    problems = problems.sample(n=n, random_state=0).sort_values("problem_id").reset_index(drop=True)
    lm = load_model("smollm2-135m", source="offline")
    acts = extract_activations(problems, lm, prompt_suffix=DIRECT_SUFFIX, cfg=ExtractionConfig(n_positions=1),
                               out_root=store.cache_dir() / "bench-activations", progress=False)
    rows = acts.rows_for(problems["problem_id"].tolist())
    X = np.stack([acts.layer(layer, -1)[rows] for layer in acts.layers]).astype(np.float64)
    order = np.random.default_rng(0).permutation(n)  # train/test split not by problem id
    return X[:, order], problems["difficulty"].to_numpy(dtype=float)[order]


def ours(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> np.ndarray:
    """(n_test, alphas) held-out predictions from one eigendecomposition of the smaller Gram matrix."""
    return Xte @ ridge_path(Xtr, ytr, ALPHAS)


def sklearn_loop(solver: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def fit_all(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> np.ndarray:
        return np.column_stack([Ridge(alpha=a, fit_intercept=False, solver=solver).fit(Xtr, ytr).predict(Xte)
                                for a in ALPHAS])
    return fit_all


def chosen_solvers(X: np.ndarray, y: np.ndarray, n_train: int) -> set[str]:
    """Which solver ``solver='auto'`` resolved to on these shapes (``Ridge.solver_``)."""
    return {str(getattr(Ridge(alpha=a, fit_intercept=False).fit(X[layer, :n_train], y[:n_train]), "solver_", "?"))
            for layer in range(len(X)) for a in ALPHAS}


def best_per_layer(fns: dict[str, Callable], X: np.ndarray, y: np.ndarray, n_train: int,
                   repeats: int) -> dict[str, float]:
    """Sum over layers of each method's best time on that layer, methods alternating layer by
    layer (order flipped every repeat) so that background load hits all alike."""
    best = {k: np.full(len(X), np.inf) for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for layer in range(len(X)):
            Xtr, ytr, Xte = X[layer, :n_train], y[:n_train], X[layer, n_train:]
            for name in order:
                t0 = time.perf_counter()
                fns[name](Xtr, ytr, Xte)
                best[name][layer] = min(best[name][layer], time.perf_counter() - t0)
    return {k: float(v.sum()) for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["real", "random"], default="real")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--d", type=int, default=576, help="feature size for --data random")
    ap.add_argument("--layers", type=int, default=31, help="layers for --data random")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    if args.data == "real":
        X, y = real_data(args.n_train, args.n_test)
    else:
        X, y = random_data(args.n_train, args.n_test, args.d, args.layers)
    n = args.n_train
    fns = {"ours": ours, "sklearn_auto": sklearn_loop("auto"), "sklearn_svd": sklearn_loop("svd")}

    diffs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ill-conditioned layers (layer 0 is one vector) warn in sklearn
        preds = {k: np.stack([fn(X[i, :n], y[:n], X[i, n:]) for i in range(len(X))]) for k, fn in fns.items()}
        solvers = chosen_solvers(X, y, n)
        for k in [k for k in fns if k != "ours"]:
            diffs[k] = float(np.abs(preds["ours"] - preds[k]).max())
        scale = float(np.abs(preds["sklearn_auto"]).max())
        best = best_per_layer(fns, X, y, n, args.repeats)

    print(f"data: {args.data}, layers: {X.shape[0]}, n_train: {n}, n_test: {X.shape[1] - n}, d: {X.shape[2]}, "
          f"alphas: {len(ALPHAS)} ({min(ALPHAS):g}..{max(ALPHAS):g}), "
          f"fits in the sklearn loop: {X.shape[0] * len(ALPHAS)}")
    print(f"sklearn_auto_solver: {', '.join(sorted(solvers))}")
    for k, v in diffs.items():
        print(f"max_abs_pred_diff_vs_{k}: {v:.3g} (largest |prediction| {scale:.3g})")
    worst = max(diffs["sklearn_auto"], diffs["sklearn_svd"])
    if worst > TOLERANCE:
        raise SystemExit(f"FAIL: held-out predictions differ from sklearn's by {worst:.3g} (> {TOLERANCE})")
    print(f"ours_s: {best['ours']:.4f}")
    print(f"sklearn_auto_s: {best['sklearn_auto']:.4f}")
    print(f"sklearn_svd_s: {best['sklearn_svd']:.4f}")
    print(f"ridge_sweep_speedup_vs_sklearn_svd: {best['sklearn_svd'] / best['ours']:.2f}")
    print(f"ridge_sweep_speedup: {best['sklearn_auto'] / best['ours']:.2f}")


if __name__ == "__main__":
    main()
