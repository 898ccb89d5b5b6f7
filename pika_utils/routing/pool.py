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
