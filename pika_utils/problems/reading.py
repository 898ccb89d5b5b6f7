"""Reading an input table (a user's problems, questions or outcomes): JSONL, JSON, CSV or Parquet,
text in UTF-8, each error an ``InputError`` naming the file and, where it can, the line, byte, row
and column. A file is refused before it is read when it is larger than ``INPUT_LIMITS`` (its size,
a Parquet file's uncompressed size and rows from its metadata, a JSONL line read one at a time), so
a decompression bomb or an endless file cannot exhaust the memory; each limit is raised by its
environment variable. ``problems.files`` checks what is read."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from ..core.store import read_parquet

#: Readable table formats, by file suffix, with the name a record gives each.
FILE_FORMATS = {".jsonl": "JSONL", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}
TABLE_SUFFIXES = tuple(FILE_FORMATS)
#: How much of an input table is read at most, each limit raised by its environment variable:
#: the bytes of the file (and, for Parquet, of its uncompressed data, read from its metadata
#: before any data), the bytes of one JSONL line, and the rows. A file over a limit is refused
#: before it is read, so a decompression bomb or an endless file cannot exhaust the memory.
INPUT_LIMITS = {"bytes": ("PIKA_MAX_INPUT_BYTES", 1 << 30, "bytes"),
                "line_bytes": ("PIKA_MAX_LINE_BYTES", 64 << 20, "bytes in one line"),
                "rows": ("PIKA_MAX_INPUT_ROWS", 10_000_000, "rows")}


class InputError(ValueError):
    """A bad input, named: which file or table, which column, which rows, which rule."""


def input_limit(kind: str) -> int:
    """The limit ``kind`` ('bytes', 'line_bytes', 'rows') of ``INPUT_LIMITS``, or its environment
    variable's value."""
    env, default, _ = INPUT_LIMITS[kind]
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{env}={raw!r}: must be a whole number >= 1")
    return value


def _over_limit(where: str, kind: str, found: str, need: int = 0) -> InputError:
    env, _, unit = INPUT_LIMITS[kind]
    limit = input_limit(kind)
    return InputError(f"{where}: {found}, over the limit of {limit:,} {unit}, so it was not read. If the "
                      f"file is meant to be this large, raise the limit with the environment variable {env} "
                      f"(e.g. {env}={max(2 * limit, need)})")


def _check_file_size(path: Path, where: str) -> int:
    """The input byte limit, after refusing a file larger than it."""
    limit, size = input_limit("bytes"), path.stat().st_size
    if size > limit:
        raise _over_limit(where, "bytes", f"the file has {size:,} bytes", size)
    return limit


def _read_capped(path: Path, where: str) -> bytes:
    """A file's bytes, refused before reading when it is larger than the input limit (and while
    reading, should it grow)."""
    limit = _check_file_size(path, where)
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise _over_limit(where, "bytes", "the file grew while it was read")
    return raw


