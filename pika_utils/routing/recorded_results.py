"""What chapters 6 and 7 ask of the recorded pool (``recorded.build_recorded_pool``).

Every ranking is an AUROC counted within folds (``crossfit.fold_auroc``) on the probes' raw
scores, and every claim's interval is pooled over the fold seeds (``seeds.pooled_interval``): it
carries the refit. The member every router is compared with is the best one *of the training
folds* (chosen per fold, never on the problems it is scored on)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..core.best import fold_best
from ..core.metrics import auroc
from . import crossfit as CF
from . import evaluation as M
from .recorded import RecordedPool
from .seeds import SeedInterval, pooled_interval

#: The routers chapter 6 compares on the recorded pool: (method, kind, rule) by name.
ROUTERS = {
    "reader utility, most accurate": ("reader", "utility", "most_accurate"),
    "reader utility, most accurate within the best member's cost": ("reader", "utility", "most_accurate_within_cost"),
    "reader utility, cheapest at the best member's accuracy": ("reader", "utility", "cheapest_at_best_accuracy"),
    "reader cascade, most accurate within the best member's cost": ("reader", "cascade", "most_accurate_within_cost"),
    "text utility, most accurate": ("text", "utility", "most_accurate"),
    "text utility, most accurate within the best member's cost": ("text", "utility", "most_accurate_within_cost"),
    "text utility, cheapest at the best member's accuracy": ("text", "utility", "cheapest_at_best_accuracy"),
}
#: What ``auroc_difference`` may keep of a member's failures: all, those that ended with a boxed
#: answer, or the chains that stopped without one.
ENDINGS = (None, "answer", "unfinished")


def method_scores(pool: RecordedPool, method: str, seed: int | None = None) -> pd.DataFrame:
    """One method's cross-fitted scores under one fold seed (the book's by default)."""
    seed = pool.seeds[0] if seed is None else seed
    s = pool.scores
    return s[(s["method"] == method) & (s["seed"] == seed)].drop(columns=["method", "seed"])


def outcomes_of(pool: RecordedPool, member: str) -> np.ndarray:
    """A member's 0/1 outcomes in the pool's problem order."""
    ids = pool.problems["problem_id"].to_numpy()
    o = pool.outcomes[pool.outcomes["member"] == member]
    return o.set_index("problem_id")["correct"].reindex(ids).to_numpy(float)


def held_scores(pool: RecordedPool, member: str, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw held-out score, fold) of every problem, in the pool's problem order."""
    ids = pool.problems["problem_id"].to_numpy()
    s = method_scores(pool, method, seed)
    s = s[(s["member"] == member) & (s["role"] == "held")].set_index("problem_id").reindex(ids)
    return s["score"].to_numpy(float), s["fold"].to_numpy()


def _keep(pool: RecordedPool, member: str, ended: str | None) -> np.ndarray:
    """Problems an AUROC counts: every one, or the successes and the failures that ended ``ended``."""
    y = outcomes_of(pool, member)
    if ended is None:
        return np.ones(len(y), bool)
    if ended not in ENDINGS:
        raise ValueError(f"ended={ended!r}; choose one of {ENDINGS}")
    e = pool.ends[pool.ends["member"] == member].set_index("problem_id")["ended"]
    e = e.reindex(pool.problems["problem_id"]).fillna("").to_numpy()
    if not (e != "").any():
        raise ValueError(f"member {member!r} has no recorded responses: how its chains end is unknown")
    return (y == 1) | (e == ended)


