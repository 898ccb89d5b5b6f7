"""The verdict rule's properties, checked over many random intervals: monotone under containment
(a wider interval never gets a more decided verdict), no flip between "reproduced" and "not
reproduced" for a move smaller than the band, the issue's two pairs of intervals, one default
margin that the verdict page states; and what ``record`` refuses (a selection on test, a comparison
without its baseline's scores or a reason)."""
import json

import numpy as np
import pytest

from pika_utils.book import runner as book
from pika_utils.book import verdicts

#: What a verdict may become when its interval is replaced by one that contains it: the same, or a
#: coarser one (real but small drops "small"; every verdict may become undecided).
COARSER = {"real but small": set(verdicts.VERDICTS), "reproduced": {"reproduced", "undecided"},
           "not reproduced": {"not reproduced", "undecided"}, "undecided": {"undecided"}}
RNG_SEEDS = range(3)
N = 4000


def _row(lo, hi, **kw):
    return {"claim_id": "c-x", "claim": "x", "quantity": "q", "estimate": (lo + hi) / 2, "low": lo, "high": hi, **kw}


def _direction(rng):
    null = float(rng.choice([0.0, 0.1, -0.05, 0.5]))
    return {"null": null, "direction": int(rng.choice([1, -1])), "margin": float(rng.choice([0.02, 0.05, 0.1]))}


def _size(rng):
    p_lo = float(rng.uniform(0.3, 0.8))
    return {"paper_low": p_lo, "paper_high": p_lo + float(rng.uniform(0, 0.2)), "margin": float(rng.choice([0.02, 0.05]))}


def _interval(rng, centre, scale):
    a, b = np.sort(rng.normal(centre, scale, 2))
    return float(a), float(b)


def _widen(rng, lo, hi, scale):
    return lo - float(rng.exponential(scale)) * rng.integers(0, 2), hi + float(rng.exponential(scale)) * rng.integers(0, 2)


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("kind", ["direction", "size", "direction with conditions", "size with a condition"])
def test_a_wider_interval_never_gets_a_more_decided_verdict(kind, seed):
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(N):
        base = _size(rng) if kind.startswith("size") else _direction(rng)
        centre = base.get("paper_low", base.get("null", 0.0))
        lo, hi = _interval(rng, centre, 0.06)
        conds = []
        if "condition" in kind:
            for _c in range(1 if kind.startswith("size") else 2):
                c = _direction(rng)
                clo, chi = _interval(rng, c["null"], 0.05)
                conds.append({"quantity": "c", "estimate": (clo + chi) / 2, "low": clo, "high": chi, **c})
        narrow = _row(lo, hi, **base, condition=conds or None)
        wlo, whi = _widen(rng, lo, hi, 0.03)
        wconds = [{**c, "low": _widen(rng, c["low"], c["high"], 0.03)[0], "high": _widen(rng, c["low"], c["high"], 0.03)[1]}
                  for c in conds]
        wide = _row(wlo, whi, **base, condition=wconds or None)
        v, w = verdicts.verdict_of(narrow), verdicts.verdict_of(wide)
        seen.add(v)
        assert w in COARSER[v], f"{narrow} is {v!r}, but the wider {wide} is {w!r}"
    # the property was exercised on every verdict the kind can give (size claims have no "small")
    assert seen >= ({"reproduced", "not reproduced", "undecided"} | ({"real but small"} if kind.startswith("direction") else set()))


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("kind", ["direction", "size", "direction with a condition"])
def test_no_move_smaller_than_the_band_flips_reproduced_and_not_reproduced(kind, seed):
    """Random intervals, many near the corner where the lines meet (low at the null, high at the
    margin), each end moved by less than the band (of the claim's part with the smallest margin)."""
    rng = np.random.default_rng(100 + seed)
    flips_possible = 0
    for _ in range(N):
        base = _size(rng) if kind == "size" else _direction(rng)
        m = base["margin"]
        # the smallest band of the claim's parts (a condition has the default direction margin)
        eps = 0.999 * verdicts.BAND * (min(m, verdicts.DEFAULT_MARGIN["direction"]) if "condition" in kind else m)
        if kind == "size":
            edge = base["paper_high"] + m
            lo, hi = sorted([edge + float(rng.normal(0, m)), edge + float(rng.normal(0, m))])
        else:
            s = base["direction"]
            a, b = base["null"], base["null"] + s * m  # the corner: low at the null, high at the margin
            lo, hi = sorted([a + float(rng.normal(0, eps)), b + float(rng.normal(0, eps))])
        cond = None
        if "condition" in kind:
            clo, chi = sorted(rng.normal(0, eps, 2))
            cond = {"quantity": "c", "estimate": (clo + chi) / 2, "low": float(clo), "high": float(chi)}
        v = verdicts.verdict_of(_row(lo, hi, **base, condition=cond))
        d_lo, d_hi = rng.uniform(-eps, eps, 2)
        moved_cond = cond and {**cond, "low": cond["low"] + float(rng.uniform(-eps, eps)) * 0.5,
                               "high": cond["high"] + float(rng.uniform(-eps, eps)) * 0.5}
        nlo, nhi = sorted([lo + d_lo, hi + d_hi])
        w = verdicts.verdict_of(_row(nlo, nhi, **base, condition=moved_cond))
        assert {v, w} != {"reproduced", "not reproduced"}, (kind, base, (lo, hi), (nlo, nhi), cond, moved_cond, v, w)
        flips_possible += v in ("reproduced", "not reproduced")
    assert flips_possible > N // 10  # the random intervals did reach both decided verdicts


