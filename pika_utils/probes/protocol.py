"""The paper's probing protocol, applied the same way to activations and to surface baselines:
sweep layers, positions and alpha on validation, refit the best, calibrate on validation, and
report test metrics with bootstrap intervals and paired differences."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import store
from ..core.metrics import bootstrap_ci, brier, ece, is_constant, spearman_ceiling
from .files import load_probe, save_probe
from .linear import ALPHAS, LinearProbe, PlattScaler, check_labels, probe_metric, sweep

#: target column -> probe task
TARGETS: dict[str, str] = {"success_rate": "regression", "maj_correct": "classification", "difficulty": "regression"}
METRIC_NAMES = {"regression": "Spearman", "classification": "AUROC"}


@dataclass
class ProbeReport:
    """One probe (or baseline) on one target: its sweep, its choice, its test predictions and
    metrics with 95% bootstrap intervals."""

    name: str
    target: str
    task: str
    sweep: pd.DataFrame
    best: dict
    test: pd.DataFrame  # problem_id, y, score (+ prob, prob_platt for binary targets)
    metrics: dict
    coef: np.ndarray = field(repr=False, default=None)
    platt: tuple[float, float] | None = None
    intercept: float = 0.0  # 0 for the paper's bias-free probe; the surface baselines fit one

    def row(self) -> dict:
        m = self.metrics
        return {"method": self.name, "target": self.target, "metric": METRIC_NAMES[self.task],
                "test": m["test"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "n_test": m["n_test"],
                "layer": self.best.get("layer"), "position": self.best.get("position"), "alpha": self.best.get("alpha")}


def split_indices(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row indices of the train, val and test splits; an error if validation is too small."""
    out = {s: np.flatnonzero(labels["split"].to_numpy() == s) for s in ("train", "val", "test")}
    for s, idx in out.items():
        if len(idx) < 2:
            raise ValueError(f"the {s} split has {len(idx)} example(s); at least 2 are needed")
    return out


#: Platt scaling needs at least this many validation examples of each class; below it the raw
#: probability is kept and the report says so (a slope fitted on one positive is meaningless).
MIN_PLATT_CLASS = 5


