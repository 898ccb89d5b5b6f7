"""Reader probes: ONE small model's residual stream predicting every pool member's success.

A pool member's own probe reads that member's activations, so routing with own probes pays a
prefill of every member it consults. A reader probe reads the activations of one reader model
(the profile's ``reader``; by default the cheapest member) and is trained on another member's
outcomes (labels from that member's rollouts, on the problems both have). Routing with reader
probes pays the reader's prefill once per question, and nothing extra when the reader's own
member answers (its prefill is reused). Same protocol as every probe (layer, position and alpha
on validation, Platt on validation, bootstrap intervals), saved with ``reader`` and
``target_member`` recorded, so ``Router`` and ``pika route`` apply them with one forward."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..generation import pipeline

from ..core import prices

from ..core import cached_tables, store
from . import pool as pool_
from ..probes import protocol as P
from .rules import ReaderPrefill
from .evaluation import prefill_costs

#: Bump when what reader_pool computes changes.
READER_FORMAT = 2  # 2: its TF-IDF comparison fits an intercept (probes.protocol.tfidf_baseline)
_TABLES = ("probs", "reader_prefill", "probes", "comparison")


def reader_name(params: Mapping[str, Any]) -> str:
    """The profile's ``reader``, or (null) the member model with the lowest input price."""
    r = params.get("reader")
    models = list(params["models"])
    if r:
        if r not in models:
            raise ValueError(f"reader {r!r} is not one of the profile's models {models}: the reader is a pool "
                             "model (its prefill is the routing cost); name one of them, or null for the cheapest")
        return str(r)
    return min(models, key=lambda m: (prices.token_cost(m, 1_000_000, 0, params.get("prices")), models.index(m)))


@dataclass
class ReaderPool:
    """The pool routed with reader probes: the same outcomes as ``pool.build_pool``, success
    probabilities from the reader's activations, and the reader's prefill as routing cost."""

    reader: str
    reader_member: str | None  # the member that answers with the prompt the reader read (prefill reused)
    members: list[str]
    outcomes: pd.DataFrame
    probs: pd.DataFrame  # member, problem_id, p (reader probe, calibrated)
    reader_prefill: pd.DataFrame  # problem_id, prefill_cost of the reader
    probes: pd.DataFrame  # one row per member: reader probe's layer/position and test AUROC
    comparison: pd.DataFrame  # per member: reader probe vs own probe vs TF-IDF vs length, paired
    probe_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def prefill(self) -> ReaderPrefill:
        """What routers take as ``prefill_cost``: the reader's prefill once per problem."""
        return ReaderPrefill(self.reader_prefill, self.reader_member)


def member_labels(run_summary: pd.DataFrame, problems: pd.DataFrame, model: str, acts) -> pd.DataFrame:
    """A member's labels (from its own rollouts) on the problems that both it and the reader's
    activations have."""
    lab = P.labels_table(run_summary, problems, model)
    have = set(acts.meta["problem_ids"])
    return lab[lab["problem_id"].isin(have)].reset_index(drop=True)


def reader_probe(reader_acts, labels: pd.DataFrame, target: str = "maj_correct", **kw) -> P.ProbeReport:
    """The chapter-3 protocol on the reader's activations with another member's labels."""
    rep = P.eoi_probe(reader_acts, labels, target, model=None, **kw)
    rep.name = "reader probe"
    return rep


def compare_member(reader_acts, own_acts, labels: pd.DataFrame, target: str = "maj_correct", **kw):
    """Reader probe, own probe, TF-IDF and length on the same labels and splits; the paired
    differences are *reader minus* each other on the same test problems."""
    where = {k: kw.pop(k) for k in ("layers", "positions") if k in kw}  # the probes' sweep only
    reader = reader_probe(reader_acts, labels, target, **where, **kw)
    own = P.eoi_probe(own_acts, labels, target, model=None, **where, **kw)
    own.name = "own probe"
    reports = [reader, own, P.tfidf_baseline(labels, target, **kw), P.length_baseline(labels, target, **kw)]
    table = P.compare(reports, n_boot=kw.get("n_boot", 1000), seed=kw.get("seed", 0))
    return reports, table.rename(columns={"probe_minus": "reader_minus"})


