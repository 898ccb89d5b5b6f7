"""A kept Router judged on a labelled outcome log: does my router hold on my traffic?

The log (``problems.recorded.read_outcome_log``) gives, for some of the router's members, each
problem's grade and what the answer cost (its response, counted with the reader's tokenizer, or
its tokens), priced with the member's price saved in the router. The router reads each question
with its reader and names a member (or its fallback, where the question lies beyond its
detector's threshold); the member's logged outcome is what the router gets. It is compared with
every member it knows that the log answers, the member it falls back on (the most accurate on the
benchmark it was trained on: the one a user would otherwise call), random routing with the
router's mix, and the oracle, with paired bootstrap intervals over the problems. The routing cost
(the reader's prefill of each question at the reader's price) is paid. Chapter 6 judges the
router it keeps on OlympiadBench with this same function; ``pika route --evaluate`` runs it on a
user's log."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from ..core import prices
from ..core.best import best_member
from ..problems.files import InputError
from ..problems.recorded import RecordedMember, common_problems
from . import evaluation as M
from .recorded import member_outcomes
from .router import Router

#: The fewest problems every member of the log must share for a judgement.
MIN_PROBLEMS = 20


@dataclass
class Judgement:
    """The comparison table, the per-question routing with each choice's outcome, the members'
    outcomes with costs, and what was restricted or left out (``notes``)."""

    table: pd.DataFrame
    routed: pd.DataFrame
    outcomes: pd.DataFrame
    router: Router
    notes: list[str] = field(default_factory=list)
    compared: dict[str, pd.DataFrame] = field(default_factory=dict)  # per problem: member, correct, cost(s)
    reference: str = ""  # the member every row is compared with (the router's fallback, else the log's best)


def check_members(router: Router, log: pd.DataFrame) -> tuple[Router, list[str]]:
    """The router restricted to the members the log answers; an error naming members the router
    does not know (their outcomes cannot be routed to) or a log with fewer than two it knows."""
    logged = list(dict.fromkeys(log["member"].astype(str)))
    unknown = [m for m in logged if m not in router.order]
    if unknown:
        raise InputError(f"the outcome log names member(s) {unknown} that the router does not know; its members are "
                         f"{router.order} (spell them as the router does, or drop those rows)")
    if len(logged) < 2:
        raise InputError(f"the outcome log answers with {logged or 'no member'}; judging a router needs at least two of "
                         f"its members {router.order}")
    notes = []
    if len(logged) < len(router.order):
        missing = [m for m in router.order if m not in logged]
        router = router.restrict(logged)
        notes.append(f"the log has no outcomes of {missing}: the router is judged over {router.order}"
                     + (f", falling back on {router.fallback}" if router.fallback else ""))
    return router, notes


def member_prices(router: Router) -> dict[str, dict[str, float]]:
    """Each member's $ per million input and output tokens: saved in the router, else the price
    table's price of the member's model."""
    if router.prices is not None:
        return {m: {"input_per_m": p[0], "output_per_m": p[1]} for m, p in router.prices.items()}
    out = {}
    for m in router.order:
        model = router.info[m].get("target_model") or router.info[m]["model"]
        try:
            p = prices.get_price(model)
        except KeyError:
            raise InputError(f"the router records no prices and the price table has none for member {m!r} (model "
                             f"{model!r}); save the router with prices=... to judge it") from None
        out[m] = {"input_per_m": p[0], "output_per_m": p[1]}
    return out


def follow(choice: pd.Series, outcomes: pd.DataFrame, routing_cost: pd.Series) -> pd.DataFrame:
    """Per problem, the chosen member's logged outcome and cost, and that cost with routing paid."""
    key = pd.DataFrame({"problem_id": choice.index, "member": choice.to_numpy()})
    t = key.merge(outcomes[["member", "problem_id", "correct", "cost"]], on=["problem_id", "member"], validate="1:1")
    return t.assign(cost_with_routing=t["cost"] + routing_cost.reindex(t["problem_id"]).to_numpy())