def _auroc_stats(pool: RecordedPool, member: str, score: str, ended: str | None) -> dict:
    """Per fold seed, a function of resampled problem positions giving ``member``'s AUROC with
    predictor ``score`` ('reader', 'text' or 'level': minus the human level, not fitted, so one
    'seed')."""
    y, keep = outcomes_of(pool, member), _keep(pool, member, ended)
    if score == "level":
        lv = -pool.problems["level"].to_numpy(float)
        return {pool.seeds[0]: lambda idx: auroc(y[idx][keep[idx]], lv[idx][keep[idx]])}
    out = {}
    for seed in pool.seeds:
        s, f = held_scores(pool, member, score, seed)
        out[seed] = (lambda s, f: lambda idx: CF.fold_auroc(y[idx][keep[idx]], s[idx][keep[idx]], f[idx][keep[idx]]))(s, f)
    return out


def auroc_interval(pool: RecordedPool, member: str, score: str = "reader", *, ended: str | None = None,
                   n_boot: int = 1000, seed: int = 0) -> SeedInterval:
    """One member's AUROC over every problem (within folds, mean over fold seeds) with the
    seed-pooled interval."""
    return pooled_interval(_auroc_stats(pool, member, score, ended), len(pool.problems), n_boot=n_boot, seed=seed)


def auroc_difference(pool: RecordedPool, a: str, b: str, *, score: str = "reader", ended: str | None = None,
                     n_boot: int = 1000, seed: int = 0) -> SeedInterval:
    """AUROC for member ``a`` minus for member ``b`` over the same problems, resampled jointly,
    per fold seed, pooled over seeds; ``ended`` keeps only the failures that ended that way
    (the successes all stay)."""
    sa, sb = _auroc_stats(pool, a, score, ended), _auroc_stats(pool, b, score, ended)
    stats = {s: (lambda fa, fb: lambda idx: fa(idx) - fb(idx))(sa[s], sb[s]) for s in sa}
    return pooled_interval(stats, len(pool.problems), n_boot=n_boot, seed=seed)


def aurocs(pool: RecordedPool) -> pd.DataFrame:
    """Per member: accuracy, the human level's AUROC, and the reader probe's and the text
    model's cross-fitted AUROC (within folds; the mean over fold seeds, and their range)."""
    rows = []
    for m in pool.members:
        y = outcomes_of(pool, m)
        row = {"member": m, "accuracy": float(y.mean()), "n": int(len(y)),
               "human level": auroc(y, -pool.problems["level"].to_numpy(float))}
        for method, label in (("reader", "reader probe"), ("text", "text (TF-IDF)")):
            v = [CF.fold_auroc(y, *held_scores(pool, m, method, s)) for s in pool.seeds]
            row.update({label: float(np.mean(v)), f"{label} seeds": f"{min(v):.3f}-{max(v):.3f}"})
        rows.append(row)
    return pd.DataFrame(rows)


def ends_table(pool: RecordedPool) -> pd.DataFrame:
    """Per member: successes and failures, and how the failures' responses end."""
    e = pool.ends.merge(pool.outcomes[["member", "problem_id", "correct"]], on=["member", "problem_id"])
    fail = e[e["correct"] == 0]
    return pd.DataFrame([{"member": m, "successes": int((e[e["member"] == m]["correct"] == 1).sum()),
                          "failures": int((fail["member"] == m).sum()),
                          "failures ending with a boxed answer": int(((fail["member"] == m) & (fail["ended"] == "answer")).sum()),
                          "failures that stopped unfinished": int(((fail["member"] == m) & (fail["ended"] == "unfinished")).sum())}
                         for m in pool.members])


def chosen_table(pool: RecordedPool, seed: int | None = None) -> pd.DataFrame:
    """The reader probe's chosen layer, position and alpha per fold and member (one fold seed),
    wide: one row per member, one column per fold."""
    seed = pool.seeds[0] if seed is None else seed
    c = pool.chosen[(pool.chosen["seed"] == seed) & (pool.chosen["method"] == "reader")]
    c = c.assign(choice=[f"L{int(r.layer)} p{int(r.position)} a={r.alpha:g}" if r.layer >= 0 else "constant"
                         for r in c.itertuples()])
    return c.pivot(index="member", columns="fold", values="choice").rename(columns=lambda f: f"fold {f}").reset_index()


