"""Off distribution (issue 34): the shipped OlympiadBench outcomes, the kept Router's probes and
detector, the router restricted to the members a new benchmark has, and `pika route --evaluate`
judging a kept router on a labelled outcome log. Real parts: the shipped files, the tiny model's
nnsight activations, saved probes and routers."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pika_utils.problems import recorded as REC
from pika_utils.problems.files import InputError
from pika_utils.routing import detector as DT
from pika_utils.routing import kept as KP
from pika_utils.routing import ridge as RG
from pika_utils.routing.judge import judge
from pika_utils.routing.router import Router

from conftest import cli_refused, refused


# --------------------------------------------------------------------------------------------
# The shipped second benchmark


def test_olympiadbench_ships_with_its_licence_notice_and_checksums():
    b = REC.benchmark("olympiadbench")
    assert (b.folder / "LICENSE").is_file() and "changed" in (b.folder / "NOTICE.md").read_text()
    sums = json.loads((b.folder / "SHA256SUMS.json").read_text())
    assert set(sums) == {"problems.jsonl.gz", *(f"{m}.jsonl.gz" for m in b.members)}
    problems = REC.recorded_problems("olympiadbench")
    assert len(problems) == 675 and problems["problem_id"].iloc[7] == "olympiadbench-007"
    accuracy = {m: REC.shipped_member(m, "olympiadbench").outcomes["correct"].mean() for m in b.members}
    assert accuracy == pytest.approx({"qwen2.5-14b-instruct": 0.447, "gemma-2-27b-it": 0.209,
                                      "sky-t1-32b-short": 0.364}, abs=5e-4)
    refused(lambda: REC.shipped_member("qwen2.5-math-7b", "olympiadbench"), "no recorded outcomes on OlympiadBench",
            "sky-t1-32b-short", exc=InputError)


def test_olympiadbench_as_a_problem_source_says_where_its_questions_came_from():
    from pika_utils.problems.tasks import load_problems

    p = load_problems({"olympiadbench": {"limit": 30}})
    assert len(p) == 30 and set(p["source"]) == {"olympiadbench"} and set(p["difficulty_kind"]) == {"none"}
    where = p.attrs["sources"][0]["question_source"]
    assert where.startswith(("packaged:recorded_olympiadbench", "hub:"))
    assert all(json.loads(m)["olympiadbench_id"] >= 0 for m in p["meta"])


def test_a_tampered_olympiadbench_file_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "recorded_olympiadbench"
    shutil.copytree(REC.benchmark("olympiadbench").folder, folder)
    (folder / "gemma-2-27b-it.jsonl.gz").chmod(0o644)
    (folder / "gemma-2-27b-it.jsonl.gz").write_bytes(b"not the file")
    monkeypatch.setitem(REC.BENCHMARKS, "olympiadbench", REC.Benchmark("olympiadbench", "OlympiadBench", folder,
                                                                        REC.BENCHMARKS["olympiadbench"].members))
    refused(lambda: REC.shipped_member("gemma-2-27b-it", "olympiadbench"), "gemma-2-27b-it.jsonl.gz is damaged",
            exc=REC.RecordedDataError)


# --------------------------------------------------------------------------------------------
# The kept probes' weights and the detector


def test_ridge_weights_score_as_the_kernel_fit_does():
    """The saved weight vector and intercept give the kernel ridge's predictions exactly."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 9)) * rng.uniform(0.1, 10, size=9) + rng.normal(size=9)
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(float)
    every = np.arange(60)
    G = RG.standardised_gram(X, every)
    for alpha in (0.01, 1.0, 100.0):
        coef, b0 = RG.ridge_weights(X, y, alpha)
        kernel = RG.ridge_predict(G, y[:, None], every, every, [alpha])[0, :, 0]
        np.testing.assert_allclose(X @ coef + b0, kernel, rtol=1e-8, atol=1e-8)


