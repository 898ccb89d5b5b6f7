"""The recorded pool: models known only by their graded outcomes, routed by one small reader.

Chapters 6 and 7 ask their questions of five 7B-32B models that cannot run here, from their
recorded answers on all 500 MATH-500 problems (``problems.recorded``). Costs are counted tokens
(one tokenizer for every member) times each member's size-tier price; a small local reader reads
each question once, and its cross-fitted probes (``crossfit``) predict every member's outcome;
a TF-IDF router trained on the same labels is the text-only comparison."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core import cached_tables, prices, store
from ..core.metrics import auroc, bootstrap_ci
from ..generation import pipeline
from ..probes.difficulty import question_labels
from ..problems.recorded import RecordedMember, common_problems, resolve_members
from . import crossfit as CF
from . import evaluation as M
from .rules import ReaderPrefill

#: Bump when what build_recorded_pool computes changes.
RECORDED_FORMAT = 2
#: The cross-fitted reader probes choose their layer among every LAYER_STEP-th layer (neighbouring
#: layers carry nearly the same signal; 5 folds x 5 members of full sweeps cost twice as much).
LAYER_STEP = 2
_TABLES = ("problems", "outcomes", "members", "scores", "chosen", "reader_prefill")
METHODS = ("reader", "text")


@dataclass
class RecordedPool:
    """Long tables for routing the recorded members: outcomes over every problem (split 'all'),
    cross-fitted scores of both methods (``scores``: method, member, problem_id, fold, role, p)."""

    reader: str
    members: list[str]
    problems: pd.DataFrame  # problem_id, question, level, fold
    outcomes: pd.DataFrame  # member, problem_id, correct, cost, split, input_tokens, output_tokens
    members_table: pd.DataFrame  # member, model, mode, size_b, prices, accuracy, tokens, $ per 1,000 problems
    scores: pd.DataFrame
    chosen: pd.DataFrame  # method, member, fold, layer, position, alpha
    reader_prefill: pd.DataFrame  # problem_id, prefill_cost

    @property
    def folds(self) -> pd.Series:
        return self.problems.set_index("problem_id")["fold"]

    def prefill(self, method: str) -> ReaderPrefill:
        """The routing cost: the reader's prefill once per problem; the text router's is nil."""
        cost = self.reader_prefill if method == "reader" else self.reader_prefill.assign(prefill_cost=0.0)
        return ReaderPrefill(cost, None)


def count_tokens(tokenizer, texts) -> np.ndarray:
    """Tokens of each text with one tokenizer (no special tokens), in batches."""
    texts = [str(t) for t in texts]
    out = []
    for i in range(0, len(texts), 256):
        out += [len(x) for x in tokenizer(texts[i:i + 256], add_special_tokens=False)["input_ids"]]
    return np.asarray(out, dtype=int)


def member_price(m: RecordedMember, overrides: Mapping | None = None) -> tuple[float, float]:
    """(input, output) $ per 1M tokens: the run's ``prices`` entry, the member's own, or its size tier."""
    if overrides and m.name in overrides:
        return prices.get_price(m.name, overrides)
    if m.price:
        return float(m.price["input_per_m"]), float(m.price["output_per_m"])
    return prices.price_for_size(float(m.size_b))


def member_outcomes(members: list[RecordedMember], problems: pd.DataFrame, tokenizer,
                    overrides: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every member's outcomes with its cost (question tokens in, response tokens out, counted with
    ``tokenizer`` unless the file gives them), and one descriptive row per member."""
    q_tokens = pd.Series(count_tokens(tokenizer, problems["question"]), index=problems["problem_id"])
    rows, table = [], []
    for m in members:
        o = m.outcomes.set_index("problem_id").reindex(problems["problem_id"])
        out_tok = (o["output_tokens"].astype(float) if "output_tokens" in o else pd.Series(np.nan, index=o.index))
        if "response" in o:
            missing = out_tok.isna() & o["response"].notna()
            out_tok[missing] = count_tokens(tokenizer, o.loc[missing, "response"])
        in_tok = q_tokens.reindex(o.index).astype(float)
        if "input_tokens" in o:  # the file's count where it gives one, else the question's tokens
            in_tok = pd.to_numeric(o["input_tokens"], errors="coerce").fillna(in_tok)
        p_in, p_out = member_price(m, overrides)
        cost = (in_tok * p_in + out_tok * p_out) / 1e6
        rows.append(pd.DataFrame({"member": m.name, "problem_id": o.index, "correct": o["correct"].astype(int).to_numpy(),
                                  "cost": cost.to_numpy(), "split": "all", "input_tokens": in_tok.to_numpy(),
                                  "output_tokens": out_tok.to_numpy()}))
        table.append({"member": m.name, "model": m.model, "mode": m.mode, "size_b": m.size_b, "input $/M": p_in,
                      "output $/M": p_out, "accuracy": float(o["correct"].mean()),
                      "median output tokens": float(out_tok.median()), "$ per 1,000 problems": float(cost.mean() * 1000),
                      "source": m.source})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(table)