def test_the_issues_intervals():
    """Size, paper 0.83-0.87, margin 0.05: [0.88, 0.90] and the wider [0.86, 0.91] (both within
    0.78-0.92); direction: [0.001, 0.015] is real but small, and [-0.001, 0.015], a hair lower, is
    not its opposite."""
    narrow = verdicts.decide_size(0.89, 0.88, 0.90, 0.83, 0.87, 0.05)
    wide = verdicts.decide_size(0.885, 0.86, 0.91, 0.83, 0.87, 0.05)
    assert narrow == "reproduced" and wide in COARSER[narrow]
    assert verdicts.decide_size(0.95, 0.93, 0.97, 0.83, 0.87, 0.05) == "undecided"  # between 0.92 and 0.945
    assert verdicts.decide_size(0.97, 0.95, 0.99, 0.83, 0.87, 0.05) == "not reproduced"
    there = verdicts.decide(0.008, 0.001, 0.015)
    lower = verdicts.decide(0.007, -0.001, 0.015)
    assert there == "real but small"
    assert lower == "undecided" and {there, lower} != {"reproduced", "not reproduced"}
    assert verdicts.decide(0.002, -0.001, 0.005) == "not reproduced"


def test_the_default_margin_is_the_one_the_page_states():
    """A claim without a margin is decided at ``DEFAULT_MARGIN`` of its kind: the verdict changes
    exactly there; the verdict page shows ``rules_markdown`` (which prints those numbers) and
    states no margin in its own text."""
    for kind, m in verdicts.DEFAULT_MARGIN.items():
        if kind == "direction":
            below, at = verdicts.decide(0.01, 0.001, m - 1e-9), verdicts.decide(0.01, 0.001, m)
            assert (below, at) == ("real but small", "reproduced")
            claim = verdicts.Claim("c", "03", "x", "p", "q", 0.01, 0.001, m - 1e-9)
            assert claim.verdict == "real but small"
        else:
            inside, outside = (verdicts.decide_size(0.9, 0.8, 0.87 + m - 1e-9, 0.83, 0.87),
                               verdicts.decide_size(0.9, 0.8, 0.87 + m + 1e-9, 0.83, 0.87))
            assert (inside, outside) == ("reproduced", "undecided")
        assert f"{m:g}" in verdicts.rules_markdown()
    cells = json.loads((book.REPO_ROOT / "notebooks" / "11_verdicts.ipynb").read_text())["cells"]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    prose = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "verdicts.rules_markdown()" in code
    for m in {*verdicts.DEFAULT_MARGIN.values(), 0.02, 0.05}:
        assert f"{m:g}" not in prose, f"the verdict page states a margin ({m:g}) in its own text"


