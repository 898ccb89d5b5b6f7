"""K sampled rollouts per problem, graded, written in resumable chunks.

One interface, two backends: ``transformers`` (batched ``generate``, CPU or GPU) and ``vllm``
(``SamplingParams(n=K)``, where vLLM is installed). A run's folder is keyed by a hash of the
model's weights, the problems, the prompt template and the sampling parameters; chunks are
planned deterministically and each is seeded from its own problem ids, so a run killed at any
point and started again produces exactly the rows an uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from . import grading, prices, store
from .budget import check_budget, generate_with_budget
from .metrics import pass_at_k
from .prompts import chat_prompts

log = logging.getLogger(__name__)

ROLLOUT_COLUMNS = (
    "problem_id", "model", "sample", "text", "extracted", "correct", "grade_reason",
    "prompt_tokens", "output_tokens", "finish_reason", "thinking_tokens", "answer_tokens", "budget_hit",
)
#: Sampling fields that only matter with a reasoning budget (left out of the key without one).
BUDGET_FIELDS = ("budget", "answer_cue", "answer_tokens", "answer_temperature", "think_close")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything about sampling that changes the rollouts (and so the run's key)."""

    k: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 16
    prompt_suffix: str = ""
    system_prompt: str | None = None
    seed: int = 0
    chunk_size: int = 16  # problems per chunk (and per generate call)
    # budget forcing (chapter 7): think for at most `budget` tokens, then close the thought,
    # append the answer cue and generate at most `answer_tokens`; None: plain sampling
    budget: int | None = None
    answer_cue: str = "\nFinal answer: "
    answer_tokens: int = 8
    answer_temperature: float = 0.0
    think_close: str = ""  # e.g. "\n</think>\n\n" for models with a thinking section

    def key(self) -> dict:
        """The fields that determine the rollouts (budget fields only when a budget is set)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if self.budget is not None or k not in BUDGET_FIELDS}

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.temperature == 0 and self.k > 1:
            raise ValueError("temperature 0 is greedy: all k samples would be identical; use k=1")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"reasoning budget must be >= 0 tokens, got {self.budget}")
        if self.budget is not None and self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1 with a budget, got {self.answer_tokens}")


@dataclass
class Completion:
    text: str
    output_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)
    thinking_tokens: int = 0  # budget forcing: tokens of thought before the answer cue
    answer_tokens: int | None = None  # budget forcing: tokens after the cue (else output_tokens)
    budget_hit: bool = False
    answer_text: str | None = None  # the part that is graded (budget forcing: after the cue)


class Backend(Protocol):
    """Generates ``cfg.k`` completions for each prompt; ``identity`` keys the run's cache."""

    name: str

    def identity(self) -> dict: ...
    def count_tokens(self, prompts: Sequence[str]) -> list[int]: ...
    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]: ...


class TransformersBackend:
    """Batched sampling with ``model.generate``; left padding so every prompt ends where
    generation starts."""

    name = "transformers"

    def __init__(self, lm, shared_prefill: bool = True) -> None:
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.model = lm.model
        self.shared_prefill = shared_prefill

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.lm.name, "weights_sha256": self.lm.weights_sha256,
                "chat_template": self.tokenizer.chat_template}

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]:
        """K samples per prompt. With ``shared_prefill`` each prompt is prefilled once and its
        key-value cache copied K times, instead of prefilling K identical copies."""
        import torch
        from transformers import DynamicCache

        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        eos_ids = _eos_ids(self.model, tok)
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens, do_sample=sample,
            pad_token_id=tok.pad_token_id, eos_token_id=eos_ids,
        )
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        with torch.inference_mode():
            if self.shared_prefill and cfg.k > 1 and ids.shape[1] > 1:
                # prefill all but the last prompt token once, then repeat the cache K times;
                # generate() processes only the uncached last token onwards
                cache = DynamicCache(config=self.model.config)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                           past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(cfg.k)
                torch.manual_seed(seed)
                out = self.model.generate(input_ids=ids.repeat_interleave(cfg.k, 0),
                                          attention_mask=mask.repeat_interleave(cfg.k, 0),
                                          past_key_values=cache, **kwargs)
            else:
                torch.manual_seed(seed)
                out = self.model.generate(**enc, num_return_sequences=cfg.k, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:].cpu().numpy()
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            row = []
            for j in range(cfg.k):
                ids = new[i * cfg.k + j]
                stop = np.flatnonzero(np.isin(ids, eos_ids))
                n = int(stop[0]) + 1 if len(stop) else len(ids)
                text = tok.decode(ids[:n], skip_special_tokens=True)
                row.append(Completion(text, n, "stop" if len(stop) else "length"))
            results.append(row)
        return results


