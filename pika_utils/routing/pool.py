"""The routing pool of a profile: each model in two modes (a direct answer, and step-by-step
with a token budget), each member with its own rollouts, its own probe trained on the train
split, and its own price. Chapters 5 and 6 route across it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..generation import pipeline

from ..core import cached_tables, store
from ..probes import protocol as P
from . import crossfit as CF
from . import evaluation as M
from ..core.best import fold_best
from .evaluation import prefill_costs


@dataclass
class Pool:
    """Long tables, one row per (member, problem): what routing needs and nothing else."""

    members: list[str]
    outcomes: pd.DataFrame  # member, problem_id, correct, cost, split, success_rate
    probs: pd.DataFrame  # member, problem_id, p (calibrated, computed before generation)
    prefill: pd.DataFrame  # member, problem_id, prefill_cost (the cost of routing itself)
    probes: pd.DataFrame  # one row per member: model, mode, probe test AUROC, folder or why constant
    probe_dirs: dict[str, Path] = field(default_factory=dict)


def calibrated_probs(report: P.ProbeReport, acts, problem_ids) -> np.ndarray:
    """Success probabilities of a fitted binary probe for any problems (Platt-calibrated where the
    validation split allowed a fit)."""
    rows = acts.rows_for(list(problem_ids))
    logits = acts.layer(report.best["layer"], report.best["position"])[rows] @ report.coef
    a, b = report.platt if report.platt else (1.0, 0.0)  # no Platt fit: the probe's own probability
    return 1 / (1 + np.exp(-(a * logits + b)))


def member_modes(params: Mapping[str, Any]) -> dict[str, dict]:
    """The profile's modes (``pool_modes``): 'direct' (chapter 1's rollouts) and/or 'cot<B>'
    (budget forcing at ``route_budget`` B)."""
    b = int(params["route_budget"])
    modes = {"direct": {"budget": None}, f"cot{b}": {"budget": b}}
    wanted = params.get("pool_modes") or ["direct", "cot"]
    return {name: spec for name, spec in modes.items() if name.rstrip("0123456789") in wanted}


#: Bump when what build_pool computes changes, so stored pools are recomputed.
POOL_FORMAT = 2
_TABLES = ("outcomes", "probs", "prefill", "probes")


def member_runs(params: Mapping[str, Any]):
    """The problems and every member's rollout run (computed once, then read from the store)."""
    problems, runs, _ = pipeline.rollout_stage(params)
    members = {}
    for model in params["models"]:
        for mode, spec in member_modes(params).items():
            if spec["budget"] is None:
                members[f"{model}/{mode}"] = (model, mode, runs[model], params)
            else:
                run = pipeline.budget_runs(problems, model, params, [spec["budget"]])[spec["budget"]]
                members[f"{model}/{mode}"] = (model, mode, run, pipeline.reasoning_params(params))
    return problems, members


def pool_key(params: Mapping[str, Any], members: Mapping[str, tuple]) -> str:
    """Everything that determines the pool's tables: each member's run (model weights, problems,
    prompt, sampling), the activations read, the probe protocol and the prices."""
    extract = {k: params.get(k) for k in ("extract_layers", "extract_dtype", "extract_batch_size", "token_layer_fracs")}
    return store.stable_hash({"format": POOL_FORMAT, "runs": {m: v[2].meta["key"] for m, v in members.items()},
                              "extract": extract, "alphas": list(params["alphas"]), "n_boot": int(params["n_boot"]),
                              "seed": int(params["seed"]), "prices": params.get("prices") or {}})


def build_pool(params: Mapping[str, Any]) -> Pool:
    """The pool's tables, fitted once and stored under a key of what determines them, so the
    second chapter that routes reads them instead of re-fitting every member's probe."""
    problems, members = member_runs(params)
    folder = store.data_dir() / "pools" / pool_key(params, members)
    found = cached_tables.stored_tables(folder, "pool.json", _TABLES)
    if found:
        meta, tables = found
        return Pool(members=meta["members"], probe_dirs={m: Path(d) for m, d in meta["probe_dirs"].items()}, **tables)
    pool = _fit_pool(params, problems, members)
    cached_tables.store_tables(folder, "pool.json", {n: getattr(pool, n) for n in _TABLES},
                       {"members": pool.members, "probe_dirs": pool.probe_dirs})
    return pool


