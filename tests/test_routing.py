"""Routing on small hand-made tables whose answers are known, and a Router on real saved probes."""
import json

import numpy as np
import pandas as pd
import pytest

from pika_utils.routing import rules as R
from pika_utils.routing.router import Router
from pika_utils.routing import evaluation as RM

S, M, B = "small/direct", "mid/direct", "big/direct"
COST = {S: 1.0, M: 2.0, B: 4.0}
#: test problems t0..t7; the oracle: S, M, B, S, M, B, (none: S), B -> accuracy 7/8, cost 19/8
CORRECT = {S: [1, 0, 0, 1, 0, 0, 0, 0], M: [1, 1, 0, 1, 1, 0, 0, 0], B: [1, 1, 1, 0, 1, 1, 0, 1]}
ORACLE_ACC, ORACLE_COST = 7 / 8, 19 / 8


def make_outcomes(n_train: int = 6) -> pd.DataFrame:
    rows = []
    for m, c in CORRECT.items():
        rows += [{"member": m, "problem_id": f"r{i}", "correct": i % 2, "cost": COST[m], "split": "train"}
                 for i in range(n_train)]
        rows += [{"member": m, "problem_id": f"t{i}", "correct": bool(v), "cost": COST[m], "split": "test"}
                 for i, v in enumerate(c)]
    return pd.DataFrame(rows)


def constant_probs(outcomes: pd.DataFrame, p: dict) -> pd.DataFrame:
    return outcomes[["member", "problem_id"]].assign(p=outcomes["member"].map(p))


PREFILL = {S: 0.1, M: 0.2, B: 0.4}


@pytest.fixture
def outcomes():
    return make_outcomes()


def test_expected_costs_use_train_rows_only(outcomes):
    huge = outcomes.copy()
    huge.loc[(huge["member"] == S) & (huge["split"] == "test"), "cost"] = 1e9
    pd.testing.assert_series_equal(R.expected_costs(huge), R.expected_costs(outcomes))
    assert R.expected_costs(outcomes).to_dict() == COST


def test_perfect_probe_utility_reproduces_the_oracle(outcomes):
    orc = RM.oracle(outcomes)
    assert orc["correct"].mean() == ORACLE_ACC and orc["cost"].mean() == ORACLE_COST
    assert orc["member"].tolist() == [S, M, B, S, M, B, S, B]
    perfect = R.labels_as_probs(outcomes)
    for lam in (0.0, 1e-3, 0.5):
        r = R.utility(perfect, outcomes, lam)
        assert r["correct"].mean() == ORACLE_ACC and r["cost"].mean() == pytest.approx(ORACLE_COST)
    sweep = R.oracle_utility_sweep(outcomes)
    assert len(sweep) >= 50 and sweep.loc[sweep["lam"] == 1e-3, "accuracy"].item() == ORACLE_ACC
    assert (sweep["cost_with_routing"] == sweep["cost"]).all()  # labels are free


def test_constant_probe_reproduces_a_single_member(outcomes):
    probs = constant_probs(outcomes, {S: 0.3, M: 0.6, B: 0.7})
    singles = RM.single_members(outcomes).set_index("member")
    sweep = R.utility_sweep(probs, outcomes, np.linspace(0, 5, 51))
    shares = sweep.filter(like="share:")
    assert set(shares.max(axis=1)) == {1.0}  # every setting sends every problem to one member
    top = sweep.iloc[0]  # lam = 0 picks the highest p
    assert top["lam"] == 0 and top[f"share:{B}"] == 1 and top["accuracy"] == singles.loc[B, "accuracy"]
    # cascade: S (0.3) < 0.5 escalates, M (0.6) >= 0.5 answers everything
    r = R.cascade(probs, outcomes, None, [0.5, 0.5])
    assert set(r["member"]) == {M} and r["correct"].mean() == singles.loc[M, "accuracy"]


def test_utility_route_needs_no_outcomes_and_breaks_ties_to_the_cheaper(outcomes):
    probs = constant_probs(outcomes[outcomes["split"] == "test"], {S: 0.5, M: 0.5, B: 0.5})
    r = R.utility_route(probs, COST, lam=0.0)
    assert set(r["member"]) == {S} and len(r) == 8
    r = R.utility_route(constant_probs(outcomes, {S: 0.2, M: 0.9, B: 0.95}), COST, lam=0.2)
    assert set(r["member"]) == {M}  # 0.9 - 0.2*0.5 = 0.8 beats 0.95 - 0.2 = 0.75 and 0.2 - 0.05
    assert r["utility"].iloc[0] == pytest.approx(0.8)


