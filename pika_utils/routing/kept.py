"""The Router chapter 6 keeps for the recorded members: fitted on every problem of the benchmark
the members were recorded on, by the same protocol as the cross-fit whose verdicts the chapter
records, so that what a user keeps is what was judged.

Each member's reader probe is the cross-fit's ridge probe (intercept, activations standardised,
layer, position and alpha chosen by an inner 5-fold cross-validation, here over every problem),
saved as a plain weight vector with its intercept folded into the Platt coefficients (Platt fitted
on the inner out-of-fold scores). Lambda comes from the cross-fitted cost-accuracy curve (chosen
by the chapter). The router also carries each member's price and accuracy on the benchmark, and a
detector (``detector``) of questions unlike the benchmark's, whose threshold is chosen on the
benchmark's own held-out folds; beyond it the router calls the most accurate member."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core import store
from ..generation import pipeline
from ..probes.files import save_probe
from . import crossfit as CF
from . import ridge
from .detector import fit_detector
from .recorded import LAYER_STEP, RecordedPool, recorded_problem_set
from .router import Router

#: Bump when what the kept probes or detector compute changes.
KEPT_FORMAT = 1


def _outcome_matrix(pool: RecordedPool) -> np.ndarray:
    ids = pool.problems["problem_id"]
    Y = pool.outcomes.pivot(index="problem_id", columns="member", values="correct")
    return Y.reindex(index=ids, columns=pool.members).to_numpy(float)


def fit_kept_probes(acts, ids, Y: np.ndarray, members, alphas, seed: int = 0) -> pd.DataFrame:
    """Per member (column of ``Y``, rows in the order of ``ids``), the reader probe over every
    problem: chosen cell and alpha (inner k-fold over every problem), raw-feature weights,
    intercept folded into the Platt pair, and the inner AUROC. A member with fewer than
    ``2 * N_INNER`` of an outcome gets a constant (zero weights, its base rate)."""
    rows = acts.rows_for(list(ids))
    cells = [(int(layer), int(pos)) for layer in acts.layers[::LAYER_STEP] for pos in acts.meta["positions"]]
    every = np.arange(len(rows))
    feats: dict = {}

    def x(cell):
        if cell not in feats:
            feats[cell] = np.asarray(acts.layer(*cell)[rows], dtype=np.float32)
        return feats[cell]

    gram = CF.activation_gram(lambda layer, pos: x((layer, pos)), cells)(every)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        picks = ridge.inner_choices(gram, cells, Y, every, alphas, ridge.N_INNER, int(seed))
        out = []
        for t, (member, pick) in enumerate(zip(members, picks)):
            y = Y[:, t]
            row = {"member": member, "n": len(y), "accuracy": float(y.mean())}
            if pick["platt"] is None:  # too few of an outcome: its base rate
                base = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
                layer, pos = cells[0]
                out.append({**row, "layer": layer, "position": pos, "alpha": np.nan, "inner_auroc": np.nan,
                            "coef": np.zeros(x(cells[0]).shape[1]), "platt": [0.0, float(np.log(base / (1 - base)))],
                            "probe": CONSTANT})
                continue
            coef, b0 = ridge.ridge_weights(x(pick["cell"]), y, pick["alpha"])
            platt = pick["platt"]
            out.append({**row, "layer": pick["cell"][0], "position": pick["cell"][1], "alpha": pick["alpha"],
                        "inner_auroc": pick["inner_auroc"], "coef": coef,
                        "platt": [platt.a_, platt.a_ * b0 + platt.b_], "probe": "ridge, intercept"})
    return pd.DataFrame(out)


CONSTANT = "constant (base rate)"


def detector_cell(fits: pd.DataFrame) -> tuple[int, int]:
    """Where the detector reads: the layer and position most members' probes chose (the first
    chosen on a tie), so that it measures distance in the state the probes rely on."""
    fitted = fits[fits["probe"] != CONSTANT]
    cells = list(zip(fitted["layer"], fitted["position"])) or list(zip(fits["layer"], fits["position"]))
    count = Counter(cells)
    top = max(count.values())
    return next((int(layer), int(pos)) for layer, pos in cells if count[(layer, pos)] == top)


def fit_router(acts, ids, Y: np.ndarray, members, *, folds, costs: Mapping[str, float],
               prices: Mapping[str, Any], lam: float, alphas, seed: int, prompt_suffix: str,
               system_prompt: str | None, folder: Path, trained_on: str) -> tuple[Router, pd.DataFrame]:
    """Probes (``fit_kept_probes``) and a detector (threshold on ``folds``) over the problems
    ``ids`` with outcomes ``Y`` (one column per member), saved under ``folder``, and the Router
    over them: ``costs``, ``prices`` ($ per million input and output tokens), each member's
    accuracy (from ``Y``) and ``lam``. Returns the router and the table of its probes (the
    held-out training distances in ``attrs['held_out_distances']``)."""
    fits = fit_kept_probes(acts, ids, Y, members, alphas, seed)
    reading = {"model": acts.meta["model"], "weights_sha256": acts.meta["weights_sha256"],
               "prompt_suffix": prompt_suffix, "system_prompt": system_prompt}
    dirs = {}
    for t, f in enumerate(fits.itertuples()):
        key = store.stable_hash([KEPT_FORMAT, acts.meta["key"], f.member, Y[:, t].tolist(), f.layer, f.position,
                                 f.alpha, list(map(float, f.platt))])
        dirs[f.member] = Path(folder) / f"probe-{store.path_safe(f.member)}-{key}"
        save_probe(dirs[f.member], f.coef, {
            **reading, "target": "maj_correct", "task": "classification", "layer": int(f.layer),
            "position": int(f.position), "alpha": None if not np.isfinite(f.alpha) else float(f.alpha),
            "platt": [float(v) for v in f.platt], "platt_fitted": f.probe != CONSTANT,
            "metrics": {"inner_auroc": None if not np.isfinite(f.inner_auroc) else float(f.inner_auroc)},
            "activations_key": acts.meta["key"], "n_layers": (acts.meta.get("model_info") or {}).get("n_layers"),
            "eoi_positions": list(acts.meta.get("positions") or []), "reader": acts.meta["model"],
            "target_member": f.member, "target_model": f.member, "target_mode": "recorded",
            "probe": f"{f.probe} (intercept folded into platt)",
            "fitted_on": f"{len(Y)} problems, every one (inner {ridge.N_INNER}-fold choice of layer, position, alpha)"})
    layer, pos = detector_cell(fits)
    X = acts.layer(layer, pos)[acts.rows_for(list(ids))]
    det, held = fit_detector(X, np.asarray(folds), layer=layer, position=pos,
                             info={**reading, "fitted_on": f"{len(X)} problems, threshold on their held-out folds"})
    det_key = store.stable_hash([KEPT_FORMAT, acts.meta["key"], list(ids), layer, pos, list(map(int, folds)), det.k,
                                 det.quantile])
    det_dir = det.save(Path(folder) / f"detector-{det_key}")
    router = Router(dirs, dict(costs), lam=float(lam), prices={m: prices[m] for m in members},
                    accuracy={m: float(Y[:, t].mean()) for t, m in enumerate(members)}, detector=det_dir,
                    trained_on=trained_on)
    shown = fits.drop(columns=["coef", "platt"]).assign(
        threshold=det.threshold, detector=f"layer {layer}, position {pos}, k={det.k}, quantile {det.quantile:g}")
    shown.attrs["held_out_distances"] = held  # the training problems' distances, each to the other folds
    return router, shown


def keep_router(pool: RecordedPool, params: Mapping[str, Any], lam: float) -> tuple[Router, pd.DataFrame]:
    """The Router a user keeps for the recorded members (``fit_router`` on every problem of the
    pool) and the table of its probes; it reads a new question with the reader once and names the
    member to call, or the fallback when the question is unlike the benchmark's."""
    problems = recorded_problem_set(params)
    _, acts = pipeline.activations_for(problems, pool.reader, params)
    table = pool.members_table.set_index("member")
    costs = pool.outcomes.groupby("member")["cost"].mean().reindex(pool.members)
    return fit_router(acts, pool.problems["problem_id"].tolist(), _outcome_matrix(pool), pool.members,
                      folds=pool.folds.to_numpy(), costs=costs.to_dict(),
                      prices={m: [float(table.at[m, "input $/M"]), float(table.at[m, "output $/M"])] for m in pool.members},
                      lam=lam, alphas=params["alphas"], seed=int(params["seed"]),
                      prompt_suffix=params.get("prompt_suffix") or "", system_prompt=params.get("system_prompt"),
                      folder=store.data_dir() / "routers" / "kept",
                      trained_on=f"{len(pool.problems)} problems of the recorded benchmark, read by {pool.reader}")
