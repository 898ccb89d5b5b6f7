"""What chapter 10 calls: the code problems, each model's graded programs, their activations,
and probes that cross between domains (trained on maths, tested on code, and back)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..generation import pipeline
from ..probes import protocol as P
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


def code_stage(params: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, RolloutRun], pd.DataFrame]:
    """The code problems (split like the maths ones), each code model's graded rollouts, and the
    per-problem summary with ``maj_correct`` as the code analogue: most rollouts pass."""
    from ..grading import sandbox

    sandbox.require()  # no operating-system sandbox: refuse before generating programs nobody may run
    cp = code_params(params)
    problems = pipeline.problem_set(cp["problem_sources"], split_fractions=cp["split_fractions"], seed=cp["seed"])
    cfg = pipeline.sampling_config(cp)
    runs = pipeline.rollouts_for_models(problems, cp["models"], cfg, backend=cp["backend"],
                                        model_source=cp["model_source"], prices=cp.get("prices"))
    summary = pipeline.combined_summary(runs)
    summary["maj_correct"] = summary["n_correct"] > summary["k"] / 2
    return problems, runs, summary


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
