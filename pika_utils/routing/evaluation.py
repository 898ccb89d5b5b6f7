"""What a router is compared with and how: single members, random routing at the same mix, the
oracle, the routing (prefill) cost, the cost-accuracy frontier and its area (AIQ), APGR, and the
practitioner's summaries with paired bootstrap intervals over test problems."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import prices
from ..core.metrics import bootstrap_ci
from ..core.best import best_of
from .rules import _need, make_pool, replay, routed_table

# --------------------------------------------------------------------------------------------
# Reference points


def always(outcomes: pd.DataFrame, member: str, split: str | None = "test") -> pd.DataFrame:
    """Per-problem table of one member answering everything."""
    pool = make_pool(None, outcomes, members=[member], expected_cost={member: 0.0}, split=split)
    return routed_table(pool, np.zeros(len(pool.problem_ids), int), "none")


def single_members(outcomes: pd.DataFrame, split: str | None = "test") -> pd.DataFrame:
    """Accuracy and mean cost of each member alone on ``split``, cheapest first by that cost."""
    pool = make_pool(None, outcomes, expected_cost=_split_costs(outcomes, split), split=split)
    df = pd.DataFrame({"member": pool.members, "accuracy": pool.correct.mean(0), "cost": pool.cost.mean(0)})
    return df.assign(cost_with_routing=df["cost"], router="single").sort_values(["cost", "member"], ignore_index=True)


def oracle(outcomes: pd.DataFrame, split: str | None = "test") -> pd.DataFrame:
    """Per problem, the cheapest member (realised cost) that is correct; if none is, the cheapest."""
    pool = make_pool(None, outcomes, expected_cost=_split_costs(outcomes, split), split=split)
    key = pool.cost + np.where(pool.correct > 0, 0.0, np.inf)
    choice = np.where(np.isfinite(key).any(1), np.argmin(key, 1), np.argmin(pool.cost, 1))
    return routed_table(pool, choice, "none")


def mix_counts(mix, members: Sequence[str], n: int) -> dict[str, int]:
    """Shares (or counts) per member -> integer counts summing to n (largest remainder)."""
    if isinstance(mix, pd.Series) and any(str(k).startswith("share:") for k in mix.index):
        mix = {str(k)[6:]: v for k, v in mix.items() if str(k).startswith("share:")}
    s = pd.Series(mix, dtype=float)
    if s.isna().any() or (s < 0).any() or s.sum() <= 0 or not set(s.index) <= set(members):
        raise ValueError(f"mix must give non-negative shares or counts for pool members {list(members)}; got {s.to_dict()}")
    raw = s / s.sum() * n
    counts = np.floor(raw + 1e-9).astype(int)
    extra = n - counts.sum()
    for k in (raw - counts).sort_values(ascending=False, kind="stable").index[:extra]:
        counts[k] += 1
    return counts.astype(int).to_dict()


def random_routing(outcomes: pd.DataFrame, mix, seed: int = 0, split: str | None = "test") -> pd.DataFrame:
    """Problems assigned at random, with exactly the given mix of members (shares or counts, e.g.
    a router's ``member`` value counts or a sweep row's share columns)."""
    pool = make_pool(None, outcomes, expected_cost=_split_costs(outcomes, split), split=split)
    counts = mix_counts(mix, pool.members, len(pool.problem_ids))
    labels = np.concatenate([np.full(counts.get(x, 0), j) for j, x in enumerate(pool.members)]).astype(int)
    return routed_table(pool, np.random.default_rng(seed).permutation(labels), "none")


def random_sweep(sweep: pd.DataFrame, outcomes: pd.DataFrame, seed: int = 0, split: str | None = "test") -> pd.DataFrame:
    """Random routing at each sweep row's mix: the baseline a router must beat at equal spend."""
    rows = []
    for i, (_, row) in enumerate(sweep.iterrows()):
        r = random_routing(outcomes, row, seed=seed + i, split=split)
        rows.append({"router": "random", "accuracy": r["correct"].mean(), "cost": r["cost"].mean(),
                     "cost_with_routing": r["cost"].mean(),
                     **{f"share:{x}": v for x, v in r["member"].value_counts(normalize=True).items()}})
    return pd.DataFrame(rows).fillna(0.0)


def _split_costs(outcomes: pd.DataFrame, split: str | None) -> pd.Series:
    """Mean realised cost per member on ``split``: orders members for reference points that are
    allowed to look at the test problems (single members, oracle)."""
    _need(outcomes, ("member", "problem_id", "cost", "split"), "outcomes")
    rows = outcomes if split is None else outcomes[outcomes["split"] == split]
    return rows.groupby("member")["cost"].mean().reindex(outcomes["member"].unique()).fillna(0.0)


