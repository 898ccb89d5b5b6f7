"""Problem and question files, read and checked once: the book's file source, ``pika rollouts``,
``pika label``, ``pika route`` and ``run_rollouts`` all come through here.

``read_table(path)`` (``problems.reading``) reads a JSONL, JSON, CSV or Parquet file with its
encoding, format and size errors named; ``validate_questions(df, where=...)`` checks a table's question, answer and id columns;
``read_problem_file(path)`` does both for a file; ``load_file`` turns a researcher's own file into
the problem table (source ``file:<name>``, its sha256 recorded). Every error is an ``InputError``
that names the file (or table), the column, the first offending rows and the rule broken, and is
raised before any model loads. Rows of a file are counted from 1 (the first data row); rows of a
table in memory by their position (``iloc``) from 0."""
from __future__ import annotations

import json
import math
import unicodedata
from difflib import SequenceMatcher
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.store import file_sha256
from .reading import FILE_FORMATS, InputError, read_table
from .table import DOMAINS, SPLITS, question_id, rank_sample, validate_problems

#: Columns a user's problem file must have, and the ones it may have (``id`` or ``problem_id``
#: names a row; not both).
FILE_REQUIRED = ("question", "answer")
FILE_OPTIONAL = ("id", "problem_id", "difficulty", "domain", "split")
FILE_ID_COLUMNS = ("id", "problem_id")
#: A question longer than this many characters is refused before a model loads, whatever the
#: model (no model here reads 4 characters per token over a context longer than 256k tokens).
MAX_QUESTION_CHARS = 1_000_000
#: Characters per token assumed for the cheap length pre-check (real tokenizers average 3-4
#: characters per token on English and maths, so 4 errs on the side of letting a prompt through).
CHARS_PER_TOKEN = 4
#: Ordinary whitespace a question may hold besides visible characters.
ORDINARY_WHITESPACE = "\t\n\r"


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

    def rule(col: str, mask, text: str, detail: str = "") -> None:
        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        if mask.any():
            errors.append(f"column {col!r}: {int(mask.sum())} row(s) break the rule '{text}': "
                          f"{_rows(df, mask, id_column, first_row=first_row)}{detail}")

    return errors, rule


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
        hint = {c: k for c, k in near_misses(df.columns, need).items() if k in missing}
        raise InputError(f"{where}: no column(s) {missing}; it has {list(map(str, df.columns))}; "
                         f"needed: {need}" + "".join(f"; did you mean {k!r} for {c!r}?" for c, k in hint.items()))
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
    visible = q.map(lambda v: isinstance(v, str) and _visible(v))
    rule(column, q.map(lambda v: isinstance(v, str) and bool(v.strip())) & ~visible,
         "a question has a visible character (not only zero-width or control characters)")
    odd = q.map(lambda v: _odd_characters(v) if isinstance(v, str) else [])
    found = sorted({c for cs in odd[visible] for c in cs})
    rule(column, visible & odd.map(bool),
         "a question holds no control or invisible characters besides spaces, tabs and newlines",
         f" (found {', '.join(found[:6])}{' ...' if len(found) > 6 else ''})")
    if max_chars is not None:
        rule(column, q.map(lambda v: isinstance(v, str) and len(v) > max_chars),
             f"a question has at most {max_chars:,} characters")
    if answer_column:
        a = out[answer_column]
        rule(answer_column, a.map(lambda v: _missing(v) or (isinstance(v, str) and not v.strip())),
             "every problem has a gold answer (not empty)")
        not_text = a.map(lambda v: not _missing(v) and not isinstance(v, (str, int)) or isinstance(v, bool))
        rule(answer_column, not_text, "an answer is text or an integer", _got(a[not_text]))
    if id_column:
        ids = out[id_column]
        blank = ids.map(lambda v: _missing(v) or (isinstance(v, str) and not v.strip()))
        rule(id_column, blank, "every row has an id")
        not_id = ids.map(lambda v: not _missing(v) and not isinstance(v, (str, int)) or isinstance(v, bool))
        rule(id_column, not_id, "an id is text or an integer", _got(ids[not_id]))
        kinds = ids.map(lambda v: "text" if isinstance(v, str) else "integer"
                        if isinstance(v, int) and not isinstance(v, bool) else None)
        if kinds.nunique() > 1:  # 7 and "007" would both be ids; a mix is a column typed by hand
            rare = kinds.value_counts().sort_index().idxmin()
            rule(id_column, kinds.eq(rare), "ids are all text or all integers, not a mix", f" ({rare} here)")
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


