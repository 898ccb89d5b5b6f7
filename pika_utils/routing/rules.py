"""Routing each problem to one member of a model pool from its probes' success probabilities:
the threshold cascade and the utility argmax p_i - lam*c_i, and their sweeps, as pure functions
on long tables (a ``router.Router`` applies saved probes to new questions). Reference points (single
members, random, oracle) and summaries (frontier, AIQ, APGR) live in ``routing.evaluation``."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


OUTCOME_COLUMNS = ("member", "problem_id", "correct", "cost", "split")
PROB_COLUMNS = ("member", "problem_id", "p")
PREFILL_COLUMNS = ("member", "problem_id", "prefill_cost")
#: lambda = 0 (accuracy only) and 60 log-spaced values up to 10 (cost dominates).
DEFAULT_LAMBDAS = np.concatenate([[0.0], np.logspace(-3, 1, 60)])
MAX_SETTINGS = 200_000
ORDER_SEP = " > "


# --------------------------------------------------------------------------------------------
# Checking the inputs: every error names the table and says what to do


def _need(df, cols: Sequence[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame with columns {list(cols)}, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it needs {list(cols)} (it has {list(df.columns)})")
    dup = df.duplicated(["member", "problem_id"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(f"{name} has {int(dup.sum())} duplicate (member, problem_id) row(s), e.g. "
                         f"({r['member']!r}, {r['problem_id']!r}); keep one row per member and problem")


def check_splits(outcomes: pd.DataFrame) -> None:
    """A problem in two splits (e.g. train and test) leaks the test set into the costs and probes."""
    n = outcomes.groupby("problem_id")["split"].nunique()
    bad = n.index[n > 1]
    if len(bad):
        ex = outcomes[outcomes["problem_id"].isin(bad[:3])].groupby("problem_id")["split"].unique()
        raise ValueError(f"outcomes: {len(bad)} problem_id(s) are in more than one split, e.g. "
                         f"{ {k: sorted(v) for k, v in ex.items()} }; the test split must not overlap the "
                         "train split: assign each problem to one split")


def check_outcomes(outcomes: pd.DataFrame) -> None:
    """Columns, one row per (member, problem), 0/1 correctness, finite non-negative costs, splits."""
    _need(outcomes, OUTCOME_COLUMNS, "outcomes")
    if not outcomes["correct"].isin([0, 1]).all():
        raise ValueError("outcomes['correct'] must be bool or 0/1 (one realised outcome per member and problem)")
    k = pd.to_numeric(outcomes["cost"], errors="coerce")
    if not (np.isfinite(k) & (k >= 0)).all():
        bad = outcomes.loc[~(np.isfinite(k) & (k >= 0)), "member"].unique()
        raise ValueError(f"outcomes['cost'] is missing, negative or not finite for member(s) {list(bad)[:5]}; "
                         "every member needs a price (see pika_utils.prices) and a realised cost")
    check_splits(outcomes)


def check_grid(values, name: str, lo: float, hi: float) -> np.ndarray:
    """A sweep grid as floats: not empty, no NaN, inside [lo, hi]."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value in [{lo}, {hi}]")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; pass finite values in [{lo}, {hi}]")
    if ((a < lo) | (a > hi)).any():
        raise ValueError(f"{name} has value(s) outside [{lo}, {hi}]: {a[(a < lo) | (a > hi)][:5].tolist()}")
    return a


def cost_series(costs, members: Sequence[str], name: str = "costs") -> pd.Series:
    """Per-member $ as a Series over ``members``; a member without a cost, or with one that is not
    a number (text such as "1.0", a boolean), is an error naming it."""
    items = costs.items() if isinstance(costs, (pd.Series, Mapping)) else None
    if items is None:
        raise ValueError(f"{name} must map each pool member to its cost in $, got {type(costs).__name__}")
    bad = {m: v for m, v in items if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))}
    if bad:
        raise ValueError(f"{name}: the cost of {sorted(map(str, bad))} is not a number ({bad}); give $ as numbers")
    s = pd.Series(costs, dtype=float) if not isinstance(costs, pd.Series) else costs.astype(float)
    missing = [m for m in members if m not in s.index or not np.isfinite(s[m])]
    if missing:
        raise ValueError(f"pool member(s) {missing} have no price/cost in {name}; give every member a cost "
                         "(expected_costs(outcomes) from its train rows, or a price in pika_utils.core.prices)")
    s = s[list(members)]
    if (s < 0).any():
        raise ValueError(f"{name} must be >= 0; got {s[s < 0].to_dict()}")
    return s


