"""Reader probes: one model's activations predicting every member's success (the smoke profile's
tiny local model as both reader and member), the Router reading it once, and the routing cost."""
import numpy as np
import pandas as pd
import pytest

from pika_utils.probes import protocol as P
from pika_utils.routing import reader as RD
from pika_utils.routing import rules as R
from pika_utils.activations.eoi import NNsightExtractor
from pika_utils.routing.router import Router

from conftest import TINY_SPLITS as SPLITS


@pytest.fixture(scope="module")
def reader_probes(tmp_path_factory):
    """Reader probes for two 'members' whose labels differ, trained on the reader's activations."""
    from conftest import tiny_member_probes
    from pika_utils.probes.files import load_probe

    lm, problems, acts, dirs, reports = tiny_member_probes(
        tmp_path_factory.mktemp("reader"),
        lambda n: {"small/direct": np.array([i % 5 >= 2 for i in range(n)], float),
                   "big/direct": np.array([i % 3 >= 1 for i in range(n)], float)},
        fit=lambda acts, lab, lm: RD.reader_probe(acts, lab, layers=[1, 2], n_boot=20),
        extra=lambda member, lm: {"reader": lm.name, "target_member": member})
    for member, path in dirs.items():
        assert load_probe(path)[1]["target_member"] == member
    return lm, problems, acts, dirs, reports, problems["question"].tolist()


def test_reader_probe_round_trip_scores_the_same(reader_probes):
    """Saved, loaded and applied to new texts, a reader probe gives the scores it was fitted with;
    the JSON records both the reader (the model that is read) and the member it predicts."""
    from pika_utils.probes.files import load_probe

    lm, problems, acts, dirs, reports, qs = reader_probes
    for member, path in dirs.items():
        coef, info = load_probe(path)
        assert info["model"] == info["reader"] == lm.name and info["target_member"] == member
        np.testing.assert_array_equal(coef, reports[member].coef)
        scored = P.predict_texts(path, qs[-8:], lm=lm)
        X = acts.layer(info["layer"], info["position"])[acts.rows_for(problems["problem_id"].tolist()[-8:])]
        np.testing.assert_allclose(scored["score"], X @ coef, rtol=1e-4, atol=1e-4)
        # the test split's scores of the report are the same numbers (reader activations, member labels)
        test_rows = acts.rows_for(reports[member].test["problem_id"].tolist())
        np.testing.assert_allclose(acts.layer(info["layer"], info["position"])[test_rows] @ coef,
                                   reports[member].test["score"], rtol=1e-9, atol=1e-9)
    many = P.predict_many(dirs, qs[-8:], {m: lm for m in dirs})
    for member, path in dirs.items():
        pd.testing.assert_frame_equal(many[member], P.predict_texts(path, qs[-8:], lm=lm))


@pytest.fixture
def forwards(monkeypatch):
    """Counts the extractor's forward passes (the real extractor runs)."""
    calls = []
    real = NNsightExtractor.extract

    def counted(self, prompts, *a, **kw):
        calls.append(len(prompts))
        return real(self, prompts, *a, **kw)

    monkeypatch.setattr(NNsightExtractor, "extract", counted)
    return calls


def test_router_with_reader_probes_reads_once(reader_probes, forwards, tmp_path):
    lm, problems, acts, dirs, reports, qs = reader_probes
    a, b = "small/direct", "big/direct"
    router = Router(dirs, {a: 1.0, b: 3.0}, lam=0.2)
    out = router.route(qs[:10], lms={lm.name: lm})
    assert forwards == [10]  # one forward of the reader for both members
    for m in (a, b):
        np.testing.assert_allclose(out[f"p:{m}"], P.predict_texts(dirs[m], qs[:10], lm=lm)["prob"], atol=1e-9)
    util = out[[f"p:{a}", f"p:{b}"]].to_numpy() - 0.2 * np.array([1 / 3, 1.0])
    assert out["member"].tolist() == [(a, b)[k] for k in util.argmax(1)]
    forwards.clear()
    again = Router.load(router.save(tmp_path / "reader-router.json"))
    pd.testing.assert_frame_equal(again.route(qs[:10], lms={lm.name: lm}), out)
    assert forwards == [10]
    forwards.clear()
    cascade = Router(dirs, {a: 1.0, b: 3.0}, thresholds=[0.5]).route(qs[:10], lms={lm.name: lm})
    assert forwards == [10] and cascade[f"p:{b}"].isna().all()
    assert cascade["member"].tolist() == [a if p >= 0.5 else b for p in cascade[f"p:{a}"]]