def _jsonl_lines(path: Path, where: str) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) of each line, read one at a time: a line longer than
    the line limit, more bytes than the input limit or more lines than the row limit is refused
    as soon as it is met."""
    total_limit, line_limit, row_limit = _check_file_size(path, where), input_limit("line_bytes"), input_limit("rows")
    offset = 0
    with path.open("rb") as f:
        for n in range(1, row_limit + 2):
            line = f.readline(line_limit + 1)
            if not line:
                return
            if len(line.rstrip(b"\r\n")) > line_limit:
                raise _over_limit(f"{where}, line {n}", "line_bytes", f"the line has more than {line_limit:,} bytes")
            if offset + len(line) > total_limit:
                raise _over_limit(where, "bytes", "the file grew while it was read")
            if n > row_limit:
                raise _over_limit(where, "rows", f"the file has more than {row_limit:,} lines")
            yield n, offset, line
            offset += len(line)


def _undecodable(where: str, raw: bytes, e: UnicodeDecodeError, *, offset: int = 0, line: int | None = None,
                 records=None, first_row: int = 1) -> InputError:
    """A not-UTF-8 file, named with the line and byte of its first bad byte and, where the byte
    lies in a cell of ``records`` (the file parsed with the bad bytes kept), the row and column."""
    pos = offset + e.start
    line = line if line is not None else raw[:e.start].count(b"\n") + 1
    cell = _surrogate_cell(records, first_row)
    return InputError(f"{where} is not UTF-8: byte {pos} (line {line}) is {raw[e.start:e.start + 1]!r}"
                      + (f", in {cell}" if cell else "")
                      + ". Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).")


def _has_bad_byte(v) -> bool:
    """A value decoded with 'surrogateescape' that held an undecodable byte."""
    return isinstance(v, str) and any("\udc80" <= c <= "\udcff" for c in v)


def _surrogate_cell(records, first_row: int) -> str | None:
    """'row R, column C' of the first cell (or column name) of ``records`` (a list of dicts: the
    file parsed with its undecodable bytes kept) that holds such a byte."""
    if not isinstance(records, list):
        return None
    for pos, rec in enumerate(records, first_row):
        if not isinstance(rec, dict):
            return None
        for col, v in rec.items():
            if _has_bad_byte(col):
                return f"a column name ({col.encode('utf-8', 'surrogateescape')!r})"
            if _has_bad_byte(v):
                return f"row {pos}, column {col!r}"
    return None


def _parsed_records(text: str, suffix: str):
    """The records of a CSV or JSON text read with its undecodable bytes kept (as plain Python:
    pandas' text columns refuse them), only to say where such a byte is; None when unparsable."""
    try:
        if suffix == ".csv":
            return list(csv.DictReader(io.StringIO(text)))
        obj = json.loads(text)
        if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
            return [dict(zip(obj, row)) for row in zip(*obj.values())]
        return obj
    except Exception:  # noqa: BLE001 - only to say where the byte is
        return None


def _records_frame(records: list[dict]) -> pd.DataFrame:
    """A table of JSON records that keeps each value as it was given: pandas would turn the
    integers of a column with a gap or a fraction into floats (an id 7 into 7.0)."""
    df = pd.DataFrame.from_records(records)
    for col in df.columns:
        if df[col].dtype.kind == "f":
            raw = [r.get(col) for r in records]
            if any(not isinstance(v, float) for v in raw):
                df[col] = pd.Series(raw, index=df.index, dtype=object)
    return df


def _check_parquet_size(path: Path, where: str) -> None:
    """Refuse a Parquet file whose metadata says it holds more rows, or more uncompressed bytes,
    than the input limits, before any of its data is read (a decompression bomb)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:  # noqa: BLE001 - a damaged file is named by read_parquet below
        return
    rows, limit = meta.num_rows, input_limit("rows")
    if rows > limit:
        raise _over_limit(where, "rows", f"its metadata says {rows:,} rows", rows)
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if raw > input_limit("bytes"):
        raise _over_limit(where, "bytes", f"its metadata says {raw:,} bytes uncompressed", raw)


def _check_parquet_text(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """A Parquet text column may hold bytes that are not UTF-8 (pyarrow reads them unchecked, and
    they fail later, nameless): refused here with the row and column."""
    import pyarrow as pa

    for col in df.columns:
        values = df[col].array
        if not hasattr(values, "__arrow_array__"):
            continue
        arr = pa.array(values)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            continue
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:
            for row, v in enumerate(arr.cast(pa.large_binary()).to_pylist(), 1):
                try:
                    (v or b"").decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{where} is not UTF-8: row {row}, column {col!r} holds the byte "
                                     f"{v[e.start:e.start + 1]!r} (byte {e.start} of {v[:40]!r}); write its text "
                                     "as UTF-8") from None
    return df


def read_table(path: str | Path, *, what: str = "table") -> pd.DataFrame:
    """A table from a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file; text must be UTF-8.
    Errors name the file and, for text files, the line and byte of the problem (and the row and
    column of a byte that is not UTF-8). Files over the ``INPUT_LIMITS`` are refused before
    they are read."""
    path = Path(path)
    where = f"{what} file {path}"
    if not path.exists():
        raise InputError(f"{where} does not exist (working directory: {Path.cwd()})")
    if path.is_dir():
        raise InputError(f"{where} is a folder; give a {', '.join(TABLE_SUFFIXES)} file")
    if not path.is_file():
        raise InputError(f"{where} is not a regular file (a device, pipe or socket, which may never end); "
                         "give a file on disk")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{where}: unknown format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(TABLE_SUFFIXES)}")
    if suffix == ".parquet":
        _check_file_size(path, where)
        _check_parquet_size(path, where)
        try:
            df = read_parquet(path)
        except ValueError as e:
            raise InputError(str(e)) from None
        return _check_parquet_text(df, where)
    if suffix == ".jsonl":
        records = []
        for n, offset, raw in _jsonl_lines(path, where):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = raw.decode("utf-8", "surrogateescape")
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                raise _undecodable(where, raw, e, offset=offset, line=n, records=[rec],
                                   first_row=len(records) + 1) from None
            line = line.removeprefix("\ufeff") if n == 1 else line
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{where}, line {n}: each line must be a JSON object, got {type(rec).__name__}")
            records.append(rec)
        if not records:
            raise InputError(f"{where} is empty")
        return _records_frame(records)
    raw = _read_capped(path, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        kept = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
        raise _undecodable(where, raw, e, records=_parsed_records(kept, suffix)) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InputError(f"{where} is empty")
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
            if len(obj) > input_limit("rows"):
                raise _over_limit(where, "rows", f"it holds {len(obj):,} rows", len(obj))
            return _records_frame(obj)
        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            lengths = {len(v) for v in obj.values()}
            if len(lengths) != 1:
                raise InputError(f"{where}: columns of different lengths "
                                 f"({ {k: len(v) for k, v in obj.items()} })")
            n = lengths.pop()
            return _records_frame([{k: v[i] for k, v in obj.items()} for i in range(n)]) if n else pd.DataFrame(
                columns=list(obj))
        raise InputError(f"{where}: expected a list of objects or an object of equal-length "
                         "lists (columns)")
    if text.count("\n") > input_limit("rows") + 1:  # a header and the rows
        raise _over_limit(where, "rows", f"it has {text.count(chr(10)):,} lines", text.count("\n"))
    try:  # CSV: every cell as text, so an id or answer like "007" keeps its zeros
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as e:  # pandas' parser errors have several types
        raise InputError(f"{where}: not a readable CSV ({type(e).__name__}: {e})") from None
