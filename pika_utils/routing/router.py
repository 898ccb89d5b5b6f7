"""A router a user keeps: saved probe folders (one per pool member), costs, and either a utility
lambda or cascade thresholds, saved as JSON (no pickle) and applied to new questions."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import prices

from ..core import store
from .rules import check_grid, cost_series, normalised_costs, utility_choice



def _probe_p(scored: pd.DataFrame) -> np.ndarray:
    """A success probability from a saved probe's output: the Platt 'prob' of a binary probe,
    or a success-rate regression clipped to [0, 1]."""
    return scored["prob"].to_numpy() if "prob" in scored else np.clip(scored["score"].to_numpy(), 0.0, 1.0)


#: What a saved router's JSON says it is: the class's path now, and the paths it had when older
#: files were saved (a file format, read as data: no module is imported by these names).
KIND = "pika_utils.routing.router.Router"
EARLIER_KINDS = ("pika_utils.router.Router", "pika_utils.routing.Router")


class Router:
    """Routes new questions with saved probes (one folder per member, see
    ``probes.protocol.save_trained_probe``) by utility (``lam``) or cascade (``thresholds``)."""

    def __init__(self, probe_dirs: Mapping[str, str | Path], costs=None, *, lam: float | None = None,
                 thresholds: Sequence[float] | None = None, order: Sequence[str] | None = None,
                 prices_overrides: Mapping | None = None, tokens: tuple[float, float] = (500, 500)) -> None:
        """``costs``: expected $ per member (e.g. ``expected_costs(outcomes)``); without them,
        each member's price for ``tokens`` (input, output) from the price table, which cannot
        tell two modes of one model apart: pass costs for those."""
        from ..probes.files import ProbeError, load_probe

        if (lam is None) == (thresholds is None):
            raise ValueError("give exactly one of lam (utility router) or thresholds (cascade router)")
        if not probe_dirs:
            raise ValueError("probe_dirs is empty: give one saved probe folder per pool member")
        self.probe_dirs = {str(m): Path(d).resolve() for m, d in probe_dirs.items()}
        self.info = {}
        for m, d in self.probe_dirs.items():
            try:
                self.info[m] = load_probe(d)[1]
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
                costs = {m: prices.token_cost(self.info[m]["model"], *tokens, prices_overrides) for m in members}
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

    @property
    def normalised_costs(self) -> pd.Series:
        return pd.Series(normalised_costs(self.costs[self.order].to_numpy()), index=self.order)

    def route(self, questions: Sequence[str], lms: Mapping | None = None, *, source: str = "auto",
              batch_size: int = 16) -> pd.DataFrame:
        """The chosen member per question and every probability behind it (NaN where a cascade
        did not consult a member). Models load by the probes' JSON names unless ``lms`` maps a
        member (or a model name) to a ``LoadedModel``."""
        from ..models.registry import check_weights, load_model
        from ..probes.protocol import predict_many, reading_key

        qs, lms, loaded = list(questions), dict(lms or {}), {}
        if not qs:
            raise ValueError("questions is empty: nothing to route")
        # probes that read the same model with the same prompt (reader probes: one small model
        # predicting every member) share one forward pass over all the questions
        groups: dict[tuple, list[str]] = {}
        for member in self.order:
            groups.setdefault(reading_key(self.info[member]), []).append(member)
        shared: dict[str, np.ndarray] = {}
        for key, group in groups.items():  # each model to load holds the weights its probes read, before it loads
            if not any(lms.get(g) is not None for g in group) and lms.get(key[0]) is None:
                check_weights(key[0], key[1], what=f"the probe of {group[0]!r} ({self.probe_dirs[group[0]]})",
                              source=source)

        def lm_for(member: str):
            name = self.info[member]["model"]
            lm = lms.get(member) or lms.get(name)
            if lm is None:
                lm = loaded[name] = loaded.get(name) or load_model(name, source=source)
            return lm

        def probs_for(member: str, idx: np.ndarray) -> np.ndarray:
            group = groups[reading_key(self.info[member])]
            if len(group) == 1:  # its own reading: only the questions that need it
                scored = predict_many({member: self.probe_dirs[member]}, [qs[i] for i in idx],
                                      {member: lm_for(member)}, batch_size=batch_size)
                return _probe_p(scored[member])
            if member not in shared:  # one forward of the reader for every member it predicts
                lm = lm_for(group[0])
                scored = predict_many({g: self.probe_dirs[g] for g in group}, qs, {g: lm for g in group},
                                      batch_size=batch_size)
                shared.update({g: _probe_p(scored[g]) for g in group})
            return shared[member][idx]

        n, m = len(qs), len(self.order)
        P = np.full((n, m), np.nan)
        if self.lam is not None:
            for j, member in enumerate(self.order):
                P[:, j] = probs_for(member, np.arange(n))
            choice = utility_choice(P, self.normalised_costs.to_numpy(), [self.lam])[0]
        else:
            choice, active = np.full(n, m - 1), np.arange(n)
            for j, member in enumerate(self.order[:-1]):
                if len(active):
                    P[active, j] = probs_for(member, active)
                    stop = P[active, j] >= self.thresholds[j]
                    choice[active[stop]], active = j, active[~stop]
        out = pd.DataFrame({"question": qs, "member": np.array(self.order, dtype=object)[choice]})
        return out.assign(**{f"p:{x}": P[:, j] for j, x in enumerate(self.order)})

    def save(self, path: str | Path) -> Path:
        """JSON only: probe folders (relative to the JSON's folder, so the two move together),
        their weights' sha256, costs, order, lam or thresholds, versions."""
        base = Path(path).resolve().parent
        return store.write_json(path, {
            "kind": KIND, "format": 1, "order": self.order,
            "probe_dirs": {m: os.path.relpath(d, base) for m, d in self.probe_dirs.items()},
            "probe_sha256": {m: store.file_sha256(d / "probe.safetensors") for m, d in self.probe_dirs.items()},
            "probe_json_sha256": {m: store.file_sha256(d / "probe.json") for m, d in self.probe_dirs.items()},
            "costs": self.costs.to_dict(), "lam": self.lam, "thresholds": self.thresholds,
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
        return cls(dirs, d["costs"], lam=d["lam"], thresholds=d["thresholds"], order=d["order"])
