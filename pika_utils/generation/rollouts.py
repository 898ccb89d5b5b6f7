"""K sampled rollouts per problem, graded, written in resumable chunks.

Any backend of ``backends`` samples them (``transformers`` or ``vllm``). A run's folder is keyed by a hash of the
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
from typing import Sequence

import pandas as pd

from ..grading import by_domain, maths


from ..core import prices

from ..core import store
from .backends import Backend, make_backend, transformers_identity
from .budget import check_budget, generate_with_budget
from ..core.metrics import pass_at_k
from ..core.prompts import chat_prompts
from .sampling import SamplingConfig

log = logging.getLogger(__name__)

ROLLOUT_COLUMNS = (
    "problem_id", "model", "sample", "text", "extracted", "correct", "grade_reason",
    "prompt_tokens", "output_tokens", "finish_reason", "thinking_tokens", "answer_tokens", "budget_hit",
)

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


def _prompt_tokens(be, problems: pd.DataFrame, cfg: SamplingConfig) -> pd.Series | None:
    """Every prompt's token count by problem id, tokenised once per run for the context check,
    the chunk plan and the stored rows (None: a backend without a tokenizer)."""
    if not (hasattr(be, "tokenizer") and hasattr(be, "count_tokens")):
        return None
    prompts = chat_prompts(be.tokenizer, problems["question"].tolist(), cfg.prompt_suffix, cfg.system_prompt)
    return pd.Series(be.count_tokens(prompts), index=problems["problem_id"].to_numpy())


def _length_order(problems: pd.DataFrame, n_tokens: pd.Series | None) -> list[str]:
    """Problem ids by prompt length (stable over sorted ids): a chunk of similar lengths pads
    little, and the activation set of the same chunks (``ExtractionConfig.rollout_chunks``)
    orders its batches the same way."""
    import numpy as np

    ids = sorted(problems["problem_id"].tolist())
    lengths = n_tokens.loc[ids].to_numpy() if n_tokens is not None else np.zeros(len(ids))
    return [ids[i] for i in np.argsort(lengths, kind="stable")]


def _chunk_plan(problem_ids: Sequence[str], chunk_size: int) -> list[list[str]]:
    return [list(problem_ids[i:i + chunk_size]) for i in range(0, len(problem_ids), chunk_size)]


def _chunk_seed(seed: int, ids: Sequence[str]) -> int:
    return int(store.stable_hash([seed, list(ids)]), 16) % (2**31 - 1)


def _check_problems(problems: pd.DataFrame, where: str = "problems table") -> pd.DataFrame:
    from ..problems.files import validate_questions

    problems = validate_questions(problems, where=where, answer_column="answer")
    return problems.sort_values("problem_id").reset_index(drop=True)


def run_rollouts(
    problems: pd.DataFrame,
    model: str,
    cfg: SamplingConfig,
    *,
    backend: Backend | str = "transformers",
    source: str = "auto",
    revision: str | None = None,
    price_overrides: dict | None = None,
    out_root: Path | None = None,
    progress: bool = True,
    read=None,
) -> RolloutRun:
    """Sample, grade and store ``cfg.k`` rollouts per problem, reusing or resuming a run with
    the same key. Returns every rollout and the per-problem summary. ``read(lm)``, an
    ``activations.ExtractionConfig`` with ``rollout_chunks``, also stores the activations of
    each chunk's prefill as that set's chunk (transformers backend, no budget)."""
    problems = _check_problems(problems)
    if isinstance(backend, str):
        from ..problems.files import check_prompt_chars, check_prompts_fit, file_rows
        from ..models.hints import context_hint
        from ..models.registry import resolve_spec
        resolve_spec(model)  # an unknown name, or a .gguf path that is no GGUF file, named here
        if backend == "transformers":  # counted with the tokenizer alone, before any weights load
            check_prompts_fit(problems["question"].tolist(), model, max_new_tokens=cfg.max_new_tokens,
                              prompt_suffix=cfg.prompt_suffix, system_prompt=cfg.system_prompt, source=source,
                              ids=problems["problem_id"].tolist(), rows=file_rows(problems))
        else:
            check_prompt_chars(problems["question"].tolist(), context_hint(model), ids=problems["problem_id"].tolist())
    prices.get_price(model, price_overrides)  # fail before any sampling if the price is missing
    checked = None
    if backend == "transformers":  # a stored run is found without loading the model's weights
        checked = _run_dir(_transformers_identity(model, source, revision), problems, cfg, model, out_root)
        if _final_ok(checked):
            return _finish(checked, model, problems, cfg, price_overrides, reuse=True)
    be = make_backend(model, backend, source=source, revision=revision) if isinstance(backend, str) else backend
    identity = be.identity()
    n_tokens = _prompt_tokens(be, problems, cfg)
    _check_prompt_lengths(be, n_tokens, cfg)  # before generation (and before the run's folder)
    if cfg.budget is not None:
        context = getattr(getattr(getattr(be, "model", None), "config", None), "max_position_embeddings", None)
        longest = int(n_tokens.max())
        check_budget(cfg.budget, cfg.answer_cue, be.tokenizer, context, cfg.answer_tokens, longest)
    run_dir = _run_dir(identity, problems, cfg, model, out_root)
    key = run_dir.name.rsplit("-", 1)[1]
    final = run_dir / "rollouts.parquet"
    if run_dir != checked and _final_ok(run_dir):  # a damaged final table is moved aside and rebuilt
        return _finish(run_dir, model, problems, cfg, price_overrides, reuse=True)

    meta = {
        "model": model, "key": key, "backend": identity["backend"],
        "model_info": getattr(getattr(be, "lm", None), "info", lambda: identity)(),
        "sampling": dataclasses.asdict(cfg), "n_problems": len(problems),
        "problems_hash": _problems_key(problems), "versions": store.versions(), "created": store.now_iso(),
    }
    meta_path = run_dir / "meta.json"
    if meta_path.exists():
        meta = store.read_json(meta_path)
        if meta.get("key") != key:
            raise ValueError(f"{meta_path} belongs to run {meta.get('key')}, not {key}; move the folder aside")
    else:
        store.write_json(meta_path, {**meta, "chunks": {}})  # the manifest, filled chunk by chunk

    plan = _chunk_plan(_length_order(problems, n_tokens), cfg.chunk_size)
    chunk_dir = run_dir / "chunks"
    manifest = _RunManifest(run_dir)
    todo = [i for i in range(len(plan)) if not _chunk_done(chunk_dir, i, plan[i], cfg.k, manifest)]
    acts = _activation_plan(read, be, problems, cfg, plan)  # None: nothing to read, or the set is complete
    by_id = problems.set_index("problem_id")
    from tqdm import tqdm

    bar = tqdm(total=len(problems) * cfg.k, initial=(len(problems) - sum(len(plan[i]) for i in todo)) * cfg.k,
               desc=f"rollouts {model}", unit="rollout", disable=not store.show_progress(progress))
    for i in todo:
        ids = plan[i]
        sub = by_id.loc[ids]
        prompts = chat_prompts(be.tokenizer, sub["question"].tolist(), cfg.prompt_suffix, cfg.system_prompt)
        t0 = time.perf_counter()
        if acts is not None and not acts[0].chunk_done(i):
            completions, tensors = be.generate_reading(prompts, cfg, _chunk_seed(cfg.seed, ids), acts[1])
            acts[0].write_chunk(i, tensors)
        elif cfg.budget is None:
            completions = be.generate(prompts, cfg, _chunk_seed(cfg.seed, ids))
        else:
            completions = generate_with_budget(be, prompts, cfg, _chunk_seed(cfg.seed, ids))
        seconds = time.perf_counter() - t0
        n_prompt = n_tokens.loc[ids].tolist() if n_tokens is not None else be.count_tokens(prompts)
        rows = []
        for pid, gold, comps, npt in zip(ids, sub["answer"], completions, n_prompt):
            for j, c in enumerate(comps):
                rows.append({"problem_id": pid, "model": model, "sample": j, "text": c.text, "answer": gold,
                             "graded": c.answer_text if c.answer_text is not None else c.text,
                             "prompt_tokens": npt, "output_tokens": c.output_tokens, "finish_reason": c.finish_reason,
                             "thinking_tokens": c.thinking_tokens, "budget_hit": c.budget_hit,
                             "answer_tokens": c.answer_tokens if c.answer_tokens is not None else c.output_tokens})
        chunk = by_domain.grade_frame(pd.DataFrame(rows), by_id, output_col="graded", gold_col="answer")
        chunk = chunk[list(ROLLOUT_COLUMNS)]
        path = store.write_parquet_chunk(chunk_dir / f"chunk-{i:05d}.parquet", chunk,
                                         metadata={"chunk": i, "problems": ids, "seconds": seconds,
                                                   "device": str(getattr(be, "model", None) and be.model.device)})
        manifest.record("chunks", path)
        bar.update(len(chunk))
    bar.close()

    if acts is not None and all(acts[0].chunk_done(c) for c in range(len(plan))):
        # before the final table: a run killed after it, whose resume reuses the table, would
        # otherwise leave the set without its manifest (chapter 2 also completes such a set)
        acts[0].finish(f"rollouts {run_dir.name} (sampling's prefill)")
    paths = [chunk_dir / f"chunk-{i:05d}.parquet" for i in range(len(plan))]
    for path in paths:  # each checked against the run's manifest just before it is read
        store.check_chunk_for_read(path, manifest.entries("chunks"), where=meta_path.name,
                                   fix="Run the same rollouts again: it is moved aside and recomputed.")
    rollouts = pd.concat([store.read_parquet(p) for p in paths], ignore_index=True)
    manifest.record("tables", store.write_parquet_chunk(final, rollouts))
    return _finish(run_dir, model, problems, cfg, price_overrides, reuse=False)


def _activation_plan(read, be, problems: pd.DataFrame, cfg: SamplingConfig, plan: list[list[str]]):
    """The activation set this run's prefill fills, and what to read, or None when it cannot:
    another backend, a budget run (other prompts), or chunks that are not the set's chunks."""
    if read is None or cfg.budget is not None or not hasattr(be, "generate_reading"):
        return None
    from ..activations.eoi import plan_set
    from ..activations.prefill_read import read_layout

    import numpy as np

    ecfg = read(be.lm) if callable(read) else read
    if ecfg.rollout_chunks != cfg.chunk_size or ecfg.remote:
        return None
    sp = plan_set(problems, be.lm, prompt_suffix=cfg.prompt_suffix, system_prompt=cfg.system_prompt, cfg=ecfg)
    ends = np.cumsum([len(b) for b in sp.plan])
    if [sp.meta["problem_ids"][e - len(b):e] for b, e in zip(sp.plan, ends)] != plan:
        return None  # not this run's chunks
    if (sp.out / "meta.json").exists():
        return None  # complete already
    return sp, read_layout(sp.layers, sp.n_pos, ecfg.token_layers, sp.dtype)


