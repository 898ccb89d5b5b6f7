"""The runner: a profile's parameters -> papermill runs of every chapter, in order -> Jupyter Book.

The chapter list is read from ``_toc.yml`` (each ``book/chapters/NAME`` entry is executed from
``notebooks/NAME.ipynb``), so the table of contents is the one place that says what the book holds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..core import store
from .environment import environment_record, write_environment_page
from .front_page import FINDINGS_PAGE, write_findings, write_run_summary
from .params import check_params, unknown_keys_error
from .resources import PeakMemory

REPO_ROOT = store.REPO_ROOT
PROFILES_DIR = REPO_ROOT / "notebooks" / "profiles"
#: Files that make up the book's source besides the executed notebooks.
BOOK_FILES = ("_config.yml", "_toc.yml", "book", "references.bib")


def _kernel_config():
    """The kernels talk to the runner over local sockets (IPC), not TCP on the loopback: nothing on
    the machine can listen in, and the kernel no longer warns once per chapter that it could."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc"}})


KERNEL_CONFIG = _kernel_config()


#: OpenBLAS (numpy's and scipy's BLAS) on one thread in the kernels, unless the user set it: the
#: probes' thousands of small fits (L-BFGS-B's BLAS calls on a few hundred rows) spend their time in
#: OpenBLAS's thread hand-offs, and on a busy 2-core machine the waits swamp the work (200 small
#: logistic fits: 15.6 s with OpenBLAS's default threads, 0.5 s on one, at load 8). torch keeps its
#: own threads (``core.cpu.set_torch_threads``), so the models are not affected.
KERNEL_THREADS_ENV = {"OPENBLAS_NUM_THREADS": "1"}


class ChapterFailed(RuntimeError):
    """A chapter's notebook raised: names the notebook, the cell and where the executed copy is."""


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(profile: str | Path) -> dict[str, Any]:
    """A profile's parameters: a name from notebooks/profiles/ or a path to a YAML file."""
    path = Path(profile)
    if not path.suffix:
        path = PROFILES_DIR / f"{profile}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no profile {str(profile)!r}: expected {path}; known profiles: {list_profiles()}")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"profile {path} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"profile {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path} must be a mapping of parameter names to values")
    return params


def toc_chapters(root: Path = REPO_ROOT) -> list[str]:
    """Chapter names in the order ``_toc.yml`` lists them under ``book/chapters/``."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("book/chapters/"):
                names.append(Path(f).stem)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return names


def notebook_parameters(nb_path: Path) -> dict[str, Any]:
    """The parameters a notebook declares in its cell tagged ``parameters``."""
    import papermill

    params = papermill.inspect_notebook(str(nb_path))
    if not params:
        raise ValueError(f"{nb_path} has no cell tagged 'parameters'")
    return params


def split_parameters(profile: Mapping[str, Any], notebooks: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Each notebook's share of the profile; a key that no notebook accepts is an error."""
    accepted = {name: notebook_parameters(p) for name, p in notebooks.items()}
    unknown = sorted(set(profile) - set().union(*[set(a) for a in accepted.values()]))
    if unknown:
        raise unknown_keys_error(unknown, ", ".join(notebooks))
    return {name: {k: v for k, v in profile.items() if k in acc} for name, acc in accepted.items()}


#: Profile keys whose sources may name files of the user's (``file: {path: ...}``).
SOURCE_KEYS = ("problem_sources", "difficulty_sources", "recorded_sources", "code_sources")
#: Profile keys that list model names, which may be a .gguf file or a model folder.
MODEL_KEYS = ("models", "budget_models", "difficulty_models", "code_models", "bt_generator", "bt_reader",
              "bt_llm_annotator", "recover_specialist", "recover_reference", "recorded_reader", "reader")


