"""The recorded pool: models known only by their graded outcomes, routed by one small reader.

Chapters 6 and 7 ask their questions of five 7B-32B models that cannot run here, from their
recorded answers on all 500 MATH-500 problems (``problems.recorded``). Costs are counted tokens
(one tokenizer for every member) times each member's size-tier price; a small local reader reads
each question once, and its cross-fitted probes (``crossfit``, ``ridge``) predict every member's
outcome; a TF-IDF model trained on the same labels is the text-only comparison. The whole
cross-fit is repeated over ``FOLD_SEEDS`` fold assignments, so the intervals of chapters 6 and 7
carry the refit (``seeds``); what the chapters compute from it is in ``recorded_results``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..core import cached_tables, prices, store
from ..generation import pipeline
from ..probes.difficulty import question_labels
from ..problems.recorded import RecordedMember, common_problems, resolve_members
from . import crossfit as CF
from . import evaluation as M
from . import ridge
from .rules import ReaderPrefill

#: Bump when what build_recorded_pool computes changes.
RECORDED_FORMAT = 3
#: The cross-fitted reader probes choose their layer among every LAYER_STEP-th layer, at every stored
#: end-of-instruction position: neighbouring layers carry nearly the same signal, and five fold
#: seeds of an inner 5-fold screen at every second layer took about twice the time budget.
LAYER_STEP = 4
#: The whole cross-fit is repeated over this many fold assignments (seeds seed, seed+1, ...); the
#: first is the book's (its tables and routers are shown), all of them make the intervals.
FOLD_SEEDS = 5
_TABLES = ("problems", "outcomes", "members", "scores", "chosen", "reader_prefill", "folds", "ends")
METHODS = ("reader", "text")


@dataclass
class RecordedPool:
    """Long tables for routing the recorded members: outcomes over every problem (split 'all'),
    cross-fitted scores of both methods for every fold seed (``scores``: seed, method, member,
    problem_id, fold, role, score, p)."""

    reader: str
    members: list[str]
    problems: pd.DataFrame  # problem_id, question, level, fold (the book's fold seed)
    outcomes: pd.DataFrame  # member, problem_id, correct, cost, split, input_tokens, output_tokens
    members_table: pd.DataFrame  # member, model, mode, size_b, prices, accuracy, tokens, $ per 1,000 problems
    scores: pd.DataFrame
    chosen: pd.DataFrame  # seed, method, member, fold, layer, position, alpha, inner_auroc, probe
    reader_prefill: pd.DataFrame  # problem_id, prefill_cost
    folds_table: pd.DataFrame  # seed, problem_id, fold
    ends: pd.DataFrame  # member, problem_id, ended ('answer', 'unfinished', or '' where no response is recorded)
    fit_seconds: float = float("nan")

    @property
    def seeds(self) -> list[int]:
        """The fold seeds, the book's first."""
        return list(dict.fromkeys(self.folds_table["seed"].tolist()))

    def folds_of(self, seed: int | None = None) -> pd.Series:
        """Each problem's fold under fold seed ``seed`` (the book's by default)."""
        seed = self.seeds[0] if seed is None else seed
        f = self.folds_table[self.folds_table["seed"] == seed]
        return f.set_index("problem_id")["fold"].reindex(self.problems["problem_id"])

    @property
    def folds(self) -> pd.Series:
        return self.folds_of(None)

    def prefill(self, method: str) -> ReaderPrefill:
        """The routing cost: the reader's prefill once per problem; the text router's is nil."""
        cost = self.reader_prefill if method == "reader" else self.reader_prefill.assign(prefill_cost=0.0)
        return ReaderPrefill(cost, None)


def count_tokens(tokenizer, texts) -> np.ndarray:
    """Tokens of each text with one tokenizer (no special tokens), in batches."""
    texts = [str(t) for t in texts]
    out = []
    for i in range(0, len(texts), 256):
        out += [len(x) for x in tokenizer(texts[i:i + 256], add_special_tokens=False)["input_ids"]]
    return np.asarray(out, dtype=int)


def member_price(m: RecordedMember, overrides: Mapping | None = None) -> tuple[float, float]:
    """(input, output) $ per 1M tokens: the run's ``prices`` entry, the member's own, or its size tier."""
    if overrides and m.name in overrides:
        return prices.get_price(m.name, overrides)
    if m.price:
        return float(m.price["input_per_m"]), float(m.price["output_per_m"])
    return prices.price_for_size(float(m.size_b))


