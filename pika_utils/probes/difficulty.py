"""Chapter 4's questions as functions: is a human difficulty (MATH's levels, E2H's IRT ratings)
decodable from the state before generation, and is the model's own difficulty the human one?
Spearman scores are read against their tie ceiling, and gaps are paired bootstrap intervals."""
from __future__ import annotations

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