def test_the_detector_threshold_holds_its_false_alarm_rate_and_flags_a_shift(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 16))
    folds = np.arange(400) % 5
    det, held = DT.fit_detector(train, folds, layer=3, position=-1, info={"model": "m"})
    assert det.threshold == pytest.approx(np.quantile(held, DT.QUANTILE))
    same = det.beyond(rng.normal(size=(2000, 16))).mean()
    shifted = det.beyond(rng.normal(size=(2000, 16)) + 2.0 * rng.normal(size=16)).mean()
    assert 0.0 < same < 0.12 and shifted > 0.8, (same, shifted)
    again = DT.Detector.load(det.save(tmp_path / "det"))
    np.testing.assert_allclose(again.distance(train[:20]), det.distance(train[:20]))
    record = json.loads((tmp_path / "det" / "detector.json").read_text())
    record["threshold"] = 99.0
    (tmp_path / "det" / "detector.json").write_text(json.dumps(record))
    refused(lambda: DT.Detector.load(tmp_path / "det"), "detector.json", "edited")


# --------------------------------------------------------------------------------------------
# A kept router on the tiny model: probes and detector saved, restricted, read from stored states


@pytest.fixture(scope="module")
def kept_router(tmp_path_factory):
    """A router fitted like chapter 6's kept one, on the tiny model's 40 questions and three
    'members' whose outcomes follow the questions' wording."""
    from conftest import tiny_activations

    tmp = tmp_path_factory.mktemp("kept")
    lm, problems, acts = tiny_activations(tmp)
    n = len(problems)
    members = ["a", "b", "c"]
    Y = np.column_stack([[float(i % 5 >= 2) for i in range(n)], [float(i % 3 >= 1) for i in range(n)],
                         [float(i % 2) for i in range(n)]])
    router, table = KP.fit_router(acts, problems["problem_id"].tolist(), Y, members, folds=np.arange(n) % 5,
                                  costs={"a": 1e-4, "b": 3e-4, "c": 2e-4},
                                  prices={"a": [0.1, 0.2], "b": [0.3, 0.6], "c": [0.2, 0.4]}, lam=0.1, alphas=[0.1, 10.0],
                                  seed=0, prompt_suffix="Reply.", system_prompt=None, folder=tmp / "routers" / "kept",
                                  trained_on="tiny")
    path = router.save(tmp / "routers" / "kept.json")
    return lm, problems, acts, router, table, path, Y


def test_kept_router_saves_probes_detector_prices_and_reads_them_back(kept_router):
    lm, problems, acts, router, table, path, Y = kept_router
    assert set(table["member"]) == {"a", "b", "c"} and (table["threshold"] > 0).all()
    again = Router.load(path)
    assert again.fallback == router.fallback == "b"  # the most accurate member (26 of 40 right)
    assert again.prices == router.prices and again.accuracy == pytest.approx({"a": 0.6, "b": 26 / 40, "c": 0.5})
    qs = problems["question"].tolist()
    routed = again.route(qs[:12], lms={lm.name: lm})
    assert {"distance", "off_distribution", "probe_member"} <= set(routed.columns)
    assert (routed.loc[routed["off_distribution"], "member"] == "b").all()
    rows = acts.rows_for(problems["problem_id"].tolist()[:12])
    stored = again.route_features(qs[:12], lambda layer, pos: acts.layer(layer, pos)[rows])
    # the same choices and probabilities from the stored states as from a fresh reading
    pd.testing.assert_series_equal(stored["probe_member"], routed["probe_member"])
    np.testing.assert_allclose(stored.filter(like="p:"), routed.filter(like="p:"), atol=1e-4)
    np.testing.assert_allclose(stored["distance"], routed["distance"], atol=1e-4)
    # a question unlike the training ones lies beyond the threshold and goes to the fallback
    far = again.route(["Write a long poem about the sea, the moon and a lighthouse keeper's cat."] * 2,
                      lms={lm.name: lm})
    assert far["distance"].iloc[0] > np.median(table.attrs["held_out_distances"])


def test_a_restricted_router_keeps_lambda_and_its_cost_unit(kept_router):
    lm, problems, acts, router, table, path, Y = kept_router
    two = router.restrict(["a", "c"])
    assert two.order == ["a", "c"] and two.lam == router.lam and two.cost_scale == router.cost_scale
    assert two.fallback == "a" and two.detector is not None
    np.testing.assert_allclose(two.normalised_costs.to_numpy(), [1 / 3, 2 / 3])
    refused(lambda: router.restrict(["a", "zzz"]), "zzz", "not members")


# --------------------------------------------------------------------------------------------
# Judging a kept router on a labelled outcome log


