"""Recorded members: the shipped MATH-500 outcomes (checked by checksum), a user's outcomes file
with each kind of bad row, and cross-fitting that never lets a problem see its own label."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pika_utils.problems import recorded as REC
from pika_utils.problems.files import InputError
from pika_utils.problems.tasks import load_problems
from pika_utils.routing import crossfit as CF
from pika_utils.routing import evaluation as M


@pytest.fixture(scope="module")
def problems():
    return REC.load_math500(hub=False)


def test_shipped_problems_and_members_align(problems):
    assert len(problems) == 500 and problems["problem_id"].is_unique
    assert set(problems["difficulty"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert problems.attrs["record"]["question_source"].startswith("packaged:recorded_math500")
    acc = {}
    for name in REC.SHIPPED:
        m = REC.shipped_member(name)
        assert list(m.outcomes["problem_id"]) == list(problems["problem_id"])
        acc[name] = m.outcomes["correct"].mean()
    # the README's accuracies (the source's own grades, not re-graded)
    assert acc["qwen2.5-14b-instruct"] == pytest.approx(0.804) and acc["sky-t1-27b-long"] == pytest.approx(0.600)
    assert (REC.RECORDED_DIR / "LICENSE").is_file() and "changed" in (REC.RECORDED_DIR / "NOTICE.md").read_text()


def test_math500_is_a_problem_source_with_a_limit():
    df = load_problems({"math500": {"limit": 12, "hub": False}}, seed=3)
    assert len(df) == 12 and set(df["source"]) == {"math500"} and (df["difficulty_kind"] == "math_level").all()


def test_the_hub_failing_is_said_not_hidden(monkeypatch):
    from pika_utils.problems import hub_sources

    def unreachable(where, hint):
        raise hub_sources.HubUnavailableError(f"could not load {where}: the Hugging Face hub is unreachable (test)")

    monkeypatch.setattr(hub_sources, "datasets_or_fail", unreachable)
    df = REC.load_math500()
    where = df.attrs["record"]["question_source"]
    assert where.startswith("packaged:recorded_math500 (hub not used: HubUnavailableError")
    assert "unreachable (test)" in where and len(df) == 500
    assert json.loads(df["meta"].iloc[0])["question_source"] == "packaged:recorded_math500"  # rows name the source only


@pytest.fixture()
def copy_of_data(tmp_path):
    folder = tmp_path / "recorded"
    shutil.copytree(REC.RECORDED_DIR, folder)
    return folder


def test_a_tampered_shipped_file_is_named_and_not_used(copy_of_data):
    path = copy_of_data / "gemma-2-27b-it.jsonl.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(REC.RecordedDataError, match="gemma-2-27b-it.jsonl.gz is damaged"):
        REC.shipped_file("gemma-2-27b-it.jsonl.gz", copy_of_data)
    assert REC.shipped_file("problems.jsonl.gz", copy_of_data).is_file()  # the others still pass


def test_a_missing_shipped_file_or_checksum_list_is_named(copy_of_data):
    (copy_of_data / "sky-t1-27b-long.jsonl.gz").unlink()
    with pytest.raises(REC.RecordedDataError, match="sky-t1-27b-long.jsonl.gz is missing"):
        REC.shipped_file("sky-t1-27b-long.jsonl.gz", copy_of_data)
    (copy_of_data / "SHA256SUMS.json").unlink()
    with pytest.raises(REC.RecordedDataError, match="SHA256SUMS.json is missing"):
        REC.shipped_file("problems.jsonl.gz", copy_of_data)


def _write(tmp_path, rows, name="api.jsonl"):
    path = tmp_path / name
    df = pd.DataFrame(rows)
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_users_outcomes_file_matched_by_question_or_id(tmp_path, problems):
    q = problems["question"].tolist()
    rows = [{"question": q[0], "correct": True, "response": "The answer is 3."},
            {"question": "  " + q[1].replace(" ", "  ") + "\n", "correct": False, "output_tokens": 40}]
    for name in ("api.jsonl", "api.csv", "api.parquet"):
        out = REC.read_outcomes_file(_write(tmp_path, rows, name), problems)
        assert out["problem_id"].tolist() == problems["problem_id"][:2].tolist()
        assert out["correct"].tolist() == [1, 0]
    by_id = REC.read_outcomes_file(_write(tmp_path, [{"problem_id": "math500-007", "correct": 0, "output_tokens": 3}]),
                                   problems)
    assert by_id["problem_id"].tolist() == ["math500-007"]


@pytest.mark.parametrize("rows, message", [
    ([{"question": "Q", "correct": "yes", "response": "r"}], r"column 'correct' must be true/false or 0/1: row 1"),
    ([{"problem_id": "math500-001", "correct": 2, "response": "r"}], r"'correct' must be true/false or 0/1: row 1"),
    ([{"problem_id": "math500-001", "correct": 1, "output_tokens": -3}], r"'output_tokens' must be a whole number >= 0: row 1"),
    ([{"problem_id": "math500-001", "correct": 1, "output_tokens": 2.5}], r"'output_tokens' must be a whole number"),
    ([{"problem_id": "math500-001", "correct": 1, "response": ["a", "list"]}], r"'response' must be text: row 1"),
    ([{"problem_id": "math500-001", "correct": 1, "response": None}], r"neither 'response' nor 'output_tokens'"),
    ([{"problem_id": "math500-001", "correct": 1, "response": "r"},
      {"problem_id": "math500-999", "correct": 1, "response": "r"}], r"1 row\(s\) match no problem .*row 2"),
    ([{"question": "What is the airspeed of a swallow?", "correct": 1, "response": "r"}], r"'question'.*match no problem.*row 1"),
    ([{"problem_id": "math500-001", "correct": 1, "response": "r"},
      {"problem_id": "math500-001", "correct": 0, "response": "r"}], r"more than once.*row 1, row 2"),
    ([{"problem_id": "math500-001", "correct": 1, "output_tokens": 3, "input_tokens": "abc"}],
     r"'input_tokens' must be a whole number >= 0 .*row 1"),
    ([{"id": "math500-001", "correct": 1, "response": "r"}], r"needs a problem key"),
    ([{"problem_id": "math500-001", "response": "r"}], r"needs a problem key .*'correct'"),
])
def test_each_kind_of_bad_row_is_named(tmp_path, problems, rows, message):
    path = _write(tmp_path, rows)
    with pytest.raises(InputError, match=message) as e:
        REC.read_outcomes_file(path, problems)
    assert str(path) in str(e.value)


def test_members_from_a_profile_spec(tmp_path, problems):
    few = problems.head(3)
    path = _write(tmp_path, [{"problem_id": p, "correct": 1, "output_tokens": 10} for p in few["problem_id"]])
    ms = REC.resolve_members(["gemma-2-27b-it", {"name": "my-api-model", "file": str(path), "size_b": 70}], few)
    assert [m.name for m in ms] == ["gemma-2-27b-it", "my-api-model"] and ms[1].source == f"file:{path}"
    with pytest.raises(InputError, match="give 'size_b'"):
        REC.resolve_members([{"name": "x", "file": str(path)}], few)
    with pytest.raises(InputError, match="unknown key"):
        REC.resolve_members([{"name": "x", "file": str(path), "size_b": 1, "prize": 3}], few)
    with pytest.raises(ValueError, match="unknown recorded member 'gemma'"):
        REC.resolve_members(["gemma"], few)
    with pytest.raises(InputError, match=r"only 3 of the 500 problems are answered by every member; routing needs "
                                         r"at least 50.*'x' \(file:.*\) answers 3.*'math500-007'"):
        REC.resolve_members([{"name": "x", "file": str(path), "size_b": 1}], problems)
    with pytest.raises(InputError, match=r"recorded_members\['x'\]: price \(\{'input_per_m': 1\}\): lacks \['output_per_m'\]"):
        REC.resolve_members([{"name": "x", "file": str(path), "price": {"input_per_m": 1}}], few)
    with pytest.raises(InputError, match=r"recorded_members\['x'\]: size_b=500: no price tier"):
        REC.resolve_members([{"name": "x", "file": str(path), "size_b": 500}], few)


def test_a_complete_users_file_works_with_a_limited_problem_set(tmp_path, problems):
    """A user's file covering all 500 problems, with a run on 12 of them: matched against every
    recorded problem, then cut to the 12 (as the shipped members are)."""
    path = _write(tmp_path, [{"problem_id": p, "correct": 1, "output_tokens": 5} for p in problems["problem_id"]])
    few = problems.sample(12, random_state=0)
    (m,) = REC.resolve_members([{"name": "mine", "file": str(path), "size_b": 8}], few)
    assert sorted(m.outcomes["problem_id"]) == sorted(few["problem_id"])


def test_costs_are_counted_tokens_times_the_size_tier(problems):
    from pika_utils.core.prices import price_for_size
    from pika_utils.routing.recorded import member_outcomes

    class Words:  # a tokenizer that counts words: the arithmetic is then checkable by hand
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [t.split() for t in texts]}

    few = problems.head(4)
    m = REC.shipped_member("sky-t1-27b-long")
    m.outcomes = m.outcomes.head(4)
    out, table = member_outcomes([m], few, Words())
    p_in, p_out = price_for_size(27.2)
    want = [(len(q.split()) * p_in + len(r.split()) * p_out) / 1e6 for q, r in zip(few["question"], m.outcomes["response"])]
    assert out["cost"].to_numpy() == pytest.approx(want)
    assert table.loc[0, "$ per 1,000 problems"] == pytest.approx(np.mean(want) * 1000)


# -------------------------------------------------------------------------------- cross-fitting


def _synthetic(n=200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    return X, y


def test_folds_are_balanced_within_strata():
    strata = np.repeat([1, 2, 3, 4], 25)
    folds = CF.make_folds([f"p{i}" for i in range(100)], 5, seed=0, strata=strata)
    assert folds.value_counts().tolist() == [20] * 5
    assert pd.crosstab(folds.to_numpy(), strata).to_numpy().tolist() == [[5] * 4] * 5
    with pytest.raises(ValueError, match="n_folds=1"):
        CF.make_folds(["a", "b"], 1)


def test_a_held_out_fold_never_sees_its_own_labels():
    X, y = _synthetic()
    folds = np.arange(len(y)) % 4
    held, inner = CF.crossfit_probe(lambda layer, pos: X, [0], [0], y, folds, alphas=[0.1, 1.0, 10.0])
    assert held["row"].tolist() == list(range(len(y)))
    from pika_utils.core.metrics import auroc
    assert auroc(y, held["p"]) > 0.8  # the signal is found out of fold
    flipped = y.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]  # fold 0's labels changed: its own scores must not move
    held2, _ = CF.crossfit_probe(lambda layer, pos: X, [0], [0], flipped, folds, alphas=[0.1, 1.0, 10.0])
    f0 = folds == 0
    assert np.allclose(held["p"][f0], held2["p"][f0])
    assert not np.allclose(held["p"][~f0], held2["p"][~f0])  # the other folds trained on them
    assert set(inner["fold"]) == {0, 1, 2, 3} and len(inner) == 3 * len(y)


def test_text_router_is_cross_fitted_on_words():
    words = ["easy sum", "hard integral"]
    rng = np.random.default_rng(1)
    kind = rng.integers(0, 2, 120)
    qs = [f"{words[k]} number {i}" for i, k in enumerate(kind)]
    held, _ = CF.crossfit_tfidf(qs, (kind == 0).astype(float), np.arange(120) % 3, alphas=[0.01, 0.1])
    from pika_utils.core.metrics import auroc
    assert auroc(kind == 0, held["p"]) > 0.95


def _pool_tables(n=120, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    cheap = rng.integers(0, 2, n)
    strong = np.maximum(cheap, rng.integers(0, 2, n))
    outcomes = pd.concat([
        pd.DataFrame({"member": "cheap", "problem_id": ids, "correct": cheap, "cost": 1.0, "split": "all"}),
        pd.DataFrame({"member": "strong", "problem_id": ids, "correct": strong, "cost": 10.0, "split": "all"})])
    folds = CF.make_folds(ids, 4, seed=0)
    rows = []
    for f in range(4):  # perfect probabilities: the labels themselves, for every role
        for role, sel in (("held", folds == f), ("inner", folds != f)):
            for m, y in (("cheap", cheap), ("strong", strong)):
                rows.append(pd.DataFrame({"member": m, "problem_id": np.array(ids)[sel.to_numpy()], "fold": f, "role": role,
                                          "p": y[sel.to_numpy()].astype(float)}))
    return outcomes, folds, pd.concat(rows, ignore_index=True)


def test_cross_fitted_routing_with_perfect_probabilities_reaches_the_oracle():
    outcomes, folds, scores = _pool_tables()
    zero = pd.DataFrame({"problem_id": folds.index, "prefill_cost": 0.0})
    from pika_utils.routing.rules import ReaderPrefill

    routed = CF.crossfit_route(scores, outcomes, folds, rule="cheapest_at_best_accuracy", prefill=ReaderPrefill(zero))
    orc = M.oracle(outcomes, None)
    assert len(routed) == 120 and routed["correct"].mean() == pytest.approx(orc["correct"].mean())
    assert routed["cost"].mean() == pytest.approx(orc["cost"].mean())  # the cheap member answers wherever it is right
    casc = CF.crossfit_route(scores, outcomes, folds, rule="most_accurate", kind="cascade", prefill=ReaderPrefill(zero))
    assert casc["correct"].mean() == pytest.approx(orc["correct"].mean())
    curve = CF.crossfit_sweep(scores, outcomes, folds, prefill=ReaderPrefill(zero))
    assert curve["accuracy"].max() == pytest.approx(orc["correct"].mean())
    with pytest.raises(ValueError, match="rule='best'"):
        CF.crossfit_route(scores, outcomes, folds, rule="best")


def test_a_held_out_folds_routing_never_sees_its_own_outcomes():
    """Fold 0's outcomes changed: its setting and its choices stay as they were (they were chosen
    on the other folds), while the other folds' settings may move."""
    outcomes, folds, scores = _pool_tables()
    zero = pd.DataFrame({"problem_id": folds.index, "prefill_cost": 0.0})
    from pika_utils.routing.rules import ReaderPrefill

    kw = dict(rule="most_accurate_within_cost", prefill=ReaderPrefill(zero))
    noisy = scores.assign(p=np.clip(scores["p"] + np.random.default_rng(0).normal(0, 0.3, len(scores)), 0, 1))
    a = CF.crossfit_route(noisy, outcomes, folds, **kw)
    f0 = set(folds.index[folds == 0])
    changed = outcomes.copy()
    hit = changed["problem_id"].isin(f0)
    changed.loc[hit, "correct"] = 1 - changed.loc[hit, "correct"]
    b = CF.crossfit_route(noisy, changed, folds, **kw)
    in0 = a["problem_id"].isin(f0)
    assert (a.loc[in0, "setting"] == b.loc[in0, "setting"]).all() and (a.loc[in0, "member"] == b.loc[in0, "member"]).all()
    assert (a.loc[in0, "correct"] != b.loc[in0, "correct"]).all()  # scored on its own (changed) outcomes