def _odd_characters(text: str) -> list[str]:
    """The control and invisible characters of a text besides ``ORDINARY_WHITESPACE`` (Unicode's
    'other' categories: controls, format characters such as zero-width spaces, joiners and
    direction marks, private-use and unassigned code points), as 'U+200B'; a byte that was not
    UTF-8 (kept by 'surrogateescape') as 'byte 0xff (not UTF-8)'."""
    out = []
    for c in dict.fromkeys(text):
        if c in ORDINARY_WHITESPACE or unicodedata.category(c)[0] != "C":
            continue
        out.append(f"byte 0x{ord(c) - 0xDC00:02x} (not UTF-8)" if "\udc80" <= c <= "\udcff" else f"U+{ord(c):04X}")
    return out


def _got(values: pd.Series) -> str:
    """' (got list, dict)': the types of offending values, for a rule's message."""
    return f" (got {', '.join(sorted({type(v).__name__ for v in values}))})" if len(values) else ""


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def read_problem_file(path: str | Path, *, column: str = "question", answer_column: str | None = "answer",
                      id_column: str | Sequence[str] | None = "problem_id", what: str = "problems") -> pd.DataFrame:
    """Read and check a problems file (JSONL, JSON, CSV or Parquet): the one reader behind
    ``pika rollouts --problems``, ``pika label --problems`` and a book's file source. An
    ``id_column`` the file does not have is not required; given several names (e.g.
    ``FILE_ID_COLUMNS``), the one the file has is checked, and a file with more than one is refused."""
    df = read_table(path, what=what)
    where = f"{what} file {path}"
    return validate_questions(df, where=where, column=column, answer_column=answer_column,
                              id_column=file_id_column(df, id_column, where), first_row=1).reset_index(drop=True)


def file_id_column(df: pd.DataFrame, names: str | Sequence[str] | None, where: str) -> str | None:
    """The column of ``names`` that names a file's rows (None: none of them); two are refused."""
    names = () if names is None else (names,) if isinstance(names, str) else tuple(names)
    present = [c for c in names if c in df.columns]
    if len(present) > 1:
        raise InputError(f"{where}: the columns {present} both name the rows; keep one of them")
    return present[0] if present else None


def near_misses(columns: Sequence, known: Sequence[str], *, cutoff: float = 0.85) -> dict[str, str]:
    """Columns that would be ignored but look like a known one: the same name but for case,
    spaces or hyphens (``Difficulty``, `` split``, ``Problem ID``), or a close spelling of a known
    column the table lacks (``answers``, ``difficulity``). Maps each to the known name."""
    names = [str(c) for c in columns]
    out = {}
    for c in names:
        if c in known:
            continue
        norm = "_".join(c.strip().lower().replace("-", " ").split())
        if norm in known:
            out[c] = norm
            continue
        close = [(SequenceMatcher(None, norm, k).ratio(), k) for k in known if k not in names]
        best = max(close, default=(0.0, ""))
        if best[0] >= cutoff:
            out[c] = best[1]
    return out