def _run_dir(identity: dict, problems: pd.DataFrame, cfg: SamplingConfig, model: str, out_root: Path | None) -> Path:
    """The run's folder, keyed by the backend's identity (weights, chat template), the problems
    and the sampling settings."""
    key = store.stable_hash({"identity": identity, "problems": _problems_key(problems), "cfg": cfg.key()})
    return Path(out_root or store.data_dir() / "rollouts") / f"{store.path_safe(model)}-{key}"


def _transformers_identity(model: str, source: str, revision: str | None) -> dict:
    """``TransformersBackend.identity`` from the weights' location and the tokenizer alone."""
    from transformers import AutoTokenizer

    from ..models.registry import compute_dtype, locate_model

    loc = locate_model(model, source=source, revision=revision)
    tok = AutoTokenizer.from_pretrained(loc.folder)
    return transformers_identity(loc.name, loc.weights_sha256, tok.chat_template, compute_dtype(model))


class _RunManifest:
    """The sha256, size and sidecar sha256 of every file of a run, in its ``meta.json``: ``chunks``
    (updated as each chunk is written) and ``tables`` (rollouts.parquet, summary.parquet). A file
    rewritten together with its sidecar no longer matches it. A run written before manifests gets
    one when it is next used, from the files that match their sidecars."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "meta.json"
        self.meta = store.read_json(self.path) if self.path.exists() else None

    def entries(self, kind: str) -> dict:
        return dict((self.meta or {}).get(kind) or {})

    def entry(self, kind: str, name: str) -> dict | None:
        return self.entries(kind).get(name)

    def record(self, kind: str, path: Path) -> None:
        if self.meta is None:
            return
        self.meta.setdefault(kind, {})[path.name] = store.manifest_record(path)
        store.write_json(self.path, self.meta)

    def check(self, kind: str, path: Path, what: str = "recomputed") -> bool:
        """``store.chunk_ok`` against this manifest's entry; a file that matches its sidecar but
        that the manifest lacks (written before manifests, or just before a kill) is added."""
        entry = self.entry(kind, path.name)
        if not store.chunk_ok(path, entry, where=self.path.name, what=what):
            return False
        if entry is None:
            self.record(kind, path)
        return True


def _final_ok(run_dir: Path) -> bool:
    """The run's final table is there and is the one that was written (its manifest entry and
    sidecar); damaged, it is moved aside and rebuilt from the chunks; missing after the run had
    finished, it is named and rebuilt."""
    return _RunManifest(run_dir).check("tables", run_dir / "rollouts.parquet", what="rebuilt from the chunks")


def _chunk_done(chunk_dir: Path, i: int, ids: list[str], k: int, manifest: _RunManifest) -> bool:
    """True if chunk ``i`` is on disk, matches the checksum in the run's manifest and its sidecar
    and holds exactly the planned rows; a damaged or mismatched chunk is moved aside (named) and
    recomputed."""
    path = chunk_dir / f"chunk-{i:05d}.parquet"
    if not manifest.check("chunks", path):
        return False
    try:
        df = store.read_parquet(path)
    except ValueError as e:
        store.move_aside(path, str(e).split(" (")[0])
        return False
    expected = sorted((pid, j) for pid in ids for j in range(k))
    got = sorted(zip(df["problem_id"], df["sample"]))
    if got != expected:
        store.move_aside(path, f"it holds {len(got)} rows, not the {len(expected)} this run plans for it")
        return False
    return True


def _check_prompt_lengths(be, n_tokens: pd.Series | None, cfg: SamplingConfig) -> None:
    """Every prompt plus max_new_tokens fits the model's context (``n_tokens``: ``_prompt_tokens``)."""
    from ..problems.files import check_prompt_tokens

    model = getattr(be, "model", None)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if context is None or n_tokens is None:
        return
    check_prompt_tokens(n_tokens.tolist(), int(context), cfg.max_new_tokens, ids=n_tokens.index.tolist())