def _log(problems, Y, members=("a", "b", "c"), **extra):
    rows = []
    for t, m in enumerate(members):
        for i, (q, y) in enumerate(zip(problems["question"], Y[:, t])):
            rows.append({"member": m, "question": q, "correct": bool(y), "output_tokens": 10 + 5 * t + i % 3, **extra})
    return pd.DataFrame(rows)


def test_judge_compares_the_router_with_every_member_and_the_oracle(kept_router, tmp_path):
    lm, problems, acts, router, table, path, Y = kept_router
    file = tmp_path / "log.jsonl"
    _log(problems, Y).to_json(file, orient="records", lines=True)
    log, probs = REC.read_outcome_log(file)
    j = judge(Router.load(path), log, probs, lm=lm, n_boot=50, minimum=20)
    t = j.table.set_index("router")
    assert {"router (as kept)", "always a", "always b", "always c", "oracle (cheapest correct member)"} <= set(t.index)
    assert t.loc["always b", "accuracy"] == pytest.approx(Y[:, 1].mean())
    assert t.loc["oracle (cheapest correct member)", "accuracy"] == pytest.approx(Y.max(1).mean())
    assert (t["n"] == 40).all() and j.reference == "b"
    # the router's own row: each question's chosen member's logged outcome
    chosen = j.routed.set_index("question")["member"]
    truth = {(m, q): y for t_, m in enumerate("abc") for q, y in zip(problems["question"], Y[:, t_])}
    assert t.loc["router (as kept)", "accuracy"] == pytest.approx(np.mean([truth[(m, q)] for q, m in chosen.items()]))


def test_judge_restricts_to_the_logged_members_and_names_unknown_ones(kept_router, tmp_path):
    lm, problems, acts, router, table, path, Y = kept_router
    two = _log(problems, Y[:, [0, 2]], members=("a", "c"))
    log, probs = REC.read_outcome_log(_write(tmp_path / "two.csv", two))
    j = judge(router, log, probs, lm=lm, n_boot=20)
    assert j.router.order == ["a", "c"] and "no outcomes of ['b']" in j.notes[0] and j.reference == "a"
    bad = _log(problems, Y[:, [0, 2]], members=("a", "gpt-x"))
    log, probs = REC.read_outcome_log(_write(tmp_path / "bad.csv", bad))
    refused(lambda: judge(router, log, probs, lm=lm), "'gpt-x'", "does not know", exc=InputError)


def _write(path, df):
    df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_json(path, orient="records", lines=True)
    return path


def test_an_outcome_log_names_its_bad_rows(tmp_path):
    rows = [{"model": "a", "problem_id": "math500-001", "correct": 1, "tokens": 12},
            {"model": "a", "problem_id": "math500-001", "correct": 0, "tokens": 12},
            {"model": "b", "problem_id": "math500-002", "correct": "maybe", "tokens": 12},
            {"model": "b", "problem_id": "olympiadbench-003", "correct": 1, "tokens": -3}]
    msg = refused(lambda: REC.read_outcome_log(_write(tmp_path / "log.jsonl", pd.DataFrame(rows))), "log.jsonl",
                  exc=InputError)
    assert "row 3" in msg and "row 4" in msg and "more than once for one member (one graded outcome per problem): row 1, row 2" in msg
    ok, probs = REC.read_outcome_log(_write(tmp_path / "ok.jsonl", pd.DataFrame([rows[0], rows[3] | {"tokens": 3}])))
    assert set(probs["problem_id"]) == {"math500-001", "olympiadbench-003"} and probs["question"].str.len().min() > 10
    unknown = [{"member": "a", "problem_id": "mine-1", "correct": 1, "output_tokens": 3}]
    refused(lambda: REC.read_outcome_log(_write(tmp_path / "u.jsonl", pd.DataFrame(unknown))), "'question' column",
            exc=InputError)


