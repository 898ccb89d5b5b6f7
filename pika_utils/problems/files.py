"""Problem and question files, read and checked once: the book's file source, ``pika rollouts``,
``pika label``, ``pika route`` and ``run_rollouts`` all come through here.

``read_table(path)`` reads a JSONL, JSON, CSV or Parquet file with its encoding and format errors
named; ``validate_questions(df, where=...)`` checks a table's question, answer and id columns;
``read_problem_file(path)`` does both for a file; ``load_file`` turns a researcher's own file into
the problem table (source ``file:<name>``, its sha256 recorded). Every error is an ``InputError``
that names the file (or table), the column, the first offending rows and the rule broken, and is
raised before any model loads. Rows of a file are counted from 1 (the first data row); rows of a
table in memory by their position (``iloc``) from 0."""
from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.store import file_sha256, read_parquet
from .table import DOMAINS, SPLITS, question_id, rank_sample, validate_problems

#: Readable table formats, by file suffix, with the name a record gives each.
FILE_FORMATS = {".jsonl": "JSONL", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}
TABLE_SUFFIXES = tuple(FILE_FORMATS)
#: Columns a user's problem file must have, and the ones it may have.
FILE_REQUIRED = ("question", "answer")
FILE_OPTIONAL = ("id", "difficulty", "domain", "split")
#: A question longer than this many characters is refused before a model loads, whatever the
#: model (no model here reads 4 characters per token over a context longer than 256k tokens).
MAX_QUESTION_CHARS = 1_000_000
#: Characters per token assumed for the cheap length pre-check (real tokenizers average 3-4
#: characters per token on English and maths, so 4 errs on the side of letting a prompt through).
CHARS_PER_TOKEN = 4


class InputError(ValueError):
    """A bad input, named: which file or table, which column, which rows, which rule."""


def _rows(df: pd.DataFrame, mask, id_column: str | None, limit: int = 5, first_row: int = 0) -> str:
    idx = list(df.index[mask])
    shown = []
    for i in idx[:limit]:
        pos = df.index.get_loc(i) + first_row
        label = f"row {pos}"
        if id_column and id_column in df.columns:
            label += f" ({id_column}={df.at[i, id_column]!r})"
        shown.append(label)
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(shown) + more


def _rule_book(df: pd.DataFrame, id_column: str | None, first_row: int):
    """A list of broken rules and ``rule(column, mask, text)`` that adds one naming its rows, so
    every check reports the same way and all of them are reported at once."""
    errors: list[str] = []

    def rule(col: str, mask, text: str) -> None:
        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        if mask.any():
            errors.append(f"column {col!r}: {int(mask.sum())} row(s) break the rule '{text}': "
                          f"{_rows(df, mask, id_column, first_row=first_row)}")

    return errors, rule


