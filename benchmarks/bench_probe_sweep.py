"""Binary-target probe selection: the least-squares screen (every layer and position scored in
closed form over the alpha grid, the logistic alphas then fitted on the ``SCREEN_KEEP`` best
cells) against logistic fits at every (layer, position, alpha), on the same seeded data: a
planted direction whose strength varies with depth, 5-fold cross-validation as in chapter 3.

    .venv/bin/python benchmarks/bench_probe_sweep.py [--layers 13] [--positions 3] [--d 256] [--repeats 2]

Prints both picks (layer, position, alpha and their cross-validated AUROC) and, last,
``screened_sweep_speedup: <full s / screened s>`` measured in this run (best of N, interleaved).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pika_utils.probes import linear as probes


def data(n: int, d: int, n_layers: int, n_pos: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    z = rng.normal(size=n)
    y = (z + 0.5 * rng.normal(size=n) > 0.3).astype(float)
    X = {(layer, pos): rng.normal(size=(n, d)) + np.outer(z, w) * (0.05 + 0.3 * np.sin(np.pi * layer / n_layers))
         * (1 + 0.2 * pos) for layer in range(n_layers) for pos in range(-n_pos, 0)}
    return X, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=280)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--positions", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    X, y = data(args.n, args.d, args.layers, args.positions)
    idx = np.arange(args.n)
    train, val = idx[: int(0.7 * args.n)], idx[int(0.7 * args.n):int(0.8 * args.n)]  # a small val: CV, as in the book
    keep = probes.SCREEN_KEEP
    best, picks = {}, {}
    for _ in range(args.repeats):
        for name, k in (("full", 10**9), ("screened", keep)):
            probes.SCREEN_KEEP = k
            t0 = time.perf_counter()
            res = probes.sweep(lambda layer, pos: X[(layer, pos)], range(args.layers), range(-args.positions, 0),
                               y, train, val, "classification")
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
            picks[name] = res.best
    probes.SCREEN_KEEP = keep
    for name, b in picks.items():
        print(f"{name}: layer {b['layer']}, position {b['position']}, alpha {b['alpha']:g}, "
              f"cv AUROC {b['val_score']:.3f} +/- {b['val_se']:.3f}; {best[name]:.2f} s")
    print(f"screened_sweep_speedup: {best['full'] / best['screened']:.2f}")


if __name__ == "__main__":
    main()