def member_outcomes(members: list[RecordedMember], problems: pd.DataFrame, tokenizer,
                    overrides: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every member's outcomes with its cost (question tokens in, response tokens out, counted with
    ``tokenizer`` unless the file gives them), and one descriptive row per member."""
    q_tokens = pd.Series(count_tokens(tokenizer, problems["question"]), index=problems["problem_id"])
    rows, table = [], []
    for m in members:
        o = m.outcomes.set_index("problem_id").reindex(problems["problem_id"])
        out_tok = (o["output_tokens"].astype(float) if "output_tokens" in o else pd.Series(np.nan, index=o.index))
        if "response" in o:
            missing = out_tok.isna() & o["response"].notna()
            out_tok[missing] = count_tokens(tokenizer, o.loc[missing, "response"])
        in_tok = q_tokens.reindex(o.index).astype(float)
        if "input_tokens" in o:  # the file's count where it gives one, else the question's tokens
            in_tok = pd.to_numeric(o["input_tokens"], errors="coerce").fillna(in_tok)
        p_in, p_out = member_price(m, overrides)
        cost = (in_tok * p_in + out_tok * p_out) / 1e6
        rows.append(pd.DataFrame({"member": m.name, "problem_id": o.index, "correct": o["correct"].astype(int).to_numpy(),
                                  "cost": cost.to_numpy(), "split": "all", "input_tokens": in_tok.to_numpy(),
                                  "output_tokens": out_tok.to_numpy()}))
        table.append({"member": m.name, "model": m.model, "mode": m.mode, "size_b": m.size_b, "input $/M": p_in,
                      "output $/M": p_out, "accuracy": float(o["correct"].mean()),
                      "median output tokens": float(out_tok.median()), "$ per 1,000 problems": float(cost.mean() * 1000),
                      "source": m.source})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(table)


def recorded_key(params: Mapping[str, Any], acts_key: str, members: list[RecordedMember]) -> str:
    files = [(m.name, m.source, store.stable_hash(m.outcomes.to_json()), m.size_b, m.price) for m in members]
    return store.stable_hash({"format": RECORDED_FORMAT, "acts": acts_key, "members": files,
                              "folds": int(params["recorded_folds"]), "seed": int(params["seed"]),
                              "fold_seeds": FOLD_SEEDS, "layer_step": LAYER_STEP,
                              "alphas": list(params["alphas"]), "prices": params.get("prices") or {}})


def recorded_problem_set(params: Mapping[str, Any]) -> pd.DataFrame:
    """The problems the recorded members answered (chapter 4 reads the same set, so the reader's
    activations are extracted once)."""
    return pipeline.problem_set(params["recorded_sources"], split_fractions=params["split_fractions"],
                                seed=int(params["seed"]))


def recorded_benchmark(params: Mapping[str, Any]) -> str:
    """The shipped benchmark whose recorded outcomes the shipped members are read from: the
    recorded source's name where it is one (``olympiadbench``), else MATH-500."""
    from ..problems.recorded import BENCHMARKS

    keys = [k for k in params["recorded_sources"] if k in BENCHMARKS]
    if len(keys) > 1:
        raise ValueError(f"recorded_sources names {keys}: the recorded members are read from one benchmark at a time")
    return keys[0] if keys else "math500"


def build_recorded_pool(params: Mapping[str, Any]) -> RecordedPool:
    """Costs, folds and both methods' cross-fitted scores for every member and fold seed, fitted
    once and stored under a key of what determines them."""
    problems = recorded_problem_set(params)
    members = resolve_members(params["recorded_members"], problems, recorded_benchmark(params))
    problems = common_problems(members, problems)  # every member on every problem routed (said when cut)
    reader = params["recorded_reader"]
    lm, acts = pipeline.activations_for(problems, reader, params)
    folder = store.data_dir() / "pools" / f"recorded-{recorded_key(params, acts.meta['key'], members)}"
    found = cached_tables.stored_tables(folder, "recorded.json", _TABLES)
    if found:
        meta, t = found
        return RecordedPool(meta["reader"], meta["members"], *(t[n] for n in _TABLES),
                            fit_seconds=float(meta.get("fit_seconds", np.nan)))
    pool = _fit(params, problems, members, reader, lm, acts)
    cached_tables.store_tables(folder, "recorded.json", {n: getattr(pool, _ATTR.get(n, n)) for n in _TABLES},
                               {"reader": reader, "members": pool.members, "fit_seconds": pool.fit_seconds})
    return pool


