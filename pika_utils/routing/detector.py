"""How far a new question lies from the questions a router was trained on, read in the reader's
residual stream: a router that knows when it is off its training distribution.

Probes trained on one benchmark can fall towards chance on questions unlike their training set,
and a router that trusts them then loses accuracy against simply calling the best member. The
measure here is a nearest-neighbour distance (as in Sun et al., 2022): the reader's
end-of-instruction state at one layer and position, standardised with the training questions'
statistics (the probes' own rule); a question's distance is the mean Euclidean distance to its
``k`` nearest training questions, per square root of the dimension (so about 1.4 between two
independent draws of the training distribution in many dimensions). No model of the density is
fitted, so nothing about the new benchmark's shape is assumed. (Not the cosine distance of unit
vectors: after standardising, a shift of the whole distribution moves every state towards one
direction, where cosine distances to the training states can *shrink*.)

The threshold is chosen on held-out folds of the *training* benchmark: each fold's questions are
measured against the other folds (with ``k`` scaled to the smaller reference set), and the
threshold is the ``quantile`` of those held-out distances, so about ``1 - quantile`` of new
questions from the training distribution itself lie beyond it (a stated false-alarm rate, chosen
before any off-distribution question is seen). Saved as safetensors (the reference states, mean
and scale) + JSON (sealed like a probe): no pickle."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..core import store

#: Neighbours a distance averages over, and the share of held-out training questions inside the threshold.
K_NEIGHBOURS = 10
QUANTILE = 0.95
SEAL = "fields_sha256"


def _unit(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised states, divided by the square root of their dimension."""
    X = np.asarray(X, dtype=np.float64)
    return ((X - mean) / scale / np.sqrt(X.shape[1])).astype(np.float32)


def _moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    return X.mean(0), np.where(sd > 0, sd, 1.0)


def knn_distance(queries: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each query row to its ``k`` nearest reference rows."""
    k = max(1, min(int(k), len(reference)))
    R = reference.astype(np.float64)
    r2 = (R * R).sum(1)
    out = np.empty(len(queries))
    for i in range(0, len(queries), 512):  # bounded memory for long lists of questions
        Q = queries[i:i + 512].astype(np.float64)
        d2 = np.maximum((Q * Q).sum(1)[:, None] + r2[None, :] - 2 * Q @ R.T, 0.0)
        out[i:i + 512] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, :k]).mean(1)
    return out


@dataclass
class Detector:
    """Distance to the training questions at one reader layer and end-of-instruction position,
    with the threshold beyond which a question counts as off distribution."""

    reference: np.ndarray  # (n, d) float32: the training questions, standardised (``_unit``)
    mean: np.ndarray
    scale: np.ndarray
    layer: int
    position: int
    k: int
    threshold: float
    quantile: float
    info: Mapping = field(default_factory=dict)  # model, weights_sha256, prompt_suffix, system_prompt, ...

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Each question's distance (its reader state ``X`` at ``layer``/``position``, (n, d))."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.reference.shape[1]:
            raise ValueError(f"the detector reads {self.reference.shape[1]} features per question, got shape {X.shape}")
        return knn_distance(_unit(X, self.mean, self.scale), self.reference, self.k)

    def beyond(self, X: np.ndarray) -> np.ndarray:
        """True where a question lies beyond the threshold (off the training distribution)."""
        return self.distance(X) > self.threshold

    def save(self, path: str | Path) -> Path:
        """A folder with ``detector.safetensors`` and ``detector.json`` (sealed: an edited field is refused)."""
        from safetensors.numpy import save

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        data = save({"reference": self.reference.astype(np.float32), "mean": self.mean.astype(np.float64),
                     "scale": self.scale.astype(np.float64)})
        store.atomic_write_bytes(path / "detector.safetensors", data)
        record = {"layer": int(self.layer), "position": int(self.position), "k": int(self.k),
                  "threshold": float(self.threshold), "quantile": float(self.quantile),
                  "n_reference": int(len(self.reference)), "tensors_sha256": hashlib.sha256(data).hexdigest(),
                  **dict(self.info), "versions": store.versions(), "saved": store.now_iso()}
        store.write_json(path / "detector.json", {**record, SEAL: store.json_sha256(record)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Detector":
        """Read a saved detector, checking its tensors and fields against what was saved."""
        from safetensors.numpy import load_file

        path = Path(path)
        jf, tf = path / "detector.json", path / "detector.safetensors"
        for f in (jf, tf):
            if not f.is_file():
                raise ValueError(f"detector folder {path} has no {f.name} (a saved detector is detector.safetensors "
                                 "+ detector.json); save the router again")
        info = json.loads(jf.read_text(encoding="utf-8"))
        if store.json_sha256({k: v for k, v in info.items() if k != SEAL}) != info.get(SEAL):
            raise ValueError(f"{jf}: its fields differ from the ones sealed when it was saved (edited); save the "
                             "router again")
        if not store.sha256_matches(tf, info["tensors_sha256"]):
            raise ValueError(f"{tf}: its sha256 differs from the one recorded in {jf.name} (edited or damaged)")
        t = load_file(str(tf))
        keep = {k: v for k, v in info.items() if k not in ("layer", "position", "k", "threshold", "quantile",
                                                          "n_reference", "tensors_sha256", SEAL)}
        return cls(t["reference"], t["mean"], t["scale"], int(info["layer"]), int(info["position"]), int(info["k"]),
                   float(info["threshold"]), float(info["quantile"]), keep)


def held_out_distances(X: np.ndarray, folds: Sequence[int], k: int = K_NEIGHBOURS) -> np.ndarray:
    """Every training question's distance to the *other* folds' questions (standardised on those),
    with ``k`` scaled to the reference set's size so that a distance means the same density."""
    X, folds = np.asarray(X), np.asarray(folds)
    out = np.empty(len(X))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        mean, scale = _moments(X[tr])
        k_f = max(1, int(round(k * tr.sum() / len(X))))
        out[te] = knn_distance(_unit(X[te], mean, scale), _unit(X[tr], mean, scale), k_f)
    return out


def fit_detector(X: np.ndarray, folds: Sequence[int], *, layer: int, position: int, info: Mapping,
                 k: int = K_NEIGHBOURS, quantile: float = QUANTILE) -> tuple[Detector, np.ndarray]:
    """The detector over every training question (``X``: their reader states at ``layer`` and
    ``position``), its threshold the ``quantile`` of the held-out-fold distances (returned too)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile}: must lie strictly between 0 and 1")
    held = held_out_distances(X, folds, k)
    mean, scale = _moments(X)
    det = Detector(_unit(X, mean, scale), mean, scale, int(layer), int(position), int(k),
                   float(np.quantile(held, quantile)), float(quantile), dict(info))
    return det, held