# ------------------------------------------- fair fits: intercept, standardising, within-fold AUROC


def test_fold_auroc_counts_pairs_within_folds_only():
    from pika_utils.core.metrics import auroc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # ties on purpose
    f = rng.integers(0, 4, 300)
    pairs = [(s[(f == k) & (y == 1)][:, None], s[(f == k) & (y == 0)][None, :]) for k in range(4)]
    want = sum(((p > n).sum() + 0.5 * (p == n).sum()) for p, n in pairs) / sum(p.size * n.size for p, n in pairs)
    assert CF.fold_auroc(y, s, f) == pytest.approx(want)
    assert CF.fold_auroc(y, s, np.zeros(300)) == pytest.approx(auroc(y, s))
    # one fold's scores squeezed to a near-constant (a flattening calibration) and shifted: pooled
    # over folds the ranking changes, counted within folds it does not
    squeezed = np.where(f == 0, 0.5 + 1e-6 * s, s + 3 * f)
    assert CF.fold_auroc(y, squeezed, f) == pytest.approx(want)
    assert abs(auroc(y, squeezed) - want) > 0.02
    assert np.isnan(CF.fold_auroc(np.ones(10), np.arange(10.0), np.zeros(10)))


def test_the_ridge_probe_has_an_intercept():
    """No signal, labels mostly 1: predictions sit at the training base rate, not at 0 (a
    bias-free probe on centred-free features would be pulled towards 0)."""
    from pika_utils.routing import ridge

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(100, 20)))  # non-negative, like TF-IDF
    y = (rng.random(100) < 0.8).astype(float)
    G = ridge.standardised_gram(X, np.arange(80), scale=False)
    pred = ridge.ridge_predict(G, y[:, None], np.arange(80), np.arange(80, 100), [1e4])[0, :, 0]
    assert pred == pytest.approx(np.full(20, y[:80].mean()), abs=1e-3)


