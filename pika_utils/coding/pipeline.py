"""What chapter 10 calls: the code problems, each model's graded programs, their activations,
and probes that cross between domains (trained on maths, tested on code, and back)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..generation import pipeline
from ..probes import protocol as P
from ..core import scale
from ..core.metrics import bootstrap_ci
from ..probes.linear import probe_metric
from ..core.prompts import CODE_SUFFIX
from ..generation.rollouts import RolloutRun


def code_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The chapter's parameters with the code prompt, K, token limit, models and problems in place
    of the maths ones, so the same pipeline functions (and the same extraction) serve both."""
    return {**params, "prompt_suffix": CODE_SUFFIX, "system_prompt": None, "k": int(params["code_k"]),
            "max_new_tokens": int(params["code_max_new_tokens"]), "models": list(params["code_models"]),
            "problem_sources": params["code_sources"], "token_layer_fracs": [],  # no pooled probes here
            "stop": []}  # a program spans many lines: the maths answers' end-of-line stop would cut it


def shortest_programs(problems: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """The ``n`` problems whose reference program (the answer: signature, docstring and solution)
    is shortest, ties by problem_id, each keeping its split; all of them when ``n`` is None. A
    small model rewrites the whole function, docstring included, so on these problems most of its
    programs end within a short token limit (a demonstration, not a sample of HumanEval)."""
    if n is None or int(n) >= len(problems):
        return problems
    if int(n) < 1:
        raise ValueError(f"code_shortest must be a positive number of problems or None, got {n}")
    order = problems.assign(_len=problems["answer"].str.len()).sort_values(["_len", "problem_id"], kind="stable")
    out = problems.loc[order.index[:int(n)]].sort_values("problem_id").reset_index(drop=True)
    out.attrs = dict(problems.attrs)
    return out


def code_problems(params: Mapping[str, Any]) -> pd.DataFrame:
    """The chapter's code problems, split like the maths ones, then cut to the ``code_shortest``
    shortest reference programs (so a problem's split does not depend on that cut)."""
    cp = code_params(params)
    problems = pipeline.problem_set(cp["problem_sources"], split_fractions=cp["split_fractions"], seed=cp["seed"])
    return shortest_programs(problems, params.get("code_shortest"))


def code_stage(params: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, RolloutRun], pd.DataFrame]:
    """The code problems (split like the maths ones), each code model's graded rollouts, and the
    per-problem summary with ``maj_correct`` as the code analogue: most rollouts pass. Raises
    ``SandboxUnavailable`` before generating anything where programs cannot be run."""
    from ..grading import sandbox

    sandbox.require()  # no operating-system sandbox: refuse before generating programs nobody may run
    cp = code_params(params)
    problems = code_problems(params)
    cfg = pipeline.sampling_config(cp)
    runs = pipeline.rollouts_for_models(problems, cp["models"], cfg, backend=cp["backend"],
                                        model_source=cp["model_source"], prices=cp.get("prices"))
    summary = pipeline.combined_summary(runs)
    summary["maj_correct"] = summary["n_correct"] > summary["k"] / 2
    return problems, runs, summary


