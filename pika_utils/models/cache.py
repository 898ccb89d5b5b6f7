"""Cached model folders: built once into a temporary sibling and renamed, so a killed build leaves
no half cache; a sidecar written last marks a folder complete and records the weights' sha256."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..core.store import file_sha256, file_stamp, now_iso, read_json, sha256_matches, versions, write_json

log = logging.getLogger(__name__)

#: Bump to rebuild the converted/built caches when the recipes change.
BUILD_VERSION = 1
META_FILE = "pika_model.json"


def is_complete(folder: Path) -> bool:
    return (folder / META_FILE).exists()


def weights_sha256(folder: Path) -> str:
    """sha256 of the safetensors file; for shards, of their 'sha256  name' lines (sha256sum style)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights (pickled .bin weights are not loaded)")
    shas = [_blob_sha(f) for f in files]
    if len(files) == 1:
        return shas[0]
    manifest = "".join(f"{s}  {f.name}\n" for s, f in zip(shas, files))
    return hashlib.sha256(manifest.encode()).hexdigest()


def _blob_sha(path: Path) -> str:
    """The hub cache names large-file blobs by their sha256: use it rather than re-reading GBs."""
    target = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", target.name) and target.parent.name == "blobs":
        return target.name
    return file_sha256(target)



def build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a temporary sibling folder and rename it to ``final``; if another
    process finished first, keep theirs. Leftovers of killed builds are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-{os.getpid()}-"))
    try:
        build(tmp)
        _make_readable(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # someone else renamed theirs into place first
            if not is_complete(final):
                raise RuntimeError(f"{final} exists but is not a complete model cache (its {META_FILE}, which "
                                   f"records the weights' sha256, is missing); delete {final} to rebuild it") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _make_readable(folder: Path) -> None:
    """mkdtemp makes private folders; a shared cache should follow the umask like other files."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _remove_stale_tmp(final: Path) -> None:
    for d in final.parent.glob(f".tmp-{final.name}-*"):
        m = re.match(rf"\.tmp-{re.escape(final.name)}-(\d+)-", d.name)
        if m and not _pid_alive(int(m.group(1))):
            log.info("removing %s, left by a killed build", d)
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish(folder: Path, source: str, **extra) -> None:
    """Write the sidecar last: a folder with it is complete; it records the weights' sha256."""
    weights = folder / "model.safetensors"
    write_json(folder / META_FILE, {"source": source, "weights_sha256": file_sha256(weights),
                                    "weights_bytes": weights.stat().st_size, "built": now_iso(),
                                    "build_version": BUILD_VERSION, "versions": versions(), **extra})




#: The last full check of a cache's weights: the file's stamp then (size, mtime, ctime, inode,
#: device) and the sha256 it matched. ctime moves on any write, chmod or rename and cannot be set
#: back, so weights changed since (even at the same size and mtime) no longer match the stamp.
VERIFIED_FILE = "pika_verified.json"


def verify_weights(folder: Path, meta: dict) -> None:
    """The cached weights are the ones the sidecar describes, checked on every use: the size, and
    the sha256, hashed unless the file is unchanged since the last full check (its stamp in
    ``pika_verified.json``, or this process's own check, see ``store.sha256_matches``): a chapter
    that only looks a model up does not re-read gigabytes. A mismatch names the file and the
    folder to delete."""
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise RuntimeError(f"{weights} is missing from the model cache; delete {folder} to rebuild it")
    size = weights.stat().st_size
    if size != meta.get("weights_bytes"):
        raise RuntimeError(f"{weights} has {size} bytes, its sidecar says "
                           f"{meta.get('weights_bytes')}: the cache is damaged; delete {folder} to rebuild it")
    want = meta.get("weights_sha256")
    stamp = {"stamp": list(file_stamp(weights)), "sha256": want}
    try:
        if isinstance(want, str) and read_json(folder / VERIFIED_FILE) == stamp:
            return
    except (OSError, ValueError):
        pass
    if not isinstance(want, str) or not sha256_matches(weights, want):
        got = file_sha256(weights)
        raise RuntimeError(f"{weights} has sha256 {got[:12]}..., its sidecar {META_FILE} records "
                           f"{str(want)[:12]}...: the cache is damaged; delete {folder} to rebuild it")
    try:
        write_json(folder / VERIFIED_FILE, stamp)
    except OSError:  # a read-only shared cache: hash again next time
        pass