def test_standardising_uses_the_training_rows_only():
    from pika_utils.routing import ridge

    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 8)) * np.array([1e6, 1, 1, 1, 1, 1, 1, 1])
    tr = np.arange(40)
    G = ridge.standardised_gram(X, tr)
    Z = (X - X[tr].mean(0)) / X[tr].std(0)
    assert G == pytest.approx(Z @ Z.T)
    X2 = X.copy()
    X2[45] *= 100  # a held-out row changed: the training rows' kernel does not move
    assert ridge.standardised_gram(X2, tr)[np.ix_(tr, tr)] == pytest.approx(G[np.ix_(tr, tr)])


def test_choice_ties_go_to_the_strongest_alpha_then_the_earliest_cell():
    from pika_utils.routing import ridge

    auc = np.zeros((3, 4, 1))
    auc[1, 2, 0] = auc[2, 3, 0] = auc[0, 3, 0] = 0.8
    (pick,) = ridge.choose(auc, ["a", "b", "c"], [0.1, 1.0, 10.0, 100.0])
    assert (pick["cell"], pick["alpha"]) == ("a", 100.0)


def test_a_member_that_is_almost_always_right_gets_its_base_rate():
    X, y = _synthetic(n=100)
    y[:] = 1
    y[:3] = 0
    held, _ = CF.crossfit_probe(lambda layer, pos: X, [0], [0], y, np.arange(100) % 4, alphas=[1.0])
    assert held["p"].nunique() <= 4 and (held.attrs["chosen"]["probe"] == "constant (training base rate)").all()