def test_cascade_extremes_and_routing_cost(outcomes):
    rng = np.random.default_rng(0)
    probs = outcomes[["member", "problem_id"]].assign(p=rng.uniform(0, 0.99, len(outcomes)))
    cheapest = R.cascade(probs, outcomes, None, [0.0, 0.0], prefill_cost=PREFILL)
    assert set(cheapest["member"]) == {S} and cheapest["correct"].mean() == 0.25
    assert np.allclose(cheapest["routing_cost"], PREFILL[S])  # one member consulted
    top = R.cascade(probs, outcomes, None, [1.0, 1.0], prefill_cost=PREFILL)
    assert set(top["member"]) == {B} and top["correct"].mean() == 0.75
    assert np.allclose(top["cost_with_routing"], COST[B] + PREFILL[S] + PREFILL[M])
    assert np.isnan(R.cascade(probs, outcomes, None, [1.0, 1.0])["routing_cost"]).all()  # unknown, not 0
    util = R.utility(probs, outcomes, 0.1, prefill_cost=PREFILL)
    assert np.allclose(util["routing_cost"], sum(PREFILL.values()))  # every probe consulted


def test_cascade_sweep_grids_and_rows_match_single_runs(outcomes):
    rng = np.random.default_rng(1)
    probs = outcomes[["member", "problem_id"]].assign(p=rng.uniform(0, 1, len(outcomes)))
    grid = np.linspace(0, 1, 21)
    sweep = R.cascade_sweep(probs, outcomes, grid, prefill_cost=PREFILL)
    assert len(sweep) == 21 * 21 and {f"threshold:{S}", f"threshold:{M}"} <= set(sweep.columns)
    assert np.allclose(sweep.filter(like="share:").sum(axis=1), 1)
    row = sweep.iloc[137]
    one = R.cascade(probs, outcomes, None, [row[f"threshold:{S}"], row[f"threshold:{M}"]], prefill_cost=PREFILL)
    assert row["accuracy"] == one["correct"].mean() and row["cost_with_routing"] == pytest.approx(one["cost_with_routing"].mean())
    rep = R.replay(row, probs, outcomes, prefill_cost=PREFILL)
    pd.testing.assert_frame_equal(rep, one)
    two = R.cascade_sweep(probs, outcomes, grid, order=[S, B])  # a two-member cascade from the pool
    assert len(two) == 21 and list(two.filter(like="threshold:").columns) == [f"threshold:{S}"]
    explicit = R.cascade_sweep(probs, outcomes, np.array([[0.2, 0.4], [0.9, 0.1]]))
    assert len(explicit) == 2 and explicit[f"threshold:{M}"].tolist() == [0.4, 0.1]
    test_only = outcomes[outcomes["split"] == "test"]  # a given order needs no train costs
    assert len(R.cascade(probs, test_only, [S, M, B], [0.5, 0.5])) == 8
    with pytest.raises(ValueError, match="no 'train' rows"):
        R.cascade(probs, test_only, None, [0.5, 0.5])  # the default order does


def test_frontier_aiq_apgr_gap():
    rng = np.random.default_rng(2)
    pts = pd.DataFrame({"cost": rng.uniform(0, 1, 200), "accuracy": rng.uniform(0, 1, 200)})
    f = RM.frontier(pts)
    assert (np.diff(f["cost"]) >= 0).all() and (np.diff(f["accuracy"]) > 0).all()
    for _, p in pts.iterrows():  # every point is matched or beaten at its cost or less
        assert f.loc[f["cost"] <= p["cost"], "accuracy"].max() >= p["accuracy"]
    free = pd.DataFrame({"cost": [0.0], "accuracy": [1.0]})
    assert RM.aiq(free, (0.0, 1.0)) == 1.0 and RM.aiq(free, (0.0, 1.0), hull=True) == 1.0
    two = pd.DataFrame({"cost": [0.0, 0.5, 0.7], "accuracy": [0.5, 1.0, 0.9]})
    assert RM.aiq(two, (0.0, 1.0)) == pytest.approx(0.75)
    assert RM.aiq(two, (0.0, 1.0), hull=True) == pytest.approx(0.875)
    assert RM.apgr(0.6, 0.6, 0.8) == 0 and RM.apgr(0.8, 0.6, 0.8) == 1 and RM.apgr(0.7, 0.6, 0.8) == pytest.approx(0.5)
    assert RM.apgr(np.linspace(0.6, 0.8, 11), 0.6, 0.8, strong_share=np.linspace(0, 1, 11)) == pytest.approx(0.5)
    assert RM.gap_closed(0.875, 0.75, 0.875) == 1 and np.isnan(RM.gap_closed(0.8, 0.8, 0.8))
    with pytest.raises(ValueError, match="cost_range"):
        RM.aiq(free, (1.0, 1.0))


