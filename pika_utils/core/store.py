"""Content-keyed storage: stable hashes, cache folders, atomic writes, JSON sidecars.

Every stage keys its output by a hash of everything that determines it, so a changed parameter
recomputes and an unchanged one is reused. Files are written to a temporary name and renamed, so
a killed process never leaves a half-written file under a final name.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Packages whose versions are recorded in every output's metadata.
TRACKED_PACKAGES = (
    "pika-utils", "torch", "transformers", "nnsight", "numpy", "pandas", "scikit-learn",
    "safetensors", "math-verify", "reasoning-gym", "gguf", "vllm",
)


def _canonical(obj: Any) -> Any:
    """Turn paths, tuples, sets and numpy scalars into plain JSON values with a stable order."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_canonical(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj``: the same parameters give the same key."""
    blob = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks so large weights never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """The full sha256 of a JSON record's canonical form as it reads back from disk (paths,
    tuples and numpy scalars made plain first), so a record sealed when written and read back
    gives the same hash; any edited field gives another."""
    plain = json.loads(json.dumps(_canonical(obj), ensure_ascii=False))
    return stable_hash(plain, length=64)


#: Files whose sha256 this process has checked (or written): absolute path -> (stat stamp, sha256).
_VERIFIED: dict[str, tuple] = {}


def file_stamp(path: str | Path) -> tuple:
    """What changes when a file's content may have: size, mtime, ctime, inode, device."""
    st = os.stat(path)  # ctime moves on any write, chmod or rename, and cannot be set back
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def sha256_matches(path: str | Path, expected: str) -> bool:
    """Whether the file's sha256 is ``expected``. The first check of a file in a process hashes
    it; a later one reuses the result while the file's size, mtime, ctime and inode are
    unchanged (so reading a stored set layer by layer hashes it once, not once per layer)."""
    key = os.path.abspath(path)
    stamp = file_stamp(path)  # taken before hashing: a write during the hash changes it
    if _VERIFIED.get(key) == (stamp, expected):
        return True
    if file_sha256(path) != expected:
        _VERIFIED.pop(key, None)
        return False
    _VERIFIED[key] = (stamp, expected)
    return True


def _remember(path: str | Path, sha: str) -> None:
    """A file this process has just written with this sha256: its next check need not re-hash."""
    _VERIFIED[os.path.abspath(path)] = (file_stamp(path), sha)


def forget_verified() -> None:
    """Forget every check this process made (as a new process would): the next check hashes."""
    _VERIFIED.clear()


#: Environment the runner gives the kernels of executed chapters: no progress bars in the book's
#: pages (they belong to the terminal and to interactive Jupyter, where they render as widgets).
QUIET_ENV = {"PIKA_PROGRESS": "0", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}


def show_progress(progress: bool = True) -> bool:
    """Whether to draw a progress bar: asked for, and not switched off by PIKA_PROGRESS=0 or
    TQDM_DISABLE=1 (the runner sets both for executed chapters)."""
    off = os.environ.get("PIKA_PROGRESS", "").strip() == "0" or \
        os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}
    return bool(progress) and not off


def path_safe(model: str) -> str:
    """A model name as a folder name under the store: a GGUF file given by its path (maybe
    absolute) becomes ``gguf-<stem>``; registered names and hub ids ('org/model') stay as they are."""
    if model.lower().endswith(".gguf"):
        return f"gguf-{Path(model).stem}"
    return model


def data_dir() -> Path:
    """Where generated outputs go: ``$PIKA_DATA_DIR`` or ``data/runs`` in the repository."""
    return Path(os.environ.get("PIKA_DATA_DIR", REPO_ROOT / "data" / "runs"))


def cache_dir() -> Path:
    """Where reusable heavy artefacts (converted weights, fetched wheels) go: ``$PIKA_CACHE_DIR``
    or ``~/.cache/pika_utils``; shared between runs and checkouts."""
    return Path(os.environ.get("PIKA_CACHE_DIR", Path.home() / ".cache" / "pika_utils"))


def versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file and an atomic rename."""
    return _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (paths and numpy scalars made plain)."""
    text = json.dumps(_canonical(obj), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    """Read a JSON sidecar, naming the file if it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); move it aside to recompute it") from None


def write_parquet(path: str | Path, df: pd.DataFrame, metadata: dict | None = None) -> Path:
    """Atomically write a DataFrame as Parquet, with ``metadata`` as a JSON sidecar beside it."""
    path = Path(path)
    if metadata is not None:  # sidecar first: the Parquet file's presence marks completion
        write_json(path.with_suffix(".json"), metadata)
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    return path


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file, naming it (and what to do) if it is truncated or corrupt."""
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except Exception as e:  # pyarrow raises several types for damaged files
        raise ValueError(
            f"{path} is corrupt or partial ({type(e).__name__}: {e}). Nothing was changed; "
            "move the file aside and re-run to recompute it."
        ) from None


def write_if_absent(path: str | Path, df: pd.DataFrame, metadata: dict | None = None) -> Path:
    """Write a table that must never be overwritten: identical content is a no-op, different
    content is an error that names the file."""
    path = Path(path)
    if path.exists():
        old = read_parquet(path)
        if old.equals(df.reset_index(drop=True)):
            return path
        raise FileExistsError(
            f"{path} already exists with different content; refusing to overwrite it. "
            "Choose another output folder or move the old file aside."
        )
    return write_parquet(path, df, metadata)


# --------------------------------------------------------------------------------------------
# One integrity rule for every stored artefact. A file's sha256 and size are recorded when it is
# written: in its JSON sidecar (written before the file is renamed into place, so a file never
# exists without its checksum) and, for the files of a run or an activation set, in a manifest one
# level up (``meta.json``) that a tamperer who rewrote a file together with its sidecar did not
# rewrite. Every use checks them (``sha256_matches``); a file without any recorded sha256 (its
# sidecar deleted, or written by a version before checksums) cannot be checked and is not trusted.
# A mismatch names the file and says what happens or what to do: a resumable chunk is moved aside
# (never deleted) and recomputed, a read raises. Nothing damaged is used or silently recomputed.


def sidecar_path(path: str | Path) -> Path:
    """``x.parquet`` -> ``x.json``; a JSON chunk ``x.json`` -> ``x.sidecar.json`` (its own name
    would otherwise be its sidecar's, and the sidecar would be overwritten by the data)."""
    path = Path(path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}.sidecar.json")
    return path.with_suffix(".json")


def say(msg: str) -> None:
    """A warning the user sees: logged, and printed to stderr (chapters show stderr)."""
    import logging
    import sys

    logging.getLogger("pika_utils.store").warning(msg)
    print(f"[pika] {msg}", file=sys.stderr, flush=True)


def write_chunk(path: str | Path, data: bytes, metadata: dict | None = None) -> Path:
    """Write ``data`` atomically with a JSON sidecar recording its sha256 and size (sidecar first:
    the chunk's presence marks completion, and a chunk never exists without its checksum)."""
    path = Path(path)
    sha = hashlib.sha256(data).hexdigest()
    write_json(sidecar_path(path), {**(metadata or {}), "sha256": sha, "bytes": len(data)})
    atomic_write_bytes(path, data)
    _remember(path, sha)
    return path


def seal_file(tmp: str | Path, path: str | Path, metadata: dict | None = None) -> Path:
    """Rename a finished temporary file to ``path`` after recording its sha256 and size in
    ``path``'s sidecar (for writers that need a file, such as safetensors' ``save_file``)."""
    tmp, path = Path(tmp), Path(path)
    sha = file_sha256(tmp)
    write_json(sidecar_path(path), {**(metadata or {}), "sha256": sha, "bytes": tmp.stat().st_size})
    os.replace(tmp, path)
    _remember(path, sha)
    return path


def parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_parquet_chunk(path: str | Path, df: pd.DataFrame, metadata: dict | None = None) -> Path:
    """A Parquet table written with ``write_chunk`` (sha256 and size in its sidecar)."""
    return write_chunk(path, parquet_bytes(df), metadata)


def _sidecar_record(path: Path) -> tuple[dict | None, str | None]:
    """(the sidecar's record when it holds a sha256, why the sidecar is unusable or None)."""
    side = sidecar_path(path)
    if not side.exists():
        return None, None
    try:
        rec = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None, f"its sidecar {side.name} is not valid JSON"
    if isinstance(rec, dict) and isinstance(rec.get("sha256"), str):
        return rec, None
    return None, None


def chunk_problem(path: str | Path, record: dict | None = None, *, where: str = "the manifest") -> str | None:
    """Why a stored file cannot be trusted, or None when it is the file that was written: its
    size and sha256 against ``record`` (its entry in a manifest, ``where`` names it) and against
    its sidecar. A file whose sha256 neither records is not trusted."""
    path = Path(path)
    if not path.exists():
        return "it is missing"
    side = sidecar_path(path)
    own, bad = _sidecar_record(path)
    if bad:
        return bad
    rec = record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None
    if rec is None and own is None:
        state = "records none" if side.exists() else "is missing"
        return (f"no sha256 is recorded for it (its sidecar {side.name} {state}: deleted, or written by an "
                "earlier version of pika_utils), so it cannot be checked")
    if rec is not None and own is not None and (own["sha256"], own.get("bytes")) != (rec["sha256"], rec.get("bytes")):
        return (f"its sidecar {side.name} records another sha256 or size than {where} "
                "(the file and its sidecar were both changed)")
    if rec is not None and rec.get("sidecar_sha256") and side.exists() and file_sha256(side) != rec["sidecar_sha256"]:
        return f"its sidecar {side.name} differs from the one {where} recorded (edited)"
    want = rec or own
    size = path.stat().st_size
    if want.get("bytes") is not None and size != want["bytes"]:
        return f"it has {size} bytes, {where if rec else 'its sidecar'} records {want['bytes']}"
    if not sha256_matches(path, want["sha256"]):
        return f"its sha256 differs from the one {where if rec else 'its sidecar'} recorded when it was written (edited or damaged)"
    return None


def move_aside(path: str | Path, why: str, *, what: str = "recomputed") -> Path:
    """Rename a damaged file (and its sidecar) to ``<name>.damaged-<timestamp>`` and say so."""
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, dest)
    _VERIFIED.pop(os.path.abspath(path), None)
    side = sidecar_path(path)
    if side.exists() and side != path:
        os.replace(side, side.with_name(f"{side.name}.damaged-{stamp}"))
    say(f"{path} is damaged ({why}); moved it aside to {dest.name}; it will be {what}")
    return dest


