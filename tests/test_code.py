"""The code domain: loaders, the problem table's domain column, extracting and grading programs
(run for real in the sandbox), rollouts on code problems, cross-domain probes, whether a run can
decide the code claims, and chapter 10 (with a sandbox, and without one)."""
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from pika_utils.problems import hub_sources
from pika_utils.problems import table
from pika_utils.grading import code as code_grading
from pika_utils.grading import by_domain as graders
from pika_utils.problems import tasks
from pika_utils.problems.code import convert_code_frame


@pytest.fixture(scope="module")
def humaneval():
    return tasks.load_problems({"humaneval": {}})


def test_humaneval_loads_offline_with_tests_and_entry_points(humaneval):
    assert len(humaneval) == 164 and set(humaneval["domain"]) == {"code"}
    row = humaneval.set_index("problem_id").loc["humaneval-000"]
    assert row["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in row["tests"] and row["tests"].rstrip().endswith("check(has_close_elements)")
    assert row["answer"].startswith(row["question"])  # prompt + canonical solution
    assert humaneval.attrs["sources"][0]["name"] == "humaneval"
    few = tasks.load_problems({"humaneval": {"limit": 5}}, seed=1)
    assert len(few) == 5 and set(few["problem_id"]) <= set(humaneval["problem_id"])


def test_domain_column_is_optional_and_code_needs_tests(humaneval):
    maths = tasks.load_problems({"ladder": {"n_per_level": 2, "levels": [1]}})
    assert "domain" not in maths.columns  # maths-only tables keep their schema
    both = tasks.load_problems({"ladder": {"n_per_level": 2, "levels": [1]}, "humaneval": {"limit": 3}})
    assert both["domain"].value_counts().to_dict() == {"code": 3, "math": 2}
    assert (both.loc[both["domain"] == "math", "tests"] == "").all()
    split = table.make_splits(both)
    assert set(split["split"]) <= {"train", "val", "test"}
    bad = humaneval.head(2).copy()
    bad.loc[bad.index[0], "tests"] = " "
    with pytest.raises(ValueError, match="code problem without tests.*humaneval"):
        table.validate_problems(bad)
    bad = humaneval.head(1).assign(domain="poetry")
    with pytest.raises(ValueError, match="unknown domain"):
        table.validate_problems(bad)


def test_extract_code():
    fenced = "Here you go:\n```python\ndef f(x):\n    return x\n```\nand a test:\n```python\nprint(f(1))\n```"
    assert code_grading.extract_code(fenced, "f") == "def f(x):\n    return x"
    assert code_grading.extract_code("```py\ndef g():\n    return 1", "g") == "def g():\n    return 1"  # cut off
    assert code_grading.extract_code("def h():\n    return 2\n") == "def h():\n    return 2"
    assert code_grading.extract_code("Sure! The answer:\nimport math\ndef h():\n    return math.pi").startswith("import math")
    assert code_grading.extract_code("I cannot help with that.") is None
    assert code_grading.extract_code("") is None


def test_grading_a_humaneval_problem_for_real(humaneval):
    p = humaneval.set_index("problem_id").loc[["humaneval-000"]].reset_index()
    right = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    wrong = right.replace("< threshold", "> threshold")
    loops = "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n        pass\n```"
    exits = "```python\nimport sys\nsys.exit(0)\ndef has_close_elements(numbers, threshold):\n    return True\n```"
    grades = code_grading.grade_codes([right, wrong, "no code here", loops, exits, "```python\ndef has_close(:\n```"],
                                      p, ["humaneval-000"] * 6, workers=2,
                                      limits=code_grading.GRADING_LIMITS.__class__(wall_s=2, cpu_s=1))
    assert [g.reason for g in grades] == ["pass", "assertion", "no_code", "timeout", "exit_before_tests", "syntax_error"]
    assert [g.correct for g in grades] == [True] + [False] * 5  # `List` came from the prompt's imports


def _lcb_frame():
    return pd.DataFrame([
        {"question_id": "abc001", "question_content": "Print the sum of two integers.", "platform": "atcoder",
         "contest_id": "abc", "contest_date": "2023-05-01", "question_title": "Sum", "difficulty": "easy",
         "starter_code": "", "metadata": "{}",
         "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                                          {"input": "5 7\n", "output": "12\n", "testtype": "stdin"}])},
        {"question_id": "lc2", "question_content": "Return the largest number.", "platform": "leetcode",
         "contest_id": "w1", "contest_date": "2023-05-02", "question_title": "Max", "difficulty": "hard",
         "starter_code": "class Solution:\n    def biggest(self, nums: List[int], k: int) -> int:\n        ",
         "metadata": json.dumps({"func_name": "biggest"}),
         "public_test_cases": json.dumps([{"input": "[1, 5, 2]\n0", "output": "5", "testtype": "functional"}])},
    ])


def test_livecodebench_conversion_and_both_kinds_of_tests_run():
    probs = convert_code_frame("livecodebench", _lcb_frame())
    assert list(probs["problem_id"]) == ["lcb-abc001", "lcb-lc2"] and set(probs["source"]) == {"livecodebench"}
    assert list(probs["difficulty"]) == [1.0, 3.0] and set(probs["difficulty_kind"]) == {"platform_level"}
    assert list(probs["entry_point"]) == ["", "biggest"] and "Complete this code" in probs["question"].iloc[1]
    outs = ["```python\na, b = map(int, input().split())\nprint(a + b)\n```",
            "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a - b)\n```",
            "```python\nclass Solution:\n    def biggest(self, nums, k):\n        return max(nums)\n```",
            "```python\nclass Solution:\n    def biggest(self, nums, k):\n        return min(nums)\n```"]
    grades = code_grading.grade_codes(outs, probs, ["lcb-abc001", "lcb-abc001", "lcb-lc2", "lcb-lc2"], workers=2)
    assert [(g.correct, g.reason) for g in grades] == [(True, "pass"), (False, "assertion"), (True, "pass"),
                                                       (False, "assertion")]


def test_mbpp_conversion_and_reference_passes():
    frame = pd.DataFrame([{"task_id": 11, "prompt": "Write a function to remove the first and last occurrence of a character.",
                           "code": "def remove_Occ(s, ch):\n    i = s.find(ch)\n    s = s[:i] + s[i + 1:] if i >= 0 else s\n"
                                   "    j = s.rfind(ch)\n    return s[:j] + s[j + 1:] if j >= 0 else s\n",
                           "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"'],
                           "test_imports": [], "source_file": "x"}])
    probs = convert_code_frame("mbpp", frame)
    assert probs["entry_point"].iloc[0] == "remove_Occ" and 'assert remove_Occ("hello"' in probs["question"].iloc[0]
    assert code_grading.reference_check(probs, workers=1)["correct"].all()


def test_code_hub_sources_fail_fast_offline_naming_humaneval(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("hub:livecodebench", "hub:mbpp"):
        with pytest.raises(hub_sources.HubUnavailableError, match="humaneval"):
            tasks.load_problems({name: {"limit": 3}})


def test_graders_dispatch_by_domain(humaneval):
    maths = tasks.load_problems({"ladder": {"n_per_level": 1, "levels": [1]}})
    problems = pd.concat([maths, humaneval.head(1)], ignore_index=True)
    m_id, c_id = maths["problem_id"].iloc[0], humaneval["problem_id"].iloc[0]
    ref = humaneval["answer"].iloc[0]
    rows = pd.DataFrame({"problem_id": [m_id, c_id, m_id, c_id],
                         "text": [maths["answer"].iloc[0], f"```python\n{ref}\n```", "-99999", "pass"],
                         "answer": [maths["answer"].iloc[0], ref, maths["answer"].iloc[0], ref]}, index=[10, 11, 12, 13])
    out = graders.grade_frame(rows, problems)
    assert list(out.index) == [10, 11, 12, 13]
    assert list(out["correct"]) == [True, True, False, False]
    assert list(out["grade_reason"])[1] == "pass" and list(out["grade_reason"])[3] in ("exception", "no_code")


def test_rollouts_on_code_problems_are_graded_in_the_sandbox(tmp_path, humaneval):
    from pika_utils.core.prompts import CODE_SUFFIX
    from pika_utils.generation.rollouts import run_rollouts
    from pika_utils.generation.sampling import SamplingConfig

    probs = table.make_splits(humaneval.head(3))
    cfg = SamplingConfig(k=2, temperature=1.0, max_new_tokens=6, prompt_suffix=CODE_SUFFIX, chunk_size=3)
    run = run_rollouts(probs, "tiny-random-llama", cfg, source="offline", out_root=tmp_path, progress=False)
    assert len(run.rollouts) == 6
    assert set(run.rollouts["grade_reason"]) <= set(code_grading.REASONS)
    assert not run.rollouts["correct"].any()  # a random model writes no passing program
    assert run.rollouts["extracted"].isna().all()


def test_cross_domain_transfer_trains_on_one_side_and_tests_on_the_other(tmp_path):
    from conftest import tiny_activations

    from pika_utils.coding import pipeline as code_pipeline

    _, problems, acts = tiny_activations(tmp_path)
    n = len(problems)
    # a learnable target: how many times the question says "again" (the tiny model reads it)
    y = np.array([(i % 5) / 4 for i in range(n)])
    lab = pd.DataFrame({"problem_id": problems["problem_id"], "success_rate": y, "question": problems["question"]})
    src = lab.iloc[: n // 2].assign(split=["train", "train", "val", "test"] * (n // 8))
    dst = lab.iloc[n // 2:].assign(split=["train", "train", "val", "test"] * (n // 8))
    row = code_pipeline.cross_domain_transfer(acts, src, acts, dst, "success_rate", model="tiny-random-llama",
                                              name="a -> b", alphas=[0.01, 1.0, 100.0], n_boot=50, seed=0)
    assert row["n_test"] == n // 2 and row["n_test_split"] == n // 8
    assert math.isfinite(row["test"]) and row["ci_low"] <= row["test"] <= row["ci_high"]
    assert row["layer"] in acts.layers


@pytest.mark.slow  # the smoke book runs this chapter too (tests/test_book.py)
def test_chapter_10_runs_on_the_smoke_profile(tmp_path, monkeypatch):
    from conftest import run_smoke_chapter

    nb = run_smoke_chapter(tmp_path, monkeypatch, "10_code")
    text = json.dumps(nb["cells"])
    assert "Smoke profile" in text and "no_code" in text and "whole chapter" in text
    assert nb["metadata"]["papermill"]["parameters"]["code_k"] == 2
    # a random model passes nothing: every code claim is dropped as not tested, none recorded
    folder = tmp_path / "runs" / "verdicts" / "smoke"
    assert not list(folder.glob("c10-*.json"))
    dropped = [json.loads(p.read_text()) for p in (folder / "dropped").glob("c10-*.json")]
    assert len(dropped) == 3 and all(d["reason"].startswith("not tested at this scale") for d in dropped)
    shown = json.dumps([o.get("text", "") or {k: v for k, v in o.get("data", {}).items() if k.startswith("text/")}
                        for c in nb["cells"] for o in c.get("outputs", [])])  # what a reader reads, figures aside
    assert "NaN" not in shown


def test_scale_shortfall_and_problems_needed():
    from pika_utils.core import scale

    assert scale.shortfall({"passing": 30, "failing": 31}) is None
    assert scale.shortfall({"passing": 2, "failing": 40}) == "2 passing and 40 failing (at least 30 of each are needed)"
    assert scale.shortfall({"a": 1, "b": 2, "c": 3}, min_each=2) == "1 a, 2 b and 3 c (at least 2 of each are needed)"
    assert scale.shortfall({}) == "no problems (at least 30 of each are needed)"
    assert scale.problems_needed(0.25, fraction=0.2) == 600  # 600 * 0.2 * 0.25 = 30 of the rarer outcome
    assert scale.problems_needed(0.9) == 300 and scale.problems_needed(0.0) is None
    assert scale.problems_needed(float("nan")) is None
    with pytest.raises(ValueError, match="min_each"):
        scale.shortfall({"a": 1}, min_each=0)


def test_shortest_programs_keeps_splits_and_takes_the_shortest_references(humaneval):
    from pika_utils.coding import pipeline as code_pipeline

    split = table.make_splits(humaneval)
    few = code_pipeline.shortest_programs(split, 4)
    lengths = split.set_index("problem_id")["answer"].str.len()
    assert len(few) == 4 and lengths[few["problem_id"]].max() <= lengths.drop(few["problem_id"]).min()
    assert "humaneval-053" in set(few["problem_id"])  # add(x, y): the shortest reference program
    assert (few.set_index("problem_id")["split"] == split.set_index("problem_id").loc[few["problem_id"], "split"]).all()
    assert code_pipeline.shortest_programs(split, None) is split
    with pytest.raises(ValueError, match="code_shortest"):
        code_pipeline.shortest_programs(split, 0)


def test_code_claims_are_decided_only_with_thirty_problems_of_each_outcome():
    from pika_utils.coding import pipeline as code_pipeline

    ids = [f"p{i:03d}" for i in range(200)]
    problems = pd.DataFrame({"problem_id": ids, "split": (["train"] * 3 + ["val", "test"]) * 40})  # 40 test problems
    # "big" passes the odd problems; "tiny" passes 4 of them
    summary = pd.DataFrame({"model": ["big"] * 200 + ["tiny"] * 200, "problem_id": ids * 2,
                            "maj_correct": [i % 2 == 1 for i in range(200)] + [i < 4 for i in range(200)],
                            "split": "train"})  # the summary's own split column is the problems' (here a stale one)
    counts = code_pipeline.outcome_counts(summary, problems).set_index("model")
    assert counts.loc["big", ["test", "test_passing", "test_failing"]].tolist() == [40, 20, 20]  # test: ids 4, 9, 14...
    assert counts.loc["tiny", ["all_passing", "all_failing"]].tolist() == [4, 196]
    why = code_pipeline.scale_reasons(counts.reset_index(), test_fraction=0.2)
    assert why["big"]["transfer"] is None  # 100 passing and 100 failing code problems
    assert why["big"]["probe"].startswith("not tested at this scale: big has 20 test problems passed by most programs and 20 failed")
    assert "paper profile" in why["big"]["probe"] and "300 problems" in why["big"]["probe"]  # 30 / (0.5 * 0.2)
    assert "4 code problems passed by most programs and 196 failed" in why["tiny"]["transfer"]


def _path_without_bwrap(tmp_path) -> str:
    """One folder of links to every program on PATH but bubblewrap: a machine without it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            src, dst = os.path.join(d, name), folder / name
            if name != "bwrap" and not dst.exists() and os.path.isfile(src) and os.access(src, os.X_OK):
                dst.symlink_to(src)
    return str(folder)


def test_chapter_10_without_a_sandbox_says_why_and_records_no_code_claim(tmp_path, monkeypatch):
    """Where no sandbox can exist (no bubblewrap here), the chapter renders, says why no program
    ran and how to install it, generates nothing, and drops every code claim with that reason."""
    from conftest import run_smoke_chapter

    from pika_utils.book import preflight
    from pika_utils.grading import sandbox

    monkeypatch.setenv("PATH", _path_without_bwrap(tmp_path))
    assert shutil.which("bwrap") is None
    # the runner's preflight (in this process) sees a machine where no sandbox can exist, so it
    # says so and goes on; the chapter's kernel finds no bwrap on its PATH
    monkeypatch.setattr(preflight, "user_namespaces", lambda: "a kernel without user namespaces (simulated)")
    monkeypatch.setattr(sandbox, "available", lambda: "bubblewrap (bwrap) is not installed")
    nb = run_smoke_chapter(tmp_path, monkeypatch, "10_code")
    text = json.dumps(nb["cells"])
    assert "No program ran on this machine" in text and "bubblewrap (bwrap) is not installed" in text
    assert "apt-get install bubblewrap" in text  # the command that fixes it
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    folder = tmp_path / "runs" / "verdicts" / "smoke"
    assert not list(folder.glob("c10-*.json"))  # no code claim recorded
    dropped = [json.loads(p.read_text()) for p in (folder / "dropped").glob("c10-*.json")]
    assert len(dropped) == 3 and all("bubblewrap (bwrap) is not installed" in d["reason"] for d in dropped)
    assert not (tmp_path / "runs" / "rollouts").exists() or not any((tmp_path / "runs" / "rollouts").iterdir())


def test_code_rollouts_do_not_inherit_the_maths_stop_string():
    """Chapter 10 declares chapter 1's `stop` (to read its maths rollouts back); a program spans
    many lines, so the code rollouts must not stop at the first newline."""
    from pika_utils.generation import pipeline
    from pika_utils.coding.pipeline import code_params

    params = {"prompt_suffix": "Reply.", "system_prompt": None, "k": 4, "max_new_tokens": 8, "stop": ["\n"],
              "code_k": 2, "code_max_new_tokens": 64, "code_models": ["tiny-random-llama"],
              "code_sources": {"humaneval": {"limit": 2}}, "temperature": 0.7, "top_p": 1.0, "seed": 0,
              "chunk_size": 16}
    cfg = pipeline.sampling_config(code_params(params))
    assert cfg.stop == () and cfg.max_new_tokens == 64 and cfg.k == 2