def choice_spread(pool: RecordedPool) -> pd.DataFrame:
    """Per method and member, over every fold of every seed: the range of chosen layers and
    alphas, and the most frequent layer with its share of the folds."""
    rows = []
    for (method, member), g in pool.chosen.groupby(["method", "member"], sort=False):
        g = g[g["layer"] >= -1]
        mode = g["layer"].mode()
        rows.append({"method": method, "member": member, "fits": len(g),
                     "layers": f"{g['layer'].min()}-{g['layer'].max()}" if method == "reader" else "-",
                     "most frequent layer": (f"{int(mode.iloc[0])} ({(g['layer'] == mode.iloc[0]).mean():.0%})"
                                             if method == "reader" and len(mode) else "-"),
                     "alphas": f"{g['alpha'].min():g}-{g['alpha'].max():g}",
                     "inner AUROC": f"{g['inner_auroc'].min():.3f}-{g['inner_auroc'].max():.3f}"})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Routing (chapter 6)


def route_all(pool: RecordedPool, seed: int | None = None, names=None) -> dict[str, pd.DataFrame]:
    """Routers of ``ROUTERS`` (``names``, or all) on every problem, cross-fitted under one fold seed."""
    seed = pool.seeds[0] if seed is None else seed
    out = {}
    for name in names or ROUTERS:
        method, kind, rule = ROUTERS[name]
        out[name] = CF.crossfit_route(method_scores(pool, method, seed), pool.outcomes, pool.folds_of(seed), rule=rule,
                                      prefill=pool.prefill(method), kind=kind)
    return out


def route_seeds(pool: RecordedPool, names) -> dict[str, dict[int, pd.DataFrame]]:
    """The routers ``names`` under every fold seed: {name: {seed: routed table}}."""
    by_seed = {s: route_all(pool, s, names) for s in pool.seeds}
    return {n: {s: by_seed[s][n] for s in pool.seeds} for n in names}


def best_by_fold(pool: RecordedPool, seed: int | None = None) -> pd.DataFrame:
    """Always answering with the best member *of the training folds* (``core.best.fold_best``):
    for each fold, the best member on the other folds, on that fold's problems. One row per
    problem: problem_id, member, correct, cost (and fold_best's other columns)."""
    return fold_best(pool.outcomes, pool.folds_of(seed))


def _aligned(pool: RecordedPool, table: pd.DataFrame, cost: str) -> tuple[np.ndarray, np.ndarray]:
    t = table.set_index("problem_id").reindex(pool.problems["problem_id"])
    return t["correct"].to_numpy(float), t[cost].to_numpy(float)


def versus_best(pool: RecordedPool, routed_by_seed: Mapping[int, pd.DataFrame], *, n_boot: int = 1000,
                seed: int = 0) -> dict[str, SeedInterval]:
    """A router against always answering with the training folds' best member, paired over every
    problem and pooled over fold seeds: accuracy difference, and the share of the best member's
    cost saved with the routing paid."""
    acc, saved = {}, {}
    for s, routed in routed_by_seed.items():
        rc, rk = _aligned(pool, routed, "cost_with_routing")
        bc, bk = _aligned(pool, best_by_fold(pool, s), "cost")
        acc[s] = (lambda rc, bc: lambda i: float(rc[i].mean() - bc[i].mean()))(rc, bc)
        saved[s] = (lambda rk, bk: lambda i: float(1 - rk[i].mean() / bk[i].mean()) if bk[i].mean() > 0 else np.nan)(rk, bk)
    n = len(pool.problems)
    return {"accuracy minus best": pooled_interval(acc, n, n_boot=n_boot, seed=seed),
            "cost saved": pooled_interval(saved, n, n_boot=n_boot, seed=seed)}