def reader_key(params: Mapping[str, Any], members: Mapping[str, tuple], reader: str) -> str:
    return store.stable_hash({"format": READER_FORMAT, "pool": pool_.pool_key(params, members), "reader": reader,
                              "prompt": [params.get("prompt_suffix") or "", params.get("system_prompt")]})


def reader_pool(params: Mapping[str, Any]) -> ReaderPool:
    """Reader probes for every member, fitted once and stored under a key of what determines
    them (the pool's key and the reader), like ``pool.build_pool``."""
    pool = pool_.build_pool(params)
    problems, members = pool_.member_runs(params)
    reader = reader_name(params)
    folder = store.data_dir() / "pools" / f"reader-{reader_key(params, members, reader)}"
    found = cached_tables.stored_tables(folder, "reader.json", _TABLES)
    if found:
        meta, tables = found
        return ReaderPool(reader=meta["reader"], reader_member=meta["reader_member"], members=meta["members"],
                          outcomes=pool.outcomes, probe_dirs={m: Path(d) for m, d in meta["probe_dirs"].items()},
                          **tables)
    rp = _fit(params, problems, members, pool, reader)
    cached_tables.store_tables(folder, "reader.json", {n: getattr(rp, n) for n in _TABLES},
                       {"reader": rp.reader, "reader_member": rp.reader_member, "members": rp.members,
                        "probe_dirs": rp.probe_dirs})
    return rp


def _fit(params, problems, members, pool, reader: str) -> ReaderPool:
    kw = dict(alphas=params["alphas"], n_boot=int(params["n_boot"]), seed=int(params["seed"]))
    _, racts = pipeline.activations_for(problems, reader, params)
    suffix, system = params.get("prompt_suffix") or "", params.get("system_prompt")
    reader_member = next((m for m, v in members.items() if v[0] == reader and v[1] == "direct"), None)
    common = set(pool.outcomes["problem_id"])
    probs, rows, comps, dirs = [], [], [], {}
    for member, (model, mode, run, p) in members.items():
        labels = member_labels(run.summary, problems, model, racts)
        row = {"member": member, "reader": reader, "model": model, "mode": mode}
        try:
            rep = reader_probe(racts, labels, **kw)
        except ValueError as e:  # e.g. a member that never succeeds: a constant is its best guess
            base = float(labels.loc[labels["split"] == "train", "maj_correct"].mean())
            p_all = np.full(len(labels), base)
            row.update(probe="constant (train base rate)", auroc=np.nan, why=str(e)[:100])
        else:
            p_all = pool_.calibrated_probs(rep, racts, labels["problem_id"])
            key = store.stable_hash([rep.best, racts.meta["key"], member, labels["maj_correct"].tolist()])
            dirs[member] = P.save_trained_probe(
                store.data_dir() / "probes" / f"reader-{store.path_safe(reader)}-for-{store.path_safe(member)}-{key}",
                rep, racts, prompt_suffix=suffix, system_prompt=system, labels=labels,
                extra={"reader": reader, "target_member": member, "target_model": model, "target_mode": mode})
            row.update(probe=f"layer {rep.best['layer']}, position {rep.best['position']}",
                       auroc=rep.metrics["test"], auroc_low=rep.metrics["ci_low"], auroc_high=rep.metrics["ci_high"])
            comps.append(_comparison(racts, model, problems, p, labels, member, kw))
        probs.append(pd.DataFrame({"member": member, "problem_id": labels["problem_id"], "p": p_all}))
        rows.append(row)
    probs = pd.concat(probs, ignore_index=True)
    probs = probs[probs["problem_id"].isin(common)].reset_index(drop=True)
    tokens = P.labels_table(members[reader_member][2].summary if reader_member else _reader_summary(members, reader),
                            problems, reader)[["problem_id", "prompt_tokens"]]
    pre = prefill_costs(tokens.assign(member=reader, model=reader), params.get("prices"))
    pre = pre[pre["problem_id"].isin(common)][["problem_id", "prefill_cost"]].reset_index(drop=True)
    return ReaderPool(reader=reader, reader_member=reader_member, members=list(members), outcomes=pool.outcomes,
                      probs=probs, reader_prefill=pre, probes=pd.DataFrame(rows),
                      comparison=pd.concat(comps, ignore_index=True) if comps else pd.DataFrame(), probe_dirs=dirs)


