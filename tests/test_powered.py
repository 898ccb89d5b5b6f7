"""The powered workshop's pieces: the surface-matched source, MATH-500's human levels, subsets per
model, stop strings, tie ceilings, selection on small splits, and the verdict rule."""
import dataclasses

import numpy as np
import pytest

from pika_utils.problems import sources
from pika_utils.generation import pipeline
from pika_utils.problems import tasks
from pika_utils.book import verdicts
from pika_utils.generation.backends import cut_at_stop
from pika_utils.core.cpu import free_cores
from pika_utils.core.metrics import spearman, spearman_ceiling
from pika_utils.probes.linear import split_too_small, sweep
from pika_utils.generation.sampling import SamplingConfig


def test_products_share_one_surface_and_vary_only_in_numbers():
    df = tasks.load_problems({"products": {"n": 50, "seed": 3}})
    assert len(df) == 50 and df["problem_id"].is_unique and df["source"].eq("products").all()
    shapes = df["question"].str.replace(r"\d", "9", regex=True)
    assert shapes.nunique() == 1 and shapes.iloc[0] == "Calculate 99 * 99."
    a_b = df["question"].str.extract(r"(\d+) \* (\d+)").astype(int)
    assert (a_b[0] * a_b[1]).astype(str).tolist() == df["answer"].tolist()
    assert tasks.load_problems({"products": {"n": 50, "seed": 3}}).equals(df)
    bigger = sources.products(n=80, seed=3)
    assert set(df["problem_id"]) <= set(bigger["problem_id"])  # growing n only adds problems
    with pytest.raises(ValueError, match="products: n must be in 1..8100"):
        sources.products(n=9000)