def _fit_pool(params: Mapping[str, Any], problems: pd.DataFrame, members: Mapping[str, tuple]) -> Pool:
    """Rollouts, activations and a maj-vote probe for every (model, mode); outcomes on every
    split (the routers pick their split), probabilities from each member's own probe."""
    outcomes, probs, prefill, probe_rows, dirs = [], [], [], [], {}
    kw = dict(alphas=params["alphas"], n_boot=int(params["n_boot"]), seed=int(params["seed"]))
    for member, (model, mode, run, p) in members.items():
        s = run.summary
        outcomes.append(pd.DataFrame({"member": member, "problem_id": s["problem_id"], "correct": s["maj_correct"].astype(int),
                                      "cost": s["cost_per_rollout"], "split": s["split"], "success_rate": s["success_rate"]}))
        prefill.append(prefill_costs(s[["problem_id", "prompt_tokens"]].assign(member=member, model=model),
                                     params.get("prices")))
        lm, acts = pipeline.activations_for(problems, model, p)
        labels = P.labels_table(run.summary, problems, model)
        row = {"member": member, "model": model, "mode": mode}
        try:
            rep = P.eoi_probe(acts, labels, "maj_correct", model=model, **kw)
        except ValueError as e:  # e.g. a member that never succeeds: its best guess is a constant
            base = float(labels.loc[labels["split"] == "train", "maj_correct"].mean())
            p_all = np.full(len(labels), base)
            row.update(probe="constant (train base rate)", auroc=np.nan, why=str(e)[:100])
        else:
            p_all = calibrated_probs(rep, acts, labels["problem_id"])
            key = store.stable_hash([rep.best, acts.meta["key"], "maj_correct", labels["maj_correct"].tolist()])
            dirs[member] = P.save_trained_probe(store.data_dir() / "probes" / f"{store.path_safe(model)}-{mode}-{key}", rep, acts,
                                                prompt_suffix=p.get("prompt_suffix") or "",
                                                system_prompt=p.get("system_prompt"), labels=labels)
            row.update(probe=f"layer {rep.best['layer']}, position {rep.best['position']}",
                       auroc=rep.metrics["test"], auroc_low=rep.metrics["ci_low"], auroc_high=rep.metrics["ci_high"])
        probs.append(pd.DataFrame({"member": member, "problem_id": labels["problem_id"], "p": p_all}))
        probe_rows.append(row)
    # members may answer different subsets (``model_limits``): route the problems all of them answered
    tables = [pd.concat(x, ignore_index=True) for x in (outcomes, probs, prefill)]
    common = set.intersection(*[set(g["problem_id"]) for _, g in tables[0].groupby("member")])
    tables = [x[x["problem_id"].isin(common)].reset_index(drop=True) for x in tables]
    return Pool(members=[r["member"] for r in probe_rows], outcomes=tables[0], probs=tables[1], prefill=tables[2],
                probes=pd.DataFrame(probe_rows), probe_dirs=dirs)


def point(routed: pd.DataFrame, name: str) -> dict:
    """One router's accuracy and mean cost per problem (with and without routing cost)."""
    return {"router": name, "accuracy": float(routed["correct"].mean()), "cost": float(routed["cost"].mean()),
            "cost_with_routing": float(routed["cost_with_routing"].mean())}


# --------------------------------------------------------------------------------------------
# The own pool cross-fitted: every problem all members answered, every choice made in-fold

#: Fold assignments every cross-fitted own-pool claim is repeated over: the spread between them
#: is the refit and fold-assignment variance that one fixed split leaves out of an interval.
FOLD_SEEDS = (0, 1, 2, 3, 4)
OWN_FOLDS = 5
#: Every LAYER_STEP-th layer is swept (neighbouring layers carry nearly the same signal; the
#: recorded pool's reader does the same): 5 seeds x 5 folds x (own + reader) probes stay cheap.
LAYER_STEP = 2
#: Bump when what crossfit_pool computes changes.
CROSSFIT_FORMAT = 1
_CF_TABLES = ("scores", "folds", "chosen")


@dataclass
class CrossfitPool:
    """Out-of-fold success probabilities for every member on every problem all members answered,
    for each fold seed: ``scores`` (method 'own' or 'reader', fold_seed, member, problem_id, fold,
    role 'held'/'inner', p), ``folds`` (fold_seed, problem_id, fold) and ``chosen`` (the layer,
    position and alpha each fold chose, per method, seed and member)."""

    scores: pd.DataFrame
    folds: pd.DataFrame
    chosen: pd.DataFrame
    reader: str | None = None

    def method(self, method: str, fold_seed: int) -> tuple[pd.DataFrame, pd.Series]:
        """One method's scores and fold assignment at one seed, as ``routing.crossfit`` takes them."""
        s = self.scores[(self.scores["method"] == method) & (self.scores["fold_seed"] == fold_seed)]
        f = self.folds[self.folds["fold_seed"] == fold_seed].set_index("problem_id")["fold"]
        return s.drop(columns=["method", "fold_seed"]).reset_index(drop=True), f

    @property
    def seeds(self) -> list[int]:
        return sorted(int(x) for x in self.folds["fold_seed"].unique())


def crossfit_pool(params: Mapping[str, Any], pool: Pool, *, reader: str | None = None,
                  fold_seeds=FOLD_SEEDS, n_folds: int = OWN_FOLDS) -> CrossfitPool:
    """Each member's probe (its own activations) and, with ``reader``, the reader's probe for each
    member, cross-fitted over the pool's problems (those every member answered) at each fold
    seed: layer, position, alpha and Platt chosen on the training folds only
    (``routing.crossfit.crossfit_probe``). Stored under a key of what determines it."""
    problems, members = member_runs(params)
    key = store.stable_hash({"format": CROSSFIT_FORMAT, "pool": pool_key(params, members), "reader": reader,
                             "fold_seeds": [int(s) for s in fold_seeds], "n_folds": int(n_folds)})
    folder = store.data_dir() / "pools" / f"crossfit-{key}"
    found = cached_tables.stored_tables(folder, "crossfit.json", _CF_TABLES)
    if found:
        return CrossfitPool(**found[1], reader=reader)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # hundreds of small fits: BLAS threads only contend (6x slower on 2 busy cores)
        cp = _fit_crossfit(params, problems, members, pool, reader, fold_seeds, n_folds)
    cached_tables.store_tables(folder, "crossfit.json", {n: getattr(cp, n) for n in _CF_TABLES}, {"reader": reader})
    return cp


