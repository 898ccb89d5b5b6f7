"""Tables a cached computation keeps (the routing pools): each written with its sha256 in a
sidecar and listed in the computation's record, reused only when every one still matches."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from .store import (chunk_manifest, chunk_ok, move_aside, now_iso, read_json, read_parquet, say, versions,
                    write_json, write_parquet_chunk)


def stored_tables(folder: str | Path, record: str, names: Iterable[str]) -> tuple[dict, dict[str, pd.DataFrame]] | None:
    """The tables a cached computation stored in ``folder`` (``<name>.parquet`` each, listed with
    their sha256 in ``record``, a JSON file), and that record; None when there are none yet. A
    table damaged, missing or written before checksums is named and None returned: the caller
    computes them all again (the damaged files moved aside, never used)."""
    folder = Path(folder)
    meta_path = folder / record
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    manifest = meta.get("tables") if isinstance(meta.get("tables"), dict) else {}
    ok = True
    for n in names:
        path = folder / f"{n}.parquet"
        if not manifest.get(path.name):
            if path.exists():
                move_aside(path, f"{meta_path.name} records no sha256 for it (written by an earlier version of "
                                 "pika_utils)", what="computed again with the other tables")
            else:
                say(f"{path} is missing ({meta_path.name} lists the set); the tables will be computed again")
            ok = False
        elif not chunk_ok(path, manifest[path.name], where=meta_path.name, what="computed again with the other tables"):
            ok = False
    if not ok:
        os.replace(meta_path, meta_path.with_name(f"{meta_path.name}.incomplete-{now_iso().replace(':', '')}"))
        return None
    return meta, {n: read_parquet(folder / f"{n}.parquet") for n in names}


def store_tables(folder: str | Path, record: str, tables: Mapping[str, pd.DataFrame], meta: Mapping) -> None:
    """Write ``tables`` (sha256 in each sidecar) and then ``record``, which lists them with their
    sha256: the record's presence marks a complete, checkable set."""
    folder = Path(folder)
    paths = [write_parquet_chunk(folder / f"{n}.parquet", df) for n, df in tables.items()]
    write_json(folder / record, {**dict(meta), "tables": chunk_manifest(paths),
                                 "versions": versions(), "created": now_iso()})