# ------------------------------------------------------ intervals that carry the refit


def test_the_seed_pooled_interval_covers_every_seed():
    from pika_utils.routing.seeds import pooled_interval

    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    same = pooled_interval({0: lambda i: x[i].mean(), 1: lambda i: x[i].mean()}, 200, n_boot=300)
    one = pooled_interval({0: lambda i: x[i].mean()}, 200, n_boot=300)
    assert (same.low, same.high) == pytest.approx((one.low, one.high), abs=2e-3)  # identical seeds add nothing
    apart = pooled_interval({s: (lambda s: lambda i: x[i].mean() + 0.5 * s)(s) for s in range(5)}, 200, n_boot=300)
    assert apart.estimate == pytest.approx(x.mean() + 1.0)
    assert apart.low <= apart.per_seed["estimate"].min() and apart.high >= apart.per_seed["estimate"].max()
    widths = apart.per_seed["high"] - apart.per_seed["low"]
    assert apart.high - apart.low > widths.max() + 1.5  # the spread between seeds is in it
    est, lo, hi = apart  # unpacks like bootstrap_ci
    assert lo < est < hi
    assert apart.spread == pytest.approx((x.mean(), x.mean() + 2.0))


# ------------------------------------------------ the recorded pool's questions, on a made-up pool