def _reader_summary(members, reader: str) -> pd.DataFrame:
    for model, _, run, _ in members.values():
        if model == reader:
            return run.summary
    raise ValueError(f"the reader {reader!r} is not a pool model ({sorted({v[0] for v in members.values()})}); "
                     "name one of the profile's models as `reader`, or null for the cheapest")


def _comparison(racts, model, problems, p, labels, member, kw) -> pd.DataFrame:
    """Own probe (the member's activations, its own prompt) against the reader probe on the
    member's labels restricted to problems both were read on."""
    _, own = pipeline.activations_for(problems, model, p)
    lab = labels[labels["problem_id"].isin(set(own.meta["problem_ids"]))].reset_index(drop=True)
    try:
        _, table = compare_member(racts, own, lab, **kw)
    except ValueError as e:
        return pd.DataFrame([{"member": member, "method": "reader probe", "why": str(e)[:100]}])
    return table.assign(member=member)


# --------------------------------------------------------------------------------------------
# What chapters 5 and 6 ask of a pool's probabilities (own or reader): a setting chosen on
# validation, replayed on test, against the best single member, with routing paid


def cascade_point(probs: pd.DataFrame, outcomes: pd.DataFrame, prefill, members, grid, name: str):
    """A cascade's thresholds chosen on validation (the cheapest setting at the best single
    member's validation accuracy, else the most accurate), replayed on test; and its test sweep."""
    from . import rules as R
    from . import evaluation as M

    val = R.cascade_sweep(probs, outcomes, grid, order=members, prefill_cost=prefill, split="val")
    pick = M.cost_reduction_at_best_accuracy(val, M.single_members(outcomes, split="val"), cost="cost_with_routing")
    if not np.isfinite(pick.get("accuracy", np.nan)):
        pick = val.sort_values(["accuracy", "cost_with_routing"], ascending=[False, True]).iloc[0]
    test = R.replay(pick, probs, outcomes, prefill_cost=prefill, split="test")
    row = {"cascade": " > ".join(members), **{k: pick[k] for k in pick.index if k.startswith("threshold:")},
           **pool_.point(test, name)}
    return row, R.cascade_sweep(probs, outcomes, grid, order=members, prefill_cost=prefill, split="test")


def headline(probs: pd.DataFrame, outcomes: pd.DataFrame, prefill, name: str, *, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """The utility router with lambda chosen on validation (cheapest setting at the best single
    member's validation accuracy, routing paid; else the most accurate), replayed on test against
    the best single member on test: the share of its accuracy kept and the cost saved with
    routing paid, each with a paired bootstrap interval over test problems."""
    from . import rules as R
    from . import evaluation as M

    val = R.utility_sweep(probs, outcomes, prefill_cost=prefill, split="val")
    pick = M.cost_reduction_at_best_accuracy(val, M.single_members(outcomes, split="val"), cost="cost_with_routing")
    if not np.isfinite(pick.get("accuracy", np.nan)):
        pick = val.sort_values(["accuracy", "cost_with_routing"], ascending=[False, True]).iloc[0]
    lam = float(pick["lam"])
    routed = R.utility(probs, outcomes, lam, prefill_cost=prefill, split="test")
    singles = M.single_members(outcomes, split="test")
    best = singles.sort_values(["accuracy", "cost"], ascending=[False, True], kind="stable").iloc[0]
    ref = M.always(outcomes, best["member"], "test")
    ci = M.paired_intervals(routed, ref, cost="cost_with_routing", n_boot=n_boot, seed=seed)
    acc = float(best["accuracy"])
    kept = (lambda v: v / acc if acc > 0 else np.nan)
    return {"router": name, "lam (val)": lam, "best member": best["member"], "best accuracy": acc,
            "accuracy": ci["accuracy"], "share of accuracy kept": kept(ci["accuracy"]),
            "kept low": kept(acc + ci["accuracy_diff_low"]), "kept high": kept(acc + ci["accuracy_diff_high"]),
            "cost saved, routing paid": ci["cost_reduction"], "saved low": ci["cost_reduction_low"],
            "saved high": ci["cost_reduction_high"], "routing cost per problem": float(routed["routing_cost"].mean()),
            "best member cost": float(best["cost"]), "accuracy diff": ci["accuracy_diff"],
            "accuracy diff low": ci["accuracy_diff_low"], "accuracy diff high": ci["accuracy_diff_high"],
            "n test": int(len(routed))}