def absolute_paths(params: Mapping[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The profile with every relative file path made absolute against ``base`` (the directory
    the user ran the command in), because the chapters run with the checkout as their working
    directory: ``-p 'recorded_members=[{..., "file": "logs/a.jsonl"}]'`` means the user's logs/.
    A path that exists only under the checkout (the README's examples, run from anywhere) is kept
    there."""
    base = Path(base or Path.cwd())

    def fix(v: Any, must_exist: bool = False) -> Any:
        if not isinstance(v, str) or not v.strip() or Path(v).is_absolute():
            return v
        here, repo = base / v, REPO_ROOT / v
        if here.exists():
            return str(here.resolve())
        if repo.exists():
            return str(repo)
        return v if must_exist else str(here.resolve())  # missing: named as the user's path

    out = dict(params)
    for key in SOURCE_KEYS:
        src = out.get(key)
        if isinstance(src, Mapping) and isinstance(src.get("file"), Mapping):
            f = dict(src["file"])
            if "path" in f:
                f["path"] = fix(f["path"])
            if isinstance(f.get("paths"), list):
                f["paths"] = [fix(x) for x in f["paths"]]
            out[key] = {**src, "file": f}
    if isinstance(out.get("recorded_members"), list):
        out["recorded_members"] = [{**m, "file": fix(m["file"])} if isinstance(m, Mapping) and "file" in m else m
                                   for m in out["recorded_members"]]
    for key in MODEL_KEYS:  # only what names a file or folder here: registry names and hub ids stay
        v = out.get(key)
        if isinstance(v, list):
            out[key] = [fix(x, must_exist=True) for x in v]
        elif isinstance(v, str):
            out[key] = fix(v, must_exist=True)
    return out


def execute_chapters(
    profile: str | Path | Mapping[str, Any],
    *,
    chapters: Sequence[str] | None = None,
    root: Path = REPO_ROOT,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    preflight: bool = True,
) -> dict[str, float]:
    """Run each chapter with papermill into ``root/book/chapters``; returns wall seconds per
    chapter. A failing cell stops the run with an error naming the notebook and the cell, and
    leaves the chapter's earlier page and verdicts as they were (the failed copy beside them).
    ``preflight``: check first that the machine has what the chosen chapters need."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = dict(profile) if isinstance(profile, Mapping) else load_profile(profile)
    params.update(overrides or {})
    check_params(params)  # every value its declared type and range, first: it needs no notebook
    params = absolute_paths(params)  # the chapters run in the checkout; the user's paths are theirs
    every = toc_chapters(root)
    names = list(chapters or every)
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ValueError(f"chapter(s) {unknown} are not in _toc.yml; chapters: {every}")
    sources = {n: REPO_ROOT / "notebooks" / f"{n}.ipynb" for n in every}
    for n, p in sources.items():
        if not p.exists():
            raise FileNotFoundError(f"_toc.yml lists chapter {n!r} but {p} does not exist")
    shares = split_parameters(params, sources)  # a key must fit some chapter of the book
    unused = sorted(k for k in (overrides or {}) if not any(k in shares[n] for n in names))
    if unused:  # an override must reach a chapter that runs: papermill would only warn
        takes = {k: [n for n in every if k in shares[n]] for k in unused}
        raise ValueError(f"override(s) {unused} are parameters of none of the chapters this run executes "
                         f"({', '.join(names)}): " + "; ".join(f"{k!r} is a parameter of {', '.join(c)}"
                                                              for k, c in takes.items())
                         + ". Run those chapters too (--chapters), or drop the override")
    if preflight:  # everything the chosen chapters need, before chapter 1: one report, every problem
        from .preflight import check_or_raise

        check_or_raise(params, names, root)
    out_dir = Path(root) / "book" / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for n in names:
        dst = out_dir / f"{n}.ipynb"
        # executed into a hidden copy that replaces the page only when every cell ran: a failure
        # never replaces a good page (only_build_toc_files keeps both copies out of the book)
        running, failed = out_dir / f".{n}.running.ipynb", out_dir / f"{n}.failed.ipynb"
        print(f"[book] executing {sources[n].relative_to(REPO_ROOT)} -> {dst}", flush=True)
        t0 = time.perf_counter()
        kernel_env = {**store.QUIET_ENV, **{k: v for k, v in KERNEL_THREADS_ENV.items() if k not in os.environ}}
        saved_env = {k: os.environ.get(k) for k in kernel_env}
        os.environ.update(kernel_env)  # the kernel inherits it: no progress bars in the pages
        kept = _chapter_verdicts(params, n)
        try:
            with PeakMemory() as mem:
                papermill.execute_notebook(
                    str(sources[n]), str(running), parameters=shares[n], kernel_name="python3",
                    progress_bar=progress, cwd=str(REPO_ROOT), language="python", config=KERNEL_CONFIG,
                )
        except BaseException as e:
            kept_page = dst.exists()
            if running.exists():
                os.replace(running, failed)
            _restore_verdicts(params, n, kept)
            if isinstance(e, PapermillExecutionError):
                raise ChapterFailed(
                    f"chapter notebooks/{n}.ipynb failed in cell {e.cell_index} (execution count "
                    f"{e.exec_count}): {e.ename}: {e.evalue}\nThe executed copy with the traceback is {failed}"
                    + (f"; the page of the last successful run, {dst}, and its verdicts are kept" if kept_page
                       else "")) from None
            raise
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        timings[n] = time.perf_counter() - t0
        _stamp(running, params, timings[n], mem.peak_bytes)
        tidy_executed(running, shares[n], params.get("profile"))
        os.replace(running, dst)
        failed.unlink(missing_ok=True)
        print(f"[book] {n}: {timings[n]:.1f} s, peak memory {mem.peak_gb:.2f} GB", flush=True)
    timings_file = out_dir / "_timings.json"
    earlier = store.read_json(timings_file).get("timings_s", {}) if timings_file.exists() else {}
    store.write_json(timings_file, {"timings_s": {**earlier, **timings}, "params": params, "created": store.now_iso()})
    return timings


def _chapter_verdicts(params: Mapping[str, Any], chapter: str) -> dict[Path, bytes]:
    """The stored claims (and dropped claims) a chapter recorded in its last run, as files, so a
    failed re-run can put them back beside the page it keeps."""
    from . import verdicts

    return {f: f.read_bytes() for f in verdicts.chapter_files(str(params.get("profile", "custom")), chapter[:2])}


def _restore_verdicts(params: Mapping[str, Any], chapter: str, kept: Mapping[Path, bytes]) -> None:
    """Undo what a failed run of ``chapter`` recorded: its claims are those of its last good run."""
    for f in _chapter_verdicts(params, chapter):
        f.unlink(missing_ok=True)
    for f, data in kept.items():
        store.atomic_write_bytes(f, data)


def _stamp(nb_path: Path, params: Mapping[str, Any], seconds: float, peak_bytes: int | None = None) -> None:
    """Record the profile, versions, wall time and peak resident memory (the kernel and every
    process it started, ``resources.PeakMemory``) in the executed notebook's metadata."""
    nb = json.loads(nb_path.read_text())
    nb.setdefault("metadata", {})["pika"] = {
        "parameters": dict(params), "versions": store.versions(), "wall_s": round(seconds, 1),
        "peak_rss_gb": None if peak_bytes is None else round(peak_bytes / 1024 ** 3, 2),
        "executed": store.now_iso(), "environment": environment_record(),
    }
    store.atomic_write_bytes(nb_path, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())


def _value(v: Any, width: int = 70) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    text = text.replace("|", "\\|").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def tidy_executed(nb_path: Path, share: Mapping[str, Any], profile: str | None) -> None:
    """Make an executed chapter read result-first: the notebook's default parameters and papermill's
    injected ones are removed from the page, replaced by one collapsed table of this run's values,
    and the setup cell (``chapter_params``) shows its output but hides its input."""
    nb = json.loads(nb_path.read_text())
    cells = nb["cells"]
    last = -1
    for i, c in enumerate(cells):
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if c["cell_type"] == "code" and ({"parameters", "injected-parameters"} & set(tags)):
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            last = i
        elif c["cell_type"] == "code" and "chapter_params(" in "".join(c["source"]) and "hide-input" not in tags:
            tags.append("hide-input")
    if last < 0:
        return
    rows = "\n".join(f"| `{k}` | {_value(v)} |" for k, v in share.items())
    note = (f"<details><summary>Parameters of this run (profile <code>{profile or 'custom'}</code>)</summary>\n\n"
            f"| parameter | value |\n|---|---|\n{rows}\n\n</details>")
    if not any(c["metadata"].get("pika") == "parameters-note" for c in cells):
        cells.insert(last + 1, {"cell_type": "markdown", "id": "pika-parameters-note",
                                "metadata": {"pika": "parameters-note"}, "source": note})
    store.atomic_write_bytes(nb_path, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())
def stage_book(root: Path) -> Path:
    """Copy the book's hand-written sources into ``root`` (for a build outside the repository)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("chapters"))
        elif src.exists():
            shutil.copy2(src, root / name)
    return root


def build_book(root: Path = REPO_ROOT) -> Path:
    """Render the book with Jupyter Book 1.x; returns the path of ``index.html``."""
    summary = Path(root) / "book" / "run_summary.md"
    if not summary.exists():  # the intro includes it; a build without a recorded run says so
        store.atomic_write_bytes(summary, b"No run of the chapters was recorded in this folder (the runner writes this).\n")
    if not (Path(root) / FINDINGS_PAGE).exists():
        store.atomic_write_bytes(Path(root) / FINDINGS_PAGE, b"No verdicts were recorded in this folder (the runner writes this).\n")
    write_environment_page(root)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--builder", "html"]
    print("[book] " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    index = Path(root) / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.exists():
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return index


#: Each profile's book (executed chapters and HTML) lives apart, so a smoke run does not replace
#: the workshop's pages: ``books/<profile>/book/chapters`` and ``books/<profile>/_build/html``.
BOOKS_DIR = REPO_ROOT / "books"


def profile_root(profile: str | Path | Mapping[str, Any]) -> Path:
    """Where ``profile``'s book is built: ``books/<its file's name>`` (paper-k50 apart from paper;
    a profile given as a mapping: its ``profile`` key)."""
    name = profile.get("profile", "custom") if isinstance(profile, Mapping) else Path(str(profile)).stem
    return BOOKS_DIR / store.path_safe(str(name))


def make_book(profile: str | Path, *, chapters: Sequence[str] | None = None, root: Path | None = None,
              overrides: Mapping[str, Any] | None = None, build: bool = True, preflight: bool = True) -> Path | None:
    """The main job: execute every chapter for ``profile`` and render the book, under
    ``books/<profile>`` unless ``root`` says where."""
    root = Path(root) if root is not None else profile_root(profile)
    if root.resolve() != REPO_ROOT.resolve():
        stage_book(root)
    t0 = time.perf_counter()
    timings = execute_chapters(profile, chapters=chapters, root=root, overrides=overrides, preflight=preflight)
    write_run_summary(root, profile, timings, time.perf_counter() - t0)
    # the chapters whose executed pages this book holds (a partial run keeps the others' pages)
    shown = sorted(p.stem for p in (root / "book" / "chapters").glob("*.ipynb")) or list(timings)
    write_findings(root, str(load_profile(profile).get("profile", profile)), chapters=shown)
    index = build_book(root) if build else None
    print(f"[book] done in {time.perf_counter() - t0:.0f} s" + (f": {index}" if index else ""), flush=True)
    return index
