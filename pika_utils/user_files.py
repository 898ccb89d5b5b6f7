"""A researcher's own problems: JSONL, CSV or Parquet files with ``question`` and ``answer`` (and
optionally ``id``, ``difficulty``, ``domain``, ``split``), checked with errors that name the file,
the column and the rows, and recorded with the file's sha256."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .problem_table import question_id, rank_sample, validate_problems
from .store import file_sha256


#: Columns a problem file must have, and the ones it may have.
FILE_REQUIRED = ("question", "answer")
FILE_OPTIONAL = ("id", "difficulty", "domain", "split")
FILE_FORMATS = {".jsonl": "JSONL", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}


class ProblemFileError(ValueError):
    """A problem file that cannot be used; the message names the file, the column and the rows."""


def _rows(idx, limit: int = 5) -> str:
    """Human row numbers (1 = the first data row / JSONL line), the first few of them."""
    idx = [int(i) + 1 for i in idx]
    return ", ".join(map(str, idx[:limit])) + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def read_problem_file(path: str | Path) -> pd.DataFrame:
    """Read a JSONL, CSV or Parquet file of questions into a DataFrame (one row per problem) with
    the one table reader (``inputs.read_table``: the file, line and byte of what it refuses)."""
    from .inputs import read_table

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"problem file {path} does not exist (working directory: {Path.cwd()})")
    if path.suffix.lower() not in FILE_FORMATS:
        raise ProblemFileError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; "
                               f"use one of {', '.join(FILE_FORMATS)}")
    from .inputs import InputError

    try:
        df = read_table(path, what="problems")
    except InputError as e:
        raise ProblemFileError(str(e)) from None
    if df.empty:
        raise ProblemFileError(f"{path}: no rows; a problem file needs one problem per row")
    return df.reset_index(drop=True)


def validate_questions(df: pd.DataFrame, where: str, *, need_answer: bool = True) -> pd.DataFrame:
    """Check a user's question table; every error names ``where``, the column and the first bad rows."""
    need = FILE_REQUIRED if need_answer else ("question",)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ProblemFileError(f"{where}: missing column(s) {missing}; it has {list(df.columns)}. "
                               f"A problem file needs {list(need)} and may have {list(FILE_OPTIONAL)}.")
    errors = []
    q = df["question"]
    not_text = q.map(lambda v: v is not None and not isinstance(v, str) and not (isinstance(v, float) and math.isnan(v)))
    if not_text.any():
        kinds = ", ".join(sorted({type(v).__name__ for v in q[not_text]}))
        errors.append(f"column 'question' is not text in rows {_rows(np.flatnonzero(not_text))} (got {kinds})")
    for col in need:
        bad = df[col].isna() | df[col].astype(str).str.strip().eq("")
        if bad.any():
            errors.append(f"column {col!r} is empty in {int(bad.sum())} row(s): rows {_rows(np.flatnonzero(bad))} "
                          + ("(every problem has a gold answer)" if col == "answer" else "(it must not be empty)"))
    if "id" in df.columns:
        ids = df["id"].astype(str).str.strip()
        blank = df["id"].isna() | ids.eq("")
        if blank.any():
            errors.append(f"column 'id' is empty in rows {_rows(np.flatnonzero(blank))} (give every row an id, or drop the column)")
        dup = ids.duplicated(keep=False) & ~blank
        if dup.any():
            errors.append(f"column 'id' repeats {sorted(ids[dup].unique())[:5]} in rows {_rows(np.flatnonzero(dup))}")
    if "difficulty" in df.columns:
        num = pd.to_numeric(df["difficulty"], errors="coerce")
        bad = num.isna() & df["difficulty"].notna() & df["difficulty"].astype(str).str.strip().ne("")
        if bad.any():
            errors.append(f"column 'difficulty' is not a number in rows {_rows(np.flatnonzero(bad))} "
                          f"(e.g. {df['difficulty'][bad].iloc[0]!r})")
    if "domain" in df.columns:
        from .problem_table import DOMAINS
        dom = df["domain"].fillna("").astype(str).str.strip()
        bad = ~dom.isin(DOMAINS + ("",))
        if bad.any():
            errors.append(f"column 'domain' has {sorted(dom[bad].unique())[:5]} in rows {_rows(np.flatnonzero(bad))}; "
                          f"use one of {list(DOMAINS)} (math: answers compared; code: tests run) or leave it empty")
    if "split" in df.columns:
        s = df["split"].fillna("").astype(str).str.strip()
        bad = ~s.isin(("train", "val", "test", ""))
        if bad.any():
            errors.append(f"column 'split' has {sorted(s[bad].unique())[:5]} in rows {_rows(np.flatnonzero(bad))}; "
                          "use train, val, test or leave it empty")
    if errors:
        raise ProblemFileError(f"{where}: " + "; ".join(errors))
    return df


def load_file(path: str | Path | None = None, paths: Sequence[str | Path] | None = None,
              name: str | None = None, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A user's own problems from one or more JSONL, CSV or Parquet files with columns
    ``question`` and ``answer`` (and optionally ``id``, ``difficulty``, ``domain``, ``split``).
    Each file becomes the source ``file:<name>`` (``name`` or the file's stem); its sha256 goes
    into every row's ``meta`` and into ``df.attrs['record']`` (written to problems.json)."""
    files = ([path] if path is not None else []) + list(paths or [])
    if not files:
        raise ValueError("the file source needs path: my.jsonl (or paths: [a.jsonl, b.csv])")
    if name is not None and len(files) > 1:
        raise ValueError("name applies to one file; with several paths each is named by its stem")
    parts, record = [], []
    for f in files:
        f = Path(f)
        df = validate_questions(read_problem_file(f), str(f))
        sha = file_sha256(f)
        label = name or f.stem
        if not label.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{f}: source name {label!r} must be letters, digits, '-' or '_' (pass name=...)")
        source = f"file:{label}"
        diff = pd.to_numeric(df["difficulty"], errors="coerce") if "difficulty" in df else pd.Series(math.nan, index=df.index)
        ids = (df["id"].astype(str).str.strip().map(lambda i: f"{source}-{i}") if "id" in df
               else df["question"].astype(str).map(lambda q: question_id(source, q)))
        meta = [json.dumps({"file": f.name, "sha256": sha, "row": i + 1,
                            **({"domain": str(df["domain"][i])} if "domain" in df and pd.notna(df["domain"][i]) else {})})
                for i in range(len(df))]
        out = pd.DataFrame({
            "problem_id": ids, "source": source, "question": df["question"].astype(str).str.strip(),
            "answer": df["answer"].astype(str).str.strip(), "difficulty": diff,
            "difficulty_kind": np.where(diff.notna(), "user", "none"), "split": "",
            "split_given": df["split"].fillna("").astype(str).str.strip() if "split" in df else "",
            "domain": df["domain"].fillna("").astype(str).replace("", "math") if "domain" in df else "math", "meta": meta})
        dup = out["problem_id"].duplicated(keep=False)
        if dup.any():
            raise ProblemFileError(f"{f}: the same question appears in rows {_rows(np.flatnonzero(dup))}; "
                                   "remove the repeats or give each row an id")
        parts.append(rank_sample(out, limit, seed))
        record.append({"path": str(f.resolve()), "source": source, "sha256": sha,
                       "format": FILE_FORMATS[f.suffix.lower()], "rows": len(df)})
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["record"] = {"files": record}
    return df
