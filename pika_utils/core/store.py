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
# Chunks that prove themselves: a sidecar records each chunk's sha256 and size, written before
# the chunk is renamed into place; resume and read verify it, and a damaged chunk is moved aside
# (never deleted) with a message that names it.


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def write_chunk(path: str | Path, data: bytes, metadata: dict | None = None) -> Path:
    """Write ``data`` atomically with a JSON sidecar recording its sha256 and size (sidecar first:
    the chunk's presence marks completion, and a chunk never exists without its checksum)."""
    path = Path(path)
    write_json(sidecar_path(path), {**(metadata or {}), "sha256": hashlib.sha256(data).hexdigest(),
                                    "bytes": len(data)})
    return atomic_write_bytes(path, data)


def seal_file(tmp: str | Path, path: str | Path, metadata: dict | None = None) -> Path:
    """Rename a finished temporary file to ``path`` after recording its sha256 and size in
    ``path``'s sidecar (for writers that need a file, such as safetensors' ``save_file``)."""
    tmp, path = Path(tmp), Path(path)
    write_json(sidecar_path(path), {**(metadata or {}), "sha256": file_sha256(tmp), "bytes": tmp.stat().st_size})
    os.replace(tmp, path)
    return path


def parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_parquet_chunk(path: str | Path, df: pd.DataFrame, metadata: dict | None = None) -> Path:
    """A Parquet table written with ``write_chunk`` (sha256 and size in its sidecar)."""
    return write_chunk(path, parquet_bytes(df), metadata)


def safetensors_header_problem(path: Path) -> str | None:
    """Why a safetensors file is truncated or not one (reads the 8-byte length and the header
    only), or None when its header is consistent with its size."""
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"its header claims {n} bytes but the file has {size}"
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        return f"its header is unreadable ({type(e).__name__})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) != size:
        return f"it has {size} bytes, its header describes {8 + n + max(ends, default=0)}"
    return None


def chunk_problem(path: str | Path, *, full: bool = True) -> str | None:
    """Why a stored chunk cannot be trusted, or None. Checks the size (and with ``full`` the
    sha256) recorded in its sidecar; chunks written before sidecars carried checksums get a
    format check only (Parquet footer / safetensors header)."""
    path = Path(path)
    if not path.exists():
        return "it is missing"
    side = sidecar_path(path)
    record = None
    if side.exists():
        try:
            record = json.loads(side.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return f"its sidecar {side.name} is not valid JSON"
    size = path.stat().st_size
    if isinstance(record, dict) and "sha256" in record:
        if size != record.get("bytes"):
            return f"it has {size} bytes, its sidecar records {record.get('bytes')}"
        if full and file_sha256(path) != record["sha256"]:
            return "its sha256 differs from the one recorded when it was written (edited or damaged)"
        return None
    if path.suffix == ".safetensors":
        return safetensors_header_problem(path)
    if path.suffix == ".parquet":
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, size - 4))
            tail = f.read(4)
        if head != b"PAR1" or tail != b"PAR1":
            return "it is not a complete Parquet file"
    return None


def move_aside(path: str | Path, why: str, *, what: str = "recomputed") -> Path:
    """Rename a damaged file (and its sidecar) to ``<name>.damaged-<timestamp>`` and say so."""
    import logging
    import sys

    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, dest)
    side = sidecar_path(path)
    if side.exists() and side != path:
        os.replace(side, side.with_name(f"{side.name}.damaged-{stamp}"))
    msg = f"{path} is damaged ({why}); moved it aside to {dest.name}; it will be {what}"
    logging.getLogger("pika_utils.store").warning(msg)
    print(f"[pika] {msg}", file=sys.stderr, flush=True)
    return dest


def chunk_ok(path: str | Path, *, full: bool = True) -> bool:
    """True if ``path`` exists and matches its sidecar (size, and sha256 with ``full``); a damaged
    chunk is moved aside (False: recompute it)."""
    path = Path(path)
    if not path.exists():
        return False
    why = chunk_problem(path, full=full)
    if why is None:
        return True
    move_aside(path, why)
    return False


def chunk_manifest(paths: Iterable[str | Path]) -> dict[str, dict]:
    """{file name: {sha256, bytes}} from the chunks' sidecars, for a run's meta.json."""
    out = {}
    for p in paths:
        side = sidecar_path(p)
        rec = json.loads(side.read_text(encoding="utf-8")) if side.exists() else {}
        out[Path(p).name] = {"sha256": rec.get("sha256"), "bytes": rec.get("bytes", Path(p).stat().st_size)}
    return out


def check_chunk_for_read(path: str | Path, manifest: dict | None = None) -> None:
    """A cheap check before reading a stored chunk (size against the manifest, format header):
    an error naming the file and what to do, instead of a reader's bare error."""
    path = Path(path)
    rec = (manifest or {}).get(path.name)
    why = None
    if not path.exists():
        why = "it is missing"
    elif rec and rec.get("bytes") is not None and path.stat().st_size != rec["bytes"]:
        why = f"it has {path.stat().st_size} bytes, the manifest records {rec['bytes']}"
    elif path.suffix == ".safetensors":
        why = safetensors_header_problem(path)
    if why:
        raise ValueError(f"{path} is damaged ({why}). Run the same extraction again: the damaged "
                         "chunk is moved aside and recomputed, and nothing else is redone.")