def _fake_pool(n=240, seeds=(0, 1), seed=0):
    from pika_utils.routing.recorded import RecordedPool

    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    z = rng.normal(size=n)
    ya = (z + 0.7 * rng.normal(size=n) > 0).astype(int)  # predictable
    yb = (z + 3.0 * rng.normal(size=n) > 0).astype(int)  # barely
    outcomes = pd.concat([pd.DataFrame({"member": m, "problem_id": ids, "correct": y, "cost": c, "split": "all"})
                          for m, y, c in (("a", ya, 1.0), ("b", yb, 2.0))], ignore_index=True)
    folds = pd.concat([pd.DataFrame({"seed": s, "problem_id": ids, "fold": CF.make_folds(ids, 4, seed=s).to_numpy()})
                       for s in seeds], ignore_index=True)
    scores = []
    for s in seeds:
        f = folds[folds["seed"] == s]["fold"].to_numpy()
        for method in ("reader", "text"):
            for m in ("a", "b"):
                sc = z + 0.3 * rng.normal(size=n) + 10 * f  # each fold on its own scale
                scores.append(pd.DataFrame({"member": m, "problem_id": ids, "fold": f, "role": "held", "score": sc,
                                            "p": 1 / (1 + np.exp(-(sc - 10 * f))), "method": method, "seed": s}))
    # failures of 'b' alternate between ending with an answer and stopping unfinished
    ends = pd.concat([pd.DataFrame({"member": "a", "problem_id": ids, "ended": "answer"}),
                      pd.DataFrame({"member": "b", "problem_id": ids,
                                    "ended": np.where(np.arange(n) % 2 == 0, "answer", "unfinished")})], ignore_index=True)
    problems = pd.DataFrame({"problem_id": ids, "question": ids, "level": rng.integers(1, 6, n).astype(float),
                             "fold": folds[folds["seed"] == seeds[0]]["fold"].to_numpy()})
    return RecordedPool("reader", ["a", "b"], problems, outcomes, pd.DataFrame(), pd.concat(scores, ignore_index=True),
                        pd.DataFrame(), pd.DataFrame({"problem_id": ids, "prefill_cost": 0.0}), folds, ends)