def recorded_key(params: Mapping[str, Any], acts_key: str, members: list[RecordedMember]) -> str:
    files = [(m.name, m.source, store.stable_hash(m.outcomes.to_json()), m.size_b, m.price) for m in members]
    return store.stable_hash({"format": RECORDED_FORMAT, "acts": acts_key, "members": files,
                              "folds": int(params["recorded_folds"]), "seed": int(params["seed"]),
                              "alphas": list(params["alphas"]), "prices": params.get("prices") or {}})


def recorded_problem_set(params: Mapping[str, Any]) -> pd.DataFrame:
    """The problems the recorded members answered (chapter 4 reads the same set, so the reader's
    activations are extracted once)."""
    return pipeline.problem_set(params["recorded_sources"], split_fractions=params["split_fractions"],
                                seed=int(params["seed"]))


def build_recorded_pool(params: Mapping[str, Any]) -> RecordedPool:
    """Costs, folds and both methods' cross-fitted scores for every member, fitted once and
    stored under a key of what determines them."""
    problems = recorded_problem_set(params)
    members = resolve_members(params["recorded_members"], problems)
    problems = common_problems(members, problems)  # every member on every problem routed (said when cut)
    reader = params["recorded_reader"]
    lm, acts = pipeline.activations_for(problems, reader, params)
    folder = store.data_dir() / "pools" / f"recorded-{recorded_key(params, acts.meta['key'], members)}"
    found = cached_tables.stored_tables(folder, "recorded.json", _TABLES)
    if found:
        meta, t = found
        return RecordedPool(meta["reader"], meta["members"], t["problems"], t["outcomes"], t["members"], t["scores"],
                            t["chosen"], t["reader_prefill"])
    pool = _fit(params, problems, members, reader, lm, acts)
    cached_tables.store_tables(folder, "recorded.json", dict(zip(_TABLES, (
        pool.problems, pool.outcomes, pool.members_table, pool.scores, pool.chosen, pool.reader_prefill))),
        {"reader": reader, "members": pool.members})
    return pool


def _fit(params, problems, members, reader, lm, acts) -> RecordedPool:
    kw = dict(alphas=params["alphas"], seed=int(params["seed"]))
    probs_ = problems.sort_values("problem_id").reset_index(drop=True)
    folds = CF.make_folds(probs_["problem_id"], int(params["recorded_folds"]), int(params["seed"]),
                          strata=probs_["difficulty"].fillna(0).astype(int))
    outcomes, table = member_outcomes(members, probs_, lm.tokenizer, params.get("prices"))
    rows = acts.rows_for(probs_["problem_id"].tolist())
    cache: dict = {}

    def features(layer: int, pos: int) -> np.ndarray:
        if (layer, pos) not in cache:
            cache[(layer, pos)] = acts.layer(layer, pos)[rows]
        return cache[(layer, pos)]

    scores, chosen = [], []
    for m in members:
        y = outcomes[outcomes["member"] == m.name].set_index("problem_id")["correct"].reindex(probs_["problem_id"])
        for method in METHODS:
            if method == "reader":
                held, inner = CF.crossfit_probe(features, acts.layers[::LAYER_STEP], acts.meta["positions"], y.to_numpy(),
                                                folds.to_numpy(), **kw)
            else:
                held, inner = CF.crossfit_tfidf(probs_["question"], y.to_numpy(), folds.to_numpy(), **kw)
            scores.append(CF.member_scores(held, inner, probs_["problem_id"], m.name).assign(method=method))
            chosen.append(held.attrs["chosen"].assign(method=method, member=m.name))
    labels = question_labels(probs_, lm.tokenizer, params.get("prompt_suffix") or "", params.get("system_prompt"))
    pre = M.prefill_costs(labels[["problem_id", "prompt_tokens"]].assign(member=reader, model=reader), params.get("prices"))
    return RecordedPool(reader, [m.name for m in members],
                        probs_[["problem_id", "question", "difficulty"]].rename(columns={"difficulty": "level"}).assign(
                            fold=folds.to_numpy()),
                        outcomes, table, pd.concat(scores, ignore_index=True), pd.concat(chosen, ignore_index=True),
                        pre[["problem_id", "prefill_cost"]].reset_index(drop=True))