def judge(router: Router, log: pd.DataFrame, problems: pd.DataFrame, *, lm=None, routed: pd.DataFrame | None = None,
          source: str = "auto", batch_size: int = 16, n_boot: int = 1000, seed: int = 0,
          minimum: int = MIN_PROBLEMS, progress: bool = False, price_overrides: Mapping | None = None) -> Judgement:
    """Judge ``router`` on ``log`` (member, problem_id, correct, response and/or output_tokens,
    optionally input_tokens) over ``problems`` (problem_id, question). ``routed``: the router's
    output on these questions already computed (``Router.route_features``; with a problem_id
    column), else it reads them. ``lm``: the reader, loaded by name when not given (its tokenizer
    counts the tokens). ``price_overrides``: a run's ``prices`` (the reader's prefill price)."""
    from ..models.registry import load_model
    from ..probes.difficulty import question_labels

    router, notes = check_members(router, log)
    price = member_prices(router)
    members = [RecordedMember(m, log[log["member"] == m].drop(columns="member").reset_index(drop=True), m, "logged",
                              price=price[m], source="log") for m in router.order]
    problems = problems.assign(source=problems.get("source", "log"), difficulty=problems.get("difficulty", np.nan),
                               split=problems.get("split", ""))
    kept = common_problems(members, problems, minimum,
                           advice="Judging compares members on the same problems: log more problems for every member")
    if len(kept) < len(problems):
        notes.append(f"judged on the {len(kept)} of {len(problems)} problems that every member answered")
    problems = kept.sort_values("problem_id").reset_index(drop=True)
    info = router.info[router.order[0]]
    if lm is None:
        lm = load_model(info["model"], source=source)
    outcomes, _ = member_outcomes(members, problems, lm.tokenizer)
    if routed is None:
        routed = router.route(problems["question"].tolist(), lms={info["model"]: lm}, source=source,
                              batch_size=batch_size, progress=progress)
    elif "problem_id" in routed:  # matched by id, whatever the order it was computed in
        routed = routed.set_index("problem_id").reindex(problems["problem_id"]).reset_index()
        if routed["member"].isna().any():
            raise ValueError("routed: it lacks some of the judged problems")
    elif routed["question"].tolist() != problems["question"].tolist():
        raise ValueError("routed: its questions are not the judged problems' questions in their order")
    routed = routed.reset_index(drop=True).assign(problem_id=problems["problem_id"].to_numpy())
    tokens = question_labels(problems, lm.tokenizer, info["prompt_suffix"], info.get("system_prompt"))
    routing_cost = pd.Series([prices.token_cost(info["model"], t, 0, price_overrides) for t in tokens["prompt_tokens"]],
                             index=tokens["problem_id"].to_numpy())
    zero = routing_cost * 0.0
    reference = router.fallback or best_member(outcomes)["member"]
    ids = routed["problem_id"]
    compared: dict[str, pd.DataFrame] = {"router (as kept)": follow(routed.set_index("problem_id")["member"], outcomes,
                                                                      routing_cost)}
    if "probe_member" in routed:
        compared["router, probes only (no detector)"] = follow(routed.set_index("problem_id")["probe_member"],
                                                                outcomes, routing_cost)
    for m in router.order:
        compared[f"always {m}"] = follow(pd.Series(m, index=ids), outcomes, zero)
    mix = compared["router (as kept)"]["member"].value_counts().to_dict()
    rnd = M.random_routing(outcomes, mix, seed=seed, split=None)
    compared["random (the router's mix)"] = follow(rnd.set_index("problem_id")["member"], outcomes, zero)
    orc = M.oracle(outcomes, None)
    compared["oracle (cheapest correct member)"] = follow(orc.set_index("problem_id")["member"], outcomes, zero)
    ref = compared[f"always {reference}"]
    rows = []
    for name, t in compared.items():
        ci = M.paired_intervals(t, ref.assign(cost_with_routing=ref["cost"]), cost="cost_with_routing",
                                n_boot=n_boot, seed=seed)
        rows.append({"router": name, "accuracy": ci["accuracy"], "accuracy low": ci["accuracy_low"],
                     "accuracy high": ci["accuracy_high"],
                     "$ per 1,000 problems": float(t["cost_with_routing"].mean()) * 1000,
                     f"accuracy minus {reference}": ci["accuracy_diff"], "low": ci["accuracy_diff_low"],
                     "high": ci["accuracy_diff_high"], "cost saved": ci["cost_reduction"],
                     "saved low": ci["cost_reduction_low"], "saved high": ci["cost_reduction_high"], "n": len(t)})
    table = pd.DataFrame(rows)
    share_off = float(routed["off_distribution"].mean()) if "off_distribution" in routed else np.nan
    table.attrs.update({"reference": reference, "share off distribution": share_off})
    per_q = routed.merge(compared["router (as kept)"][["problem_id", "correct", "cost", "cost_with_routing"]],
                         on="problem_id")
    return Judgement(table, per_q, outcomes, router, notes, compared, str(reference))


def judge_table_text(j: Judgement) -> str:
    """The judgement as a user reads it in a terminal."""
    t = j.table
    ref = j.reference
    why = ("the most accurate on the router's training benchmark" if j.router.fallback else
           "the most accurate member of this log, in hindsight: the router records no training accuracies")
    lines = [f"{len(j.routed)} problems; members {j.router.order}; compared with always {ref} ({why}); intervals "
             "are 95% paired bootstraps over the problems; $ per 1,000 problems includes the reader's prefill"]
    lines += [f"note: {n}" for n in j.notes]
    if np.isfinite(t.attrs.get("share off distribution", np.nan)):
        lines.append(f"{t.attrs['share off distribution']:.1%} of the questions lie beyond the router's detector "
                     f"threshold and went to {ref}")
    with pd.option_context("display.max_colwidth", 45, "display.width", 220):
        lines.append(t.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return "\n".join(lines)


def as_mapping(j: Judgement) -> Mapping:
    """What ``pika route --evaluate --out`` writes beside the per-question table."""
    return {"members": j.router.order, "reference": j.reference, "notes": j.notes,
            "share_off_distribution": j.table.attrs.get("share off distribution"),
            "table": j.table.to_dict(orient="records")}
