"""A router a user keeps: saved probe folders (one per pool member), costs, and either a utility
lambda or cascade thresholds, saved as JSON (no pickle) and applied to new questions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import prices as pricing

from ..core import store
from ..core.best import best_of
from .rules import check_grid, cost_series, normalised_costs, utility_choice



def _probe_p(score: np.ndarray, prob: np.ndarray | None) -> np.ndarray:
    """A success probability from a saved probe's output: the Platt probability of a binary
    probe, or a success-rate regression clipped to [0, 1]."""
    return prob if prob is not None else np.clip(score, 0.0, 1.0)


def _price_pair(member: str, prices_: Mapping) -> tuple[float, float]:
    """A member's (input, output) $ per million tokens, given as a pair or as {input_per_m,
    output_per_m}, checked by the price table's own rule (``core.prices.check_price``)."""
    v = prices_.get(member) if isinstance(prices_, Mapping) else None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = dict(zip(pricing.PRICE_KEYS, v))
    p = pricing.check_price(v, where=f"prices[{member!r}]")
    return p["input_per_m"], p["output_per_m"]


def _share(member: str, values: Mapping) -> float:
    v = values.get(member)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
        raise ValueError(f"accuracy[{member!r}] = {v!r}: give the member's accuracy on the training benchmark, in [0, 1]")
    return float(v)


#: What a saved router's JSON says it is: the class's path now, and the paths it had when older
#: files were saved (a file format, read as data: no module is imported by these names).
KIND = "pika_utils.routing.router.Router"
EARLIER_KINDS = ("pika_utils.router.Router", "pika_utils.routing.Router")


