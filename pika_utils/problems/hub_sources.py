"""The paper's datasets on the Hugging Face hub (MATH-lighteval, GSM8K, AIME, E2H-AMC), mapped to
the problem schema. Offline they fail fast, naming the closest source shipped in a package."""
from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..grading.maths import last_boxed
from ..core.hub import env_flag, hub_reachable
from .table import question_id, rank_sample, validate_problems

# --------------------------------------------------------------------------- Hugging Face hub

class HubUnavailableError(ConnectionError):
    """The hub (or the local hub cache) could not provide a dataset; names the offline fallback."""


def _gsm_final(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def _math_level(level: Any) -> float:
    m = re.search(r"(\d+)", str(level))
    return float(m.group(1)) if m else math.nan


def _col(frame: pd.DataFrame, *names: str) -> pd.Series:
    """First of the candidate columns present (hub datasets spell fields differently)."""
    for n in names:
        if n in frame.columns:
            return frame[n]
    raise KeyError(f"none of the columns {list(names)} in hub data (has {list(frame.columns)})")


@dataclass(frozen=True)
class HubSpec:
    repo: str
    configs: tuple[str | None, ...]
    splits: tuple[str, ...]          # splits the dataset has; "test" maps to the last one
    fallback: str                    # closest offline source
    convert: Callable[[pd.DataFrame], pd.DataFrame]


def _convert_math(f: pd.DataFrame) -> pd.DataFrame:
    solution = _col(f, "solution").astype(str)
    level = _col(f, "level").map(_math_level)
    return pd.DataFrame({"question": _col(f, "problem"), "answer": solution.map(last_boxed),
                         "difficulty": level, "difficulty_kind": np.where(level.isna(), "none", "math_level"),
                         "solution": solution, "meta": _col(f, "type").map(lambda t: json.dumps({"type": t}))})


def _convert_gsm8k(f: pd.DataFrame) -> pd.DataFrame:
    solution = _col(f, "answer").astype(str)
    return pd.DataFrame({"question": _col(f, "question"), "answer": solution.map(_gsm_final),
                         "difficulty": math.nan, "difficulty_kind": "none", "solution": solution})


def _convert_aime_hist(f: pd.DataFrame) -> pd.DataFrame:
    ids = _col(f, "ID", "id").astype(str)
    return pd.DataFrame({"problem_id": "aime-1983-2024-" + ids, "question": _col(f, "Question", "question", "problem"),
                         "answer": _col(f, "Answer", "answer").astype(str), "difficulty": math.nan,
                         "difficulty_kind": "none", "meta": ids.map(lambda i: json.dumps({"ID": i}))})


def _convert_aime_2025(f: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"question": _col(f, "question", "problem"), "answer": _col(f, "answer").astype(str),
                         "difficulty": math.nan, "difficulty_kind": "none",
                         "meta": [json.dumps({"config": c}) for c in f.get("_config", [None] * len(f))]})


def _convert_e2h_amc(f: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in ("contest", "year", "subtest", "index", "rating_quantile") if c in f.columns]
    meta = f[keep].astype(str).to_dict("records")
    return pd.DataFrame({"question": _col(f, "problem"), "answer": _col(f, "answer").astype(str),
                         "difficulty": _col(f, "rating").astype(float), "difficulty_kind": "human_irt",
                         "solution": _col(f, "solution").astype(str), "meta": [json.dumps(m) for m in meta]})


HUB_DATASETS: dict[str, HubSpec] = {
    "math-lighteval": HubSpec("DigitalLearningGmbH/MATH-lighteval", ("default",), ("train", "test"),
                              "mmath (subsets=['math500'])", _convert_math),
    "gsm8k": HubSpec("openai/gsm8k", ("main",), ("train", "test"), "gsm8k100", _convert_gsm8k),
    "aime-1983-2024": HubSpec("gneubig/aime-1983-2024", (None,), ("train",),
                              "mmath (subsets=['aime2024'])", _convert_aime_hist),
    "aime-2025": HubSpec("opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), ("test",),
                         "mmath (subsets=['aime2025']: the 15 problems of AIME 2025 I)", _convert_aime_2025),
    "e2h-amc": HubSpec("furonghuang-lab/Easy2Hard-Bench", ("E2H-AMC",), ("train", "eval"),
                       "mmath (no human IRT ratings offline; 'ladder' for designed difficulty)", _convert_e2h_amc),
}


