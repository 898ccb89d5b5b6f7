"""Pooled probes over all prompt tokens: synthetic data whose answer is known, and one real check
on the smoke profile's tiny model."""
import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file, save_file

from pika_utils.probes.pooled import POOLINGS, PooledProbe, pool_scores, pooled_sweep

D, T = 16, 24


def make_tokens(n: int, seed: int, t: int = T, d: int = D, min_len: int = 6):
    """Left-padded random token sequences of varied length: X zero at pads, M the real tokens."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, d)).astype(np.float32)
    lens = rng.integers(min_len, t + 1, n)
    M = np.arange(t)[None, :] >= (t - lens)[:, None]
    X[~M] = 0.0
    return X, M, rng


def direction(d: int = D) -> np.ndarray:
    u = np.zeros(d, dtype=np.float32)
    u[0] = 1.0
    return u


@pytest.fixture(scope="module")
def easy():
    """Every token of prompt i carries an offset c_i along one direction; the target is c_i."""
    X, M, rng = make_tokens(240, seed=1)
    c = rng.normal(size=len(X))
    X = X + (2.0 * c[:, None, None] * direction()[None, None, :]).astype(np.float32)
    X[~M] = 0.0
    return X, M, c


@pytest.fixture(scope="module")
def fitted(easy):
    X, M, y = easy
    return {p: PooledProbe(p, lr=3e-2, batch_size=64, max_epochs=40, seed=0).fit(X[:160], y[:160], M[:160], eval_set=(X[160:200], y[160:200], M[160:200]))
            for p in POOLINGS}


def test_every_pooling_beats_chance_on_an_easy_signal(easy, fitted):
    X, M, y = easy
    for p, probe in fitted.items():
        assert probe.score(X[200:], y[200:], M[200:]) > 0.8, p
        assert probe.n_features_in_ == D and probe.best_epoch_ >= 1


def test_linear_then_max_learns_a_max_over_tokens_target():
    X, M, _ = make_tokens(400, seed=2)
    y = np.where(M, X @ direction(), -np.inf).max(1)
    probe = PooledProbe("linear_then_max", lr=1e-2).fit(X[:240], y[:240], M[:240], eval_set=(X[240:320], y[240:320], M[240:320]))
    assert probe.score(X[320:], y[320:], M[320:]) > 0.8
    # and a mean-like pooling does worse on it: the architecture matters
    attn = PooledProbe("linear_then_rolling_max", window=24, lr=1e-2).fit(
        X[:240], y[:240], M[:240], eval_set=(X[240:320], y[240:320], M[240:320]))
    assert attn.score(X[320:], y[320:], M[320:]) < probe.score(X[320:], y[320:], M[320:])


def test_pool_scores_by_hand():
    import torch

    s = torch.tensor([[0.0, 0.0, 1.0, 5.0, 3.0, 2.0], [9.0, 9.0, 9.0, 9.0, 1.0, 3.0]])
    m = torch.tensor([[False, False, True, True, True, True], [False, False, False, False, True, True]])
    assert pool_scores(s, m, "linear_then_max").tolist() == [5.0, 3.0]
    # window 2: windows of real tokens (1,5), (5,3), (3,2) -> max mean 4; row 2 has one window (1,3) -> 2
    assert pool_scores(s, m, "linear_then_rolling_max", window=2).tolist() == [4.0, 2.0]
    # window 3: windows (1,5,3), (5,3,2) -> 10/3; row 2 is shorter than the window -> mean of its real tokens
    np.testing.assert_allclose(pool_scores(s, m, "linear_then_rolling_max", window=3).numpy(), [10 / 3, 2.0], rtol=1e-6)
    soft = pool_scores(s, m, "linear_then_softmax").numpy()
    a = np.exp([1.0, 5.0, 3.0, 2.0]) / np.exp([1.0, 5.0, 3.0, 2.0]).sum()
    np.testing.assert_allclose(soft[0], (a * [1.0, 5.0, 3.0, 2.0]).sum(), rtol=1e-6)
    assert 1.0 < soft[1] < 3.0  # the 9s are pads and never count


def test_padding_never_matters(easy, fitted):
    X, M, _ = easy
    Xt, Mt = X[200:], M[200:]
    for p, probe in fitted.items():
        ref = probe.decision_function(Xt, Mt)
        # more left padding, and pads full of garbage instead of zeros
        extra = 7
        Xp = np.concatenate([np.full((len(Xt), extra, D), 5.0, np.float32), Xt], axis=1)
        Mp = np.concatenate([np.zeros((len(Xt), extra), bool), Mt], axis=1)
        Xp[:, extra:][~Mt] = 3.0
        np.testing.assert_allclose(probe.decision_function(Xp, Mp), ref, rtol=1e-5, atol=1e-5, err_msg=p)
        # each row alone, cropped to its own length, scores as it does in the padded batch
        for i in range(3):
            n = int(Mt[i].sum())
            alone = probe.decision_function(Xt[i:i + 1, -n:], Mt[i:i + 1, -n:])
            np.testing.assert_allclose(alone, ref[i:i + 1], rtol=1e-5, atol=1e-5, err_msg=p)
    # without a mask, all-zero token vectors are the pads
    probe = fitted["attention"]
    np.testing.assert_allclose(probe.decision_function(Xt), probe.decision_function(Xt, Mt), rtol=1e-6)


def test_same_seed_same_predictions_other_seed_differs(easy):
    X, M, y = easy
    fit = lambda seed: PooledProbe("attention", seed=seed, max_epochs=8).fit(X[:160], y[:160], M[:160]).predict(X[200:], M[200:])
    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_early_stopping_restores_the_best_epoch():
    X, M, rng = make_tokens(60, seed=5)
    y = rng.normal(size=60)  # noise: the validation score wanders, so training stops early
    kw = dict(pooling="linear_then_softmax", lr=0.05, weight_decay=0.0, patience=4, max_epochs=100, seed=1)
    ev = (X[40:], y[40:], M[40:])
    probe = PooledProbe(**kw).fit(X[:40], y[:40], M[:40], eval_set=ev)
    h = probe.history_
    assert list(h.columns) == ["epoch", "train_loss", "val_loss", "val_score"]
    assert len(h) == probe.best_epoch_ + 4 < 100  # stopped `patience` epochs after the best
    assert h["val_score"].idxmax() + 1 == probe.best_epoch_
    assert probe.score(*ev[:2], ev[2]) == pytest.approx(h["val_score"].max(), abs=1e-9)
    assert h["val_score"].iloc[-1] < h["val_score"].max()
    # the kept weights are those of the best epoch: training exactly that long gives the same model
    short = PooledProbe(**{**kw, "max_epochs": probe.best_epoch_, "patience": 1000}).fit(X[:40], y[:40], M[:40], eval_set=ev)
    np.testing.assert_allclose(short.decision_function(X, M), probe.decision_function(X, M), rtol=1e-6, atol=1e-6)


def test_holdout_without_eval_set_uses_a_fifth_of_the_rows(easy):
    X, M, y = easy
    probe = PooledProbe("linear_then_max", max_epochs=3).fit(X[:100], y[:100], M[:100])
    assert len(probe.history_) == 3 and probe.history_["val_score"].notna().all()


def test_classification_probabilities(easy):
    X, M, c = easy
    y = (c > 0).astype(int)
    probe = PooledProbe("linear_then_softmax", task="classification", lr=1e-2).fit(
        X[:160], y[:160], M[:160], eval_set=(X[160:200], y[160:200], M[160:200]))
    P = probe.predict_proba(X[200:], M[200:])
    assert P.shape == (40, 2) and (P >= 0).all() and (P <= 1).all()
    np.testing.assert_allclose(P.sum(1), 1.0)
    assert set(np.unique(probe.predict(X[200:], M[200:]))) <= {0, 1}
    assert probe.score(X[200:], y[200:], M[200:]) > 0.8  # AUROC
    with pytest.raises(AttributeError, match="classification"):
        PooledProbe().fit(X[:50], c[:50], M[:50]).predict_proba(X[:5], M[:5])


def test_errors_name_the_problem(easy):
    X, M, y = easy
    Xs, Ms, ys = X[:30], M[:30], y[:30]
    with pytest.raises(ValueError, match="pooling must be one of"):
        PooledProbe("mean").fit(Xs, ys, Ms)
    with pytest.raises(ValueError, match="NaN"):
        PooledProbe().fit(Xs, np.where(np.arange(30) == 3, np.nan, ys), Ms)
    with pytest.raises(ValueError, match="single class"):
        PooledProbe(task="classification").fit(Xs, np.ones(30), Ms)
    with pytest.raises(ValueError, match="mask .* has shape"):
        PooledProbe().fit(Xs, ys, Ms[:, 1:])
    with pytest.raises(ValueError, match=r"\(problems, tokens, features\)"):
        PooledProbe().fit(Xs[:, -1], ys)
    with pytest.raises(ValueError, match="no real token"):
        PooledProbe().fit(Xs, ys, np.where(np.arange(30)[:, None] == 2, False, Ms))
    probe = PooledProbe(max_epochs=2).fit(Xs, ys, Ms)
    with pytest.raises(ValueError, match="features"):
        probe.predict(Xs[..., :5], Ms)


def test_state_round_trip_through_safetensors(easy, fitted, tmp_path):
    X, M, _ = easy
    for p, probe in fitted.items():
        path = tmp_path / f"{p}.safetensors"
        save_file(probe.state_dict_numpy(), str(path))
        params = probe.state_params()
        json.dumps(params)  # the sidecar is JSON-able
        back = PooledProbe.from_state(params, load_file(str(path)))
        np.testing.assert_array_equal(back.decision_function(X[200:], M[200:]), probe.decision_function(X[200:], M[200:]))
        assert back.best_epoch_ == probe.best_epoch_ and back.get_params() == probe.get_params()
    with pytest.raises(ValueError, match="lack"):
        PooledProbe.from_state({"pooling": "attention"}, {"net.w.weight": np.zeros((1, D), np.float32)})


def test_pooled_sweep_reports_every_pooling(easy):
    X, M, y = easy
    idx = np.arange(len(X))
    table = pooled_sweep(X, M, y, idx[:120], idx[120:160], idx[160:200], "regression",
                         poolings=("attention", "linear_then_max"), probe_params={"lr": 1e-2, "max_epochs": 30})
    assert list(table.columns) == ["pooling", "val_score", "test_score", "best_epoch", "seconds"]
    assert table["pooling"].tolist() == ["attention", "linear_then_max"]
    assert (table["test_score"] > 0.8).all() and (table["best_epoch"] >= 1).all()


def test_real_token_activations_from_the_tiny_model(tmp_path):
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations
    from pika_utils.models.registry import load_model

    rng = np.random.default_rng(0)
    reps = rng.integers(0, 12, 40)
    problems = pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(40)],
                             "question": [f"What is {i} plus {i + 3}?" + " Please think." * int(k) for i, k in enumerate(reps)]})
    acts = extract_activations(problems, load_model("tiny-random-llama", source="offline"),
                               cfg=ExtractionConfig(token_layers=(1,)), out_root=tmp_path, progress=False)
    X, M = acts.tokens(1)
    assert X.shape[:2] == M.shape and (M.sum(1) > 0).all()
    y = M.sum(1).astype(float)  # a synthetic target: the prompt's length in tokens
    probe = PooledProbe("attention", lr=1e-2).fit(X[:24], y[:24], M[:24], eval_set=(X[24:32], y[24:32], M[24:32]))
    assert probe.score(X[32:], y[32:], M[32:]) > 0.5