class Router:
    """Routes new questions with saved probes (one folder per member, see
    ``probes.protocol.save_trained_probe``) by utility (``lam``) or cascade (``thresholds``).

    A router kept for a benchmark may also carry each member's ``prices`` ($ per million input
    and output tokens: what ``routing.judge`` charges on a new benchmark), its ``accuracy`` on the
    benchmark it was trained on, and a ``detector`` (``routing.detector``): a question whose reader
    state lies beyond the detector's threshold goes to the ``fallback``, the most accurate member
    of the training benchmark (the cheaper on a tie), and the output says so."""

    def __init__(self, probe_dirs: Mapping[str, str | Path], costs=None, *, lam: float | None = None,
                 thresholds: Sequence[float] | None = None, order: Sequence[str] | None = None,
                 prices_overrides: Mapping | None = None, tokens: tuple[float, float] = (500, 500),
                 prices: Mapping[str, Sequence[float]] | None = None, accuracy: Mapping[str, float] | None = None,
                 detector: str | Path | None = None, cost_scale: float | None = None, trained_on: str = "") -> None:
        """``costs``: expected $ per member (e.g. ``expected_costs(outcomes)``); without them,
        each member's price for ``tokens`` (input, output) from the price table, which cannot
        tell two modes of one model apart: pass costs for those. ``cost_scale``: the cost that
        lambda is measured in (the most expensive member's by default; a restricted router keeps
        its parent's, so that lambda keeps its meaning)."""
        from ..probes.files import ProbeError, load_probe

        if (lam is None) == (thresholds is None):
            raise ValueError("give exactly one of lam (utility router) or thresholds (cascade router)")
        if not probe_dirs:
            raise ValueError("probe_dirs is empty: give one saved probe folder per pool member")
        self.probe_dirs = {str(m): Path(d).resolve() for m, d in probe_dirs.items()}
        self.info, self.coef = {}, {}
        for m, d in self.probe_dirs.items():
            try:
                self.coef[m], self.info[m] = load_probe(d)
            except FileNotFoundError as e:
                raise ValueError(f"pool member {m!r} has no probe: {e}") from None
            except ProbeError as e:
                raise ProbeError(f"pool member {m!r}: {e}") from None
            if self.info[m].get("target") not in ("maj_correct", "success_rate"):
                raise ValueError(f"member {m!r}: the probe in {d} predicts {self.info[m].get('target')!r}, not a "
                                 "success probability; save a binary (maj_correct) or success_rate probe")
        members = list(self.probe_dirs)
        if costs is None:
            try:
                costs = {m: pricing.token_cost(self.info[m]["model"], *tokens, prices_overrides) for m in members}
            except KeyError as e:
                raise ValueError(f"a pool member has no price/cost: {e.args[0]}") from None
        self.costs = cost_series(costs, members, "costs")
        self.order = list(order) if order is not None else sorted(members, key=lambda m: (self.costs[m], m))
        if sorted(self.order) != sorted(members):
            raise ValueError(f"order {self.order} must list every member once: {members}")
        self.lam = None if lam is None else float(check_grid([lam], "lam", 0.0, np.inf)[0])
        self.thresholds = None
        if thresholds is not None:
            t = check_grid(np.atleast_1d(thresholds), "thresholds", 0.0, 1.0)
            if t.shape != (len(members) - 1,):
                raise ValueError(f"thresholds: need one per non-final member of {self.order}, got {t.tolist()}")
            self.thresholds = t.tolist()
        self.prices = None if prices is None else {m: _price_pair(m, prices) for m in members}
        self.accuracy = None if accuracy is None else {m: _share(m, accuracy) for m in members}
        self.cost_scale = float(cost_scale) if cost_scale is not None else float(self.costs.max())
        if not np.isfinite(self.cost_scale) or self.cost_scale < 0:
            raise ValueError(f"cost_scale={cost_scale!r}: must be a finite number >= 0")
        self.trained_on = str(trained_on)
        self.detector_dir = None if detector is None else Path(detector).resolve()
        self.detector = None
        if self.detector_dir is not None:
            from .detector import Detector

            if self.accuracy is None:
                raise ValueError("a router with a detector needs each member's accuracy on its training benchmark "
                                 "(accuracy=...): its fallback is the most accurate member")
            self.detector = Detector.load(self.detector_dir)

    @property
    def fallback(self) -> str | None:
        """The member a question off the training distribution goes to: the most accurate on the
        training benchmark, the cheaper on a tie (None without ``accuracy``)."""
        if self.accuracy is None:
            return None
        return str(best_of(pd.DataFrame({"member": self.order, "accuracy": [self.accuracy[m] for m in self.order],
                                         "cost": self.costs[self.order].to_numpy()}))["member"])

    @property
    def normalised_costs(self) -> pd.Series:
        c = self.costs[self.order]
        return c / self.cost_scale if self.cost_scale > 0 else pd.Series(normalised_costs(c.to_numpy()), index=self.order)

    def restrict(self, members: Sequence[str]) -> "Router":
        """The same router over some of its members (those a new benchmark's log has): the same
        probes, lambda, cost scale and detector; a cascade keeps its members' order and thresholds;
        the fallback is the most accurate of the members kept."""
        members = list(members)
        unknown = sorted(set(members) - set(self.order))
        if not members:
            raise ValueError(f"restrict: give at least one of the router's members {self.order}")
        if unknown:
            raise ValueError(f"restrict: {unknown} are not members of this router ({self.order})")
        order = [m for m in self.order if m in members]
        thresholds = None
        if self.thresholds is not None:
            if len(order) < 2:
                raise ValueError("a cascade needs at least two members")
            thresholds = [self.thresholds[self.order.index(m)] for m in order[:-1]]
        return Router({m: self.probe_dirs[m] for m in order}, {m: float(self.costs[m]) for m in order},
                      lam=self.lam, thresholds=thresholds, order=order,
                      prices=None if self.prices is None else {m: self.prices[m] for m in order},
                      accuracy=None if self.accuracy is None else {m: self.accuracy[m] for m in order},
                      detector=self.detector_dir, cost_scale=self.cost_scale, trained_on=self.trained_on)

    def _detector_key(self) -> tuple | None:
        from ..probes.protocol import reading_key

        return None if self.detector is None else reading_key(self.detector.info)

    def route(self, questions: Sequence[str], lms: Mapping | None = None, *, source: str = "auto",
              batch_size: int = 16, use_detector: bool = True, progress: bool = False) -> pd.DataFrame:
        """The chosen member per question and every probability behind it (NaN where a cascade
        did not consult a member); with a detector, each question's ``distance``, whether it is
        ``off_distribution`` (then ``member`` is the fallback) and the ``probe_member`` the probes
        chose. Models load by the probes' JSON names unless ``lms`` maps a member (or a model
        name) to a ``LoadedModel``."""
        from ..models.registry import check_weights, load_model
        from ..probes.protocol import _check_probe_model, eoi_features, probe_output, reading_key

        qs, lms, loaded = list(questions), dict(lms or {}), {}
        if not qs:
            raise ValueError("questions is empty: nothing to route")
        # probes that read the same model with the same prompt (reader probes: one small model
        # predicting every member) share one forward pass over all the questions
        groups: dict[tuple, list[str]] = {}
        for member in self.order:
            groups.setdefault(reading_key(self.info[member]), []).append(member)
        det_key = self._detector_key() if use_detector else None
        reads = dict(groups)
        if det_key is not None and det_key not in reads:
            reads[det_key] = []
        for key, group in reads.items():  # each model to load holds the weights its probes read, before it loads
            if not any(lms.get(g) is not None for g in group) and lms.get(key[0]) is None:
                what = f"the probe of {group[0]!r} ({self.probe_dirs[group[0]]})" if group else \
                    f"the router's detector ({self.detector_dir})"
                check_weights(key[0], key[1], what=what, source=source)

        def lm_for(key: tuple):
            lm = next((lms[g] for g in reads[key] if lms.get(g) is not None), None) or lms.get(key[0])
            if lm is None:
                lm = loaded[key[0]] = loaded.get(key[0]) or load_model(key[0], source=source)
            return lm

        def read(key: tuple, idx: np.ndarray) -> dict:
            """Each (layer, position) that the key's probes (and the detector) need, for questions ``idx``."""
            lm = lm_for(key)
            for g in reads[key]:
                _check_probe_model(self.probe_dirs[g], self.coef[g], self.info[g], lm)
            cells = {(int(self.info[g]["layer"]), int(self.info[g]["position"])) for g in reads[key]}
            if key == det_key:
                cells.add((self.detector.layer, self.detector.position))
            layers, n_pos = sorted({c[0] for c in cells}), max(-c[1] for c in cells)
            feats = eoi_features(lm, [qs[i] for i in idx], layers, n_pos, prompt_suffix=key[2], system_prompt=key[3],
                                 batch_size=batch_size, progress=progress)
            return {c: feats[:, layers.index(c[0]), n_pos + c[1], :] for c in cells}

        read_all: dict[tuple, dict] = {}

        def features_of(key: tuple, idx: np.ndarray | None) -> dict:
            if idx is None or len(reads[key]) > 1 or key == det_key:  # shared reading: every question once
                if key not in read_all:
                    read_all[key] = read(key, np.arange(len(qs)))
                return read_all[key] if idx is None else {c: x[idx] for c, x in read_all[key].items()}
            return read(key, idx)  # its own reading: only the questions that need it

        def probs_for(member: str, idx: np.ndarray | None = None) -> np.ndarray:
            info = self.info[member]
            x = features_of(reading_key(info), idx)[(int(info["layer"]), int(info["position"]))]
            return _probe_p(*probe_output(self.coef[member], info, x))

        distance = None
        if det_key is not None:
            distance = self.detector.distance(features_of(det_key, None)[(self.detector.layer, self.detector.position)])
        return self._decide(qs, probs_for, distance)

    def route_features(self, questions: Sequence[str], features, *, use_detector: bool = True,
                       reading: Mapping | None = None) -> pd.DataFrame:
        """``route`` on reader states already read: ``features(layer, position)`` gives the
        (questions, d_model) end-of-instruction states of the probes' model (a stored activation
        set, whose ``meta`` is ``reading``: its model and weights are checked against the probes').
        Every probe and the detector must read one model with one prompt."""
        from ..probes.protocol import probe_output, reading_key

        keys = {reading_key(self.info[m]) for m in self.order} | ({self._detector_key()} if self.detector else set())
        if len(keys) != 1:
            raise ValueError(f"route_features needs every probe to read one model with one prompt; these read {len(keys)}")
        key = next(iter(keys))
        if reading is not None and (reading.get("model"), reading.get("weights_sha256")) != key[:2]:
            raise ValueError(f"the stored states are of {reading.get('model')} weights "
                             f"{str(reading.get('weights_sha256'))[:12]}; the router's probes read {key[0]} weights {key[1][:12]}")
        qs = list(questions)

        def probs_for(member: str, idx: np.ndarray | None = None) -> np.ndarray:
            info = self.info[member]
            x = np.asarray(features(int(info["layer"]), int(info["position"])))
            return _probe_p(*probe_output(self.coef[member], info, x if idx is None else x[idx]))

        distance = None
        if use_detector and self.detector is not None:
            distance = self.detector.distance(features(self.detector.layer, self.detector.position))
        return self._decide(qs, probs_for, distance)

    def _decide(self, qs: list[str], probs_for, distance: np.ndarray | None) -> pd.DataFrame:
        n, m = len(qs), len(self.order)
        P = np.full((n, m), np.nan)
        if self.lam is not None:
            for j, member in enumerate(self.order):
                P[:, j] = probs_for(member)
            choice = utility_choice(P, self.normalised_costs.to_numpy(), [self.lam])[0]
        else:
            choice, active = np.full(n, m - 1), np.arange(n)
            for j, member in enumerate(self.order[:-1]):
                if len(active):
                    P[active, j] = probs_for(member, active)
                    stop = P[active, j] >= self.thresholds[j]
                    choice[active[stop]], active = j, active[~stop]
        picked = np.array(self.order, dtype=object)[choice]
        out = pd.DataFrame({"question": qs, "member": picked})
        out = out.assign(**{f"p:{x}": P[:, j] for j, x in enumerate(self.order)})
        if distance is not None:
            off = ~(np.asarray(distance) <= self.detector.threshold)  # a distance that is not a number: off too
            out = out.assign(member=np.where(off, self.fallback, picked), probe_member=picked, distance=distance,
                             off_distribution=off)
        return out

    def save(self, path: str | Path) -> Path:
        """JSON only: probe folders (relative to the JSON's folder, so the two move together),
        their weights' sha256, costs, order, lam or thresholds, versions."""
        base = Path(path).resolve().parent
        det = self.detector_dir
        return store.write_json(path, {
            "kind": KIND, "format": 2, "order": self.order,
            "probe_dirs": {m: os.path.relpath(d, base) for m, d in self.probe_dirs.items()},
            "probe_sha256": {m: store.file_sha256(d / "probe.safetensors") for m, d in self.probe_dirs.items()},
            "probe_json_sha256": {m: store.file_sha256(d / "probe.json") for m, d in self.probe_dirs.items()},
            "costs": self.costs.to_dict(), "lam": self.lam, "thresholds": self.thresholds,
            "cost_scale": self.cost_scale, "prices": self.prices, "accuracy": self.accuracy,
            "fallback": self.fallback, "trained_on": self.trained_on,
            "detector": None if det is None else os.path.relpath(det, base),
            "detector_sha256": None if det is None else {f: store.file_sha256(det / f)
                                                          for f in ("detector.safetensors", "detector.json")},
            "versions": store.versions(), "saved": store.now_iso()})

    @classmethod
    def load(cls, path: str | Path) -> "Router":
        """Rebuild a saved router; an error if a probe changed since it was saved."""
        d = store.read_json(path)
        if d.get("kind") not in (KIND, *EARLIER_KINDS):
            raise ValueError(f"{path} is not a saved Router (kind={d.get('kind')!r})")
        need = {"probe_dirs": dict, "probe_sha256": dict, "costs": dict, "order": list}
        for k, t in need.items():
            if not isinstance(d.get(k), t):
                raise ValueError(f"{path}: field {k!r} must be a JSON {'object' if t is dict else 'list'}, "
                                 f"got {d.get(k)!r}; save the router again")
        if set(d["probe_dirs"]) != set(d["probe_sha256"]):
            raise ValueError(f"{path}: 'probe_dirs' and 'probe_sha256' name different members")
        dirs = {m: Path(path).resolve().parent / folder for m, folder in d["probe_dirs"].items()}
        for m, folder in dirs.items():
            f = folder / "probe.safetensors"
            if not f.exists():
                raise ValueError(f"{path}: the probe of {m!r} is missing ({f}); the router's JSON and its "
                                 "probe folders must move together")
            if store.file_sha256(f) != d["probe_sha256"][m]:
                raise ValueError(f"the probe of {m!r} in {folder} changed since the router was saved; refit the router")
            j = folder / "probe.json"  # recorded since routers seal their probes' JSON too
            if m in (d.get("probe_json_sha256") or {}) and (not j.exists() or store.file_sha256(j) != d["probe_json_sha256"][m]):
                raise ValueError(f"{path}: the probe of {m!r} has another {j} than when the router was saved (its "
                                 "layer, position or another field changed); refit the router")
        det = d.get("detector")
        if det is not None:
            det = Path(path).resolve().parent / det
            for f, sha in (d.get("detector_sha256") or {}).items():
                if not (det / f).is_file() or store.file_sha256(det / f) != sha:
                    raise ValueError(f"{path}: the router's detector {det / f} is missing or changed since the router "
                                     "was saved; the router's JSON and its folders must move together")
        return cls(dirs, d["costs"], lam=d["lam"], thresholds=d["thresholds"], order=d["order"],
                   prices=d.get("prices"), accuracy=d.get("accuracy"), detector=det, cost_scale=d.get("cost_scale"),
                   trained_on=d.get("trained_on") or "")