def read_table(path: str | Path, *, what: str = "table") -> pd.DataFrame:
    """A table from a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file; text must be UTF-8.
    Errors name the file and, for text files, the line and byte of the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist (working directory: {Path.cwd()})")
    if path.is_dir():
        raise InputError(f"{what} file {path} is a folder; give a {', '.join(TABLE_SUFFIXES)} file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{what} file {path}: unknown format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(TABLE_SUFFIXES)}")
    if suffix == ".parquet":
        try:
            return read_parquet(path)
        except ValueError as e:
            raise InputError(str(e)) from None
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{what} file {path} is not UTF-8: byte {e.start} (line {line}) is "
                         f"{raw[e.start:e.start + 1]!r}. Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InputError(f"{what} file {path} is empty")
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{what} file {path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{what} file {path}, line {n}: each line must be a JSON object, got "
                                 f"{type(rec).__name__}")
            records.append(rec)
        return pd.DataFrame.from_records(records)
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{what} file {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
            return pd.DataFrame.from_records(obj)
        if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
            try:
                return pd.DataFrame(obj)
            except ValueError as e:
                raise InputError(f"{what} file {path}: columns of different lengths ({e})") from None
        raise InputError(f"{what} file {path}: expected a list of objects or an object of equal-length "
                         "lists (columns)")
    import io
    try:  # CSV: every cell as text, so an id or answer like "007" keeps its zeros
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as e:  # pandas' parser errors have several types
        raise InputError(f"{what} file {path}: not a readable CSV ({type(e).__name__}: {e})") from None


def validate_questions(df: pd.DataFrame, *, where: str = "problems table", column: str = "question",
                       answer_column: str | None = None, id_column: str | None = "problem_id",
                       max_chars: int | None = MAX_QUESTION_CHARS, first_row: int = 0) -> pd.DataFrame:
    """Check a table of questions (and answers, if ``answer_column``): a non-empty DataFrame,
    the columns present, questions non-empty strings no longer than ``max_chars``, answers present
    (integers are taken as their text), ids non-empty and unique. Returns a copy with answers as
    strings; raises ``InputError`` naming ``where``, the column, the first offending rows and the
    rule."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{where}: expected a table (pandas DataFrame), got {type(df).__name__}")
    need = [c for c in (id_column, column, answer_column) if c]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{where}: no column(s) {missing}; it has {list(map(str, df.columns))}; "
                         f"needed: {need}")
    if len(df) == 0:
        raise InputError(f"{where}: the table has no rows; give at least one question")
    out = df.copy()
    errors, rule = _rule_book(out, id_column, first_row)

    q = out[column]
    not_str = q.map(lambda v: not isinstance(v, str) and not _missing(v))
    rule(column, not_str, "a question is text (got " + ", ".join(sorted({type(v).__name__ for v in q[not_str]})) + ")"
         if not_str.any() else "a question is text")
    rule(column, q.map(lambda v: _missing(v) or (isinstance(v, str) and not v.strip())),
         "a question is not empty or blank")
    rule(column, q.map(lambda v: isinstance(v, str) and bool(v.strip()) and not _visible(v)),
         "a question has a visible character (not only zero-width or control characters)")
    if max_chars is not None:
        rule(column, q.map(lambda v: isinstance(v, str) and len(v) > max_chars),
             f"a question has at most {max_chars:,} characters")
    if answer_column:
        a = out[answer_column]
        rule(answer_column, a.map(lambda v: _missing(v) or (isinstance(v, str) and not v.strip())),
             "every problem has a gold answer (not empty)")
        rule(answer_column, a.map(lambda v: not _missing(v) and not isinstance(v, (str, int)) or isinstance(v, bool)),
             "an answer is text or an integer")
    if id_column:
        ids = out[id_column]
        blank = ids.map(lambda v: _missing(v) or (isinstance(v, str) and not v.strip()))
        rule(id_column, blank, "every row has an id")
        rule(id_column, ids.map(lambda v: not _missing(v) and not isinstance(v, (str, int)) or isinstance(v, bool)),
             "an id is text or an integer")
        rule(id_column, ids.astype(str).duplicated(keep=False) & ~blank, "ids are unique")
    if errors:
        raise InputError(f"{where}: invalid input\n  " + "\n  ".join(errors))
    if answer_column:
        out[answer_column] = out[answer_column].map(str)
    if id_column:
        out[id_column] = out[id_column].map(str)
    return out


def _visible(text: str) -> bool:
    """True when the text shows something: not only whitespace, or characters of Unicode's 'other'
    categories (controls, and format characters such as zero-width spaces and joiners)."""
    return any(not c.isspace() and unicodedata.category(c)[0] != "C" for c in text)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def read_problem_file(path: str | Path, *, column: str = "question", answer_column: str | None = "answer",
                      id_column: str | None = "problem_id", what: str = "problems") -> pd.DataFrame:
    """Read and check a problems file (JSONL, JSON, CSV or Parquet): the one reader behind
    ``pika rollouts --problems``, ``pika label --problems`` and a book's file source. An
    ``id_column`` the file does not have is not required."""
    df = read_table(path, what=what)
    if id_column and id_column not in df.columns:
        id_column = None
    return validate_questions(df, where=f"{what} file {path}", column=column, answer_column=answer_column,
                              id_column=id_column, first_row=1).reset_index(drop=True)


