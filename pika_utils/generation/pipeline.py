"""What a chapter calls: the problem set and the rollouts of a profile, computed once and
reused by every later chapter through the content-keyed store."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..core import store

from ..problems import table, tasks
from ..problems.table import rank_sample
from .rollouts import RolloutRun, run_rollouts
from .sampling import SamplingConfig


def problem_set(sources: Mapping[str, Any] | Sequence[str], split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                seed: int = 0, out_root: Path | None = None) -> pd.DataFrame:
    """Load, validate and split the problems; write them once under a folder keyed by their
    content, and return the table with its folder in ``df.attrs['dir']``."""
    df = tasks.load_problems(sources, seed=seed)
    df = table.make_splits(df, fractions=tuple(split_fractions), seed=seed)
    key = store.stable_hash({"problems": df[["problem_id", "question", "answer", "split"]].to_dict(orient="list")})
    out = Path(out_root or store.data_dir() / "problems") / key
    table.write_problem_set(df, out)
    df.attrs["dir"] = str(out)
    return df


def sampling_config(params: Mapping[str, Any]) -> SamplingConfig:
    """A SamplingConfig from a chapter's parameters (names as in the profiles)."""
    return SamplingConfig(
        k=int(params["k"]), temperature=float(params["temperature"]), top_p=float(params["top_p"]),
        max_new_tokens=int(params["max_new_tokens"]), prompt_suffix=params.get("prompt_suffix") or "",
        system_prompt=params.get("system_prompt"), seed=int(params["seed"]),
        chunk_size=int(params["chunk_size"]), stop=tuple(params.get("stop") or ()),
    )


def subset(problems: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded subset of at most ``limit`` problems drawn in proportion from every split (a
    problem keeps its split, growing ``limit`` only adds problems); all of them when None."""
    if limit is None or limit >= len(problems):
        return problems
    frac = limit / len(problems)
    # salted: the sources' own limits ranked by the same hash, so unsalted this subset would take
    # every problem a source sampled (all 40 MATH-500 and 15 of 40 GSM8K, against 52 of 260 products)
    parts = [rank_sample(g, max(2, round(frac * len(g))), seed, salt="subset") for _, g in problems.groupby("split")]
    out = pd.concat(parts, ignore_index=True).sort_values("problem_id").reset_index(drop=True)
    out.attrs = dict(problems.attrs)
    return out


def model_problems(problems: pd.DataFrame, model: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """The problems ``model`` runs on: all, or the subset its ``model_limits`` entry allows (a
    large model on a small machine answers fewer problems; the same ones in every chapter)."""
    return subset(problems, (params.get("model_limits") or {}).get(model), int(params.get("seed", 0)))


#: vLLM engine arguments a profile may set (profile key -> vLLM's name); engines scale past one GPU.
VLLM_ENGINE_KEYS = {"vllm_tensor_parallel_size": "tensor_parallel_size",
                    "vllm_data_parallel_size": "data_parallel_size"}


def vllm_engine_args(params: Mapping[str, Any]) -> dict[str, int]:
    """The profile's vLLM parallelism, passed through to ``vllm.LLM``. Values of 1 (or absent)
    are left out, so single-GPU runs keep the rollout keys they had; other backends reject them."""
    args = {v: 1 if params.get(k) is None else int(params[k]) for k, v in VLLM_ENGINE_KEYS.items()}
    bad = [k for k, v in VLLM_ENGINE_KEYS.items() if args[v] < 1]
    if bad:
        raise ValueError(f"{bad} must be positive integers")
    args = {k: v for k, v in args.items() if v != 1}
    if args and params.get("backend") != "vllm":
        raise ValueError(f"{sorted(args)} apply to backend 'vllm' only, not {params.get('backend')!r}")
    return args


def _backend_for(model: str, backend: str, model_source: str, engine_args: Mapping[str, int] | None,
                 revision: str | None = None):
    """The backend name as before, or a vLLM engine built with the profile's parallelism."""
    if backend != "vllm" or not engine_args:
        return backend
    from .rollouts import make_backend

    pin = {"revision": revision} if revision else {}
    return make_backend(model, "vllm", source=model_source, **pin, **dict(engine_args))


def revision_of(model: str, params: Mapping[str, Any]) -> str | None:
    """The hub commit the profile pins for ``model`` (``model_revisions``), or None."""
    return (params.get("model_revisions") or {}).get(model)


def rollouts_for_models(problems: pd.DataFrame, models: Sequence[str], cfg: SamplingConfig, *,
                        backend: str = "transformers", model_source: str = "auto",
                        prices: Mapping | None = None, limits: Mapping[str, int] | None = None,
                        engine_args: Mapping[str, int] | None = None,
                        revisions: Mapping[str, str] | None = None, read=None) -> dict[str, RolloutRun]:
    """Run (or reuse) every model's rollouts on the same problems (or its ``limits`` subset);
    ``read`` (see ``run_rollouts``) stores chapter 2's activations from the sampling prefill."""
    rev = dict(revisions or {})
    return {m: run_rollouts(subset(problems, (limits or {}).get(m), cfg.seed), m, cfg,
                            backend=_backend_for(m, backend, model_source, engine_args, rev.get(m)),
                            source=model_source, revision=rev.get(m), price_overrides=dict(prices or {}),
                            read=read)
            for m in models}


def combined_summary(runs: Mapping[str, RolloutRun]) -> pd.DataFrame:
    return pd.concat([r.summary for r in runs.values()], ignore_index=True)


def throughput(run: RolloutRun) -> dict[str, float]:
    """Rollouts per second over the chunks this run generated (reads each chunk's sidecar)."""
    secs = [store.read_json(p).get("seconds", 0.0) for p in sorted((run.dir / "chunks").glob("chunk-*.json"))]
    total = float(sum(secs))
    return {"model": run.model, "rollouts": len(run.rollouts), "seconds": total,
            "rollouts_per_s": len(run.rollouts) / total if total else float("nan")}


def rollout_stage(params: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, RolloutRun], pd.DataFrame]:
    """Chapter 1's outputs from its parameters: the problems, each model's run and the combined
    per-problem summary (computed once, then read back from the store)."""
    problems = problem_set(params["problem_sources"], split_fractions=params["split_fractions"], seed=params["seed"])
    runs = rollouts_for_models(problems, params["models"], sampling_config(params), backend=params["backend"],
                               model_source=params["model_source"], prices=params.get("prices"),
                               limits=params.get("model_limits"), engine_args=vllm_engine_args(params),
                               revisions=params.get("model_revisions"),
                               read=(lambda lm: extraction_config(params, lm)) if reads_while_sampling(params) else None)
    return problems, runs, combined_summary(runs)