def chunk_ok(path: str | Path, record: dict | None = None, *, where: str = "the manifest",
             what: str = "recomputed") -> bool:
    """True if ``path`` is the file that was written (``chunk_problem``). A damaged one is moved
    aside, named (False: it will be ``what``); a missing one that ``record`` lists is named too."""
    path = Path(path)
    if not path.exists():
        if record:
            say(f"{path} is missing ({where} lists it); it will be {what}")
        return False
    why = chunk_problem(path, record, where=where)
    if why is None:
        return True
    move_aside(path, why, what=what)
    return False


def manifest_record(path: str | Path) -> dict:
    """A checked file's entry in a manifest: its sha256 and size, and its sidecar's sha256."""
    path = Path(path)
    why = chunk_problem(path)
    if why:
        raise ValueError(f"{path} is damaged ({why}); re-run to recompute it")
    own, _ = _sidecar_record(path)
    return {"sha256": own["sha256"], "bytes": own["bytes"], "sidecar_sha256": file_sha256(sidecar_path(path))}


def chunk_manifest(paths: Iterable[str | Path]) -> dict[str, dict]:
    """{file name: {sha256, bytes, sidecar_sha256}} of checked chunks, for a run's or set's meta.json."""
    return {Path(p).name: manifest_record(p) for p in paths}


def check_chunk_for_read(path: str | Path, manifest: dict | None = None, *, where: str = "meta.json",
                         fix: str = "Run the same extraction again: the damaged chunk is moved aside and "
                                    "recomputed, and nothing else is redone.") -> None:
    """Check a stored chunk before reading it (sha256 and size against ``manifest``'s entry and
    its sidecar): an error naming the file and saying what to do, never a damaged read."""
    path = Path(path)
    why = chunk_problem(path, (manifest or {}).get(path.name), where=where)
    if why:
        raise ValueError(f"{path} is damaged ({why}). {fix}")