_ATTR = {"members": "members_table", "folds": "folds_table"}


def chain_ends(members: list[RecordedMember], problem_ids) -> pd.DataFrame:
    """How each recorded response ends: 'answer' when it holds a boxed answer, 'unfinished' when
    it does not (a chain that stopped mid-reasoning, or an answer never boxed), '' where the
    member's file has no responses."""
    rows = []
    for m in members:
        o = m.outcomes.set_index("problem_id").reindex(list(problem_ids))
        if "response" in o:
            ended = np.where(o["response"].fillna("").astype(str).str.contains(r"\boxed", regex=False),
                             "answer", "unfinished")
            ended = np.where(o["response"].isna(), "", ended)
        else:
            ended = np.full(len(o), "")
        rows.append(pd.DataFrame({"member": m.name, "problem_id": o.index, "ended": ended}))
    return pd.concat(rows, ignore_index=True)


def _crossfit(method: str, params, probs_, Y, folds, acts, rows, cells_cache) -> tuple:
    kw = dict(n_inner=ridge.N_INNER, seed=int(folds.attrs["seed"]))
    if method == "reader":
        cells = [(int(layer), int(pos)) for layer in acts.layers[::LAYER_STEP] for pos in acts.meta["positions"]]
        if "gram" not in cells_cache:
            cells_cache["gram"] = CF.activation_gram(lambda layer, pos: acts.layer(layer, pos)[rows], cells)
        return ridge.crossfit(cells_cache["gram"], cells, Y, folds.to_numpy(), params["alphas"], **kw), cells
    return ridge.crossfit(CF.tfidf_gram(probs_["question"]), [None], Y, folds.to_numpy(), params["alphas"], **kw), None


def _fit(params, problems, members, reader, lm, acts) -> RecordedPool:
    t0 = time.perf_counter()
    probs_ = problems.sort_values("problem_id").reset_index(drop=True)
    ids = probs_["problem_id"]
    strata = probs_["difficulty"].fillna(0).astype(int)
    outcomes, table = member_outcomes(members, probs_, lm.tokenizer, params.get("prices"))
    rows = acts.rows_for(ids.tolist())
    names = [m.name for m in members]
    Y = outcomes.pivot(index="problem_id", columns="member", values="correct").reindex(index=ids, columns=names)
    Y = Y.to_numpy(float)
    cache: dict = {}  # the reader's features are read once for every seed
    scores, chosen, folds_rows = [], [], []
    first = int(params["seed"])
    for seed in range(first, first + FOLD_SEEDS):
        folds = CF.make_folds(ids, int(params["recorded_folds"]), seed, strata=strata)
        folds.attrs["seed"] = seed
        folds_rows.append(pd.DataFrame({"seed": seed, "problem_id": ids, "fold": folds.to_numpy()}))
        for method in METHODS:
            (held, inner, ch), cells = _crossfit(method, params, probs_, Y, folds, acts, rows, cache)
            for t, name in enumerate(names):
                h, i = held[held["target"] == t], inner[inner["target"] == t]
                scores.append(CF.member_scores(h, i, ids, name).assign(method=method, seed=seed))
            cell = ch["cell"]
            chosen.append(ch.drop(columns="cell").assign(
                seed=seed, method=method, member=[names[t] for t in ch["target"]],
                layer=[c[0] if isinstance(c, tuple) else -1 for c in cell],
                position=[c[1] if isinstance(c, tuple) else -1 for c in cell]).drop(columns="target"))
    labels = question_labels(probs_, lm.tokenizer, params.get("prompt_suffix") or "", params.get("system_prompt"))
    pre = M.prefill_costs(labels[["problem_id", "prompt_tokens"]].assign(member=reader, model=reader), params.get("prices"))
    folds_table = pd.concat(folds_rows, ignore_index=True)
    book = folds_table[folds_table["seed"] == first]["fold"].to_numpy()
    return RecordedPool(reader, names,
                        probs_[["problem_id", "question", "difficulty"]].rename(columns={"difficulty": "level"}).assign(
                            fold=book),
                        outcomes, table, pd.concat(scores, ignore_index=True), pd.concat(chosen, ignore_index=True),
                        pre[["problem_id", "prefill_cost"]].reset_index(drop=True), folds_table,
                        chain_ends(members, ids), fit_seconds=time.perf_counter() - t0)