def _eos_ids(model, tok) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


class VLLMBackend:
    """vLLM sampling with ``SamplingParams(n=k)``: the paper's setting on GPUs."""

    name = "vllm"

    def __init__(self, model_id: str, **llm_kwargs) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "backend='vllm' needs vLLM, which is a CUDA build: create the GPU environment "
                "with `conda env create -f environment.yml` (see README, 'GPUs and vLLM')"
            ) from e
        self.model_id = model_id
        self.llm = LLM(model=model_id, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.llm_kwargs = llm_kwargs

    def identity(self) -> dict:
        revision = None
        try:
            from huggingface_hub import model_info
            revision = model_info(self.model_id).sha
        except Exception as e:  # offline: key by id only, and say so
            log.warning("could not resolve the hub revision of %s (%s); keying by id only", self.model_id, e)
        return {"backend": self.name, "model": self.model_id, "revision": revision,
                "chat_template": self.tokenizer.chat_template, "llm_kwargs": self.llm_kwargs}

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_tokens=cfg.max_new_tokens, seed=seed)
        outs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [[Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                 for c in o.outputs] for o in outs]


def make_backend(model: str, backend: str = "transformers", *, source: str = "auto",
                 device: str | None = None, dtype: str = "float32", **kwargs) -> Backend:
    """Resolve a model name through the registry and wrap it in the chosen backend."""
    if backend == "transformers":
        from .models import load_model
        return TransformersBackend(load_model(model, source=source, device=device, dtype=dtype))
    if backend == "vllm":
        from .models import MODEL_REGISTRY
        spec = MODEL_REGISTRY.get(model)
        hub_id = spec.hub_id if spec is not None else model
        if hub_id is None:
            raise ValueError(f"model {model!r} has no hub id, so vLLM cannot load it; use backend='transformers'")
        return VLLMBackend(hub_id, dtype=dtype if dtype != "float32" else "auto", **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose 'transformers' or 'vllm'")


# --------------------------------------------------------------------------------------------
# The resumable run


@dataclass
class RolloutRun:
    """A finished run: one row per rollout, one row per problem, and where they live."""

    model: str
    dir: Path
    rollouts: pd.DataFrame
    summary: pd.DataFrame
    meta: dict = field(default_factory=dict)


def _problems_key(problems: pd.DataFrame) -> str:
    cols = ["problem_id", "question", "answer"]
    return store.stable_hash(problems[cols].to_dict(orient="list"))


def _chunk_plan(problem_ids: Sequence[str], chunk_size: int) -> list[list[str]]:
    return [list(problem_ids[i:i + chunk_size]) for i in range(0, len(problem_ids), chunk_size)]


def _chunk_seed(seed: int, ids: Sequence[str]) -> int:
    return int(store.stable_hash([seed, list(ids)]), 16) % (2**31 - 1)


def _check_problems(problems: pd.DataFrame) -> pd.DataFrame:
    missing = {"problem_id", "question", "answer"} - set(problems.columns)
    if missing:
        raise ValueError(f"problems table lacks columns {sorted(missing)}")
    dup = problems["problem_id"][problems["problem_id"].duplicated()].unique()
    if len(dup):
        raise ValueError(f"duplicate problem_id(s) {list(dup[:5])}: make ids unique before sampling")
    empty = problems["question"].isna() | (problems["question"].astype(str).str.strip() == "")
    if empty.any():
        raise ValueError(f"empty question for problem_id(s) {list(problems.loc[empty, 'problem_id'][:5])}")
    no_ans = problems["answer"].isna() | (problems["answer"].astype(str).str.strip() == "")
    if no_ans.any():
        raise ValueError(f"no answer for problem_id(s) {list(problems.loc[no_ans, 'problem_id'][:5])}; "
                         "every problem needs a gold answer to be graded")
    return problems.sort_values("problem_id").reset_index(drop=True)


def run_rollouts(
    problems: pd.DataFrame,
    model: str,
    cfg: SamplingConfig,
    *,
    backend: Backend | str = "transformers",
    source: str = "auto",
    price_overrides: dict | None = None,
    out_root: Path | None = None,
    progress: bool = True,
) -> RolloutRun:
    """Sample, grade and store ``cfg.k`` rollouts per problem, reusing or resuming a run with
    the same key. Returns every rollout and the per-problem summary."""
    problems = _check_problems(problems)
    if isinstance(backend, str) and "/" not in model:
        from .models import resolve_spec
        resolve_spec(model)  # an unknown name fails here, listing the registered ones
    prices.get_price(model, price_overrides)  # fail before any sampling if the price is missing
    be = make_backend(model, backend, source=source) if isinstance(backend, str) else backend
    identity = be.identity()
    if cfg.budget is not None:
        context = getattr(getattr(getattr(be, "model", None), "config", None), "max_position_embeddings", None)
        longest = max(be.count_tokens(chat_prompts(be.tokenizer, problems["question"].tolist(), cfg.prompt_suffix, cfg.system_prompt)))
        check_budget(cfg.budget, cfg.answer_cue, be.tokenizer, context, cfg.answer_tokens, longest)
    key_obj = {"identity": identity, "problems": _problems_key(problems), "cfg": cfg.key()}
    key = store.stable_hash(key_obj)
    run_dir = Path(out_root or store.data_dir() / "rollouts") / f"{model}-{key}"
    final = run_dir / "rollouts.parquet"
    if final.exists():
        return _finish(run_dir, model, problems, cfg, price_overrides, reuse=True)

    meta = {
        "model": model, "key": key, "backend": identity["backend"],
        "model_info": getattr(getattr(be, "lm", None), "info", lambda: identity)(),
        "sampling": dataclasses.asdict(cfg), "n_problems": len(problems),
        "problems_hash": key_obj["problems"], "versions": store.versions(), "created": store.now_iso(),
    }
    meta_path = run_dir / "meta.json"
    if meta_path.exists():
        old = store.read_json(meta_path)
        if old.get("key") != key:
            raise ValueError(f"{meta_path} belongs to run {old.get('key')}, not {key}; move the folder aside")
    else:
        store.write_json(meta_path, meta)

    plan = _chunk_plan(problems["problem_id"].tolist(), cfg.chunk_size)
    chunk_dir = run_dir / "chunks"
    todo = [i for i in range(len(plan)) if not _chunk_done(chunk_dir, i, plan[i], cfg.k)]
    by_id = problems.set_index("problem_id")
    from tqdm import tqdm

    bar = tqdm(total=len(problems) * cfg.k, initial=(len(problems) - sum(len(plan[i]) for i in todo)) * cfg.k,
               desc=f"rollouts {model}", unit="rollout", disable=not progress)
    for i in todo:
        ids = plan[i]
        sub = by_id.loc[ids]
        prompts = chat_prompts(be.tokenizer, sub["question"].tolist(), cfg.prompt_suffix, cfg.system_prompt)
        t0 = time.perf_counter()
        if cfg.budget is None:
            completions = be.generate(prompts, cfg, _chunk_seed(cfg.seed, ids))
        else:
            completions = generate_with_budget(be, prompts, cfg, _chunk_seed(cfg.seed, ids))
        seconds = time.perf_counter() - t0
        n_prompt = be.count_tokens(prompts)
        rows = []
        for pid, gold, comps, npt in zip(ids, sub["answer"], completions, n_prompt):
            for j, c in enumerate(comps):
                rows.append({"problem_id": pid, "model": model, "sample": j, "text": c.text, "answer": gold,
                             "graded": c.answer_text if c.answer_text is not None else c.text,
                             "prompt_tokens": npt, "output_tokens": c.output_tokens, "finish_reason": c.finish_reason,
                             "thinking_tokens": c.thinking_tokens, "budget_hit": c.budget_hit,
                             "answer_tokens": c.answer_tokens if c.answer_tokens is not None else c.output_tokens})
        chunk = grading.grade_frame(pd.DataFrame(rows), output_col="graded", gold_col="answer")
        chunk = chunk[list(ROLLOUT_COLUMNS)]
        store.write_parquet(chunk_dir / f"chunk-{i:05d}.parquet", chunk,
                            metadata={"chunk": i, "problems": ids, "seconds": seconds, "device": str(getattr(be, "model", None) and be.model.device)})
        bar.update(len(chunk))
    bar.close()

    parts = [store.read_parquet(chunk_dir / f"chunk-{i:05d}.parquet") for i in range(len(plan))]
    rollouts = pd.concat(parts, ignore_index=True)
    store.write_parquet(final, rollouts)
    return _finish(run_dir, model, problems, cfg, price_overrides, reuse=False)


def _chunk_done(chunk_dir: Path, i: int, ids: list[str], k: int) -> bool:
    """True if chunk ``i`` is on disk and holds exactly the planned rows; an unreadable or
    mismatched file is an error that names it and is left untouched."""
    path = chunk_dir / f"chunk-{i:05d}.parquet"
    if not path.exists():
        return False
    df = store.read_parquet(path)
    expected = sorted((pid, j) for pid in ids for j in range(k))
    got = sorted(zip(df["problem_id"], df["sample"]))
    if got != expected:
        raise ValueError(
            f"{path} does not hold the rows this run plans for it ({len(got)} rows, {len(expected)} expected). "
            "Nothing was changed; move the file aside and re-run to recompute that chunk."
        )
    return True


def _finish(run_dir: Path, model: str, problems: pd.DataFrame, cfg: SamplingConfig,
            price_overrides: dict | None, reuse: bool) -> RolloutRun:
    rollouts = store.read_parquet(run_dir / "rollouts.parquet")
    expected = len(problems) * cfg.k
    if len(rollouts) != expected or rollouts.duplicated(["problem_id", "sample"]).any():
        raise ValueError(f"{run_dir / 'rollouts.parquet'} has {len(rollouts)} rows, expected {expected} "
                         "unique (problem, sample) rows; move it aside to rebuild it from the chunks")
    summary = summarise(rollouts, problems, price_overrides=price_overrides)
    meta = store.read_json(run_dir / "meta.json")
    if not reuse:
        store.write_parquet(run_dir / "summary.parquet", summary, metadata=meta)
    log.info("%s rollouts for %s in %s", "reused" if reuse else "wrote", model, run_dir)
    return RolloutRun(model=model, dir=run_dir, rollouts=rollouts, summary=summary, meta=meta)


def summarise(rollouts: pd.DataFrame, problems: pd.DataFrame, *, price_overrides: dict | None = None,
              ks: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (model, problem): success rate, pass@k, majority-vote answer and its
    correctness, mean output tokens and cost from the price table."""
    rows = []
    for (model, pid), g in rollouts.groupby(["model", "problem_id"], sort=False):
        n, c = len(g), int(g["correct"].sum())
        kk = ks or sorted({1, *[2**i for i in range(1, 10) if 2**i <= n], n})
        maj = grading.majority_vote(g["extracted"].tolist())
        p_in, p_out = prices.get_price(model, price_overrides)
        cost = (g["prompt_tokens"] * p_in + g["output_tokens"] * p_out) / 1e6
        row = {"model": model, "problem_id": pid, "k": n, "n_correct": c, "success_rate": c / n}
        row.update({f"pass@{k}": pass_at_k(n, c, k) for k in kk if k <= n})
        row.update({
            "maj_answer": maj,
            "mean_output_tokens": float(g["output_tokens"].mean()),
            "prompt_tokens": int(g["prompt_tokens"].iloc[0]),
            "truncated_rate": float((g["finish_reason"] == "length").mean()),
            "cost_per_rollout": float(cost.mean()),
        })
        rows.append(row)
    out = pd.DataFrame(rows)
    gold = problems.set_index("problem_id")["answer"]
    out["maj_correct"] = [
        m is not None and grading.answers_equivalent(m, gold[pid]) for m, pid in zip(out["maj_answer"], out["problem_id"])
    ]
    keep = [c for c in ("source", "difficulty", "difficulty_kind", "split") if c in problems.columns]
    return out.merge(problems[["problem_id", *keep]], on="problem_id", how="left")