def test_pika_route_evaluate_end_to_end(kept_router, tmp_path, capsys, monkeypatch):
    from pika_utils import cli
    from pika_utils.core import store

    lm, problems, acts, router, table, path, Y = kept_router
    file = _write(tmp_path / "traffic.csv", _log(problems, Y))
    out = tmp_path / "judged.parquet"
    assert cli.main(["route", "--router", str(path), "--evaluate", str(file), "--n-boot", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "router (as kept)" in printed and "always b" in printed and "oracle" in printed
    judged = store.read_parquet(out)
    assert len(judged) == 40 and {"member", "correct", "cost_with_routing", "distance"} <= set(judged.columns)
    cli_refused(capsys, ["route", "--router", str(path), "--evaluate", str(file), "--question", "x"],
                "--evaluate reads the questions")


def test_a_log_with_its_own_ids_and_texts_is_read_as_given(kept_router, tmp_path):
    """An unseen benchmark's log: its own problem ids beside the question texts (the ids match no
    shipped problem, the texts are what the router reads); an id with two texts is refused."""
    lm, problems, acts, router, table, path, Y = kept_router
    log = _log(problems, Y)
    log["problem_id"] = log["question"].map({q: f"hidden-{i:03d}" for i, q in enumerate(problems["question"])})
    read, probs = REC.read_outcome_log(_write(tmp_path / "hidden.jsonl", log))
    assert len(probs) == 40 and probs["problem_id"].str.startswith("hidden-").all()
    j = judge(router, read, probs, lm=lm, n_boot=20)
    assert (j.table["n"] == 40).all() and set(j.routed["problem_id"]) == set(probs["problem_id"])
    log.loc[0, "question"] = "Another text for the same id."
    refused(lambda: REC.read_outcome_log(_write(tmp_path / "clash.jsonl", log)), "hidden-000", "more than one question",
            exc=InputError)


def test_log_rows_the_judge_cannot_trust_are_named(kept_router, tmp_path):
    """Member names that differ only by spaces are one member (a problem twice is refused); a
    missing question, or problem ids in the question column, are named."""
    lm, problems, acts, router, table, path, Y = kept_router
    log = _log(problems, Y)
    twice = pd.concat([log, log.iloc[[0]].assign(member=" a ")], ignore_index=True)
    refused(lambda: REC.read_outcome_log(_write(tmp_path / "twice.jsonl", twice)), "more than once for one member",
            f"row {len(twice)}", exc=InputError)
    missing = log.copy()
    missing.loc[3, "question"] = None
    refused(lambda: REC.read_outcome_log(_write(tmp_path / "missing.jsonl", missing)), "'question'", "row(s) 4",
            exc=InputError)
    ids = pd.DataFrame([{"member": "a", "problem": "math500-001", "correct": 1, "tokens": 3}])
    refused(lambda: REC.read_outcome_log(_write(tmp_path / "ids.jsonl", ids)), "holds problem ids", "'problem_id'",
            exc=InputError)


def test_a_router_without_training_accuracies_is_compared_with_the_logs_best_and_says_so(kept_router, tmp_path):
    from pika_utils.routing.judge import judge_table_text

    lm, problems, acts, router, table, path, Y = kept_router
    plain = Router(router.probe_dirs, router.costs.to_dict(), lam=router.lam, prices=router.prices)
    log, probs = REC.read_outcome_log(_write(tmp_path / "log.jsonl", _log(problems, Y)))
    j = judge(plain, log, probs, lm=lm, n_boot=20)
    assert j.reference == "b" and f"accuracy minus {j.reference}" in j.table.columns
    assert "in hindsight" in judge_table_text(j) and "always b" in judge_table_text(j)


def test_stored_states_of_another_model_are_refused(kept_router):
    lm, problems, acts, router, table, path, Y = kept_router
    rows = acts.rows_for(problems["problem_id"].tolist()[:4])
    other = {**acts.meta, "weights_sha256": "0" * 64}
    refused(lambda: router.route_features(problems["question"].tolist()[:4],
                                          lambda layer, pos: acts.layer(layer, pos)[rows], reading=other),
            "stored states", "weights 000000000000")


def test_a_log_whose_members_share_too_few_problems_is_refused_with_a_log_hint(kept_router, tmp_path):
    lm, problems, acts, router, table, path, Y = kept_router
    log = _log(problems, Y)
    log = log[(log["member"] != "c") | log["question"].isin(problems["question"][:10])]
    read, probs = REC.read_outcome_log(_write(tmp_path / "thin.jsonl", log))
    msg = refused(lambda: judge(router, read, probs, lm=lm, n_boot=20), "only 10 of the 40 problems", "'c'",
                  "log more problems for every member", exc=InputError)
    assert "recorded_sources" not in msg