def reads_while_sampling(params: Mapping[str, Any]) -> bool:
    """Whether chapter 1's prefill stores chapter 2's activations (one forward of each prompt
    for both): with the transformers backend, run locally, batched as the rollouts' chunks."""
    return (params.get("backend", "transformers") == "transformers" and not params.get("ndif_remote")
            and params.get("extract_token_budget") is None)


def extraction_config(params: Mapping[str, Any], lm, *, sampled: bool = True):
    """What chapter 2 reads from ``lm``, from the profile: layers, dtype, batching and the pooled
    probes' token layers (fractions of the depth, so one profile fits models of different depths).
    ``sampled``: batched as the rollouts' chunks, whose prefill stores them."""
    from ..activations.eoi import ExtractionConfig

    n_layers = int(lm.model.config.num_hidden_layers)
    token_layers = sorted({int(round(f * n_layers)) for f in params.get("token_layer_fracs") or ()})
    chunks = int(params["chunk_size"]) if sampled and reads_while_sampling(params) else None
    return ExtractionConfig(layers=params.get("extract_layers"), dtype=params.get("extract_dtype", "float32"),
                            batch_size=int(params.get("extract_batch_size", 16)), token_layers=tuple(token_layers),
                            remote=bool(params.get("ndif_remote", False)),
                            token_budget=_opt_int(params.get("extract_token_budget")),  # None: extract_batch_size
                            rollout_chunks=chunks)


def activations_for(problems: pd.DataFrame, model: str, params: Mapping[str, Any]):
    """EOI activations (and, for pooled probes, every prompt token at ``token_layers``) of
    ``model`` on the problems, with the same prompt the rollouts used."""
    from ..activations.eoi import extract_activations, plan_set
    from ..models.registry import load_model

    lm = load_model(model, source=params["model_source"], revision=revision_of(model, params))
    problems = model_problems(problems, model, params)
    prompt = dict(prompt_suffix=params.get("prompt_suffix") or "", system_prompt=params.get("system_prompt"))
    cfg = extraction_config(params, lm)
    if cfg.rollout_chunks is not None:
        sp = plan_set(problems, lm, cfg=cfg, **prompt)
        if (sp.out / "meta.json").exists():
            if (done := sp.stored()) is not None:
                return lm, done  # stored by chapter 1's prefill (a damaged chunk: repaired below)
        elif not sp.started():
            cfg = extraction_config(params, lm, sampled=False)  # no set from the sampling prefill: by length
        # else: the prefill stored chunks but its run stopped before the set's manifest (killed
        # at the very end): this set is completed, its stored chunks checked and kept, not redone
    return lm, extract_activations(problems, lm, cfg=cfg, **prompt)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def budget_config(params: Mapping[str, Any], budget: int) -> SamplingConfig:
    """Sampling settings of a budget-forced run: the chapter's sampling parameters with the
    reasoning prompt, K and answer cue of the budget experiment."""
    import dataclasses

    return dataclasses.replace(
        sampling_config(params), k=int(params["budget_k"]), prompt_suffix=params["budget_suffix"],
        budget=int(budget), answer_cue=params["answer_cue"], answer_tokens=int(params["answer_tokens"]),
        think_close=params.get("think_close") or "", system_prompt=params.get("budget_system_prompt"),
    )


def budget_problems(problems: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """The problems the budget-forced runs see: all of them, or a seeded subset of
    ``budget_limit`` drawn in proportion from every split (a problem keeps its split)."""
    return subset(problems, params.get("budget_limit"), int(params["seed"]))


def budget_runs(problems: pd.DataFrame, model: str, params: Mapping[str, Any],
                budgets: Sequence[int]) -> dict[int, RolloutRun]:
    """One budget-forced rollout run per budget, same problems and prompt (so one extraction)."""
    problems = budget_problems(problems, params)
    be = _backend_for(model, params["backend"], params["model_source"], vllm_engine_args(params),
                      revision_of(model, params))
    return {int(b): run_rollouts(problems, model, budget_config(params, b), backend=be, revision=revision_of(model, params),
                                 source=params["model_source"], price_overrides=dict(params.get("prices") or {}))
            for b in budgets}


def reasoning_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The chapter's parameters with the reasoning prompt, for extracting activations of the
    prompt that the budget-forced runs saw."""
    return {**params, "prompt_suffix": params["budget_suffix"], "system_prompt": params.get("budget_system_prompt")}