def expected_costs(outcomes: pd.DataFrame, split: str = "train") -> pd.Series:
    """Each member's mean realised cost on the TRAIN split: what a router may know in advance
    (never the test problem's own cost)."""
    check_outcomes(outcomes)
    members = sorted(outcomes["member"].unique())
    out = outcomes[outcomes["split"] == split].groupby("member")["cost"].mean().reindex(members)
    if out.isna().any():
        raise ValueError(f"member(s) {list(out.index[out.isna()])} have no {split!r} rows: expected costs come "
                         f"from the {split} split only; add their train outcomes or pass expected_cost=")
    return out.astype(float).rename("expected_cost")


# --------------------------------------------------------------------------------------------
# The pool as wide arrays (problems x members, members cheapest first)


@dataclass
class Pool:
    members: list[str]
    problem_ids: np.ndarray
    correct: np.ndarray  # (n, m) 0/1
    cost: np.ndarray  # (n, m) realised $
    p: np.ndarray | None = None  # (n, m) probe probabilities
    prefill: np.ndarray | None = None  # (n, m) $ of each member's prefill (routing cost)
    expected: np.ndarray | None = None  # (m,) expected $ from train
    reader: np.ndarray | None = None  # (n,) $ of one reader's prefill (reader probes), else None
    reader_index: int = -1  # the member whose own prefill is the reader's (reused when it answers)


@dataclass
class ReaderPrefill:
    """The routing cost of reader probes: one reader model's prefill per problem (``problem_id,
    prefill_cost``), paid once whatever the number of members, and not at all when ``member``
    (the reader answering with the prompt it was read with) is the one chosen: its prefill is
    reused. Pass it as ``prefill_cost`` to any router or sweep."""

    cost: pd.DataFrame
    member: str | None = None


def _sorted_ids(ids) -> np.ndarray:
    try:
        return np.array(sorted(ids), dtype=object)
    except TypeError:
        return np.array(sorted(ids, key=str), dtype=object)


def _wide(df: pd.DataFrame, col: str, members: list[str], problems: np.ndarray, name: str) -> np.ndarray:
    w = df.pivot(index="problem_id", columns="member", values=col).reindex(index=problems, columns=members)
    if w.isna().any().any():
        m = w.columns[w.isna().any()][0]
        raise ValueError(f"{name}: member {m!r} has no {col!r} for {int(w[m].isna().sum())} of the {len(problems)} "
                         "problems the others have; members' problem_id sets differ: use the same problems for all")
    return w.to_numpy(dtype=float)


def check_probs(probs: pd.DataFrame, members: Sequence[str]) -> None:
    """Every member has a probe, probabilities are in [0, 1], and all probes saw the same problems."""
    _need(probs, PROB_COLUMNS, "probs")
    p = pd.to_numeric(probs["p"], errors="coerce")
    if p.isna().any() or ((p < 0) | (p > 1)).any():
        raise ValueError("probs['p'] must be probabilities in [0, 1] without NaN (use the calibrated 'prob')")
    missing = [m for m in members if m not in set(probs["member"])]
    if missing:
        raise ValueError(f"pool member(s) {missing} have no probe (no rows in probs); train and apply a probe "
                         "for every member, or leave them out of the pool")
    sets = {m: frozenset(probs.loc[probs["member"] == m, "problem_id"]) for m in members}
    for m in members[1:]:
        if sets[m] != sets[members[0]]:
            raise ValueError(f"probes were computed on different problem sets: {members[0]!r} has "
                             f"{len(sets[members[0]])} problems, {m!r} has {len(sets[m])}, "
                             f"{len(sets[m] ^ sets[members[0]])} not shared; apply every probe to the same problems")


def _prefill(prefill_cost, members: list[str], problems: np.ndarray) -> np.ndarray:
    if isinstance(prefill_cost, pd.DataFrame):
        _need(prefill_cost, PREFILL_COLUMNS, "prefill_cost")
        return _wide(prefill_cost, "prefill_cost", members, problems, "prefill_cost")
    s = cost_series(prefill_cost, members, "prefill_cost")  # one $ per member, every problem
    return np.broadcast_to(s.to_numpy(float), (len(problems), len(members))).copy()