def _finish(run_dir: Path, model: str, problems: pd.DataFrame, cfg: SamplingConfig,
            price_overrides: dict | None, reuse: bool) -> RolloutRun:
    rollouts = store.read_parquet(run_dir / "rollouts.parquet")
    expected = len(problems) * cfg.k
    if len(rollouts) != expected or rollouts.duplicated(["problem_id", "sample"]).any():
        raise ValueError(f"{run_dir / 'rollouts.parquet'} has {len(rollouts)} rows, expected {expected} "
                         "unique (problem, sample) rows; move it aside to rebuild it from the chunks")
    summary = summarise(rollouts, problems, price_overrides=price_overrides)
    manifest = _RunManifest(run_dir)
    if manifest.meta is None:
        store.read_json(manifest.path)  # names the missing file
    if reuse and "chunks" not in manifest.meta:  # written before manifests: record its checked chunks
        for path in sorted((run_dir / "chunks").glob("chunk-*.parquet")):
            if store.chunk_problem(path) is None:
                manifest.meta.setdefault("chunks", {})[path.name] = store.manifest_record(path)
        manifest.record("tables", run_dir / "rollouts.parquet")
    path = run_dir / "summary.parquet"
    if reuse and not path.exists():
        store.say(f"{path} is missing; it is written again from {run_dir / 'rollouts.parquet'}")
    if not reuse or not path.exists() or not manifest.check("tables", path, what="written again"):
        manifest.record("tables", store.write_parquet_chunk(path, summary, metadata=_without_manifest(manifest.meta)))
    meta = _without_manifest(manifest.meta)
    log.info("%s rollouts for %s in %s", "reused" if reuse else "wrote", model, run_dir)
    return RolloutRun(model=model, dir=run_dir, rollouts=rollouts, summary=summary, meta=meta)


def _without_manifest(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("chunks", "tables")}


def summarise(rollouts: pd.DataFrame, problems: pd.DataFrame, *, price_overrides: dict | None = None,
              ks: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (model, problem): success rate, pass@k, majority-vote answer and its
    correctness, mean output tokens and cost from the price table."""
    rows = []
    for (model, pid), g in rollouts.groupby(["model", "problem_id"], sort=False):
        n, c = len(g), int(g["correct"].sum())
        kk = ks or sorted({1, *[2**i for i in range(1, 10) if 2**i <= n], n})
        maj = maths.majority_vote(g["extracted"].tolist())
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
        m is not None and maths.answers_equivalent(m, gold[pid]) for m, pid in zip(out["maj_answer"], out["problem_id"])
    ]
    keep = [c for c in ("source", "difficulty", "difficulty_kind", "split") if c in problems.columns]
    return out.merge(problems[["problem_id", *keep]], on="problem_id", how="left")