@contextmanager
def _offline_libraries(offline: bool):
    """Make `datasets` and `huggingface_hub` honour HF_HUB_OFFLINE even when it was set after they
    were imported (they read it once, at import)."""
    import datasets.config
    import huggingface_hub.constants
    targets = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
               (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in targets if hasattr(mod, attr)]
    try:
        if offline:
            for mod, attr, _ in saved:
                setattr(mod, attr, True)
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)


def convert_hub_frame(name: str, frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """Map a hub dataset's own columns to the problem schema (kept apart from downloading so it
    can be checked on small frames offline)."""
    out = HUB_DATASETS[name].convert(frame.reset_index(drop=True))
    if "problem_id" not in out.columns:
        out.insert(0, "problem_id", [question_id(name, str(q)) for q in out["question"]])
    out.insert(1, "source", name)
    out["split"] = ""
    out["hub_split"] = split
    no_answer = out["answer"].isna() | out["answer"].astype("str").str.strip().eq("")
    if no_answer.any():
        print(f"[tasks] {name}: dropped {int(no_answer.sum())} problem(s) without a final answer")
    out = out[~no_answer].drop_duplicates("problem_id").reset_index(drop=True)
    return validate_problems(out)


def hub_offline() -> bool:
    """Whether the user asked for the local Hugging Face cache only."""
    return env_flag("HF_HUB_OFFLINE") or env_flag("HF_DATASETS_OFFLINE")


def datasets_or_fail(where: str, fallback_hint: str):
    """The ``datasets`` module, whether offline mode is on, and the hint every failure carries;
    fails at once (naming ``where`` and the offline fallback) when the hub cannot be reached."""
    offline = hub_offline()
    hint = fallback_hint + ("" if offline else " If the dataset is in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use it.")
    try:
        import datasets
    except ImportError:
        raise ImportError(f"loading {where} needs the `datasets` package: pip install datasets. {hint}") from None
    if not offline:
        ok, reason = hub_reachable(timeout=3.0)
        if not ok:
            raise HubUnavailableError(f"could not load {where}: the Hugging Face hub is unreachable ({reason}). {hint}")
    return datasets, offline, hint


def load_hub(name: str, *, split: str = "test", limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Load a paper dataset from the Hugging Face hub (or its local cache with HF_HUB_OFFLINE=1);
    offline it fails at once, naming the dataset and the closest source shipped in a package."""
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub dataset {name!r}; known: {sorted(HUB_DATASETS)}")
    spec = HUB_DATASETS[name]
    hub_split = split if split in spec.splits else spec.splits[-1]
    if split not in spec.splits:
        print(f"[tasks] {spec.repo} has splits {list(spec.splits)}; using {hub_split!r} for {split!r}")
    where = f"{spec.repo!r} (config {', '.join(map(str, spec.configs))}, split {hub_split!r})"
    datasets, offline, hint = datasets_or_fail(
        where, f"Closest offline source: {spec.fallback}, e.g. load_problems({{'{spec.fallback.split()[0]}': {{}}}}).")
    frames = []
    for config in spec.configs:
        try:
            with _offline_libraries(offline):
                ds = datasets.load_dataset(spec.repo, config, split=hub_split)
        except Exception as e:  # datasets raises ConnectionError, FileNotFoundError, ValueError...
            state = ("offline mode is on (HF_HUB_OFFLINE) and it is not in the local Hugging Face cache"
                     if offline else "the hub was unreachable or refused it")
            raise HubUnavailableError(f"could not load {where}: {state} ({type(e).__name__}: "
                                      f"{str(e)[:300]}). {hint}") from e
        frames.append(ds.to_pandas().assign(_config=config))
    problems = convert_hub_frame(name, pd.concat(frames, ignore_index=True), hub_split)
    return validate_problems(rank_sample(problems, limit, seed))


