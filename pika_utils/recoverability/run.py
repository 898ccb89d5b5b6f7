"""Recoverability of failures (chapter 9), the model half: teacher-forced log-probabilities of S
and A on S's own failed traces (one forward each, no generation), the interventions as a small
seeded logits processor on a shared-prefill decode loop, and the stage a chapter calls. The
numbers are ``recoverability.features``'s."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..grading import maths

from ..core import store
from . import features as rf
from ..core.prompts import chat_prompts

log = logging.getLogger(__name__)


RECOVER_VERSION = 1  # raise when a change alters what the stored per-problem files hold
STEERS = ("dense_steer", "sparse_steer", "random_sparse")  # the interventions that read A's logits


@dataclass(frozen=True)
class Intervention:
    """What happens to S's next-token logits at generation step ``step``: ``retry`` samples S at
    temperature T; the steers move S's logits toward A's by ``alpha`` (``dense_steer`` at every
    step, ``sparse_steer``/``random_sparse`` inside [lo, hi)); ``temp_lift`` samples at T * lift
    inside [lo, hi). Outside its window an intervention is exactly retry."""

    kind: str
    lo: int = 0
    hi: int = 0
    alpha: float = 0.5
    lift: float = 1.5

    def __post_init__(self) -> None:
        if self.kind not in rf.INTERVENTIONS:
            raise ValueError(f"unknown intervention {self.kind!r}; choose from {rf.INTERVENTIONS}")

    def active(self, step: int) -> bool:
        if self.kind == "retry":
            return False
        return self.kind == "dense_steer" or self.lo <= step < self.hi

    def __call__(self, step: int, logits_s, logits_a, temperature: float):
        """The logits to sample from (already divided by the temperature)."""
        if not self.active(step):
            return logits_s / temperature
        if self.kind == "temp_lift":
            return logits_s / (temperature * self.lift)
        return (logits_s + self.alpha * (logits_a - logits_s)) / temperature


def make_interventions(J: Sequence[float], params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Intervention]:
    """The five interventions of one problem: windows around its junction (or, for the control,
    a window of the same width at a random position of the answer)."""
    w, n = int(params["recover_window"]), int(params["max_new_tokens"])
    lo, hi = rf.junction_window(J, w)
    width = max(1, hi - lo)
    rlo = int(rng.integers(0, max(1, n - width + 1)))
    a, lift = float(params["recover_steer_alpha"]), float(params["recover_temperature_lift"])
    return {"retry": Intervention("retry"), "dense_steer": Intervention("dense_steer", alpha=a),
            "sparse_steer": Intervention("sparse_steer", lo, hi, alpha=a),
            "random_sparse": Intervention("random_sparse", rlo, rlo + width, alpha=a),
            "temp_lift": Intervention("temp_lift", lo, hi, lift=lift)}


def prompt_state(lm, prompt: str):
    """The prompt prefilled once: (its key-value cache, the logits after its last token). Teacher
    forcing and the interventions of a problem start from copies of it."""
    import torch
    from transformers import DynamicCache

    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        c = DynamicCache(config=lm.model.config)
        last = lm.model(input_ids=ids, past_key_values=c, use_cache=True).logits[:, -1].float()
    return c, last, ids.shape[1]


def _expand(state, n_rows: int):
    import copy

    c, last, _ = state
    c = copy.deepcopy(c)
    c.batch_repeat_interleave(n_rows)
    return c, last.repeat(n_rows, 1)


def teacher_forced(lm_s, lm_a, prompt: str, texts: Sequence[str], temperature: float, top_k: int,
                   states: Mapping[str, Any] | None = None) -> list[dict]:
    """J (and its parts) and S's logit variance at every token of each failed answer: one
    forward of each model over the prompt (once) and the answers (right padded), no generation."""
    import torch

    tok = lm_s.tokenizer
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    n = max([len(a) for a in a_ids] + [0])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # the prompt is prefilled once per model and its cache repeated for every answer; the answers
    # are right padded, so padding never precedes a real token
    ids = torch.full((len(texts), max(n, 1)), pad, dtype=torch.long)
    mask = torch.zeros((len(texts), len(p_ids) + max(n, 1)), dtype=torch.long)
    mask[:, :len(p_ids)] = 1
    for i, a in enumerate(a_ids):
        ids[i, :len(a)] = torch.tensor(a, dtype=torch.long)
        mask[i, len(p_ids):len(p_ids) + len(a)] = 1
    states = dict(states or {})

    def forward(lm, key):
        c, last = _expand(states.get(key) or prompt_state(lm, prompt), len(texts))
        lg = lm.model(input_ids=ids, attention_mask=mask, past_key_values=c, use_cache=True).logits.float()
        # position t is predicted by the logits after token t-1 (the prompt's last token for t = 0)
        return torch.cat([last[:, None], lg[:, :-1]], 1).numpy()

    with torch.inference_mode():
        ls = forward(lm_s, "s")
        la = ls if lm_a is lm_s else forward(lm_a, "a")
    out = []
    for i, a in enumerate(a_ids):
        sl = slice(0, len(a))  # the positions that predict the answer's tokens
        v = min(ls.shape[-1], la.shape[-1])
        s, r = ls[i, sl, :v], la[i, sl, :v]
        sc = rf.token_scores(rf.log_softmax(s, temperature), rf.log_softmax(r, temperature), a, top_k)
        out.append({**{k: v.tolist() for k, v in sc.items()}, "logit_var": s.var(axis=1).tolist(),
                    "tokens": [tok.decode([t]) for t in a]})
    return out


def generate_interventions(lm_s, lm_a, prompt: str, interventions: Mapping[str, Intervention], *, n: int,
                           max_new_tokens: int, temperature: float, seed: int, stop: Sequence[str] = (),
                           states: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """``n`` answers per intervention, all in one batch: each model prefills the prompt once and
    its cache is repeated for every row; every row samples exactly ``max_new_tokens`` tokens
    (equal sampled tokens for every intervention; the loop ends early only once every row has
    written end-of-sequence), then is cut at end-of-sequence or a stop string."""
    import torch

    from ..generation.backends import _eos_ids, cut_at_stop

    tok = lm_s.tokenizer
    names = list(interventions)
    rows = [nm for nm in names for _ in range(n)]
    gen = torch.Generator().manual_seed(int(seed))
    eos = _eos_ids(lm_s.model, tok)
    # A runs only on the rows that read its logits (the steers), and not at all when A is S
    steer = torch.tensor([i for i, r in enumerate(rows) if interventions[r].kind in STEERS and lm_a is not lm_s], dtype=torch.long)

    states = dict(states or {})
    with torch.inference_mode():
        cache_s, ls = _expand(states.get("s") or prompt_state(lm_s, prompt), len(rows))
        cache_a, la_rows = _expand(states.get("a") or prompt_state(lm_a, prompt), len(steer)) if len(steer) else (None, None)
        out, done = [], torch.zeros(len(rows), dtype=torch.bool)
        for step in range(max_new_tokens):
            la = ls.clone()
            if len(steer):
                v = min(ls.shape[-1], la_rows.shape[-1])
                la[steer, :v] = la_rows[:, :v]
            z = torch.stack([interventions[r](step, ls[i], la[i], temperature) for i, r in enumerate(rows)])
            nxt = torch.multinomial(torch.softmax(z, -1), 1, generator=gen)
            out.append(nxt)
            done |= torch.isin(nxt[:, 0], torch.tensor(eos))
            if bool(done.all()):  # every row has ended: nothing after an end-of-sequence is read
                break
            ls = lm_s.model(input_ids=nxt, past_key_values=cache_s, use_cache=True).logits[:, -1].float()
            if len(steer):
                la_rows = lm_a.model(input_ids=nxt[steer], past_key_values=cache_a, use_cache=True).logits[:, -1].float()
    new = torch.cat(out, 1).numpy()
    texts: dict[str, list[str]] = {nm: [] for nm in names}
    for r, seq in zip(rows, new):
        hit = np.flatnonzero(np.isin(seq, eos))
        text = tok.decode(seq[:hit[0]] if len(hit) else seq, skip_special_tokens=True)
        cut = cut_at_stop(text, stop)
        texts[r].append(text if cut is None else cut)
    return texts


def failed_problems(problems: pd.DataFrame, run, params: Mapping[str, Any]) -> pd.DataFrame:
    """S's failed problems: most of its K rollouts wrong; a seeded subset of at most
    ``recover_n_problems`` of them."""
    s = run.summary
    failed = s[s["success_rate"] < 0.5]["problem_id"]
    df = problems[problems["problem_id"].isin(failed)].merge(s[["problem_id", "success_rate", "pass@1"]
                                                               + [c for c in s.columns if c == f"pass@{int(params['k'])}"]],
                                                             on="problem_id")
    n = int(params["recover_n_problems"])
    return df.sample(n=min(n, len(df)), random_state=int(params["seed"])).sort_values("problem_id").reset_index(drop=True)


def recover_stage(params: Mapping[str, Any], progress: bool = True) -> dict[str, Any]:
    """Chapter 9's data: for each failed problem of S, its failed traces' J, the features, and
    every intervention's answers on two independent seeds (``regime``: defines the regimes;
    ``eval``: measures rescue, so a problem's regime never decides its own rescue). Resumable:
    one JSON file per problem under a folder keyed by everything that determines it."""
    from tqdm.auto import tqdm

    from ..models.registry import load_model
    from ..generation.pipeline import rollout_stage, rollouts_for_models, sampling_config

    problems, runs, _ = rollout_stage(params)
    S, A = params["recover_specialist"], params["recover_reference"]
    run = runs[S] if S in runs else rollouts_for_models(problems, [S], sampling_config(params), backend=params["backend"],
                                                        model_source=params["model_source"])[S]
    lm_s = load_model(S, source=params["model_source"])
    lm_a = lm_s if A == S else load_model(A, source=params["model_source"])
    if lm_a.tokenizer.get_vocab() != lm_s.tokenizer.get_vocab():
        raise ValueError(f"{S} and {A} do not share a tokenizer; the junction score compares their token probabilities")
    fp = failed_problems(problems, run, params)
    keys = ("recover_top_k", "recover_window", "recover_best_of", "recover_temperature_lift", "recover_steer_alpha",
            "temperature", "max_new_tokens", "prompt_suffix", "system_prompt", "stop", "seed")
    key = store.stable_hash({"version": RECOVER_VERSION, "rollouts": run.dir.name, "S": lm_s.weights_sha256, "A": lm_a.weights_sha256,
                             "problems": fp["problem_id"].tolist(), **{k: params.get(k) for k in keys}})
    out_dir = store.data_dir() / "recover" / key
    T, rng = float(params["temperature"]), np.random.default_rng(int(params["seed"]))
    prompts = chat_prompts(lm_s.tokenizer, fp["question"].tolist(), params.get("prompt_suffix") or "", params.get("system_prompt"))
    records = []
    for i, (row, prompt) in enumerate(tqdm(list(zip(fp.itertuples(), prompts)), desc="recover", disable=not store.show_progress(progress))):
        path = out_dir / f"problem-{i:04d}.json"
        ivs_rng = np.random.default_rng(rng.integers(2**32))
        if store.chunk_ok(path):
            records.append(store.read_json(path))
            continue
        fails = run.rollouts[(run.rollouts["problem_id"] == row.problem_id) & ~run.rollouts["correct"].astype(bool)]
        states = {"s": prompt_state(lm_s, prompt)}
        states["a"] = states["s"] if lm_a is lm_s else prompt_state(lm_a, prompt)
        traces = teacher_forced(lm_s, lm_a, prompt, fails["text"].fillna("").tolist(), T, int(params["recover_top_k"]), states)
        feats = rf.problem_features(traces)
        top = int(np.argmax([max(t["J"]) if t["J"] else -1 for t in traces]))  # the problem's junction trace
        ivs = make_interventions(traces[top]["J"], params, ivs_rng)
        rec = {"problem_id": row.problem_id, "source": row.source, "answer": str(row.answer),
               "success_rate": float(row.success_rate), **feats, "traces": traces, "junction_trace": top,
               "windows": {k: [v.lo, v.hi] for k, v in ivs.items()}}
        # 2 * best_of answers per intervention in one batch: the first half sets the regime, the
        # second (independent samples) measures rescue
        nb = int(params["recover_best_of"])
        texts = generate_interventions(lm_s, lm_a, prompt, ivs, n=2 * nb, max_new_tokens=int(params["max_new_tokens"]),
                                       temperature=T, seed=int(params["seed"]) * 1000 + i, stop=params.get("stop") or (),
                                       states=states)
        for phase, part in (("regime", slice(0, nb)), ("eval", slice(nb, 2 * nb))):
            rec[phase] = {k: {"texts": v[part], "rescued": any(maths.grade(t, str(row.answer)).correct for t in v[part])}
                          for k, v in texts.items()}
        store.write_chunk(path, json.dumps(rec).encode(), metadata={"versions": store.versions()})
        records.append(rec)
    return {"problems": fp, "records": records, "dir": out_dir, "specialist": S, "reference": A,
            "sources": {S: lm_s.source, A: lm_a.source}}


def results_table(records: Sequence[Mapping[str, Any]], seed: int = 0) -> pd.DataFrame:
    """One row per failed problem: features, z-scores, the regime (regime seed), the rule's pick,
    and rescue on the eval seed by each intervention, the rule, a random intervention and the
    best single intervention (chosen on the regime seed, ties to the first of ``BOUNDED``: dense
    steer, sparse steer, random sparse steer, temperature lift), named in ``df.attrs``."""
    df = pd.DataFrame([{k: r[k] for k in ("problem_id", "source", "success_rate", *rf.FEATURES)} for r in records])
    if df.empty:
        return df
    Z = rf.zscores(df[list(rf.FEATURES)].to_numpy())
    for j, f in enumerate(rf.FEATURES):
        df[f"z_{f}"] = Z[:, j]
    df["rule"] = rf.route(Z)
    df["regime"] = [rf.regime({k: v["rescued"] for k, v in r["regime"].items()}) for r in records]
    for k in rf.INTERVENTIONS:
        df[f"regime_{k}"] = [bool(r["regime"][k]["rescued"]) for r in records]
        df[f"rescue_{k}"] = [bool(r["eval"][k]["rescued"]) for r in records]
    # the best single intervention: the bounded one that rescued most problems on the regime seed
    # (never the eval seed, where it is scored); a tie goes to the one listed first in rf.BOUNDED
    best = max(rf.BOUNDED, key=lambda k: (df[f"regime_{k}"].mean(), -rf.BOUNDED.index(k)))
    df.attrs["best_single"] = best
    rng = np.random.default_rng(seed)
    df["random_pick"] = rng.choice(list(rf.BOUNDED), size=len(df))
    df["rescue_rule"] = [bool(r["eval"][p]["rescued"]) for r, p in zip(records, df["rule"])]
    df["rescue_random"] = [bool(r["eval"][p]["rescued"]) for r, p in zip(records, df["random_pick"])]
    df["rescue_best_single"] = df[f"rescue_{best}"]
    # the router that could explain the rule away: retry where chapter 1 ever succeeded, else the
    # best single intervention (the success rate alone, no junction features)
    df["rescue_rate_router"] = np.where(df["success_rate"] > 0, df["rescue_retry"], df[f"rescue_{best}"])
    df["steerable_hard"] = ~df["regime_retry"]
    return df


ANCESTORS = {"qwen2.5-math-1.5b": "Qwen/Qwen2.5-Math-1.5B", "qwen2.5-math-7b": "Qwen/Qwen2.5-Math-7B"}


def reference_kind(specialist: str, reference: str) -> str:
    """'itself', 'ancestor' (the paper's setting) or 'other' (a model sharing the tokenizer)."""
    if reference == specialist:
        return "itself"
    return "ancestor" if ANCESTORS.get(specialist) == reference else "other"


def reference_note(specialist: str, reference: str) -> str:
    """What the reference model is, so no reader mistakes a sibling for the paper's ancestor."""
    if reference == specialist:
        return (f"The reference is the specialist itself ({specialist}): Delta_path = G_cov = J = 0 at every token, "
                "so spread and concentration are 0 everywhere, the junction sits at the first token, and only "
                "the logit dispersion there varies between problems.")
    if ANCESTORS.get(specialist) == reference:
        return f"The reference {reference} is the base model that {specialist} was post-trained from: the paper's setting."
    return (f"**The reference {reference} is not the ancestor of {specialist}.** No base/instruct pair that shares a "
            "tokenizer ships offline, so the reference is the nearest model that does (here a larger sibling). "
            "J therefore measures where the specialist departs from another model of its family, not what "
            "post-training changed, and 'steering toward A' means toward that model.")