def paired_accuracy(a_by_seed: Mapping[int, pd.DataFrame], b_by_seed: Mapping[int, pd.DataFrame], pool: RecordedPool,
                    *, n_boot: int = 1000, seed: int = 0) -> SeedInterval:
    """Accuracy of router ``a`` minus router ``b`` on the same problems, per fold seed, pooled."""
    stats = {}
    for s in a_by_seed:
        ac, _ = _aligned(pool, a_by_seed[s], "cost_with_routing")
        bc, _ = _aligned(pool, b_by_seed[s], "cost_with_routing")
        stats[s] = (lambda ac, bc: lambda i: float(ac[i].mean() - bc[i].mean()))(ac, bc)
    return pooled_interval(stats, len(pool.problems), n_boot=n_boot, seed=seed)


def router_table(pool: RecordedPool, routed: Mapping[str, pd.DataFrame], *, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """One fold seed's picture (the book's): one row per router and per single member, the
    oracle and random routing (the most accurate reader router's mix): accuracy and $ per 1,000
    problems (routing paid), each router against the training folds' best member with paired
    intervals over the problems (this seed only: the claims pool the seeds)."""
    rows = []
    for m in M.single_members(pool.outcomes, split=None).itertuples():
        rows.append({"router": f"always {m.member}", "accuracy": m.accuracy, "$ per 1,000 problems": m.cost * 1000})
    orc = M.oracle(pool.outcomes, None)
    rows.append({"router": "oracle (cheapest correct member)", "accuracy": float(orc["correct"].mean()),
                 "$ per 1,000 problems": float(orc["cost"].mean()) * 1000})
    mix = routed["reader utility, most accurate"]["member"].value_counts(normalize=True).to_dict()
    rnd = M.random_routing(pool.outcomes, mix, seed=seed, split=None)
    rows.append({"router": "random (the most accurate reader router's mix)", "accuracy": float(rnd["correct"].mean()),
                 "$ per 1,000 problems": float(rnd["cost"].mean()) * 1000})
    ref = best_by_fold(pool)
    for name, r in routed.items():
        ci = M.paired_intervals(r, ref, cost="cost_with_routing", n_boot=n_boot, seed=seed)
        rows.append({"router": name, "accuracy": ci["accuracy"], "$ per 1,000 problems": float(r["cost_with_routing"].mean()) * 1000,
                     "accuracy minus best": ci["accuracy_diff"], "low": ci["accuracy_diff_low"],
                     "high": ci["accuracy_diff_high"], "cost saved": ci["cost_reduction"],
                     "saved low": ci["cost_reduction_low"], "saved high": ci["cost_reduction_high"], "n": len(r)})
    return pd.DataFrame(rows)


def room(pool: RecordedPool) -> dict:
    """Where routing could gain on this price table: the best member (over every problem: a
    description, not a choice any claim uses), whether it is also the cheapest, and the oracle."""
    singles = M.single_members(pool.outcomes, split=None)
    best = singles.sort_values(["accuracy", "cost"], ascending=[False, True], kind="stable").iloc[0]
    orc = M.oracle(pool.outcomes, None)
    return {"best member": best["member"], "best accuracy": float(best["accuracy"]),
            "best $ per 1,000": float(best["cost"]) * 1000,
            "best is cheapest": bool(best["member"] == singles.sort_values("cost").iloc[0]["member"]),
            "oracle accuracy": float(orc["correct"].mean()), "oracle $ per 1,000": float(orc["cost"].mean()) * 1000}


def seed_table(intervals: Mapping[str, SeedInterval]) -> pd.DataFrame:
    """Each quantity's estimate per fold seed beside the pooled estimate and interval (long)."""
    rows = []
    for name, iv in intervals.items():
        for r in iv.per_seed.itertuples():
            rows.append({"quantity": name, "seed": str(r.seed), "estimate": r.estimate, "low": r.low, "high": r.high})
        rows.append({"quantity": name, "seed": "pooled", "estimate": iv.estimate, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)

