"""Chapter 4's questions as functions: is a human difficulty (MATH's levels, E2H's IRT ratings)
decodable from the state before generation, and is the model's own difficulty the human one?
Spearman scores are read against their tie ceiling, and gaps are paired bootstrap intervals."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from . import protocol as P
from ..core.metrics import bootstrap_ci, spearman, spearman_ceiling
from ..core.prompts import chat_prompts


def question_labels(problems: pd.DataFrame, tokenizer, prompt_suffix: str = "",
                    system_prompt: str | None = None) -> pd.DataFrame:
    """A labels table for targets that need no rollouts (difficulty): the problems with the
    prompt length in tokens (the length baseline's feature), in problem_id order."""
    prompts = chat_prompts(tokenizer, problems["question"].tolist(), prompt_suffix, system_prompt)
    n = [len(x) for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    cols = ["problem_id", "question", "source", "difficulty", "split"]
    return problems[cols].assign(prompt_tokens=n).sort_values("problem_id").reset_index(drop=True)


def ceiling_ratio(y, score) -> float:
    """Spearman as a share of what a tie-free predictor could reach on these targets."""
    c = spearman_ceiling(y)
    return spearman(y, score) / c if np.isfinite(c) and c > 0 else float("nan")


def paired_ratio_gap(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Ceiling-normalised Spearman of probe ``a`` minus that of probe ``b`` (each a test table
    with problem_id, y, score), resampling the shared test problems jointly."""
    m = a.merge(b, on="problem_id", suffixes=("_a", "_b"))
    return bootstrap_ci(lambda ya, sa, yb, sb: ceiling_ratio(ya, sa) - ceiling_ratio(yb, sb),
                        m["y_a"].to_numpy(), m["score_a"].to_numpy(), m["y_b"].to_numpy(), m["score_b"].to_numpy(),
                        n_boot=n_boot, seed=seed)


def human_direction_scores(report: P.ProbeReport, acts, problem_ids) -> np.ndarray:
    """A human-difficulty probe (fitted on one problem set) applied to the same model's
    activations of other problems: the model's reading of *human* difficulty there."""
    rows = acts.rows_for(list(problem_ids))
    return acts.layer(report.best["layer"], report.best["position"])[rows] @ report.coef


def own_vs_human(success_test: pd.DataFrame, human_scores: np.ndarray, n_boot: int = 1000,
                 seed: int = 0) -> tuple[float, float, float]:
    """On the same test problems: Spearman of the success-rate probe with the success rate, minus
    Spearman of *minus* the human-difficulty direction with it (harder should mean less success).
    Above zero: the model's own difficulty is not the human one."""
    y, s = success_test["y"].to_numpy(float), success_test["score"].to_numpy(float)
    h = -np.asarray(human_scores, dtype=float)
    return bootstrap_ci(lambda yy, ss, hh: spearman(yy, ss) - spearman(yy, hh), y, s, h, n_boot=n_boot, seed=seed)


def choose_model(reports: Mapping[str, P.ProbeReport]) -> tuple[str, str]:
    """The model whose probe scored best on the data its own layer, position and alpha were
    chosen on (the validation split, or cross-validation over train+val when validation is too
    small), never on test: a claim's model is a choice like any other. Ties go to the first
    model given. Returns the model and how it was chosen ('validation')."""
    if not reports:
        raise ValueError("choose_model: no fitted probe to choose from")
    vals = {m: float(r.metrics.get("val", np.nan)) for m, r in reports.items()}
    if not any(np.isfinite(v) for v in vals.values()):
        raise ValueError(f"choose_model: no probe has a validation score ({vals})")
    top = max(v for v in vals.values() if np.isfinite(v))
    return next(m for m, v in vals.items() if np.isfinite(v) and v >= top), "validation"


def informative_model(summary: pd.DataFrame, problems: pd.DataFrame, models) -> str:
    """Of ``models``, the one with the most problems of mixed outcome (0 < success rate < 1) on
    the TRAIN and validation splits: the most informative labels, counted without the test
    outcomes a claim is then scored on. Ties go to the first model given."""
    sr = summary.merge(problems[["problem_id", "split"]], on="problem_id", suffixes=("", "_p"))
    split = sr["split_p"] if "split_p" in sr else sr["split"]
    sr = sr[split.isin(["train", "val"])]
    mixed = sr.assign(m=(sr["success_rate"] > 0) & (sr["success_rate"] < 1)).groupby("model")["m"].sum()
    models = list(models)
    if not models:
        raise ValueError("informative_model: no model to choose from")
    return max(models, key=lambda m: (float(mixed.get(m, 0)), -models.index(m)))
