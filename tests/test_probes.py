"""Linear probes, the ridge fast path, calibration, the protocol, and saved probes."""
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import tiny_activations
from pika_utils.core import metrics
from pika_utils.probes import protocol as P
from pika_utils.probes.linear import ALPHAS, ClassificationProbe, LinearProbe, PlattScaler, RegressionProbe, ridge_path, sweep


def planted(n=240, d=40, layers=4, signal_layer=2, seed=0):
    """Activations where only one layer carries a linear signal about the target."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(layers, n, d))
    w = rng.normal(size=d)
    y = feats[signal_layer] @ w + 0.5 * rng.normal(size=n)
    return feats, y


@pytest.mark.parametrize("n,d", [(80, 120), (200, 40)])  # both sides of the Gram trick
def test_ridge_path_matches_sklearn_to_1e6(n, d):
    rng = np.random.default_rng(0)
    X, Xt = rng.normal(size=(n, d)) + 3.0, rng.normal(size=(30, d)) + 3.0  # uncentred, like activations
    y = X[:, 0] - X[:, 1] + rng.normal(size=n)
    W = ridge_path(X, y, ALPHAS)
    for a, w in zip(ALPHAS, W.T):
        ref = Ridge(alpha=a, fit_intercept=False, solver="svd").fit(X, y).predict(Xt)
        np.testing.assert_allclose(Xt @ w, ref, rtol=0, atol=1e-6)


def test_probe_is_a_sklearn_estimator_in_a_pipeline():
    feats, y = planted()
    X = feats[2]
    pipe = make_pipeline(StandardScaler(), RegressionProbe(alpha=1.0)).fit(X[:200], y[:200])
    assert pipe.score(X[200:], y[200:]) > 0.8  # Spearman on held-out rows
    assert pipe[-1].coef_.shape == (X.shape[1],) and not hasattr(RegressionProbe(), "coef_")
    clf = ClassificationProbe(alpha=1.0).fit(X[:200], (y[:200] > 0).astype(int))
    proba = clf.predict_proba(X[200:])
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1)
    assert clf.score(X[200:], (y[200:] > 0).astype(int)) > 0.85  # AUROC
    assert set(clf.predict(X[200:])) <= {0, 1}
    assert RegressionProbe(alpha=3.0).get_params()["alpha"] == 3.0


@pytest.mark.parametrize("y,task,match", [
    ([1, 1, 1, 1], "classification", "single class"),
    ([0, 1, np.nan, 1], "regression", "NaN"),
    ([0.5, 0.5, 0.5, 0.5], "regression", "constant"),
    ([0, 2, 1, 0], "classification", "must be 0/1"),
])
def test_bad_labels_are_explained(y, task, match):
    with pytest.raises(ValueError, match=match):
        LinearProbe(task).fit(np.ones((4, 3)), y)


def test_sweep_finds_the_planted_layer_on_validation_only():
    feats, y = planted()
    idx = np.arange(240)
    res = sweep(lambda layer, pos: feats[layer], range(4), [0], y, idx[:150], idx[150:200], "regression")
    assert res.best["layer"] == 2
    assert len(res.table) == 4 * len(ALPHAS)
    with pytest.raises(ValueError, match="validation split has 1 example"):
        sweep(lambda layer, pos: feats[layer], [0], [0], y, idx[:150], idx[150:151], "regression")


def test_platt_scaling_repairs_overconfident_scores():
    rng = np.random.default_rng(1)
    z = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    logits = 5 * z  # right ranking, overconfident scale
    raw = 1 / (1 + np.exp(-logits))
    cal = PlattScaler().fit(logits[:2000], y[:2000]).transform(logits[2000:])
    assert metrics.ece(y[2000:], cal) < metrics.ece(y[2000:], raw[2000:]) / 2
    assert metrics.auroc(y[2000:], cal) == pytest.approx(metrics.auroc(y[2000:], raw[2000:]))


def labels_frame(y, n_train=150, n_val=50):
    n = len(y)
    split = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    return pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)], "success_rate": y, "split": split,
                         "maj_correct": (np.asarray(y) > np.median(y)).astype(float),
                         "question": [f"question {i} " + "word " * (i % 7) for i in range(n)],
                         "prompt_tokens": [10 + i % 7 for i in range(n)], "source": "s"})


def test_protocol_probe_beats_baselines_with_paired_intervals():
    feats, y = planted()
    lab = labels_frame(y)
    rep = P.run_protocol("probe", lambda layer, pos: feats[layer], range(4), [0], lab, "success_rate", n_boot=200)
    assert rep.best["layer"] == 2 and rep.metrics["ci_low"] <= rep.metrics["test"] <= rep.metrics["ci_high"]
    table = P.compare([rep, P.length_baseline(lab, "success_rate", n_boot=200)], n_boot=200)
    assert table.loc[1, "diff_low"] > 0  # the probe is better than length on the same problems
    cls = P.run_protocol("probe", lambda layer, pos: feats[layer], range(4), [0], lab, "maj_correct", n_boot=100)
    assert {"ece_raw", "ece_platt", "brier_raw", "brier_platt"} <= set(cls.metrics)
    assert cls.test["prob_platt"].between(0, 1).all()


def test_paired_bootstrap_of_identical_scores_is_zero():
    rng = np.random.default_rng(0)
    y, s = rng.normal(size=50), rng.normal(size=50)
    assert P.paired_bootstrap(y, s, s, metrics.spearman, n_boot=100) == (0.0, 0.0, 0.0)


def test_saved_probe_round_trip_and_predict_texts(tmp_path):
    """Train on real tiny-model activations, save without pickle, load, score new texts."""
    from pika_utils.probes.files import load_probe

    lm, problems, acts = tiny_activations(tmp_path)
    n, qs = len(problems), problems["question"].tolist()
    lab = labels_frame(np.array([i % 5 for i in range(n)], dtype=float), n_train=24, n_val=8)
    rep = P.eoi_probe(acts, lab, "maj_correct", model=lm.name, n_boot=50)
    path = P.save_trained_probe(tmp_path / "probe", rep, acts, prompt_suffix="Reply.", labels=lab)
    coef, info = load_probe(path)
    np.testing.assert_array_equal(coef, rep.coef)
    assert info["layer"] == rep.best["layer"] and info["platt"] and info["weights_sha256"] == lm.weights_sha256
    assert not list(path.glob("*.pkl"))
    scored = P.predict_texts(path, qs[-8:], lm=lm)
    X = acts.layer(info["layer"], info["position"])[acts.rows_for(problems["problem_id"].tolist()[-8:])]
    np.testing.assert_allclose(scored["score"], X @ coef, rtol=1e-4, atol=1e-4)
    assert scored["prob"].between(0, 1).all()
    with pytest.raises(ValueError, match="from model 'tiny-random-llama', but the labels are for 'other'"):
        P.eoi_probe(acts, lab, "maj_correct", model="other")


def test_label_command_line_scores_a_file_and_never_overwrites(tmp_path):
    """`pika label`: the paper's label-with-probe script, on a real saved probe."""
    import subprocess
    import sys

    from pika_utils.core import store
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations
    from pika_utils.models.registry import load_model

    lm = load_model("tiny-random-llama", source="offline")
    n = 24
    problems = pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)],
                             "question": [f"Calculate {i} * 3." + " more" * (i % 4) for i in range(n)]})
    acts = extract_activations(problems, lm, cfg=ExtractionConfig(batch_size=8, layers=(0, 1, 2)),
                               out_root=tmp_path, progress=False)
    lab = labels_frame(np.array([i % 4 for i in range(n)], dtype=float), n_train=14, n_val=5)
    rep = P.eoi_probe(acts, lab, "success_rate", model=lm.name, n_boot=20)
    path = P.save_trained_probe(tmp_path / "probe", rep, acts, prompt_suffix="")
    src = store.write_parquet(tmp_path / "new.parquet", problems.iloc[:5])
    out = tmp_path / "labelled.parquet"
    cmd = [sys.executable, "-m", "pika_utils.cli", "label", "--probe", str(path), "--problems", str(src), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    labelled = store.read_parquet(out)
    expected = acts.layer(rep.best["layer"], rep.best["position"])[acts.rows_for(problems["problem_id"].tolist()[:5])] @ rep.coef
    np.testing.assert_allclose(labelled["probe_score"], expected, rtol=1e-4, atol=1e-4)
    again = subprocess.run(cmd[:-1] + [str(out.with_name("other.parquet"))], capture_output=True)
    assert again.returncode == 0
    changed = problems.iloc[5:10]
    store.write_parquet(src, changed)
    clash = subprocess.run(cmd, capture_output=True, text=True)
    assert clash.returncode != 0 and "refusing to overwrite" in clash.stderr


def test_transfer_tests_on_every_problem_of_the_unseen_source():
    feats, y = planted(n=240)
    lab = labels_frame(y).assign(source=["a"] * 160 + ["b"] * 80)

    class Acts:  # the ActivationSet interface eoi_probe reads, over the planted features
        layers, meta = [0, 1, 2, 3], {"positions": [-1], "problem_ids": lab["problem_id"].tolist(), "model": "m"}

        def rows_for(self, ids, model=None):
            return np.array([int(i[1:]) for i in ids])

        def layer(self, layer, pos):
            return feats[layer]

    rep = P.transfer(Acts(), lab, "success_rate", "a", "b", n_boot=50)
    assert rep.metrics["n_test"] == 80 and set(rep.test["problem_id"]) == set(lab.loc[lab["source"] == "b", "problem_id"])
    assert rep.best["layer"] == 2 and rep.metrics["test"] > 0.7


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_intercept_is_fitted_unpenalised_and_only_when_asked(task):
    """Non-negative features with an offset target (TF-IDF's situation): with ``fit_intercept``
    the fit matches sklearn's own intercept; the bias-free probe has none."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, size=(200, 6))
    z = X @ rng.normal(size=6) - 3.0 + rng.normal(scale=0.3, size=200)
    y = z if task == "regression" else (z > np.median(z)).astype(float)
    probe = LinearProbe(task, 1.0, fit_intercept=True).fit(X, y)
    if task == "regression":
        ref = Ridge(alpha=1.0).fit(X, y)
    else:
        ref = LogisticRegression(C=1.0, max_iter=2000).fit(X, y.astype(int))
    np.testing.assert_allclose(probe.coef_, np.ravel(ref.coef_), rtol=1e-3, atol=1e-4)
    assert probe.intercept_ == pytest.approx(float(np.ravel(ref.intercept_)[0]), rel=1e-3, abs=1e-4)
    ref_scores = ref.predict(X) if task == "regression" else ref.decision_function(X)
    np.testing.assert_allclose(probe.decision_function(X), ref_scores, rtol=1e-3, atol=1e-3)
    assert LinearProbe(task, 1.0).fit(X, y).intercept_ == 0.0


def test_tfidf_baseline_fits_an_intercept_and_is_never_saved(tmp_path):
    rng = np.random.default_rng(0)
    lab = labels_frame(rng.uniform(0.3, 0.9, size=240))
    rep = P.tfidf_baseline(lab, "success_rate", n_boot=50)
    assert rep.metrics["intercept"].startswith("fitted") and rep.intercept != 0.0
    with pytest.raises(ValueError, match="intercept"):
        P.save_trained_probe(tmp_path / "p", rep, None, prompt_suffix="")
    # the sweep scores the intercept's fit: a centred ridge, the same as sklearn's at every alpha
    X = rng.uniform(0, 1, size=(60, 5))
    yy = X @ rng.normal(size=5) + 2.0
    from pika_utils.probes.linear import _fold_scores
    rows = _fold_scores(lambda layer, pos: X, [(0, 0)], yy, np.arange(40), np.arange(40, 60), "regression", [1.0],
                        fit_intercept=True)
    sk = Ridge(alpha=1.0).fit(X[:40], yy[:40]).predict(X[40:])
    assert rows[0]["score"] == pytest.approx(metrics.spearman(yy[40:], sk))


def test_chapter4_chooses_its_model_without_test_outcomes():
    from types import SimpleNamespace

    from pika_utils.probes import difficulty as D

    # the better test score belongs to "b", the better validation score to "a": "a" is chosen
    reps = {"a": SimpleNamespace(metrics={"val": 0.6, "test": 0.1}), "b": SimpleNamespace(metrics={"val": 0.5, "test": 0.9})}
    assert D.choose_model(reps) == ("a", "validation")
    reps["b"].metrics["val"] = 0.6  # a tie: the first given
    assert D.choose_model(reps)[0] == "a"
    with pytest.raises(ValueError, match="no probe has a validation score"):
        D.choose_model({"a": SimpleNamespace(metrics={"val": float("nan")})})
    # mixed outcomes counted on train and val only: "b" is mixed on test alone
    problems = pd.DataFrame({"problem_id": ["p0", "p1", "p2"], "split": ["train", "val", "test"]})
    summary = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 3, "problem_id": ["p0", "p1", "p2"] * 2,
                            "success_rate": [0.5, 1.0, 1.0, 1.0, 0.0, 0.5], "split": ["train", "val", "test"] * 2})
    assert D.informative_model(summary, problems, ["b", "a"]) == "a"
    summary.loc[5, "success_rate"] = 0.25
    summary.loc[3, "success_rate"] = 0.25  # now both have one mixed train/val problem: the first given
    assert D.informative_model(summary, problems, ["b", "a"]) == "b"