def check_prompt_chars(questions: Sequence[str], context: int | None, *, where: str = "problems table",
                       ids: Sequence | None = None) -> None:
    """The cheap pre-check before a model loads: a question longer than ``CHARS_PER_TOKEN`` x the
    model's context (in characters) cannot fit, whatever its tokenizer."""
    if not context:
        return
    limit = CHARS_PER_TOKEN * int(context)
    bad = [i for i, q in enumerate(questions) if len(q) > limit]
    if bad:
        names = ", ".join(f"row {i}" + (f" (problem_id={ids[i]!r})" if ids is not None else "") for i in bad[:5])
        raise InputError(f"{where}: column 'question': {len(bad)} question(s) are longer than {limit:,} "
                         f"characters ({CHARS_PER_TOKEN} x the model's context of {context:,} tokens), so they "
                         f"cannot fit: {names}; the longest has {max(len(questions[i]) for i in bad):,}. "
                         "Shorten or drop them.")


def check_prompt_tokens(n_tokens: Sequence[int], context: int | None, max_new_tokens: int, *,
                        where: str = "problems table", ids: Sequence | None = None) -> None:
    """Every prompt plus ``max_new_tokens`` fits the model's context (checked before generation)."""
    if not context:
        return
    bad = [i for i, n in enumerate(n_tokens) if n + max_new_tokens > context]
    if bad:
        names = ", ".join(f"row {i}" + (f" (problem_id={ids[i]!r})" if ids is not None else "")
                          + f": {n_tokens[i]} tokens" for i in bad[:5])
        raise InputError(f"{where}: column 'question': {len(bad)} prompt(s) plus max_new_tokens={max_new_tokens} "
                         f"exceed the model's context of {context} tokens: {names}. Shorten or drop them, "
                         "or lower max_new_tokens.")


def check_file_columns(df: pd.DataFrame, where: str) -> None:
    """The optional columns of a user's problem file: a numeric ``difficulty``, a known ``domain``,
    a known ``split``; rows counted from 1."""
    errors, rule = _rule_book(df, "id" if "id" in df else None, first_row=1)
    known = {c.lower(): c for c in FILE_REQUIRED + FILE_OPTIONAL}
    near = {str(c): known[str(c).strip().lower()] for c in df.columns
            if str(c) not in known.values() and str(c).strip().lower() in known}
    if near:
        errors.append("column(s) " + ", ".join(f"{c!r} (did you mean {k!r}?)" for c, k in near.items())
                      + " would be ignored: column names are lower case")

    if "difficulty" in df.columns:
        given = df["difficulty"].notna() & df["difficulty"].astype(str).str.strip().ne("")
        rule("difficulty", pd.to_numeric(df["difficulty"], errors="coerce").isna() & given, "a difficulty is a number")
    for col, allowed in (("domain", DOMAINS), ("split", SPLITS)):
        if col in df.columns:
            values = df[col].fillna("").astype(str).str.strip()
            rule(col, ~values.isin(allowed + ("",)), f"one of {', '.join(allowed)}, or empty")
    if errors:
        raise InputError(f"{where}: invalid input\n  " + "\n  ".join(errors))


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
        df = read_problem_file(f, id_column="id")
        check_file_columns(df, f"problems file {f}")
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
            raise InputError(f"problems file {f}: the same question appears in rows "
                             f"{_rows(out, dup, None, first_row=1).replace('row ', '')}; "
                             "remove the repeats or give each row an id")
        parts.append(rank_sample(out, limit, seed))
        record.append({"path": str(f.resolve()), "source": source, "sha256": sha,
                       "format": FILE_FORMATS[f.suffix.lower()], "rows": len(df)})
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["record"] = {"files": record}
    return df