def test_math500_levels_are_attached_by_index_and_checked_by_text():
    df = sources.load_mmath(("math500",))
    assert len(df) == 311 and df["difficulty_kind"].eq("math_level").all()
    assert set(df["difficulty"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    table, where = sources.math500_levels()
    assert len(table) == 500 and ("packaged" in where or where.startswith("hub:"))
    # the divisors of 196 (MATH-500 #3, a level-3 number theory problem)
    row = df[df["question"].str.contains("positive whole-number divisors does 196")].iloc[0]
    assert row["difficulty"] == 3.0


def test_model_limits_give_a_seeded_subset_that_keeps_splits():
    problems = pipeline.problem_set({"products": {"n": 60}}, split_fractions=[0.5, 0.2, 0.3], seed=0)
    params = {"model_limits": {"big": 20}, "seed": 0}
    sub = pipeline.model_problems(problems, "big", params)
    assert 18 <= len(sub) <= 22 and set(sub["problem_id"]) <= set(problems["problem_id"])
    assert set(sub["split"]) == {"train", "val", "test"}
    merged = sub.merge(problems, on="problem_id", suffixes=("", "_all"))
    assert (merged["split"] == merged["split_all"]).all()  # a problem keeps its split
    assert pipeline.model_problems(problems, "small", params).equals(problems)
    assert pipeline.model_problems(problems, "big", params).equals(sub)


def test_stop_strings_cut_the_answer_and_are_checked():
    assert cut_at_stop("1234\nThe answer", ("\n",)) == "1234"
    assert cut_at_stop("1234", ("\n",)) is None
    assert cut_at_stop("a. b\nc", ("\n", ". ")) == "a"
    with pytest.raises(ValueError, match="stop must be a tuple of non-empty strings"):
        SamplingConfig(stop="\n")
    assert "stop" not in SamplingConfig().key() and SamplingConfig(stop=("\n",)).key()["stop"] == ("\n",)


def test_stop_at_newline_on_the_tiny_model(tiny_lm):
    from pika_utils.generation.backends import TransformersBackend

    be = TransformersBackend(tiny_lm)
    prompts = ["<|user|>\nhi<|end|>\n<|assistant|>\n"]
    free = be.generate(prompts, SamplingConfig(k=4, temperature=1.0, max_new_tokens=24), 0)
    cut = be.generate(prompts, SamplingConfig(k=4, temperature=1.0, max_new_tokens=24, stop=("\n",)), 0)
    for a, b in zip(free[0], cut[0]):
        assert "\n" not in b.text and a.text.startswith(b.text)
        assert b.output_tokens <= a.output_tokens


def test_spearman_ceiling_and_a_constant_prediction():
    y = np.array([0, 0, 0, 0, 0.25, 0.5, 1.0, 1.0])
    c = spearman_ceiling(y)
    assert 0 < c < 1
    assert spearman(y, np.arange(len(y))) == pytest.approx(c)  # a tie-free ranking consistent with y
    assert spearman(y, np.ones(len(y))) == 0.0  # a constant predictor is at chance
    assert np.isnan(spearman(np.ones(5), np.arange(5)))  # nothing to rank
    assert spearman_ceiling(np.arange(6.0)) == pytest.approx(1.0)


def test_selection_cross_validates_when_validation_has_one_positive():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0.8).astype(float)
    idx = np.arange(120)
    train, val = idx[:90], idx[90:]
    y[val] = 0.0
    y[val[0]] = 1.0  # one positive on validation: it cannot rank settings
    assert split_too_small(y[val], "classification")
    res = sweep(lambda layer, pos: X, [0], [0], y, train, val, "classification", alphas=[0.01, 1.0, 100.0])
    assert res.best["selection"].startswith(("2-fold", "3-fold", "4-fold", "5-fold"))
    assert {"val_score", "val_se"} <= set(res.table.columns)
    top = res.table["val_score"].max()
    chosen = res.table[res.table["alpha"] == res.best["alpha"]]["val_score"].iloc[0]
    assert chosen >= top - res.table.loc[res.table["val_score"].idxmax(), "val_se"] - 1e-12
    big = np.r_[np.ones(20), np.zeros(20)]
    assert not split_too_small(big, "classification")


@pytest.mark.parametrize("est,lo,hi,null,direction,expected", [
    (0.2, 0.1, 0.3, 0.0, 1, "reproduced"),
    (0.0, -0.05, 0.005, 0.0, 1, "not reproduced"),  # holds 0, below the margin less the band (0.01)
    (0.0, -0.05, 0.015, 0.0, 1, "undecided"),  # below the margin, but inside the band
    (0.01, 0.005, 0.015, 0.0, 1, "real but small"),  # there, and below the margin
    (0.05, -0.1, 0.2, 0.0, 1, "undecided"),
    (0.05, 0.02, 0.08, 0.1, -1, "reproduced"),  # e.g. ECE below 0.1
    (0.2, 0.15, 0.3, 0.1, -1, "not reproduced"),
    (float("nan"), 0.0, 1.0, 0.0, 1, "undecided"),
])
def test_verdict_rule(est, lo, hi, null, direction, expected):
    assert verdicts.decide(est, lo, hi, null, direction) == expected


def test_verdicts_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path))
    c = verdicts.Claim("c-x", "03", "a claim", "paper", "q", 0.3, 0.1, 0.5, n=40, selection="validation")
    verdicts.record("my profile", c)
    t = verdicts.table("my profile")
    assert t.loc[0, "verdict"] == "reproduced" and t.loc[0, "n"] == 40
    assert verdicts.table("other").empty


@pytest.mark.parametrize("est,lo,hi,expected", [
    (0.85, 0.82, 0.88, "reproduced"),          # within the paper's 0.83-0.87, give or take 0.05
    (0.55, 0.40, 0.68, "not reproduced"),      # chapter 4's human-difficulty Spearman: below 0.83 - 0.075
    (0.75, 0.60, 0.95, "undecided"),           # overlaps the range but reaches far below it
    (float("nan"), 0.0, 1.0, "undecided"),
])
def test_size_rule_against_the_papers_range(est, lo, hi, expected):
    assert verdicts.decide_size(est, lo, hi, 0.83, 0.87) == expected
    c = verdicts.Claim("c-size", "04", "size", "0.83-0.87", "q", est, lo, hi, n=93, paper_low=0.83, paper_high=0.87,
                       margin=0.05)
    assert c.kind == "size" and c.verdict == expected


