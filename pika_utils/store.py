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

REPO_ROOT = Path(__file__).resolve().parent.parent

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