def test_own_probes_read_each_member(reader_probes, forwards, tmp_path):
    """Probes of different readings (here: another prompt) still get one forward each."""
    lm, problems, acts, dirs, reports, qs = reader_probes
    from conftest import tiny_activations  # noqa: F401  (same model, another prompt below)
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations

    other = extract_activations(problems, lm, prompt_suffix="Answer.", cfg=ExtractionConfig(batch_size=8),
                                out_root=tmp_path, progress=False)
    lab = pd.DataFrame({"problem_id": problems["problem_id"], "question": qs,
                        "maj_correct": [float(i % 2) for i in range(len(qs))], "split": SPLITS})
    own = P.save_trained_probe(tmp_path / "own", P.eoi_probe(other, lab, "maj_correct", layers=[1], n_boot=20),
                               other, prompt_suffix="Answer.", labels=lab)
    forwards.clear()
    Router({"small/direct": dirs["small/direct"], "own": own}, {"small/direct": 1.0, "own": 2.0},
           lam=0.1).route(qs[:6], lms={lm.name: lm})
    assert sorted(forwards) == [6, 6]


def test_routing_cost_with_a_reader():
    """The reader's prefill once per problem, nothing when the reader's own member answers."""
    members = ["small/direct", "big/direct"]
    rows = [{"member": m, "problem_id": f"{s}{i}", "correct": (i + j) % 2, "cost": [1.0, 4.0][j], "split": s}
            for j, m in enumerate(members) for s in ("r", "t") for i in range(4)]
    outcomes = pd.DataFrame(rows).assign(split=lambda d: np.where(d["problem_id"].str[0] == "r", "train", "test"))
    probs = outcomes[["member", "problem_id"]].assign(p=np.where(outcomes["correct"] == 1, 0.9, 0.1))
    pre = R.ReaderPrefill(pd.DataFrame({"problem_id": [f"t{i}" for i in range(4)] + [f"r{i}" for i in range(4)],
                                        "prefill_cost": [0.1, 0.2, 0.3, 0.4] * 2}), member="small/direct")
    routed = R.utility(probs, outcomes, 0.0, prefill_cost=pre)
    small = routed["member"] == "small/direct"
    assert small.any() and (~small).any()
    np.testing.assert_allclose(routed["routing_cost"], np.where(small, 0.0, [0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_allclose(routed["cost_with_routing"], routed["cost"] + routed["routing_cost"])
    # a reader that answers no member's prompt: always paid, once (not once per member)
    pre2 = R.ReaderPrefill(pre.cost, member=None)
    np.testing.assert_allclose(R.utility(probs, outcomes, 0.0, prefill_cost=pre2)["routing_cost"], [0.1, 0.2, 0.3, 0.4])
    sweep = R.cascade_sweep(probs, outcomes, [0.0, 1.0], order=members, prefill_cost=pre)
    always_small = sweep[sweep["threshold:small/direct"] == 0.0].iloc[0]
    assert always_small["cost_with_routing"] == always_small["cost"] == 1.0
    always_big = sweep[sweep["threshold:small/direct"] == 1.0].iloc[0]
    assert always_big["cost_with_routing"] == pytest.approx(4.0 + 0.25)
    with pytest.raises(ValueError, match="reader's prefill is missing"):
        R.utility(probs, outcomes, 0.0, prefill_cost=R.ReaderPrefill(pre.cost.iloc[1:4], "small/direct"))


def test_reader_name_defaults_to_the_cheapest_and_checks():
    assert RD.reader_name({"models": ["qwen2.5-coder-1.5b", "smollm2-135m"], "reader": None}) == "smollm2-135m"
    assert RD.reader_name({"models": ["qwen2.5-coder-1.5b", "smollm2-135m"], "reader": "qwen2.5-coder-1.5b"}) \
        == "qwen2.5-coder-1.5b"
    with pytest.raises(ValueError, match="not one of the profile's models"):
        RD.reader_name({"models": ["smollm2-135m"], "reader": "nope"})


def test_own_versus_reader_table_on_the_same_problems(reader_probes, tmp_path):
    """Chapter 3's comparison: reader probe, own probe, TF-IDF and length on the same labels;
    with the reader as its own member the reader-minus-own difference is exactly zero."""
    lm, problems, acts, dirs, reports, qs = reader_probes
    n = len(qs)
    lab = pd.DataFrame({"problem_id": problems["problem_id"], "question": qs, "split": SPLITS,
                        "maj_correct": np.array([i % 5 >= 2 for i in range(n)], float),
                        "prompt_tokens": [len(q.split()) for q in qs]})
    reps, table = RD.compare_member(acts, acts, lab, "maj_correct", layers=[1, 2], n_boot=50)
    assert table["method"].tolist() == ["reader probe", "own probe", "tfidf", "length"]
    own = table.set_index("method").loc["own probe"]
    assert (own["reader_minus"], own["diff_low"], own["diff_high"]) == (0.0, 0.0, 0.0)
    assert table["n_test"].eq(8).all() and table["test"].between(0, 1).all()
    np.testing.assert_array_equal(reps[0].coef, reps[1].coef)


def test_reader_pool_on_the_smoke_profile(tmp_path, monkeypatch):
    """Reader probes for every smoke member (direct and step-by-step answers of the tiny model,
    read by the tiny model with the direct prompt), stored and read back, priced as one prefill."""
    from pika_utils.book import runner as book
    from pika_utils.routing import pool as pool_

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    params = book.load_profile("smoke")
    rp = RD.reader_pool(params)
    pool = pool_.build_pool(params)
    assert rp.reader == "tiny-random-llama" and rp.reader_member == "tiny-random-llama/direct"
    assert rp.members == pool.members and len(rp.probes) == len(pool.members)
    assert set(rp.probs["problem_id"]) == set(pool.outcomes["problem_id"]) == set(rp.reader_prefill["problem_id"])
    assert rp.probs["p"].between(0, 1).all() and (rp.reader_prefill["prefill_cost"] > 0).all()
    direct = pool.prefill[pool.prefill["member"] == rp.reader_member].set_index("problem_id")["prefill_cost"]
    np.testing.assert_allclose(rp.reader_prefill.set_index("problem_id")["prefill_cost"].loc[direct.index], direct)
    again = RD.reader_pool(params)  # read from the store
    pd.testing.assert_frame_equal(again.probs, rp.probs)
    pd.testing.assert_frame_equal(again.reader_prefill, rp.reader_prefill)
    routed = R.utility(rp.probs, rp.outcomes, 0.0, prefill_cost=rp.prefill)
    rc = routed.set_index("problem_id")["routing_cost"]
    answered_by_reader = routed.set_index("problem_id")["member"] == rp.reader_member
    assert (rc[answered_by_reader] == 0).all() and (rc[~answered_by_reader] > 0).all()


def test_pika_route_with_reader_probes_reads_once(reader_probes, forwards, tmp_path, capsys):
    """The users' command line: `pika route` on a saved reader router, one forward of the reader."""
    from pika_utils import cli

    lm, problems, acts, dirs, reports, qs = reader_probes
    router = Router(dirs, {"small/direct": 1.0, "big/direct": 3.0}, lam=0.1)
    path = router.save(tmp_path / "reader-router.json")
    forwards.clear()
    assert cli.main(["route", "--router", str(path), "--question", qs[3], "--source", "offline"]) == 0
    assert forwards == [1]
    printed = capsys.readouterr().out
    expect = router.route([qs[3]], lms={lm.name: lm})
    assert expect["member"].iloc[0] in printed and "p:big/direct" in printed