def test_auroc_difference_is_within_folds_and_pooled_over_seeds():
    from pika_utils.core.metrics import auroc
    from pika_utils.routing import recorded_results as RR

    pool = _fake_pool()
    iv = RR.auroc_difference(pool, "a", "b", n_boot=200)
    assert list(iv.per_seed["seed"]) == [0, 1] and iv.low < iv.estimate < iv.high
    assert iv.estimate > 0.1  # 'a' is the predictable one
    y = RR.outcomes_of(pool, "a")
    s, f = RR.held_scores(pool, "a", "reader", 0)
    assert RR.aurocs(pool).set_index("member").loc["a", "reader probe"] == pytest.approx(
        np.mean([CF.fold_auroc(y, *RR.held_scores(pool, "a", "reader", k)) for k in (0, 1)]))
    assert CF.fold_auroc(y, s, f) > auroc(y, s) + 0.1  # pooled over folds, the folds' scales would blur it


def test_an_auroc_split_by_how_the_chains_end_keeps_one_kind_of_failure():
    from pika_utils.routing import recorded_results as RR

    pool = _fake_pool()
    y = RR.outcomes_of(pool, "b")
    keep = RR._keep(pool, "b", "unfinished")
    assert keep[y == 1].all() and keep[y == 0].sum() == ((y == 0) & (np.arange(len(y)) % 2 == 1)).sum()
    ends = RR.ends_table(pool).set_index("member")
    assert ends.loc["b", "failures"] == ends.loc["b", "failures ending with a boxed answer"] + ends.loc["b", "failures that stopped unfinished"]
    with pytest.raises(ValueError, match="ended='half'"):
        RR._keep(pool, "b", "half")


def test_the_best_member_is_chosen_on_the_training_folds():
    """Fold 0's outcomes changed so that 'b' is the best member over all problems: the member
    fold 0 is compared with is still chosen without them."""
    from pika_utils.routing import recorded_results as RR

    pool = _fake_pool()
    before = RR.best_by_fold(pool, 0)
    f0 = set(pool.folds_of(0).index[pool.folds_of(0) == 0])
    o = pool.outcomes.copy()
    o.loc[o["problem_id"].isin(f0), "correct"] = (o.loc[o["problem_id"].isin(f0), "member"] == "b").astype(int)
    pool.outcomes = o
    after = RR.best_by_fold(pool, 0)
    assert RR.room(pool)["best member"] == "b"
    in0 = after["problem_id"].isin(f0)
    assert (after.loc[in0, "member"] == before.loc[in0, "member"]).all()
    assert (after.loc[in0, "member"] == "a").all()  # the other folds' best, not the best over all problems


def test_chain_ends_find_the_boxed_answer():
    from pika_utils.routing.recorded import chain_ends

    m = REC.RecordedMember("x", pd.DataFrame({"problem_id": ["p1", "p2", "p3"], "correct": [1, 0, 0],
                                              "response": ["so \\boxed{4}", "Wait, perhaps", None]}), "x", "long")
    assert chain_ends([m], ["p1", "p2", "p3"])["ended"].tolist() == ["answer", "unfinished", ""]
    no_text = REC.RecordedMember("y", pd.DataFrame({"problem_id": ["p1"], "correct": [1], "output_tokens": [3]}), "y", "api")
    assert chain_ends([no_text], ["p1"])["ended"].tolist() == [""]