def prefill_costs(tokens: pd.DataFrame, overrides: Mapping | None = None) -> pd.DataFrame:
    """$ of each member's prefill from ``member, problem_id, prompt_tokens`` (and optionally
    ``model``; else the member name less a '/mode' suffix) at its input price."""
    _need(tokens, ("member", "problem_id", "prompt_tokens"), "tokens")
    models = tokens["model"] if "model" in tokens else tokens["member"].map(lambda x: member_model(x, overrides))
    cost = [prices.token_cost(mod, t, 0, overrides) for mod, t in zip(models, tokens["prompt_tokens"])]
    return tokens[["member", "problem_id"]].assign(prefill_cost=cost)


def member_model(member: str, overrides: Mapping | None = None) -> str:
    """'model/mode' -> 'model' (a name the price table knows, e.g. a hub id, is kept whole)."""
    known = set(prices.price_table(overrides)["model"])
    return member if member in known or "/" not in member else member.rsplit("/", 1)[0]


# --------------------------------------------------------------------------------------------
# Frontier, AIQ, APGR


def frontier(points: pd.DataFrame, cost: str = "cost", accuracy: str = "accuracy") -> pd.DataFrame:
    """The rows of ``points`` on the cost-accuracy frontier: for each cost, the best accuracy at
    that cost or less; sorted by cost, accuracy strictly rising."""
    pts = points.dropna(subset=[cost, accuracy]).sort_values([cost, accuracy], ascending=[True, False], kind="stable")
    best = pts[accuracy].cummax().shift(1, fill_value=-np.inf)
    return pts[pts[accuracy] > best].reset_index(drop=True)