def _features(acts, ids):
    rows = acts.rows_for(list(ids))
    cache: dict[tuple[int, int], np.ndarray] = {}

    def features(layer: int, pos: int) -> np.ndarray:
        if (layer, pos) not in cache:
            cache[(layer, pos)] = acts.layer(layer, pos)[rows]
        return cache[(layer, pos)]

    return features, list(acts.layers)[::LAYER_STEP], list(acts.meta["positions"])


def _fit_crossfit(params, problems, members, pool: Pool, reader, fold_seeds, n_folds) -> CrossfitPool:
    ids = np.array(sorted(pool.outcomes["problem_id"].unique()), dtype=object)
    y = {m: g.set_index("problem_id")["correct"].reindex(ids).to_numpy(float)
         for m, g in pool.outcomes.groupby("member")}
    readings = {}  # method -> member -> (features, layers, positions); one reading per model
    by_model: dict[str, tuple] = {}
    for member, (model, mode, _, p) in members.items():
        k = (model, mode)
        if k not in by_model:
            by_model[k] = _features(pipeline.activations_for(problems, model, p)[1], ids)
        readings.setdefault("own", {})[member] = k
    if reader is not None:
        if (reader, "direct") not in by_model:
            by_model[(reader, "direct")] = _features(pipeline.activations_for(problems, reader, params)[1], ids)
        readings["reader"] = {m: (reader, "direct") for m in members}
    alphas, seed = params["alphas"], int(params["seed"])
    scores, folds, chosen, done = [], [], [], {}
    for fs in fold_seeds:
        f = CF.make_folds(ids, n_folds, seed=int(fs))
        folds.append(pd.DataFrame({"fold_seed": int(fs), "problem_id": ids, "fold": f.to_numpy()}))
        for method, by_member in readings.items():
            for member, k in by_member.items():
                if (k, member, fs) not in done:  # the reader's probe of its own member is its own probe
                    feats, layers, positions = by_model[k]
                    held, inner = CF.crossfit_probe(feats, layers, positions, y[member], f.to_numpy(),
                                                    alphas=alphas, seed=seed)
                    done[(k, member, fs)] = (CF.member_scores(held, inner, ids, member), held.attrs["chosen"])
                s, c = done[(k, member, fs)]
                scores.append(s.assign(method=method, fold_seed=int(fs)))
                chosen.append(c.assign(method=method, fold_seed=int(fs), member=member))
    return CrossfitPool(scores=pd.concat(scores, ignore_index=True), folds=pd.concat(folds, ignore_index=True),
                        chosen=pd.concat(chosen, ignore_index=True), reader=reader)


def crossfit_claim(cp: CrossfitPool, method: str, outcomes: pd.DataFrame, *, prefill=None,
                   cost: str = "cost_with_routing", rule: str = "cheapest_at_best_accuracy",
                   n_boot: int = 1000, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """The utility router against the best single member, both chosen per fold on its training
    folds (lambda by ``rule``, ``routing.crossfit.crossfit_route``; the member by
    ``core.best.fold_best``), paired over every problem, at every fold seed. Returns the claim's
    numbers (the seeds' mean estimate, and an interval from the lowest to the highest of the
    seeds' 95% bootstrap bounds, so it covers the refit spread) and one row per seed."""
    rows = []
    for fs in cp.seeds:
        scores, folds = cp.method(method, fs)
        routed = CF.crossfit_route(scores, outcomes, folds, rule=rule, prefill=prefill, cost=cost)
        ref = fold_best(outcomes, folds)
        ci = M.paired_intervals(routed, ref.drop(columns=["fold", "best"]), cost=cost, n_boot=n_boot, seed=seed)
        rows.append({"fold_seed": fs, **ci, "n": int(len(routed)),
                     "best member per fold": ", ".join(ref.groupby("fold")["best"].first()),
                     "setting per fold": "; ".join(routed.groupby("fold")["setting"].first())})
    per_seed = pd.DataFrame(rows)
    out = {"method": method, "cost_column": cost, "n": int(per_seed["n"].iloc[0]), "seeds": len(per_seed)}
    for q in ("accuracy", "accuracy_diff", "cost_reduction"):
        out.update({q: float(per_seed[q].mean()), f"{q}_low": float(per_seed[f"{q}_low"].min()),
                    f"{q}_high": float(per_seed[f"{q}_high"].max()),
                    f"{q}_seed_min": float(per_seed[q].min()), f"{q}_seed_max": float(per_seed[q].max())})
    return out, per_seed
