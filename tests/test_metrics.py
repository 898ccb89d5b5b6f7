import math
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pika_utils.core import metrics
from pika_utils.core import prices


@pytest.mark.parametrize("n,c,k", [(8, 0, 1), (8, 3, 1), (8, 3, 2), (8, 3, 6), (5, 5, 3), (10, 1, 10)])
def test_pass_at_k_matches_enumeration(n, c, k):
    # brute force: the share of k-subsets of n samples (c correct) that contain a correct one
    samples = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert metrics.pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError, match="c <= n"):
        metrics.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k <= n"):
        metrics.pass_at_k(4, 2, 5)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding makes ties
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert math.isnan(metrics.auroc(np.ones(5), np.arange(5)))


def test_ece_and_brier():
    y = np.array([0, 0, 1, 1])
    assert metrics.ece(y, [0.0, 0.0, 1.0, 1.0]) == 0.0
    assert metrics.ece(y, [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)  # calibrated on average
    assert metrics.ece(y, [1.0, 1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert metrics.brier(y, [0.5] * 4) == pytest.approx(0.25)


def test_bootstrap_interval_contains_point_and_shrinks():
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=30), rng.normal(size=3000)
    p1, lo1, hi1 = metrics.bootstrap_ci(np.mean, small, n_boot=300)
    p2, lo2, hi2 = metrics.bootstrap_ci(np.mean, large, n_boot=300)
    assert lo1 <= p1 <= hi1 and lo2 <= p2 <= hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 3


def test_price_table_and_missing_price():
    p_in, p_out = prices.get_price("smollm2-135m")
    q_in, q_out = prices.get_price("qwen2.5-math-7b")
    assert 0 < p_in < q_in and 0 < p_out < q_out  # bigger models cost more
    assert prices.token_cost("smollm2-135m", 1_000_000, 0) == pytest.approx(p_in)
    with pytest.raises(KeyError, match="no price for model 'my-model'.*prices"):
        prices.get_price("my-model")
    assert prices.get_price("my-model", {"my-model": {"input_per_m": 1, "output_per_m": 2}}) == (1.0, 2.0)
    with pytest.raises(ValueError, match="lacks"):
        prices.price_table({"m": {"input_per_m": 1}})