def make_pool(probs: pd.DataFrame | None, outcomes: pd.DataFrame, *, members: Sequence[str] | None = None,
              expected_cost=None, prefill_cost=None, split: str | None = "test", need_cost: bool = True) -> Pool:
    """Check the tables and lay out the problems of ``split`` as arrays, members cheapest first
    by expected (train) cost unless ``members`` gives the order (then costs are optional
    with ``need_cost=False``, as for a cascade in a given order)."""
    check_outcomes(outcomes)
    pool = sorted(outcomes["member"].unique())
    if members is not None:
        members = list(members)
        unknown = [m for m in members if m not in pool]
        if unknown or len(set(members)) != len(members) or not members:
            raise ValueError(f"members {members} must be distinct pool members; unknown: {unknown}; pool: {pool}")
    exp = None
    if need_cost or members is None:
        need = members or pool
        exp = expected_cost if expected_cost is not None else expected_costs(outcomes[outcomes["member"].isin(need)])
        exp = cost_series(exp, need, "expected_cost")
    members = members or sorted(pool, key=lambda m: (exp[m], m))
    out = outcomes if split is None else outcomes[outcomes["split"] == split]
    out = out[out["member"].isin(members)]
    if out.empty:
        raise ValueError(f"outcomes have no rows in split {split!r} (splits: {sorted(outcomes['split'].unique())})")
    problems = _sorted_ids(out["problem_id"].unique())
    correct = _wide(out.assign(correct=out["correct"].astype(float)), "correct", members, problems, "outcomes")
    pool_ = Pool(members, problems, correct, _wide(out, "cost", members, problems, "outcomes"),
                 expected=None if exp is None else exp[members].to_numpy(float))
    if probs is not None:
        check_probs(probs, members)
        pool_.p = _wide(probs[probs["member"].isin(members)], "p", members, problems, "probs")
    if isinstance(prefill_cost, ReaderPrefill):
        c = prefill_cost.cost.drop_duplicates("problem_id").set_index("problem_id")["prefill_cost"].reindex(problems)
        if c.isna().any():
            raise ValueError(f"prefill_cost: the reader's prefill is missing for {int(c.isna().sum())} of the "
                             f"{len(problems)} problems; read every routed problem with the reader")
        pool_.reader = c.to_numpy(dtype=float)
        pool_.reader_index = members.index(prefill_cost.member) if prefill_cost.member in members else -1
    elif prefill_cost is not None:
        pool_.prefill = _prefill(prefill_cost, members, problems)
    return pool_


def normalised_costs(costs: np.ndarray) -> np.ndarray:
    """c_i / max c (all zeros stay zero): lambda is then in units of 'success probability per
    the most expensive member's cost'."""
    top = float(np.max(costs))
    return np.asarray(costs, dtype=float) / top if top > 0 else np.zeros(len(costs))


# --------------------------------------------------------------------------------------------
# Routers on arrays: one row of choices (member index per problem) per setting