# --------------------------------------------------------------------------------------------
# What chapters 6 and 7 ask of it


def method_scores(pool: RecordedPool, method: str) -> pd.DataFrame:
    return pool.scores[pool.scores["method"] == method].drop(columns="method")


def route(pool: RecordedPool, method: str, rule: str) -> pd.DataFrame:
    """Every problem routed by ``method``'s cross-fitted router, lambda chosen per fold by ``rule``."""
    return CF.crossfit_route(method_scores(pool, method), pool.outcomes, pool.folds, rule=rule,
                             prefill=pool.prefill(method))


def best_member(pool: RecordedPool) -> pd.Series:
    """The most accurate member over every problem (the cheaper one on a tie)."""
    s = M.single_members(pool.outcomes, split=None)
    return s.sort_values(["accuracy", "cost"], ascending=[False, True], kind="stable").iloc[0]


def versus_best(pool: RecordedPool, routed: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """A routed table against always answering with the best member, paired over every problem:
    accuracy difference and cost saved with the routing paid."""
    best = best_member(pool)
    ci = M.paired_intervals(routed, M.always(pool.outcomes, best["member"], None), cost="cost_with_routing",
                            n_boot=n_boot, seed=seed)
    return {"best member": best["member"], "best accuracy": float(best["accuracy"]),
            "best $ per 1,000": float(best["cost"]) * 1000, "accuracy": ci["accuracy"],
            "$ per 1,000 (routing paid)": float(routed["cost_with_routing"].mean()) * 1000, **ci, "n": int(len(routed))}


def paired_accuracy(a: pd.DataFrame, b: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of routed table ``a`` minus ``b`` on the same problems, with a paired interval."""
    m = a.merge(b, on="problem_id", suffixes=("_a", "_b"), validate="1:1")
    return bootstrap_ci(lambda x, y: float(np.mean(x) - np.mean(y)), m["correct_a"].to_numpy(float),
                        m["correct_b"].to_numpy(float), n_boot=n_boot, seed=seed)


def outcome_and_score(pool: RecordedPool, member: str, score: str = "reader") -> tuple[np.ndarray, np.ndarray]:
    """A member's outcomes over every problem (the pool's problem order) and a predictor's score
    for them: 'reader' or 'text' (the cross-fitted held-out probability) or 'level' (minus the
    human level: harder, less often right)."""
    ids = pool.problems["problem_id"].to_numpy()
    y = pool.outcomes[pool.outcomes["member"] == member].set_index("problem_id")["correct"].reindex(ids).to_numpy(float)
    if score == "level":
        return y, -pool.problems.set_index("problem_id")["level"].reindex(ids).to_numpy(float)
    s = method_scores(pool, score)
    return y, s[(s["member"] == member) & (s["role"] == "held")].set_index("problem_id")["p"].reindex(ids).to_numpy(float)


def aurocs(pool: RecordedPool) -> pd.DataFrame:
    """Per member: the cross-fitted AUROC of the reader probe and of the text router over every
    problem, and of the human level."""
    rows = []
    for m in pool.members:
        y, lv = outcome_and_score(pool, m, "level")
        rows.append({"member": m, "accuracy": float(y.mean()), "n": int(len(y)), "human level": auroc(y, lv),
                     "reader probe": auroc(*outcome_and_score(pool, m, "reader")),
                     "text (TF-IDF)": auroc(*outcome_and_score(pool, m, "text"))})
    return pd.DataFrame(rows)


def auroc_difference(pool: RecordedPool, a: str, b: str, *, score: str = "reader", n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, float, float]:
    """AUROC for member ``a`` minus for member ``b`` over the same problems, resampled jointly;
    ``score`` as in ``outcome_and_score``."""
    (ya, sa), (yb, sb) = outcome_and_score(pool, a, score), outcome_and_score(pool, b, score)
    return bootstrap_ci(lambda y1, s1, y2, s2: auroc(y1, s1) - auroc(y2, s2), ya, sa, yb, sb, n_boot=n_boot, seed=seed)


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


def route_all(pool: RecordedPool) -> dict[str, pd.DataFrame]:
    """Every router of ``ROUTERS`` on every problem (cross-fitted), by name."""
    return {name: CF.crossfit_route(method_scores(pool, method), pool.outcomes, pool.folds, rule=rule,
                                    prefill=pool.prefill(method), kind=kind)
            for name, (method, kind, rule) in ROUTERS.items()}


def router_table(pool: RecordedPool, routed: Mapping[str, pd.DataFrame], *, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """One row per router and per single member, the oracle and random routing (the most
    accurate reader router's mix): accuracy and $ per 1,000 problems (routing paid), each router
    against the best member with paired intervals over every problem."""
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
    for name, r in routed.items():
        v = versus_best(pool, r, n_boot=n_boot, seed=seed)
        rows.append({"router": name, "accuracy": v["accuracy"], "$ per 1,000 problems": v["$ per 1,000 (routing paid)"],
                     "accuracy minus best": v["accuracy_diff"], "low": v["accuracy_diff_low"],
                     "high": v["accuracy_diff_high"], "cost saved": v["cost_reduction"],
                     "saved low": v["cost_reduction_low"], "saved high": v["cost_reduction_high"], "n": v["n"]})
    return pd.DataFrame(rows)


def room(pool: RecordedPool) -> dict:
    """Where routing could gain on this price table: the best member, whether it is also the
    cheapest, and the oracle's accuracy and cost."""
    singles = M.single_members(pool.outcomes, split=None)
    best = best_member(pool)
    orc = M.oracle(pool.outcomes, None)
    return {"best member": best["member"], "best accuracy": float(best["accuracy"]),
            "best $ per 1,000": float(best["cost"]) * 1000,
            "best is cheapest": bool(best["member"] == singles.sort_values("cost").iloc[0]["member"]),
            "oracle accuracy": float(orc["correct"].mean()), "oracle $ per 1,000": float(orc["cost"].mean()) * 1000}


def auroc_interval(pool: RecordedPool, member: str, score: str = "reader", *, n_boot: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """One member's AUROC over every problem with a bootstrap interval; ``score`` as in
    ``outcome_and_score``."""
    return bootstrap_ci(auroc, *outcome_and_score(pool, member, score), n_boot=n_boot, seed=seed)


def keep_router(pool: RecordedPool, params: Mapping[str, Any], lam: float):
    """A ``Router`` a user keeps for the recorded members: one reader probe per member fitted on
    the profile's train split of the recorded problems (the chapter-3 protocol), each member's
    mean cost, and ``lam``; it reads a new question with the reader and names the member to call."""
    from ..probes import protocol as P
    from .reader import reader_probe
    from .router import Router

    problems = recorded_problem_set(params)
    lm, acts = pipeline.activations_for(problems, pool.reader, params)
    suffix, system = params.get("prompt_suffix") or "", params.get("system_prompt")
    labels = question_labels(problems, lm.tokenizer, suffix, system)
    kw = dict(alphas=params["alphas"], n_boot=100, seed=int(params["seed"]))  # the chapter shows no test metric of these
    dirs = {}
    for m in pool.members:
        y = pool.outcomes[pool.outcomes["member"] == m].set_index("problem_id")["correct"]
        lab = labels.assign(maj_correct=y.reindex(labels["problem_id"]).to_numpy(float))
        rep = reader_probe(acts, lab, "maj_correct", **kw)
        key = store.stable_hash([rep.best, acts.meta["key"], m, lab["maj_correct"].tolist()])
        dirs[m] = P.save_trained_probe(
            store.data_dir() / "probes" / f"reader-{store.path_safe(pool.reader)}-for-recorded-{store.path_safe(m)}-{key}",
            rep, acts, prompt_suffix=suffix, system_prompt=system, labels=lab,
            extra={"reader": pool.reader, "target_member": m, "target_model": m, "target_mode": "recorded"})
    costs = pool.outcomes.groupby("member")["cost"].mean()
    return Router(dirs, costs.to_dict(), lam=float(lam))
