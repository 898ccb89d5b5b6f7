"""The book's one table look: numbers without e-notation, a dash for what is missing, costs per
problem shown as dollars per 1,000 problems, no index column."""
import math

import numpy as np
import pandas as pd

from pika_utils.book import tables as T


def test_numbers_never_use_e_notation_and_missing_is_a_dash():
    assert T.number(1.206e-06) == "0.00000121"
    assert T.number(0.16034) == "0.160" and T.number(1234.7) == "1,235"
    assert T.number(12) == "12" and T.number(np.int64(12000)) == "12,000" and T.number(3.0) == "3"
    assert T.number(float("nan")) == T.DASH and T.number(None) == T.DASH and T.number(pd.NA) == T.DASH
    assert T.number(math.inf) == "∞" and T.number(1e-15) == "≈0" and T.number(True) == "yes"
    assert "e-" not in T.number(3.3e-9)


def test_dollars_and_intervals():
    assert T.dollars(0.000477) == "$0.48" and T.dollars(0.0000012) == "$0.0012" and T.dollars(math.nan) == T.DASH
    assert T.interval(0.112, 0.0951, 0.128) == "0.112 [0.0951, 0.128]" and T.interval(None, 0, 1) == T.DASH


def test_cost_columns_are_found_by_name_and_size():
    df = pd.DataFrame({"router": ["a", "b"], "cost": [1.2e-6, 4.7e-4], "cost_with_routing": [2e-6, 5e-4],
                       "expected cost (train)": [3e-6, 1e-5], "cost saved, routing paid": [0.004, 0.002],
                       "share of cost": [0.001, 0.002], "relative cost": [0.5, 0.9],
                       "big cost": [12.0, 30.0], "accuracy": [0.001, 0.002], "output tokens cost": [1e-6, 2e-6]})
    assert T.cost_columns(df) == ["cost", "cost_with_routing", "expected cost (train)"]


def test_show_hides_the_index_formats_money_and_dashes():
    df = pd.DataFrame({"member": ["7B", "14B"], "cost": [1.2e-6, np.nan], "accuracy": [0.8043, 0.5]})
    html = T.show(df, money=T.cost_columns(df)).to_html()
    assert "$0.0012" in html and "cost ($ per 1,000 problems)" in html and T.DASH in html
    assert "0.804" in html and "e-06" not in html and "nan" not in html.lower().replace("nanosec", "")
    assert ">0<" not in html  # no row-number index column