def _chunks(n_settings: int, n: int, m: int):
    step = max(1, int(4e6 // max(1, n * m)))
    return (slice(i, i + step) for i in range(0, n_settings, step))


def cascade_choice(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(settings, n): the first member (cheapest first) with p >= its threshold, else the last."""
    n, m = p.shape
    T = np.atleast_2d(thresholds)
    stop = p[None, :, : m - 1] >= T[:, None, :]
    return np.concatenate([stop, np.ones((len(T), n, 1), bool)], axis=2).argmax(axis=2)


def utility_choice(p: np.ndarray, cnorm: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """(settings, n): argmax_i p_i - lam * c_i; ties go to the cheaper member (lower index)."""
    lams = np.atleast_1d(np.asarray(lams, dtype=float))
    return (p[None] - lams[:, None, None] * cnorm[None, None, :]).argmax(axis=2)


def _routing_cost(pool: Pool, choice: np.ndarray, kind: str) -> np.ndarray:
    """Probe cost per problem: a cascade pays the prefill of every member it consulted (the
    final member answers unconsulted), the utility router pays every member's prefill; with
    reader probes (``ReaderPrefill``) either pays the reader's prefill once, nothing when the
    reader's own member answers."""
    if kind == "none":
        return np.zeros(choice.shape)
    if pool.reader is not None:  # reader probes: one prefill, reused when the reader answers
        return np.where(choice == pool.reader_index, 0.0, np.broadcast_to(pool.reader, choice.shape))
    if pool.prefill is None:
        return np.full(choice.shape, np.nan)
    if kind == "utility":
        return np.broadcast_to(pool.prefill.sum(1), choice.shape)
    m = len(pool.members)
    if m == 1:
        return np.zeros(choice.shape)
    cum = np.cumsum(pool.prefill[:, : m - 1], axis=1)
    return cum[np.arange(choice.shape[-1]), np.minimum(choice, m - 2)]


def _summary_rows(pool: Pool, choices: np.ndarray, kind: str) -> pd.DataFrame:
    idx = np.arange(len(pool.problem_ids))
    cost = pool.cost[idx, choices].mean(1)
    out = {"accuracy": pool.correct[idx, choices].mean(1), "cost": cost,
           "cost_with_routing": cost + _routing_cost(pool, choices, kind).mean(1)}
    out.update({f"share:{mem}": (choices == j).mean(1) for j, mem in enumerate(pool.members)})
    return pd.DataFrame(out)


def routed_table(pool: Pool, choice: np.ndarray, kind: str) -> pd.DataFrame:
    """One row per problem: the answering member, its realised correctness and cost, the routing
    cost (NaN when no prefill costs were given) and the cost with routing counted."""
    idx = np.arange(len(pool.problem_ids))
    routing = _routing_cost(pool, choice, kind)
    return pd.DataFrame({"problem_id": pool.problem_ids, "member": np.array(pool.members, dtype=object)[choice],
                         "correct": pool.correct[idx, choice], "cost": pool.cost[idx, choice],
                         "routing_cost": routing, "cost_with_routing": pool.cost[idx, choice] + routing})


# --------------------------------------------------------------------------------------------
# The routers on tables


def cascade(probs: pd.DataFrame, outcomes: pd.DataFrame, order: Sequence[str] | None, thresholds, *,
            prefill_cost=None, expected_cost=None, split: str | None = "test") -> pd.DataFrame:
    """Escalate while the current member's p < its threshold; the last member always answers.
    ``order`` (default: cheapest first by train cost) and one threshold per non-final member."""
    pool = make_pool(probs, outcomes, members=order, expected_cost=expected_cost, prefill_cost=prefill_cost,
                     split=split, need_cost=False)
    t = check_grid(np.atleast_1d(thresholds), "thresholds", 0.0, 1.0)
    if t.shape != (len(pool.members) - 1,):
        raise ValueError(f"thresholds: need one per non-final member ({len(pool.members) - 1} for "
                         f"{pool.members}), got {t.tolist()}")
    return routed_table(pool, cascade_choice(pool.p, t)[0], "cascade")


def utility_route(probs: pd.DataFrame, costs, lam: float) -> pd.DataFrame:
    """Per problem, the member maximising p_i - lam * c_i / max c (no outcomes needed)."""
    check_grid([lam], "lam", 0.0, np.inf)
    members = sorted(probs["member"].unique()) if isinstance(probs, pd.DataFrame) else []
    c = cost_series(costs, members, "costs")
    members = sorted(members, key=lambda m: (c[m], m))
    check_probs(probs, members)
    problems = _sorted_ids(probs["problem_id"].unique())
    p = _wide(probs, "p", members, problems, "probs")
    cn = normalised_costs(c[members].to_numpy())
    choice = utility_choice(p, cn, [lam])[0]
    return pd.DataFrame({"problem_id": problems, "member": np.array(members, dtype=object)[choice],
                         "utility": (p - lam * cn)[np.arange(len(problems)), choice]})


def utility(probs: pd.DataFrame, outcomes: pd.DataFrame, lam: float, *, members: Sequence[str] | None = None,
            prefill_cost=None, expected_cost=None, split: str | None = "test") -> pd.DataFrame:
    """The utility router evaluated on ``split``: per-problem choice, correctness, cost."""
    check_grid([lam], "lam", 0.0, np.inf)
    pool = make_pool(probs, outcomes, members=members, expected_cost=expected_cost, prefill_cost=prefill_cost, split=split)
    return routed_table(pool, utility_choice(pool.p, normalised_costs(pool.expected), [lam])[0], "utility")


def _threshold_settings(grid, m: int) -> np.ndarray:
    g = np.asarray(grid, dtype=float)
    if g.ndim == 2 and g.shape[1] == m - 1:  # explicit settings, one row each
        return check_grid(g, "thresholds_grid", 0.0, 1.0)
    g = check_grid(g.ravel(), "thresholds_grid", 0.0, 1.0)
    if len(g) ** (m - 1) > MAX_SETTINGS:
        raise ValueError(f"a {len(g)}-point grid for {m - 1} thresholds is {len(g) ** (m - 1)} settings; use a "
                         "coarser grid, fewer members, or explicit settings (an array of shape (S, members-1))")
    return np.array(list(itertools.product(g, repeat=m - 1)), dtype=float).reshape(-1, m - 1)


def cascade_sweep(probs: pd.DataFrame, outcomes: pd.DataFrame, thresholds_grid=np.linspace(0, 1, 21), *,
                  order: Sequence[str] | None = None, prefill_cost=None, expected_cost=None,
                  split: str | None = "test") -> pd.DataFrame:
    """Every threshold setting (the grid per non-final member, all combinations; or an (S, m-1)
    array of settings): accuracy, mean cost per problem, cost with routing, share per member."""
    pool = make_pool(probs, outcomes, members=order, expected_cost=expected_cost, prefill_cost=prefill_cost,
                     split=split, need_cost=False)
    m = len(pool.members)
    if m < 2:
        raise ValueError(f"a cascade needs at least two members, got {pool.members}")
    T = _threshold_settings(thresholds_grid, m)
    rows = pd.concat([_summary_rows(pool, cascade_choice(pool.p, T[s]), "cascade")
                      for s in _chunks(len(T), len(pool.problem_ids), m)], ignore_index=True)
    settings = pd.DataFrame(T, columns=[f"threshold:{x}" for x in pool.members[:-1]])
    return pd.concat([settings.assign(router="cascade", order=ORDER_SEP.join(pool.members)), rows], axis=1)


def utility_sweep(probs: pd.DataFrame, outcomes: pd.DataFrame, lambdas=DEFAULT_LAMBDAS, *,
                  members: Sequence[str] | None = None, prefill_cost=None, expected_cost=None,
                  split: str | None = "test", router: str = "utility") -> pd.DataFrame:
    """The utility router at every lambda (costs normalised by the most expensive member)."""
    lams = check_grid(np.ravel(lambdas), "lambdas", 0.0, np.inf)
    pool = make_pool(probs, outcomes, members=members, expected_cost=expected_cost, prefill_cost=prefill_cost, split=split)
    cn = normalised_costs(pool.expected)
    kind = "none" if router == "oracle_utility" else "utility"
    rows = pd.concat([_summary_rows(pool, utility_choice(pool.p, cn, lams[s]), kind)
                      for s in _chunks(len(lams), len(pool.problem_ids), len(pool.members))], ignore_index=True)
    return pd.concat([pd.DataFrame({"lam": lams, "router": router, "order": ORDER_SEP.join(pool.members)}), rows], axis=1)


def labels_as_probs(outcomes: pd.DataFrame) -> pd.DataFrame:
    """A perfect probe: p = the realised 0/1 correctness."""
    return outcomes[["member", "problem_id"]].assign(p=outcomes["correct"].astype(float))


def oracle_utility_sweep(outcomes: pd.DataFrame, lambdas=DEFAULT_LAMBDAS, **kw) -> pd.DataFrame:
    """The utility router with p = the true labels: the best any probe could do (no routing cost)."""
    kw.pop("prefill_cost", None)
    return utility_sweep(labels_as_probs(outcomes), outcomes, lambdas, router="oracle_utility", **kw)


def replay(setting: Mapping, probs: pd.DataFrame | None, outcomes: pd.DataFrame, **kw) -> pd.DataFrame:
    """The per-problem routing behind one sweep row (to bootstrap it, or to apply a setting
    chosen on validation to the test split with ``split='test'``)."""
    order = str(setting["order"]).split(ORDER_SEP)
    if setting["router"] == "cascade":
        return cascade(probs, outcomes, order, [setting[f"threshold:{x}"] for x in order[:-1]], **kw)
    if setting["router"] == "oracle_utility":
        kw.pop("prefill_cost", None)
        pool = make_pool(labels_as_probs(outcomes), outcomes, members=order, **kw)
        return routed_table(pool, utility_choice(pool.p, normalised_costs(pool.expected), [setting["lam"]])[0], "none")
    return utility(probs, outcomes, float(setting["lam"]), members=order, **kw)