def _name_prompts(bad: Sequence[int], ids: Sequence | None, rows: Sequence | None, detail=lambda i: "") -> str:
    """'row R (problem_id=...)' for the first offending prompts: ``rows`` are a file's row numbers
    (a table sorted by id is not in the file's order), else the table's positions."""
    return ", ".join(f"row {rows[i] if rows is not None else i}" + (f" (problem_id={ids[i]!r})" if ids is not None else "")
                     + detail(i) for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def check_prompt_chars(questions: Sequence[str], context: int | None, *, where: str = "problems table",
                       ids: Sequence | None = None, rows: Sequence | None = None) -> None:
    """The cheap pre-check before a model loads: a question longer than ``CHARS_PER_TOKEN`` x the
    model's context (in characters) cannot fit, whatever its tokenizer."""
    if not context:
        return
    limit = CHARS_PER_TOKEN * int(context)
    bad = [i for i, q in enumerate(questions) if len(q) > limit]
    if bad:
        raise InputError(f"{where}: column 'question': {len(bad)} question(s) are longer than {limit:,} "
                         f"characters ({CHARS_PER_TOKEN} x the model's context of {context:,} tokens), so they "
                         f"cannot fit: {_name_prompts(bad, ids, rows)}; the longest has "
                         f"{max(len(questions[i]) for i in bad):,}. Shorten or drop them.")


def check_prompt_tokens(n_tokens: Sequence[int], context: int | None, max_new_tokens: int, *,
                        where: str = "problems table", ids: Sequence | None = None,
                        rows: Sequence | None = None) -> None:
    """Every prompt plus ``max_new_tokens`` fits the model's context (checked before generation)."""
    if not context:
        return
    bad = [i for i, n in enumerate(n_tokens) if n + max_new_tokens > context]
    if bad:
        names = _name_prompts(bad, ids, rows, lambda i: f": {n_tokens[i]} tokens")
        raise InputError(f"{where}: column 'question': {len(bad)} prompt(s) plus max_new_tokens={max_new_tokens} "
                         f"exceed the model's context of {context} tokens: {names}. Shorten or drop them, "
                         "or lower max_new_tokens.")


def check_prompts_fit(questions: Sequence[str], model: str, *, max_new_tokens: int, prompt_suffix: str = "",
                      system_prompt: str | None = None, source: str = "auto", where: str = "problems table",
                      ids: Sequence | None = None, rows: Sequence | None = None) -> None:
    """Before the model's weights load (or are built or downloaded): every prompt plus
    ``max_new_tokens`` fits the model's context, counted with its tokenizer where that is at hand
    without the weights (``registry.tokenizer_hint``: a cold cache of the tiny model too), else
    the character pre-check against a known context (``check_prompt_chars``)."""
    from ..models.hints import context_hint, tokenizer_hint

    questions = list(questions)
    hint = tokenizer_hint(model, source)
    if hint is None:
        check_prompt_chars(questions, context_hint(model, source), where=where, ids=ids, rows=rows)
        return
    from ..core.prompts import chat_prompts

    tok, context = hint
    check_prompt_chars(questions, context, where=where, ids=ids, rows=rows)  # nothing absurdly long is tokenized
    prompts = chat_prompts(tok, questions, prompt_suffix, system_prompt)
    n_tokens = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    check_prompt_tokens(n_tokens, context, max_new_tokens, where=where, ids=ids, rows=rows)


def file_rows(problems: pd.DataFrame) -> list | None:
    """Each problem's row in its file (``load_file`` records it in ``meta``), or None."""
    try:
        return [json.loads(m)["row"] for m in problems["meta"]]
    except (KeyError, TypeError, ValueError):
        return None


def check_file_columns(df: pd.DataFrame, where: str) -> None:
    """The optional columns of a user's problem file: a numeric ``difficulty``, a known ``domain``,
    a known ``split``; rows counted from 1."""
    errors, rule = _rule_book(df, file_id_column(df, FILE_ID_COLUMNS, where), first_row=1)
    near = near_misses(df.columns, FILE_REQUIRED + FILE_OPTIONAL)
    if near:
        errors.append("column(s) " + ", ".join(f"{c!r} (did you mean {k!r}?)" for c, k in near.items())
                      + " would be ignored: the known columns are " + ", ".join(FILE_REQUIRED + FILE_OPTIONAL)
                      + ", spelled exactly so; rename the column (to the known name, or to one unlike them "
                        "if it is meant to be ignored)")

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
    """A user's own problems from one or more JSONL, JSON, CSV or Parquet files with columns
    ``question`` and ``answer`` (and optionally ``id`` or ``problem_id``, ``difficulty``, ``domain``,
    ``split``); a row's problem_id is ``file:<name>-<its id>``, or from its question without one.
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
        df = read_problem_file(f, id_column=FILE_ID_COLUMNS)
        check_file_columns(df, f"problems file {f}")
        id_col = file_id_column(df, FILE_ID_COLUMNS, f"problems file {f}")
        sha = file_sha256(f)
        label = name or f.stem
        if not label.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{f}: source name {label!r} must be letters, digits, '-' or '_' (pass name=...)")
        source = f"file:{label}"
        diff = pd.to_numeric(df["difficulty"], errors="coerce") if "difficulty" in df else pd.Series(math.nan, index=df.index)
        ids = (df[id_col].astype(str).str.strip().map(lambda i: f"{source}-{i}") if id_col
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
        if dup.any() and id_col:  # ids unique as given, but not once their spaces are trimmed
            raise InputError(f"problems file {f}: column {id_col!r}: the ids of rows "
                             f"{_rows(df, dup.to_numpy(), id_col, first_row=1)} are the same once spaces are trimmed")
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
