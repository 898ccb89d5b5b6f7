"""The environment the chapters ran in: the lock's sha256, the pip freeze and what differs from the
lock, recorded in every executed chapter and shown on the book's Environment page."""
from __future__ import annotations

import importlib.metadata
import json
import platform
import re
from pathlib import Path
from typing import Any

from ..core import store

REPO_ROOT = store.REPO_ROOT
#: The lock `make install` installs from; its sha256 is recorded with every executed chapter.
LOCK_FILE = "requirements.lock"
#: The generated page (gitignored) that shows the environment the chapters ran in.
ENVIRONMENT_PAGE = "book/environment.md"


def _canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_record(lock: Path | None = None) -> dict[str, Any]:
    """The environment this process runs in: the sha256 of the lock, the full ``pip freeze``
    (read with importlib.metadata) and every package whose installed version is not the lock's."""
    lock = Path(lock or REPO_ROOT / LOCK_FILE)
    installed: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(_canonical_name(name), (name, dist.version))
    freeze = sorted((f"{n}=={v}" for n, v in installed.values()), key=str.lower)
    differs = None
    if lock.exists():
        pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock.read_text(), re.M)
        differs = [f"{n}: lock {v}, installed {installed.get(_canonical_name(n), (n, None))[1]}"
                   for n, v in pins if installed.get(_canonical_name(n), (n, None))[1] != v]
    return {
        "lock": LOCK_FILE, "lock_sha256": store.file_sha256(lock) if lock.exists() else None,
        "matches_lock": differs == [], "differs_from_lock": differs,
        "python": platform.python_version(), "platform": platform.platform(), "pip_freeze": freeze,
    }


def write_environment_page(root: Path = REPO_ROOT) -> Path:
    """Write ``book/environment.md`` from the environments recorded in the executed chapters (or,
    where none is, this process's): the lock's sha256, whether it was matched, the pip freeze."""
    root = Path(root)
    groups: dict[str, tuple[dict, list[str]]] = {}
    from .runner import toc_chapters

    for name in toc_chapters(root):
        nb = root / "book" / "chapters" / f"{name}.ipynb"
        env = json.loads(nb.read_text()).get("metadata", {}).get("pika", {}).get("environment") if nb.exists() else None
        if env:
            key = store.stable_hash({k: env.get(k) for k in ("lock_sha256", "pip_freeze", "python", "platform")})
            groups.setdefault(key, (env, []))[1].append(name)
    if not groups:
        groups["now"] = (environment_record(), [])
    lines = [
        "# Environment", "",
        "The chapters ran in the environment below. To rebuild it, check out the same commit of the",
        f"repository and run `make install`: it installs `{LOCK_FILE}`, which pins every package with the",
        "sha256 of its files, so the install takes those files or fails. Compare the lock you have with the",
        f"one that ran: `sha256sum {LOCK_FILE}`. The pip freeze below lists what was installed.", "",
    ]
    for i, (env, chapters) in enumerate(groups.values(), 1):
        if len(groups) > 1:
            lines += [f"## Environment {i}", ""]
        if env["matches_lock"]:
            match = f"yes: every package of `{LOCK_FILE}` at its locked version"
        elif env["differs_from_lock"] is None:
            match = f"unknown: there was no `{LOCK_FILE}`"
        else:
            match = f"no: {len(env['differs_from_lock'])} package(s) differ from the lock (listed below)"
        lines += [
            "| | |", "|---|---|",
            f"| chapters | {', '.join(chapters) if chapters else 'none executed; the environment that rendered the book'} |",
            f"| lock | `{env['lock']}` |",
            f"| lock sha256 | `{env['lock_sha256']}` |",
            f"| installed as locked | {match} |",
            f"| Python | {env['python']} |",
            f"| platform | {env['platform']} |", "",
        ]
        if env["differs_from_lock"]:
            lines += ["Installed versions that differ from the lock:", "", "```text",
                      *env["differs_from_lock"], "```", ""]
        lines += [f"pip freeze ({len(env['pip_freeze'])} packages):", "", "```text", *env["pip_freeze"], "```", ""]
    return store.atomic_write_bytes(root / ENVIRONMENT_PAGE, "\n".join(lines).encode())