def outcome_counts(summary: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """Per model: how many problems most of its programs pass and fail, on the test split (what a
    probe is scored on) and over every problem (what a maths-to-code transfer is scored on), and
    the share passing (for how many problems a decisive run would need)."""
    s = summary.drop(columns=["split"], errors="ignore").merge(problems[["problem_id", "split"]], on="problem_id")
    rows = []
    for m, d in s.groupby("model", sort=False):
        t = d[d["split"] == "test"]
        rows.append({"model": m, "problems": len(d), "test": len(t), "test_passing": int(t["maj_correct"].sum()),
                     "test_failing": int((~t["maj_correct"].astype(bool)).sum()),
                     "all_passing": int(d["maj_correct"].sum()), "all_failing": int((~d["maj_correct"].astype(bool)).sum()),
                     "pass_share": float(d["maj_correct"].mean())})
    return pd.DataFrame(rows)


def scale_reasons(counts: pd.DataFrame, test_fraction: float, min_each: int = scale.MIN_PER_OUTCOME) -> dict[str, dict[str, str | None]]:
    """For each model (a row of ``outcome_counts``): why its probe claims (scored on the test
    split) and its transfer claim (scored on every code problem) cannot be decided here, or None
    where they can, each reason ending with what would decide it."""
    out = {}
    for r in counts.itertuples():
        def decide(fraction: float, where: str) -> str:
            need = scale.problems_needed(r.pass_share, fraction, min_each)
            grow = (f"at {r.model}'s pass rate on these problems ({r.pass_share:.0%} passed by most programs), about "
                    f"{need} problems would give {min_each} of each outcome {where}" if need else
                    f"{r.model} passed {'no' if r.pass_share == 0 else 'every'} problem here, so more problems of this "
                    "kind would not do")
            return (f"What would decide it: the paper profile (LiveCodeBench, about 400 problems with 80 in test, "
                    f"K=5, 4096 new tokens, 7B+ models); {grow}.")

        probe = scale.shortfall({"test problems passed by most programs": r.test_passing, "failed": r.test_failing}, min_each)
        moved = scale.shortfall({"code problems passed by most programs": r.all_passing, "failed": r.all_failing}, min_each)
        out[r.model] = {
            "probe": probe and f"not tested at this scale: {r.model} has {probe}. "
                               f"{decide(test_fraction, f'in a {test_fraction:.0%} test split')}",
            "transfer": moved and f"not tested at this scale: {r.model} has {moved}. {decide(1.0, 'among them')}"}
    return out


def code_activations(problems: pd.DataFrame, model: str, params: Mapping[str, Any]):
    """EOI activations of ``model`` on the code problems, with the code prompt the rollouts saw."""
    return pipeline.activations_for(problems, model, code_params(params))


def grade_reasons(runs: Mapping[str, RolloutRun]) -> pd.DataFrame:
    """Share of rollouts per grading verdict, per model (pass, assertion, syntax_error...)."""
    rows = [r.rollouts.groupby("grade_reason").size().rename(m) for m, r in runs.items()]
    table = pd.concat(rows, axis=1).fillna(0).astype(int).T
    return table.div(table.sum(axis=1), axis=0)


def cross_domain_transfer(src_acts, src_labels: pd.DataFrame, dst_acts, dst_labels: pd.DataFrame,
                          target: str, *, model: str, name: str, **kw) -> dict:
    """A probe trained (and its layer, position and alpha chosen) on one domain's train and
    validation problems, then tested on every problem of the other domain: the two domains'
    prompts differ, so each side reads its own activations at the same layer and EOI position.
    Also scores the same probe on the other domain's test split alone, the problems an
    in-domain probe is tested on."""
    a = src_labels[src_labels["split"] != "test"].dropna(subset=[target])
    b = dst_labels.dropna(subset=[target]).assign(split="test")
    if a.empty or b.empty:
        raise ValueError(f"no labelled problems for transfer {name}")
    rows_a, rows_b = src_acts.rows_for(a["problem_id"].tolist(), model=model), dst_acts.rows_for(b["problem_id"].tolist(), model=model)
    positions = sorted(set(src_acts.meta["positions"]) & set(dst_acts.meta["positions"]))
    layers = sorted(set(src_acts.layers) & set(dst_acts.layers))
    cache: dict[tuple[int, int], np.ndarray] = {}

    def features(layer: int, pos: int) -> np.ndarray:
        if (layer, pos) not in cache:
            cache[(layer, pos)] = np.vstack([src_acts.layer(layer, pos)[rows_a], dst_acts.layer(layer, pos)[rows_b]])
        return cache[(layer, pos)]

    labels = pd.concat([a, b], ignore_index=True)
    rep = P.run_protocol(name, features, layers, positions, labels, target, **kw)
    on_test = rep.test.merge(dst_labels.loc[dst_labels["split"] == "test", ["problem_id"]], on="problem_id")
    point, lo, hi = (bootstrap_ci(probe_metric(rep.task), on_test["y"].to_numpy(), on_test["score"].to_numpy(),
                                  n_boot=kw.get("n_boot", 1000), seed=kw.get("seed", 0))
                     if len(on_test) >= 2 else (np.nan, np.nan, np.nan))
    return {"model": model, "train -> test": name, "target": target, "metric": P.METRIC_NAMES[rep.task],
            "test": rep.metrics["test"], "ci_low": rep.metrics["ci_low"], "ci_high": rep.metrics["ci_high"],
            "n_test": rep.metrics["n_test"], "test_split_only": point, "split_ci_low": lo, "split_ci_high": hi,
            "n_test_split": len(on_test), "layer": rep.best["layer"], "position": rep.best["position"]}