def test_random_routing_matches_the_mix_and_is_seeded(outcomes):
    mix = {S: 0.25, M: 0.25, B: 0.5}
    a = RM.random_routing(outcomes, mix, seed=3)
    assert a["member"].value_counts().to_dict() == {B: 4, S: 2, M: 2}
    pd.testing.assert_frame_equal(a, RM.random_routing(outcomes, mix, seed=3))
    others = [RM.random_routing(outcomes, mix, seed=s)["member"].tolist() for s in range(4, 9)]
    assert any(o != a["member"].tolist() for o in others)
    routed = R.utility(R.labels_as_probs(outcomes), outcomes, 1e-3)
    counts = routed["member"].value_counts()
    assert RM.random_routing(outcomes, counts, seed=0)["member"].value_counts().to_dict() == counts.to_dict()
    sweep = R.utility_sweep(constant_probs(outcomes, {S: 0.3, M: 0.6, B: 0.7}), outcomes, [0.0, 10.0])
    rs = RM.random_sweep(sweep, outcomes)
    assert len(rs) == 2 and rs[f"share:{B}"].tolist() == [1.0, 0.0] and rs["accuracy"].tolist() == [0.75, 0.25]


def test_summaries_on_the_perfect_probe(outcomes):
    singles = RM.single_members(outcomes)
    assert singles["member"].tolist() == [S, M, B] and singles["accuracy"].tolist() == [0.25, 0.5, 0.75]
    perfect = R.labels_as_probs(outcomes)
    sweep = R.utility_sweep(perfect, outcomes)
    s = RM.cost_reduction_at_best_accuracy(sweep, singles, probs=perfect, outcomes=outcomes, n_boot=200)
    assert s["member"] == B and s["accuracy"] == ORACLE_ACC and s["cost"] == pytest.approx(ORACLE_COST)
    assert s["cost_reduction"] == pytest.approx(1 - ORACLE_COST / COST[B])
    assert s["cost_reduction_low"] <= s["cost_reduction"] <= s["cost_reduction_high"]
    assert s["accuracy_diff"] == pytest.approx(0.125) and s["accuracy_diff_low"] <= 0.125 <= s["accuracy_diff_high"]
    c = RM.accuracy_at_cheapest_cost(sweep, singles)
    assert c["member"] == S and c["accuracy"] == 0.25 and c["accuracy_gain"] == 0
    none = RM.cost_reduction_at_best_accuracy(sweep.assign(accuracy=0.1), singles)
    assert np.isnan(none["cost_reduction"])
    same = RM.paired_intervals(RM.always(outcomes, B), RM.always(outcomes, B), n_boot=100)
    assert (same["accuracy_diff"], same["accuracy_diff_low"], same["accuracy_diff_high"]) == (0, 0, 0)