def test_a_condition_that_fails_fails_the_claim():
    cheaper = dict(claim_id="c-r", chapter="06", claim="matches the best for less", paper="p", quantity="cost saved",
                   estimate=0.5, low=0.4, high=0.6, n=36, selection="validation")
    same_accuracy = {"quantity": "accuracy minus the best's", "estimate": -0.05, "low": -0.08, "high": -0.03,
                     "null": -0.01}
    assert verdicts.Claim(**cheaper).verdict == "reproduced"
    assert verdicts.Claim(**cheaper, condition=same_accuracy).verdict == "not reproduced"
    wide = {**same_accuracy, "low": -0.2, "high": 0.2}
    assert verdicts.Claim(**cheaper, condition=wide).verdict == "undecided"


def test_no_claim_without_n_and_none_against_a_constant_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path))
    c = verdicts.Claim("c-len", "03", "The probe beats length", "p", "paired AUROC difference", 0.4, 0.2, 0.5,
                       versus="prompt length", selection="validation")
    with pytest.raises(ValueError, match="n must be the number"):
        verdicts.record("p", c)
    c = dataclasses.replace(c, n=78)
    with pytest.raises(verdicts.EmptyComparison, match="prompt length.*same score"):
        verdicts.record("p", c, baseline_scores=np.full(78, 34.0))
    assert verdicts.table("p").empty
    verdicts.drop("p", "c-len", "03", c.claim, "prompt length is 34 tokens on every test problem")
    verdicts.record("p", dataclasses.replace(c, claim_id="c-len2"), baseline_scores=np.arange(78.0))
    assert verdicts.table("p")["claim_id"].tolist() == ["c-len2"]
    assert verdicts.dropped("p")["reason"].str.contains("34 tokens").all()


def test_free_cores_is_a_sane_count():
    import os
    n = free_cores(0.05)
    assert 1 <= n <= (os.cpu_count() or 1)


def test_a_profile_revision_pin_reaches_the_loader():
    """model_revisions in a profile is passed to the model loader: a pin on a model without a
    hub id is refused by name instead of being silently ignored."""
    problems = pipeline.problem_set({"products": {"n": 12}}, seed=0)
    params = {"model_source": "offline", "model_revisions": {"tiny-random-llama": "0123abcd"}, "seed": 0}
    with pytest.raises(ValueError, match="tiny-random-llama.*0123abcd"):
        pipeline.activations_for(problems, "tiny-random-llama", params)
    assert pipeline.revision_of("tiny-random-llama", params) == "0123abcd"
    assert pipeline.revision_of("other", params) is None


def test_a_model_limits_subset_is_not_the_sources_own_sample():
    """The sources' ``limit`` and the ``model_limits`` subset both rank problems by a seeded hash:
    unsalted, the subset took every problem a source had sampled (all 40 MATH-500 problems in a
    120-problem subset of 400). Each source keeps roughly its share."""
    from pika_utils.generation import pipeline

    sources = {"products": {"n": 260}, "gsm8k100": {"limit": 40}, "mmath": {"subsets": ["math500"], "limit_per_subset": 40}}
    problems = pipeline.problem_set(sources, split_fractions=[0.5, 0.2, 0.3], seed=0)
    sub = pipeline.subset(problems, 120, seed=0)
    share = sub["source"].value_counts() / len(sub)
    whole = problems["source"].value_counts() / len(problems)
    assert len(sub) == pytest.approx(120, abs=3)
    for source, expected in whole.items():  # 30 of 120 expected for a 25% source; all 40 is the bug
        assert share.get(source, 0) < 2 * expected, (source, share.to_dict(), whole.to_dict())