def _claim(**kw):
    base = dict(claim_id="c-sel", chapter="04", claim="The probe beats TF-IDF", paper="p", quantity="q",
                estimate=0.1, low=0.05, high=0.15, n=50, versus="TF-IDF", selection="validation")
    return verdicts.Claim(**{**base, **kw})


def test_record_refuses_a_selection_on_test_or_none_stated(tmp_path, monkeypatch, refused_ok=None):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path))
    scores = np.arange(50.0)
    with pytest.raises(verdicts.SelectionOnTest, match="'c-sel'"):
        verdicts.record("p", _claim(selection="test"), scores)
    with pytest.raises(verdicts.SelectionOnTest, match="'c-sel'.*test sweep"):
        verdicts.record("p", _claim(note="setting chosen on the test sweep (flatters the router)"), scores)
    with pytest.raises(ValueError, match="'c-sel'.*selection must say"):
        verdicts.record("p", _claim(selection=None), scores)
    with pytest.raises(ValueError, match="selection must say"):
        verdicts.record("p", _claim(selection="held-out"), scores)
    assert verdicts.table("p").empty
    for how in sorted(set(verdicts.SELECTIONS) - {"test"}):
        verdicts.record("p", _claim(claim_id=f"c-{how}", selection=how), scores)
    assert sorted(verdicts.table("p")["selection"]) == sorted(set(verdicts.SELECTIONS) - {"test"})


def test_a_comparison_states_its_baselines_scores_or_why_there_are_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="'c-sel'.*compared with 'TF-IDF'.*baseline_scores="):
        verdicts.record("p", _claim())
    with pytest.raises(ValueError, match="no_baseline="):
        verdicts.record("p", _claim(), no_baseline="  ")
    with pytest.raises(verdicts.EmptyComparison, match="position"):  # each of several baselines is checked
        verdicts.record("p", _claim(), {"token identity": np.arange(9.0), "position": np.ones(9)})
    verdicts.record("p", _claim(), {"token identity": np.arange(9.0), "position": np.arange(9.0) % 3})
    verdicts.record("p", _claim(claim_id="c-fixed", versus="the 0.1 threshold"), no_baseline="a fixed number")
    verdicts.record("p", _claim(claim_id="c-alone", versus=""))
    checks = verdicts.table("p").set_index("claim_id")["baseline_check"]
    assert "position: 9 scores, not constant" in checks["c-sel"]
    assert checks["c-fixed"] == "no baseline scores: a fixed number" and checks["c-alone"] == "no comparison"


def test_the_sentence_states_the_recorded_verdict_and_its_interval():
    for lo, hi in [(0.05, 0.15), (0.001, 0.015), (-0.3, -0.1), (-0.2, 0.3)]:
        c = _claim(low=lo, high=hi, estimate=(lo + hi) / 2)
        s = verdicts.sentence(c)
        assert s.startswith(f"**{c.verdict.capitalize()}**: The probe beats TF-IDF.")
        assert f"[{lo:.3g}, {hi:.3g}]" in s and "n = 50" in s and "`c-sel`" in s
    c = _claim(condition={"quantity": "minus position", "estimate": -0.2, "low": -0.3, "high": -0.1})
    assert c.verdict == "not reproduced" and "minus position: -0.2 [-0.3, -0.1], not reproduced" in verdicts.sentence(c)
    assert verdicts.sentence(_claim(estimate=float("nan"))).startswith("**Undecided**")