def _upper_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hull: list[tuple[float, float]] = []
    for pt in zip(x, y):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (pt[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (pt[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(pt)
    return np.array([h[0] for h in hull]), np.array([h[1] for h in hull])


def aiq(points: pd.DataFrame, cost_range: tuple[float, float], *, hull: bool = False, cost: str = "cost",
        accuracy: str = "accuracy") -> float:
    """Area under the frontier over cost normalised to [0, 1] on ``cost_range`` (RouterBench's
    AIQ; usually the cheapest to the most expensive single member). Below the cheapest point the
    accuracy is 0. ``hull=True`` integrates the non-decreasing concave hull (mixing two settings
    at random reaches any point between them), as RouterBench does; the default is the staircase."""
    lo, hi = map(float, cost_range)
    if not hi > lo:
        raise ValueError(f"cost_range must be (low, high) with high > low, got {cost_range}")
    f = frontier(points, cost, accuracy)
    if f.empty:
        return float("nan")
    x = np.clip((f[cost].to_numpy(float) - lo) / (hi - lo), 0.0, 1.0)
    y = f[accuracy].to_numpy(float)
    keep = np.r_[x[1:] != x[:-1], True]  # one point per x: the best (the last, accuracy rises)
    x, y = x[keep], y[keep]
    if hull:
        x, y = _upper_hull(x, y)
        return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) + y[-1] * (1.0 - x[-1]))
    return float(np.sum(y * np.diff(np.r_[x, 1.0])))


def apgr(router_acc, weak_acc: float, strong_acc: float, strong_share=None) -> float:
    """RouteLLM's performance gap recovered, (router - weak) / (strong - weak): 0 for the weak
    model, 1 for the strong one. With ``strong_share`` (share of calls to the strong model per
    setting) it is the average PGR over call shares 0..1 (APGR); NaN when the gap is 0."""
    gap = float(strong_acc) - float(weak_acc)
    if gap == 0:
        return float("nan")
    pgr = (np.asarray(router_acc, dtype=float) - weak_acc) / gap
    if strong_share is None:
        return float(pgr) if pgr.ndim == 0 else pgr
    s = pd.DataFrame({"s": np.asarray(strong_share, float), "g": pgr}).groupby("s")["g"].max()
    grid = np.linspace(0.0, 1.0, 101)
    return float(np.interp(grid, s.index.to_numpy(), np.maximum.accumulate(s.to_numpy())).mean())


def gap_closed(router_acc: float, best_single_acc: float, oracle_acc: float) -> float:
    """Share of the gap from the best single member to the oracle that the router closes."""
    gap = float(oracle_acc) - float(best_single_acc)
    return float("nan") if gap == 0 else (float(router_acc) - best_single_acc) / gap


# --------------------------------------------------------------------------------------------
# Summaries a practitioner asks for, with paired bootstrap intervals over problems


def paired_intervals(routed: pd.DataFrame, reference: pd.DataFrame, *, cost: str = "cost",
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Router accuracy, its difference from ``reference`` (e.g. ``always(outcomes, member)``) and
    the cost reduction 1 - cost/reference cost, each with an interval from resampling the same
    problems for both (every call draws the same resamples: same seed, same n)."""
    m = routed.merge(reference, on="problem_id", suffixes=("", "_ref"), validate="one_to_one")
    if len(m) != len(routed) or len(m) != len(reference):
        raise ValueError("routed and reference must cover the same problems")
    rc, rk = m["correct"].to_numpy(float), m[cost].to_numpy(float)
    fc, fk = m["correct_ref"].to_numpy(float), m["cost_ref"].to_numpy(float)
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    out = {}
    for name, (fn, arrs) in {
        "accuracy": (np.mean, (rc,)),
        "accuracy_diff": (lambda a, b: a.mean() - b.mean(), (rc, fc)),
        "cost_reduction": (lambda a, b: 1 - a.mean() / b.mean() if b.mean() > 0 else np.nan, (rk, fk)),
    }.items():
        point, lo, hi = bootstrap_ci(fn, *arrs, **kw)
        out.update({name: point, f"{name}_low": lo, f"{name}_high": hi})
    return out


def _summary(row: pd.Series, member: pd.Series, cost: str, extra: dict, probs, outcomes, kw) -> pd.Series:
    """One summary row; with ``outcomes``, paired intervals from replaying the chosen setting."""
    out = {"member": member["member"], "member_accuracy": member["accuracy"], "member_cost": member["cost"],
           **{k: row[k] for k in row.index if k.startswith(("threshold:", "lam", "router", "order"))},
           "accuracy": row["accuracy"], "cost": row[cost], "cost_column": cost, **extra}
    if outcomes is not None:
        boot = {k: kw.pop(k) for k in ("n_boot", "seed", "level") if k in kw}
        split = kw.get("split", "test")
        ci = paired_intervals(replay(row, probs, outcomes, **kw), always(outcomes, member["member"], split),
                              cost=cost, **boot)
        out.update({k: v for k, v in ci.items() if k not in out})
    return pd.Series(out)


def cost_reduction_at_best_accuracy(sweep: pd.DataFrame, singles: pd.DataFrame, *, cost: str = "cost",
                                    probs=None, outcomes=None, **kw) -> pd.Series:
    """The cheapest setting whose accuracy >= the best single member's, and its cost reduction
    1 - cost/member cost (NaN when none reaches it). With ``outcomes`` (and ``probs``), paired
    bootstrap intervals from replaying that setting. The setting is chosen on the same problems
    it is scored on (optimistic); choose on 'val' and ``replay`` on 'test' for an honest number.
    The best member is ``core.best.best_of(singles)``: pass singles of the split the choice may see."""
    best = best_of(singles)
    ok = sweep[sweep["accuracy"] >= best["accuracy"] - 1e-12].dropna(subset=[cost])
    if ok.empty:
        return pd.Series({"member": best["member"], "member_accuracy": best["accuracy"], "member_cost": best["cost"],
                          "accuracy": np.nan, "cost": np.nan, "cost_reduction": np.nan})
    row = ok.sort_values([cost, "accuracy"], ascending=[True, False], kind="stable").iloc[0]
    red = 1 - row[cost] / best["cost"] if best["cost"] > 0 else np.nan
    return _summary(row, best, cost, {"cost_reduction": red}, probs, outcomes, kw)


def accuracy_at_cheapest_cost(sweep: pd.DataFrame, singles: pd.DataFrame, *, cost: str = "cost",
                              probs=None, outcomes=None, **kw) -> pd.Series:
    """The best router accuracy at a cost <= the cheapest member's, and its gain over that member."""
    cheap = singles.sort_values(["cost", "accuracy"], ascending=[True, False], kind="stable").iloc[0]
    ok = sweep[sweep[cost] <= cheap["cost"] * (1 + 1e-12)]
    if ok.empty:
        return pd.Series({"member": cheap["member"], "member_accuracy": cheap["accuracy"], "member_cost": cheap["cost"],
                          "accuracy": np.nan, "cost": np.nan, "accuracy_gain": np.nan})
    row = ok.sort_values(["accuracy", cost], ascending=[False, True], kind="stable").iloc[0]
    return _summary(row, cheap, cost, {"accuracy_gain": row["accuracy"] - cheap["accuracy"]}, probs, outcomes, kw)