def _out_of_fold_scores(X: np.ndarray, y: np.ndarray, idx: np.ndarray, task: str, alpha: float,
                        seed: int, fit_intercept: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each example's score from a probe fitted without it (the folds of the selection), so that
    Platt scaling can be fitted when validation was folded into training."""
    from .linear import _folds

    scores, ys = [], []
    for fit, held in _folds(idx, y, task, 5, seed):
        probe = LinearProbe(task, alpha, fit_intercept=fit_intercept).fit(X[fit], y[fit])
        # a bias-free probe's scores sit at a different level in each fold: standardise each fold's
        # held-out scores by that fold's own training scores before pooling them
        ref = probe.decision_function(X[fit])
        scores.append((probe.decision_function(X[held]) - ref.mean()) / (ref.std() or 1.0))
        ys.append(y[held])
    return np.concatenate(scores), np.concatenate(ys)


def run_protocol(name: str, features: Callable[[int, int], np.ndarray], layers: Sequence[int],
                 positions: Sequence[int], labels: pd.DataFrame, target: str, *,
                 alphas: Sequence[float] = ALPHAS, n_boot: int = 1000, seed: int = 0,
                 fit_intercept: bool = False) -> ProbeReport:
    """Choose the cell without test (``probes.sweep``), refit it on the data it was chosen on,
    Platt-scale on validation where both classes are there to fit it, and test. ``fit_intercept``:
    an unpenalised intercept (the surface baselines; the paper's probe is bias-free)."""
    task = TARGETS[target]
    if target not in labels:
        raise ValueError(f"labels lack the target column {target!r}")
    y = check_labels(labels[target].to_numpy(dtype=float), task, f"{target} labels")
    idx = split_indices(labels)
    res = sweep(features, layers, positions, y, idx["train"], idx["val"], task, alphas, seed=seed,
                fit_intercept=fit_intercept)
    b = res.best
    cv = b["selection"].startswith(tuple("0123456789"))
    fit_idx = np.concatenate([idx["train"], idx["val"]]) if cv else idx["train"]
    X = features(b["layer"], b["position"])
    probe = LinearProbe(task, b["alpha"], fit_intercept=fit_intercept).fit(X[fit_idx], y[fit_idx])
    s_val, s_test = probe.decision_function(X[idx["val"]]), probe.decision_function(X[idx["test"]])
    y_test = y[idx["test"]]
    test = pd.DataFrame({"problem_id": labels["problem_id"].to_numpy()[idx["test"]], "y": y_test, "score": s_test})
    metric = probe_metric(task)
    point, lo, hi = bootstrap_ci(metric, y_test, s_test, n_boot=n_boot, seed=seed)
    metrics = {"test": point, "ci_low": lo, "ci_high": hi, "n_test": len(y_test), "val": b["val_score"],
               "selection": b["selection"], "converged": bool(probe.converged_), "solver_iterations": probe.n_iter_,
               "near_ties": b.get("near_ties", 1)}
    if task == "regression":
        metrics["ceiling"] = spearman_ceiling(y_test)
    platt = None
    if task == "classification":
        test["prob"] = 1 / (1 + np.exp(-s_test))
        mu, sd = 0.0, 1.0
        if cv:  # validation helped fit the probe: calibrate on out-of-fold scores over train+val
            s_cal, y_cal = _out_of_fold_scores(X, y, fit_idx, task, b["alpha"], seed, fit_intercept)
            ref = probe.decision_function(X[fit_idx])  # the same standardisation for the final probe
            mu, sd = float(ref.mean()), float(ref.std() or 1.0)
            where = "out-of-fold scores over train+val (cross-validated selection)"
        else:
            s_cal, y_cal, where = s_val, y[idx["val"]], "validation"
        n_min = int(min((y_cal == 1).sum(), (y_cal == 0).sum()))
        if n_min >= MIN_PLATT_CLASS:
            scaler = PlattScaler().fit(s_cal, y_cal)
            platt = (scaler.a_ / sd, scaler.b_ - scaler.a_ * mu / sd)  # on the probe's raw scores
            test["prob_platt"] = 1 / (1 + np.exp(-(platt[0] * s_test + platt[1])))
            metrics["platt"] = f"fitted on {where}"
        else:
            test["prob_platt"] = test["prob"]
            metrics["platt"] = (f"skipped: {n_min} example(s) of the rarer class on {where} (< {MIN_PLATT_CLASS}); "
                                "the probe's own probability is used")
        metrics.update(ece_raw=ece(y_test, test["prob"]), ece_platt=ece(y_test, test["prob_platt"]),
                       brier_raw=brier(y_test, test["prob"]), brier_platt=brier(y_test, test["prob_platt"]))
    metrics["intercept"] = "fitted (unpenalised)" if fit_intercept else "none (bias-free)"
    return ProbeReport(name, target, task, res.table, b, test, metrics, probe.coef_, platt, probe.intercept_)


def eoi_probe(acts, labels: pd.DataFrame, target: str, *, model: str | None = None,
              layers: Sequence[int] | None = None, positions: Sequence[int] | None = None, **kw) -> ProbeReport:
    """The linear probe on end-of-instruction activations, over every layer and EOI position."""
    rows = acts.rows_for(labels["problem_id"].tolist(), model=model)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def features(layer: int, pos: int) -> np.ndarray:
        if (layer, pos) not in cache:
            cache[(layer, pos)] = acts.layer(layer, pos)[rows]
        return cache[(layer, pos)]

    return run_protocol("probe", features, layers or acts.layers, positions or acts.meta["positions"],
                        labels, target, **kw)


def tfidf_baseline(labels: pd.DataFrame, target: str, **kw) -> ProbeReport:
    """TF-IDF of the question (vocabulary fitted on the training split only), same protocol
    (alpha chosen the probe's way), with an intercept: every TF-IDF feature is non-negative, so
    a bias-free fit spends its weights on the base rate and handicaps the baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = labels["split"].to_numpy() == "train"
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit(labels.loc[train, "question"])
    X = vec.transform(labels["question"]).toarray()
    return run_protocol("tfidf", lambda layer, pos: X, [0], [0], labels, target, fit_intercept=True, **kw)


def length_baseline(labels: pd.DataFrame, target: str, **kw) -> ProbeReport:
    """Prompt length in tokens (standardised with the training split's mean and deviation, its
    sign learnt), same protocol."""
    n = labels["prompt_tokens"].to_numpy(dtype=float)
    train = n[labels["split"].to_numpy() == "train"]
    X = ((n - train.mean()) / (train.std() or 1.0))[:, None]
    return run_protocol("length", lambda layer, pos: X, [0], [0], labels, target, **kw)


def paired_bootstrap(y, score_a, score_b, metric: Callable, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """metric(a) - metric(b) on the same test problems, with a percentile interval from
    resampling problems jointly (so both methods see the same resample)."""
    y, a, b = (np.asarray(v, dtype=float) for v in (y, score_a, score_b))
    return bootstrap_ci(lambda yy, aa, bb: metric(yy, aa) - metric(yy, bb), y, a, b, n_boot=n_boot, seed=seed)


def compare(reports: Sequence[ProbeReport], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per method with its test metric and interval, and the paired difference of the
    first (the probe) minus each other on the same test problems; none (``baseline_constant``)
    against a method whose test scores are all equal, which compares with chance."""
    first = reports[0]
    rows = []
    for r in reports:
        row = r.row()
        if r is not first:
            merged = first.test.merge(r.test, on="problem_id", suffixes=("_a", "_b"))
            if is_constant(merged["score_b"]):  # e.g. length on a surface-matched source: no comparison
                row.update({"probe_minus": np.nan, "diff_low": np.nan, "diff_high": np.nan, "baseline_constant": True})
            else:
                d, lo, hi = paired_bootstrap(merged["y_a"], merged["score_a"], merged["score_b"],
                                             probe_metric(first.task), n_boot, seed)
                row.update({"probe_minus": d, "diff_low": lo, "diff_high": hi, "baseline_constant": False})
        rows.append(row)
    return pd.DataFrame(rows)


def labels_table(summary: pd.DataFrame, problems: pd.DataFrame, model: str) -> pd.DataFrame:
    """One row per problem for ``model``: the three targets, split, source and question."""
    s = summary[summary["model"] == model]
    if s.empty:
        raise ValueError(f"no rollouts for model {model!r} in the summary (models: {sorted(summary['model'].unique())})")
    cols = ["problem_id", "success_rate", "maj_correct", "prompt_tokens"]
    out = s[cols].merge(problems[["problem_id", "question", "source", "difficulty", "split"]], on="problem_id")
    out["maj_correct"] = out["maj_correct"].astype(float)
    return out.sort_values("problem_id").reset_index(drop=True)


def transfer(acts, labels: pd.DataFrame, target: str, train_source: str, test_source: str, *,
             model: str | None = None, **kw) -> ProbeReport:
    """Train (and select) on one source, test on every problem of another: the question the
    paper leaves open. Training uses the train and val splits of ``train_source``; the other
    source was never seen, so all of it is test data."""
    a = labels[labels["source"] == train_source]
    b = labels[labels["source"] == test_source].assign(split="test")
    if a.empty or b.empty:
        raise ValueError(f"no problems for transfer {train_source!r} -> {test_source!r}")
    lab = pd.concat([a[a["split"] != "test"], b], ignore_index=True)
    rep = eoi_probe(acts, lab, target, model=model, **kw)
    rep.name = f"probe {train_source} -> {test_source}"
    return rep


# --------------------------------------------------------------------------------------------
# A probe a user keeps: saved without pickle, applied to new texts


def save_trained_probe(path: str | Path, report: ProbeReport, acts, *, prompt_suffix: str,
                       system_prompt: str | None = None, labels: pd.DataFrame | None = None,
                       extra: Mapping | None = None) -> Path:
    """Save a fitted EOI probe with everything needed to apply it to new prompts; ``extra``
    adds fields (e.g. a reader probe's ``reader`` and ``target_member``). Only bias-free probes
    are saved (the file holds the weights, no intercept)."""
    if report.intercept:
        raise ValueError(f"the {report.name} probe has an intercept ({report.intercept:.3g}); saved probes are "
                         "bias-free (probe.safetensors holds the weights only)")
    info = {
        "target": report.target, "task": report.task, "layer": int(report.best["layer"]),
        "position": int(report.best["position"]), "alpha": float(report.best["alpha"]),
        "platt": (list(report.platt) if report.platt else [1.0, 0.0]) if report.task == "classification" else None,
        # platt [1, 0] with platt_fitted false: too few of a class on validation, the raw probability
        "platt_fitted": bool(report.platt), "metrics": report.metrics,
        "model": acts.meta["model"], "weights_sha256": acts.meta["weights_sha256"],
        "activations_key": acts.meta["key"], "prompt_suffix": prompt_suffix, "system_prompt": system_prompt,
        "n_layers": (acts.meta.get("model_info") or {}).get("n_layers"),
        "eoi_positions": list(acts.meta.get("positions") or []),
        "labels_hash": store.stable_hash(labels[["problem_id", report.target, "split"]].to_dict(orient="list"))
        if labels is not None else None,
        **dict(extra or {}),
    }
    save_probe(path, report.coef, info)
    return Path(path)


def predict_texts(path: str | Path, questions: Sequence[str], lm=None, batch_size: int = 16) -> pd.DataFrame:
    """Apply a saved probe to new questions: extract the same EOI activation with the same
    model and prompt, return the score (and calibrated probability for binary probes)."""
    return predict_many({"probe": path}, questions, lms={"probe": lm} if lm is not None else None,
                        batch_size=batch_size)["probe"]


def _check_texts(questions: Sequence[str]) -> list[str]:
    questions = list(questions)
    if not questions or any(not isinstance(q, str) or not q.strip() for q in questions):
        from ..problems.files import validate_questions
        validate_questions(pd.DataFrame({"question": pd.Series(questions, dtype=object)}), where="questions to score",
                           id_column=None)
    return questions


def _check_probe_model(path, coef: np.ndarray, info: dict, lm) -> None:
    from ..activations.batches import eoi_token_count

    if lm.weights_sha256 != info["weights_sha256"]:
        raise ValueError(f"the probe in {path} was trained on {info['model']} weights {info['weights_sha256'][:12]}, "
                         f"but the loaded model has {lm.weights_sha256[:12]} ({lm.source})")
    n_eoi = eoi_token_count(lm.tokenizer, info["prompt_suffix"], info["system_prompt"])
    if -info["position"] > n_eoi:
        raise ValueError(f"the probe in {path} reads EOI position {info['position']}, the template has {n_eoi}")
    d_model = int(lm.model.config.hidden_size)
    if coef.shape[0] != d_model:
        raise ValueError(f"the probe in {path} has {coef.shape[0]} weights, {lm.name} has d_model={d_model}")


def reading_key(info: Mapping) -> tuple:
    """What one forward pass serves: probes with the same model weights and prompt read the
    same residual stream, whatever their layer, position or target."""
    return (info["model"], info["weights_sha256"], info["prompt_suffix"], info["system_prompt"])


def eoi_features(lm, questions: Sequence[str], layers: Sequence[int], n_positions: int, *, prompt_suffix: str,
                 system_prompt: str | None, batch_size: int = 16, progress: bool = False,
                 by_length: bool = True) -> np.ndarray:
    """(questions, layers, n_positions, d_model) EOI activations of new questions, in their order:
    one forward pass per batch, whatever the number of probes that read them. Batches are formed
    in order of prompt length (``by_length``), so that a batch pads little (left padding, each
    prompt at the positions it would have alone). ``progress``: a bar on stderr, for a terminal;
    chapters keep it off."""
    from tqdm.auto import tqdm

    from ..activations.eoi import NNsightExtractor
    from ..core.prompts import chat_prompts

    ex = NNsightExtractor(lm)
    prompts = chat_prompts(lm.tokenizer, list(questions), prompt_suffix, system_prompt)
    order = np.argsort([len(p) for p in prompts], kind="stable") if by_length else np.arange(len(prompts))
    bar = tqdm(total=len(prompts), desc=f"reading with {lm.name}", unit="question",
               disable=not progress or len(prompts) <= batch_size)
    out = None
    for i in range(0, len(prompts), batch_size):
        idx = order[i:i + batch_size]
        x = ex.extract([prompts[j] for j in idx], list(layers), n_positions)["eoi"].double().numpy()
        if out is None:
            out = np.empty((len(prompts), *x.shape[1:]))
        out[idx] = x
        bar.update(len(idx))
    bar.close()
    return out


def _scores(coef: np.ndarray, info: dict, feats: np.ndarray, layers: Sequence[int], n_positions: int,
            questions: Sequence[str]) -> pd.DataFrame:
    """A saved probe applied to features from ``eoi_features`` (its EOI position p < 0 is column
    n_positions + p: the last n_positions tokens were read)."""
    x = feats[:, list(layers).index(info["layer"]), n_positions + int(info["position"]), :]
    score, prob = probe_output(coef, info, x)
    out = pd.DataFrame({"question": list(questions), "score": score})
    if prob is not None:
        out["prob"] = prob
    return out


def probe_output(coef: np.ndarray, info: Mapping, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A saved probe on features ``x`` (n, d) read at its layer and position: its linear score
    and, for a binary probe, the Platt-calibrated probability (None for a regression)."""
    score = np.asarray(x, dtype=np.float64) @ coef
    if info["task"] != "classification":
        return score, None
    a, b = info["platt"] or (1.0, 0.0)  # no Platt fit: the probe's own probability
    return score, 1 / (1 + np.exp(-(a * score + b)))


def predict_many(paths: Mapping[str, str | Path], questions: Sequence[str], lms: Mapping | None = None, *,
                 batch_size: int = 16, source: str = "auto") -> dict[str, pd.DataFrame]:
    """Apply several saved probes to the same questions with ONE forward pass per reading
    (model and prompt, see ``reading_key``): reader probes that predict every pool member's
    success from one small model cost one prefill of that model. ``lms`` maps a probe's name
    or its model's name to a ``LoadedModel``; others load by name."""
    from ..models.registry import check_weights, load_model

    probes = {name: load_probe(p) for name, p in paths.items()}  # validated whole before any model loads
    questions = _check_texts(questions)
    lms, loaded = dict(lms or {}), {}
    groups: dict[tuple, list[str]] = {}
    for name, (_, info) in probes.items():
        groups.setdefault(reading_key(info), []).append(name)
    out = {}
    for key, names in groups.items():
        model = key[0]
        lm = next((lms[n] for n in names if lms.get(n) is not None), None) or lms.get(model)
        if lm is None:
            if model not in loaded:  # the probes' weights are these, before any weights load
                for n in names:
                    check_weights(model, probes[n][1]["weights_sha256"], what=f"the probe in {paths[n]}", source=source)
            lm = loaded[model] = loaded.get(model) or load_model(model, source=source)
        for n in names:
            _check_probe_model(paths[n], *probes[n], lm)
        layers = sorted({int(probes[n][1]["layer"]) for n in names})
        n_pos = max(-int(probes[n][1]["position"]) for n in names)
        feats = eoi_features(lm, questions, layers, n_pos, prompt_suffix=key[2], system_prompt=key[3],
                             batch_size=batch_size)
        for n in names:
            out[n] = _scores(probes[n][0], probes[n][1], feats, layers, n_pos, questions)
    return {n: out[n] for n in paths}


def evaluate_target(acts, labels: pd.DataFrame, target: str, *, model: str, **kw) -> tuple[list[ProbeReport], pd.DataFrame]:
    """The probe and both surface baselines on one target, over the problems that have it,
    with the comparison table (paired differences of the probe minus each baseline)."""
    lab = labels.dropna(subset=[target]).reset_index(drop=True)
    reports = [eoi_probe(acts, lab, target, model=model, **kw), tfidf_baseline(lab, target, **kw),
               length_baseline(lab, target, **kw)]
    table = compare(reports, n_boot=kw.get("n_boot", 1000), seed=kw.get("seed", 0))
    table.insert(0, "model", model)
    return reports, table


def layer_curve(report: ProbeReport, model: str) -> pd.DataFrame:
    """Best validation score per layer (over alpha and position) from a probe's sweep; for a
    binary target, from the least-squares screen, the one stage that scored every layer."""
    sw = report.sweep
    if "stage" in sw:
        sw = sw[sw["stage"] != "logistic"]
    c = sw.groupby("layer", as_index=False)["val_score"].max()
    return c.assign(model=model, target=report.target)
