"""Off distribution: the recorded pool's probes and kept Router judged on a benchmark they never saw.

Everything behind the transferred numbers is chosen on the training benchmark (MATH-500): the
reader probes (layer, position, alpha, Platt), the TF-IDF model, lambda, the detector's threshold
and the best member. No outcome of the new benchmark is used before scoring. Beside them, the
same protocol cross-fitted *within* the new benchmark (``build_recorded_pool`` on its problems) is
the ceiling a user with labels there would reach, and a recalibration from k labels of the new
benchmark (Platt scaling per member and lambda refitted on them, scored on the rest) shows how
much of the gap a few labels close. Intervals are paired bootstraps over the new benchmark's
problems; the ceiling's carry its fold seeds (``seeds``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.metrics import auroc
from ..generation import pipeline
from ..probes.linear import PlattScaler
from ..problems.recorded import benchmark
from . import crossfit as CF
from . import evaluation as M
from . import ridge
from . import rules as R
from .judge import Judgement, follow, judge
from .recorded import RecordedPool, build_recorded_pool, recorded_benchmark
from .recorded_results import held_scores, outcomes_of
from .router import Router
from .seeds import SeedInterval, pooled_interval

#: Labels of the new benchmark a recalibration may use, and the random draws of them per size.
RECAL_KS = (20, 50, 100)
RECAL_DRAWS = 20


@dataclass
class OffDistribution:
    """The new benchmark's pool (its outcomes and the within-benchmark cross-fit), the kept
    router's reading of its questions (restricted to the members that answered), the TF-IDF
    model of the training benchmark applied to them, and the judgement of the router there."""

    title: str
    pool: RecordedPool  # the new benchmark, cross-fitted within it (the ceiling)
    router: Router  # the kept router, restricted to the members the new benchmark has
    routed: pd.DataFrame  # the router on every question (Router.route_features): p:*, member, probe_member, distance
    text: pd.DataFrame  # member, problem_id, score: the training benchmark's TF-IDF model on the new questions
    judgement: Judgement

    @property
    def members(self) -> list[str]:
        return self.router.order

    def transferred(self, member: str, method: str = "reader") -> np.ndarray:
        """A member's transferred score of every problem, in the pool's problem order."""
        ids = self.pool.problems["problem_id"]
        if method == "reader":
            return self.routed.set_index("problem_id")[f"p:{member}"].reindex(ids).to_numpy(float)
        t = self.text[self.text["member"] == member].set_index("problem_id")["score"]
        return t.reindex(ids).to_numpy(float)


def offdist_params(params: Mapping[str, Any], members: Sequence[str]) -> dict:
    """The parameters of the within-benchmark pool: the profile's with the new benchmark's
    problems (``offdist_sources``) and the members that answered it."""
    return {**params, "recorded_sources": dict(params["offdist_sources"]), "recorded_members": list(members)}


def transferred_text(rec: RecordedPool, questions: Sequence[str], params: Mapping[str, Any]) -> pd.DataFrame:
    """The text-only model of the training benchmark (TF-IDF of the question, ridge with an
    intercept, vocabulary, weights and alpha chosen on every training problem by an inner k-fold)
    scoring new questions."""
    train_q = rec.problems["question"].tolist()
    Y = np.column_stack([outcomes_of(rec, m) for m in rec.members])
    a, b = np.arange(len(train_q)), np.arange(len(train_q), len(train_q) + len(questions))
    G = CF.tfidf_gram(train_q + list(questions))(a)(0)  # vocabulary and weights of the training questions only
    Yx = np.vstack([Y, np.zeros((len(b), Y.shape[1]))])  # the new rows' labels are never read
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        sc = ridge.screen(lambda i: G[np.ix_(a, a)], 1, Y, a, params["alphas"], ridge.N_INNER, int(params["seed"]))
        picks = ridge.choose(sc.auc, [None], params["alphas"])
        out = [pd.DataFrame({"member": m, "row": b - len(a),
                             "score": ridge.ridge_predict(G, Yx[:, [t]], a, b, [pick["alpha"]])[0, :, 0]})
               for t, (m, pick) in enumerate(zip(rec.members, picks))]
    return pd.concat(out, ignore_index=True)


def build_offdist(params: Mapping[str, Any], rec: RecordedPool, router: Router) -> OffDistribution:
    """The kept ``router`` (fitted on ``rec``'s benchmark) on the benchmark ``offdist_sources``
    names: its members there, the within-benchmark cross-fit, the transferred scores, the
    judgement (router against every member, the training benchmark's best, random and oracle)."""
    bench = recorded_benchmark({"recorded_sources": params["offdist_sources"]})
    b = benchmark(bench)
    members = [m for m in router.order if m in b.members]
    if len(members) < 2:
        raise ValueError(f"{b.title} has recorded outcomes of {list(b.members)}; the kept router's members "
                         f"{router.order} include {members or 'none'} of them: at least two are needed")
    pool = build_recorded_pool(offdist_params(params, members))
    kept = router.restrict(members)
    ids = pool.problems["problem_id"].tolist()
    problems = recorded_problems_of(params)
    if len(problems) != len(ids):  # the problems every member answered, as the pool read them
        problems = problems[problems["problem_id"].isin(set(ids))].reset_index(drop=True)
    lm, acts = pipeline.activations_for(problems, rec.reader, params)
    rows = acts.rows_for(ids)
    questions = pool.problems["question"].tolist()
    routed = kept.route_features(questions, lambda layer, pos: acts.layer(layer, pos)[rows], reading=acts.meta)
    routed = routed.assign(problem_id=ids)
    text = transferred_text(rec, questions, params)
    text = text.assign(problem_id=np.asarray(ids)[text["row"].to_numpy()]).drop(columns="row")
    log = pool.outcomes[["member", "problem_id", "correct", "output_tokens", "input_tokens"]]
    j = judge(kept, log, pool.problems[["problem_id", "question"]], lm=lm, routed=routed,
              n_boot=int(params["n_boot"]), seed=int(params["seed"]), price_overrides=params.get("prices"))
    return OffDistribution(b.title, pool, kept, routed, text, j)


def recorded_problems_of(params: Mapping[str, Any]) -> pd.DataFrame:
    """The new benchmark's problem set, as the within-benchmark pool read it."""
    return pipeline.problem_set(params["offdist_sources"], split_fractions=params["split_fractions"],
                                seed=int(params["seed"]))


# --------------------------------------------------------------------------------------------
# How well the probes carry over


def _transfer_stats(off: OffDistribution, method: str, against_ceiling: bool) -> dict:
    """Per fold seed of the ceiling, a function of resampled problem positions: the transferred
    AUROC averaged over the members (minus the within-benchmark cross-fitted AUROC)."""
    ys = {m: outcomes_of(off.pool, m) for m in off.members}
    tr = {m: off.transferred(m, method) for m in off.members}

    def transferred(idx):
        return float(np.nanmean([auroc(ys[m][idx], tr[m][idx]) for m in off.members]))

    if not against_ceiling:
        return {0: transferred}
    out = {}
    for s in off.pool.seeds:
        ceil = {m: held_scores(off.pool, m, method, s) for m in off.members}
        out[s] = (lambda ceil: lambda idx: transferred(idx) - float(np.nanmean(
            [CF.fold_auroc(ys[m][idx], ceil[m][0][idx], ceil[m][1][idx]) for m in off.members])))(ceil)
    return out


def transfer_interval(off: OffDistribution, method: str = "reader", *, against_ceiling: bool = False,
                      n_boot: int = 1000, seed: int = 0) -> SeedInterval:
    """The transferred AUROC (mean over members), or its difference from the within-benchmark
    ceiling, with a paired bootstrap over the new benchmark's problems (pooled over fold seeds)."""
    return pooled_interval(_transfer_stats(off, method, against_ceiling), len(off.pool.problems), n_boot=n_boot,
                           seed=seed)


def auroc_table(off: OffDistribution, rec: RecordedPool) -> pd.DataFrame:
    """Per member: accuracy on each benchmark, the training benchmark's cross-fitted AUROC, and on
    the new one the transferred AUROC (reader probe, TF-IDF) beside the within-benchmark one."""
    from .recorded_results import aurocs

    home = aurocs(rec).set_index("member")
    there = aurocs(off.pool).set_index("member")
    rows = []
    for m in off.members:
        y = outcomes_of(off.pool, m)
        rows.append({"member": m, f"accuracy ({off.title})": float(y.mean()),
                     "reader, cross-fitted at home": home.at[m, "reader probe"],
                     "reader, transferred": auroc(y, off.transferred(m, "reader")),
                     "reader, cross-fitted there": there.at[m, "reader probe"],
                     "TF-IDF, transferred": auroc(y, off.transferred(m, "text")),
                     "TF-IDF, cross-fitted there": there.at[m, "text (TF-IDF)"], "n": len(y)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Recalibration from a few labels of the new benchmark


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


#: The recalibrations compared: Platt scaling per member refitted on the labelled problems with
#: the kept lambda (and its cost unit), or Platt scaling and lambda both refitted there.
RECALIBRATIONS = ("Platt", "Platt and lambda")


def _recalibrated_probs(off: OffDistribution, labelled: np.ndarray) -> np.ndarray:
    """(problems, members) success probabilities, each member's Platt scaling refitted on the
    ``labelled`` problems' outcomes (kept where a member has fewer than two of an outcome there)."""
    cols = []
    for m in off.members:
        p, y = off.transferred(m, "reader"), outcomes_of(off.pool, m)
        if min(y[labelled].sum(), (1 - y[labelled]).sum()) >= 2:
            p = PlattScaler().fit(_logit(p[labelled]), y[labelled]).transform(_logit(p))
        cols.append(p)
    return np.column_stack(cols)


def recalibrated_route(off: OffDistribution, labelled: np.ndarray, how: str = "Platt") -> pd.DataFrame:
    """The router refitted on the ``labelled`` problems (a boolean mask in the pool's order) and
    applied to the others: ``how`` = 'Platt' refits each member's Platt scaling and keeps the kept
    router's lambda and cost unit; 'Platt and lambda' also chooses lambda on the labelled problems
    by the kept router's rule (the most accurate within the best member's cost, costs and best
    member from the labelled problems). One row per unlabelled problem: member, correct, cost."""
    if how not in RECALIBRATIONS:
        raise ValueError(f"how={how!r}; choose one of {RECALIBRATIONS}")
    ids = off.pool.problems["problem_id"].to_numpy()
    o = off.pool.outcomes[off.pool.outcomes["member"].isin(off.members)]
    split = np.where(pd.Series(labelled, index=ids).reindex(o["problem_id"]).to_numpy(), "train", "test")
    o = o[list(R.OUTCOME_COLUMNS)].assign(split=split)
    P = _recalibrated_probs(off, labelled)
    prefill = off.pool.prefill("reader")
    if how == "Platt":  # the kept router's own decision on the recalibrated probabilities
        choice = R.utility_choice(P, off.router.normalised_costs.to_numpy(), [off.router.lam])[0]
        picked = pd.Series(np.asarray(off.members, dtype=object)[choice], index=ids)[~labelled]
        return follow(picked, o, prefill.cost.set_index("problem_id")["prefill_cost"])  # the reader's prefill paid
    probs = pd.concat([pd.DataFrame({"member": m, "problem_id": ids, "p": P[:, j]}) for j, m in enumerate(off.members)],
                      ignore_index=True)
    sw = R.utility_sweep(probs, o, prefill_cost=prefill, split="train")
    pick = CF.pick_setting(sw, M.single_members(o, split="train"), "most_accurate_within_cost")
    return R.utility(probs, o, float(pick["lam"]), prefill_cost=prefill, split="test")


def recalibration_curve(off: OffDistribution, ks: Sequence[int] = RECAL_KS, draws: int = RECAL_DRAWS, *,
                        n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[tuple[str, int], SeedInterval]]:
    """For each k, ``draws`` random sets of k labelled problems (the same sets for every
    recalibration): each recalibrated router's accuracy and cost on the other problems, and its
    accuracy minus the plain transferred router's on the same problems, pooled over draws (each
    draw a 'seed' of ``seeds``). Returns the long table and {(recalibration, k): gap interval}."""
    n = len(off.pool.problems)
    ids = off.pool.problems["problem_id"].to_numpy()
    plain = off.judgement.compared["router, probes only (no detector)"].set_index("problem_id").reindex(ids)
    best = off.judgement.compared[f"always {off.judgement.reference}"].set_index("problem_id").reindex(ids)
    rows, gaps = [], {}
    rng = np.random.default_rng(seed)
    for k in ks:
        if k >= n - 10:
            continue
        masks = []
        for _ in range(draws):
            labelled = np.zeros(n, bool)
            labelled[rng.choice(n, k, replace=False)] = True
            masks.append(labelled)
        for how in RECALIBRATIONS:
            acc, diff = {}, {}
            for d, labelled in enumerate(masks):
                r = recalibrated_route(off, labelled, how).set_index("problem_id").reindex(ids)
                rc = np.where(labelled, np.nan, r["correct"].to_numpy(float))
                pc = np.where(labelled, np.nan, plain["correct"].to_numpy(float))
                acc[d] = (lambda rc: lambda i: float(np.nanmean(rc[i])))(rc)
                diff[d] = (lambda rc, pc: lambda i: float(np.nanmean(rc[i]) - np.nanmean(pc[i])))(rc, pc)
                rows.append({"recalibration": how, "k": k, "draw": d, "accuracy": float(np.nanmean(rc)),
                             "plain accuracy": float(np.nanmean(pc)),
                             "best member accuracy": float(best["correct"].to_numpy(float)[~labelled].mean()),
                             "$ per 1,000 problems": float(np.nanmean(np.where(labelled, np.nan, r["cost_with_routing"]
                                                                                .to_numpy(float)))) * 1000})
            gaps[(how, k)] = pooled_interval(diff, n, n_boot=n_boot, seed=seed)
            a = pooled_interval(acc, n, n_boot=n_boot, seed=seed)
            rows.append({"recalibration": how, "k": k, "draw": "pooled", "accuracy": a.estimate, "low": a.low,
                         "high": a.high, "minus plain": gaps[(how, k)].estimate, "minus plain low": gaps[(how, k)].low,
                         "minus plain high": gaps[(how, k)].high})
    return pd.DataFrame(rows), gaps