def test_prefill_costs_from_the_price_table():
    tok = pd.DataFrame({"member": ["qwen2.5-coder-0.5b/direct", "gpt-oss-20b/high"], "problem_id": ["a", "a"],
                        "prompt_tokens": [1_000_000, 1_000_000]})
    assert RM.prefill_costs(tok)["prefill_cost"].tolist() == pytest.approx([0.04, 0.30])
    assert RM.member_model("org/model", {"org/model": {"input_per_m": 1, "output_per_m": 2}}) == "org/model"


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_are_explained(outcomes):
    probs = constant_probs(outcomes, {S: 0.3, M: 0.6, B: 0.7})
    with pytest.raises(ValueError, match=r"\['big/direct'\] have no probe"):
        R.utility_sweep(probs[probs["member"] != B], outcomes)
    with pytest.raises(ValueError, match="no price/cost"):
        R.utility_sweep(probs, outcomes, expected_cost={S: 1.0, M: 2.0})
    with pytest.raises(ValueError, match="different problem sets"):
        R.cascade_sweep(probs.drop(index=probs.index[-1]), outcomes)
    for bad, match in [([], "empty"), ([0.1, np.nan], "NaN"), ([-0.1, 1.0], "outside")]:
        with pytest.raises(ValueError, match=f"lambdas.*{match}"):
            R.utility_sweep(probs, outcomes, bad)
    for bad, match in [([], "empty"), ([np.nan], "NaN"), ([0.5, 1.2], "outside"), ([-0.5], "outside")]:
        with pytest.raises(ValueError, match=match):
            R.cascade_sweep(probs, outcomes, bad)
    with pytest.raises(ValueError, match="one per non-final member"):
        R.cascade(probs, outcomes, None, [0.5])
    leak = pd.concat([outcomes, outcomes.iloc[[0]].assign(problem_id="t0", split="train")], ignore_index=True)
    leak = leak.drop_duplicates(["member", "problem_id"], keep="last")
    with pytest.raises(ValueError, match="more than one split"):
        R.expected_costs(leak)
    with pytest.raises(ValueError, match="more than one split"):
        R.utility_sweep(probs, leak)
    with pytest.raises(ValueError, match="lacks column"):
        R.utility_sweep(probs, outcomes.drop(columns="cost"))
    with pytest.raises(ValueError, match="duplicate"):
        R.expected_costs(pd.concat([outcomes, outcomes.iloc[[0]]]))
    with pytest.raises(ValueError, match=r"no 'train' rows"):
        R.expected_costs(outcomes[outcomes["split"] == "test"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.utility_sweep(probs.assign(p=1.5), outcomes)
    with pytest.raises(ValueError, match="members' problem_id sets differ"):
        R.utility_sweep(probs, outcomes.drop(index=outcomes.index[-1]))
    with pytest.raises(ValueError, match="mix"):
        RM.random_routing(outcomes, {"nobody": 1.0})


# ---------------------------------------------------------------------------------------------
# A Router on real saved probes (the smoke profile's tiny model)


@pytest.fixture(scope="module")
def saved_probes(tmp_path_factory):
    from conftest import tiny_member_probes
    from pika_utils.probes import protocol as P

    tmp = tmp_path_factory.mktemp("router")
    y = lambda n: np.array([i % 5 >= 2 for i in range(n)], dtype=float)  # noqa: E731
    lm, problems, _, dirs, _ = tiny_member_probes(
        tmp, lambda n: {"tiny-random-llama/a": y(n), "tiny-random-llama/b": 1 - y(n)},
        fit=lambda acts, lab, lm: P.eoi_probe(acts, lab, "maj_correct", model=lm.name, layers=[1, 2], n_boot=20))
    return lm, dirs, problems["question"].tolist(), tmp


def test_router_routes_by_utility_and_round_trips_as_json(saved_probes):
    from pika_utils.probes.protocol import predict_texts

    lm, dirs, qs, tmp = saved_probes
    a, b = dirs
    lms = {a: lm, b: lm}
    pa, pb = (predict_texts(dirs[m], qs, lm=lm)["prob"].to_numpy() for m in (a, b))
    lam = max(0.0, float(np.median(pb - pa))) / (1 - 1 / 3)  # costs 1 and 3: about half go to each
    router = Router(dirs, {a: 1.0, b: 3.0}, lam=lam)
    out = router.route(qs, lms=lms)
    np.testing.assert_allclose(out[f"p:{a}"], pa, atol=1e-9)
    np.testing.assert_allclose(out[f"p:{b}"], pb, atol=1e-9)
    util = out[[f"p:{a}", f"p:{b}"]].to_numpy() - lam * np.array([1 / 3, 1.0])
    assert out["member"].tolist() == [(a, b)[k] for k in util.argmax(1)]
    assert out["member"].nunique() == 2
    path = router.save(tmp / "router.json")
    saved = json.loads(path.read_text())
    assert saved["lam"] == lam and saved["order"] == [a, b] and set(saved["probe_sha256"]) == {a, b}
    assert not any(d.startswith("/") for d in saved["probe_dirs"].values())  # relative: they move together
    again = Router.load(path)
    pd.testing.assert_frame_equal(again.route(qs, lms=lms), out)
    pd.testing.assert_frame_equal(router.route(qs[:3]), out.iloc[:3])  # loads the model named in the probe JSON
    priced = Router(dirs, lam=0.1)  # costs from the price table: same model, same price
    assert priced.costs[a] == priced.costs[b] > 0


def test_router_cascade_consults_in_order(saved_probes):
    lm, dirs, qs, tmp = saved_probes
    a, b = dirs
    first = Router(dirs, {a: 1.0, b: 3.0}, thresholds=[0.0]).route(qs, lms={a: lm, b: lm})
    t = float(np.median(first[f"p:{a}"]))
    out = Router(dirs, {a: 1.0, b: 3.0}, thresholds=[t]).route(qs, lms={a: lm, b: lm})
    assert out[f"p:{b}"].isna().all()  # the last member answers without its probe
    assert out["member"].tolist() == [a if p >= t else b for p in out[f"p:{a}"]]
    path = Router(dirs, {a: 1.0, b: 3.0}, thresholds=[t]).save(tmp / "cascade.json")
    assert Router.load(path).thresholds == [t]


def test_router_bad_input(saved_probes, tmp_path):
    import shutil

    from pika_utils.probes.files import load_probe, save_probe

    lm, dirs, qs, tmp = saved_probes
    a, b = dirs
    with pytest.raises(ValueError, match="exactly one of lam"):
        Router(dirs, {a: 1.0, b: 3.0})
    with pytest.raises(ValueError, match="one per non-final member"):
        Router(dirs, {a: 1.0, b: 3.0}, thresholds=[0.2, 0.3])
    with pytest.raises(ValueError, match=r"\['tiny-random-llama/b'\] have no price/cost"):
        Router(dirs, {a: 1.0}, lam=0.1)
    with pytest.raises(ValueError, match=r"the cost of \['tiny-random-llama/a'\] is not a number"):
        Router(dirs, {a: "1.0", b: 3.0}, lam=0.1)
    with pytest.raises(ValueError, match=r"the cost of \['tiny-random-llama/b'\] is not a number"):
        Router(dirs, {a: 1.0, b: True}, lam=0.1)
    with pytest.raises(ValueError, match="has no probe"):
        Router({**dirs, "c": tmp_path / "nothing"}, {a: 1.0, b: 3.0, "c": 1.0}, lam=0.1)
    with pytest.raises(ValueError, match="lam"):
        Router(dirs, {a: 1.0, b: 3.0}, lam=-1.0)
    copy = {m: shutil.copytree(d, tmp_path / m.replace("/", "_")) for m, d in dirs.items()}
    path = Router(copy, {a: 1.0, b: 3.0}, lam=0.1).save(tmp_path / "r.json")
    coef, info = load_probe(copy[a])
    save_probe(copy[a], coef * 2, {k: v for k, v in info.items() if k not in ("versions", "saved")})
    with pytest.raises(ValueError, match="changed since the router was saved"):
        Router.load(path)


# --------------------------------------------------------------------------------------------
# One best single member, one tie rule, chosen on the rows it is given


def test_best_member_is_chosen_on_the_rows_it_is_given(outcomes):
    from pika_utils.core.best import best_member

    # on train every member answers the same half (a three-way tie): the cheapest wins
    train = best_member(outcomes[outcomes["split"] == "train"])
    assert train["member"] == S and train["accuracy"] == pytest.approx(0.5) and train["n"] == 6
    # on test the big member is the most accurate (6/8), whatever its cost
    test = best_member(outcomes[outcomes["split"] == "test"])
    assert test["member"] == B and test["accuracy"] == pytest.approx(6 / 8)


def test_best_of_ties_go_to_the_cheaper_then_the_first_row():
    from pika_utils.core.best import best_of

    t = pd.DataFrame({"member": ["a", "b", "c"], "accuracy": [0.5, 0.7, 0.7], "cost": [1.0, 3.0, 2.0]})
    assert best_of(t)["member"] == "c"
    t["cost"] = [1.0, 2.0, 2.0]
    assert best_of(t)["member"] == "b"
    # accuracies equal up to summation order are a tie; without a cost the first row wins
    t2 = pd.DataFrame({"member": ["x", "y"], "accuracy": [0.1 + 0.2, 0.3]})
    assert best_of(t2, cost=None)["member"] == "x"
    assert best_of(t2.iloc[::-1], cost=None)["member"] == "y"


def test_best_member_refuses_nothing_to_choose_on(outcomes):
    from pika_utils.core.best import best_member, best_of

    with pytest.raises(ValueError, match="no outcomes"):
        best_member(outcomes[outcomes["split"] == "val"])
    with pytest.raises(ValueError, match="lack"):
        best_member(outcomes.drop(columns="cost"))
    with pytest.raises(ValueError, match="every accuracy NaN"):
        best_of(pd.DataFrame({"member": ["a"], "accuracy": [np.nan], "cost": [1.0]}))


# --------------------------------------------------------------------------------------------
# The own pool cross-fitted: the reference and the setting chosen in-fold, seeds' spread kept


def _fold_outcomes():
    """Fold 0 = p0..p4, fold 1 = p5..p9. Over all ten problems b is best (7 vs 4), but on fold
    1 alone (fold 0's training part) a is (4 vs 2)."""
    a = [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    b = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    rows = [{"member": m, "problem_id": f"p{i}", "correct": v, "cost": c, "split": "train"}
            for m, vals, c in (("a", a, 1.0), ("b", b, 2.0)) for i, v in enumerate(vals)]
    folds = pd.Series([0] * 5 + [1] * 5, index=pd.Index([f"p{i}" for i in range(10)], name="problem_id"))
    return pd.DataFrame(rows), folds


def test_fold_best_chooses_on_the_training_folds_only():
    from pika_utils.core.best import fold_best

    outcomes, folds = _fold_outcomes()
    ref = fold_best(outcomes, folds)
    assert ref.groupby("fold")["best"].first().to_dict() == {0: "a", 1: "b"}
    assert len(ref) == 10 and ref["correct"].sum() == 0 + 2  # a on fold 0 (none), b on fold 1 (2 of 5)


def test_crossfit_claim_covers_every_seed_and_chooses_in_fold():
    from pika_utils.routing import pool as pool_

    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(60)]
    correct = {"a": rng.integers(0, 2, 60), "b": np.ones(60, int)}
    correct["b"][rng.choice(60, 6, replace=False)] = 0
    outcomes = pd.DataFrame([{"member": m, "problem_id": p, "correct": int(v), "cost": c, "split": "train"}
                             for m, c in (("a", 1.0), ("b", 3.0)) for p, v in zip(ids, correct[m])])
    scores, folds = [], []
    for fs in (0, 1, 2):
        fold = np.random.default_rng(fs).permutation(np.arange(60) % 3)
        folds.append(pd.DataFrame({"fold_seed": fs, "problem_id": ids, "fold": fold}))
        for m in ("a", "b"):  # a perfect probe, in both roles, for every fold
            for f in range(3):
                role = np.where(fold == f, "held", "inner")
                scores.append(pd.DataFrame({"method": "own", "fold_seed": fs, "member": m, "problem_id": ids,
                                            "fold": f, "role": role, "p": correct[m].astype(float)}))
    cp = pool_.CrossfitPool(pd.concat(scores, ignore_index=True), pd.concat(folds, ignore_index=True), pd.DataFrame())
    out, per_seed = pool_.crossfit_claim(cp, "own", outcomes, cost="cost", n_boot=200, seed=0)
    assert list(per_seed["fold_seed"]) == [0, 1, 2] and out["n"] == 60 and out["seeds"] == 3
    assert out["cost_reduction_low"] == per_seed["cost_reduction_low"].min()
    assert out["cost_reduction_high"] == per_seed["cost_reduction_high"].max()
    assert out["cost_reduction"] == pytest.approx(per_seed["cost_reduction"].mean())
    # b is every fold's best; a perfect probe sends a's successes to a: cheaper, no less accurate
    assert set(", ".join(per_seed["best member per fold"]).split(", ")) == {"b"}
    assert out["cost_reduction"] > 0.2 and out["accuracy_diff"] >= 0
