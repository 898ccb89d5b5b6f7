"""Recorded members: models known only by files of their graded outcomes, read instead of run.

The project ships five 7B-32B models' graded answers on all 500 MATH-500 problems (Apache-2.0,
changed as ``data/recorded_math500/NOTICE.md`` says), including real long reasoning chains. Every
read checks the file's sha256 against ``SHA256SUMS.json``; a damaged or missing file is an error
naming it. A user's own outcomes file (JSONL, JSON, CSV, Parquet; e.g. logged from models called
through an API) is read by ``read_outcomes_file`` with the bad-input rules of ``files``."""
from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.store import file_sha256
from .files import InputError, _rows, near_misses, read_table
from .sources import MATH500_HUB as HUB, _norm_question, math500_hub
from .table import rank_sample, validate_problems

RECORDED_DIR = Path(__file__).with_name("data") / "recorded_math500"
SOURCE = "math500"
#: The shipped members: the model behind each file, how it answered, and its size (billions of
#: parameters) for the price tier. Sizes are the public model cards'.
SHIPPED: dict[str, dict[str, Any]] = {
    "qwen2.5-math-7b": {"model": "Qwen/Qwen2.5-Math-7B", "mode": "step by step", "size_b": 7.6},
    "gemma-2-27b-it": {"model": "google/gemma-2-27b-it", "mode": "step by step", "size_b": 27.2},
    "qwen2.5-14b-instruct": {"model": "Qwen/Qwen2.5-14B-Instruct", "mode": "step by step", "size_b": 14.7},
    "sky-t1-27b-long": {"model": "gemma-2-27b-it + SFT on long reasoning (Sky-T1)", "mode": "long reasoning",
                        "size_b": 27.2},
    "sky-t1-32b-short": {"model": "Qwen2.5-32B-Instruct + SFT (Sky-T1, short reasoning)", "mode": "short reasoning",
                         "size_b": 32.8},
}
#: Columns of a user's outcomes file: one of the problem keys, the grade, and what it cost.
OUTCOME_KEYS = ("problem_id", "question")
OUTCOME_OPTIONAL = ("response", "output_tokens", "input_tokens")


class RecordedDataError(RuntimeError):
    """A shipped recorded file is missing or does not match its recorded checksum."""


def problem_id(idx: int) -> str:
    """MATH-500's problems by their index in the benchmark's order (0-499)."""
    return f"{SOURCE}-{int(idx):03d}"


def shipped_file(name: str, folder: Path = RECORDED_DIR) -> Path:
    """A shipped file, after checking its sha256 against the folder's ``SHA256SUMS.json``."""
    sums_path = folder / "SHA256SUMS.json"
    path = folder / name
    if not sums_path.is_file() or not path.is_file():
        missing = sums_path if not sums_path.is_file() else path
        raise RecordedDataError(f"{missing} is missing: the recorded MATH-500 outcomes ship with pika_utils; "
                                "reinstall the package (pip install -e .) or restore the file from git")
    sums = json.loads(sums_path.read_text(encoding="utf-8"))
    if name not in sums:
        raise RecordedDataError(f"{path} has no checksum in {sums_path}: not a shipped file")
    digest = file_sha256(path)
    if digest != sums[name]:
        raise RecordedDataError(f"{path} is damaged: its sha256 is {digest[:16]}..., the shipped file's is "
                                f"{sums[name][:16]}...; restore it (git checkout, or reinstall pika_utils). "
                                "It was not used.")
    return path


def _read_jsonl_gz(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rb") as f:
        return pd.read_json(io.BytesIO(f.read()), lines=True, dtype=False)


def recorded_problems(folder: Path = RECORDED_DIR) -> pd.DataFrame:
    """The 500 MATH-500 problems exactly as the recorded members saw them."""
    raw = _read_jsonl_gz(shipped_file("problems.jsonl.gz", folder))
    ids = [problem_id(i) for i in raw["idx"]]
    if "problem_id" in raw.columns and raw["problem_id"].astype(str).tolist() != ids:  # the file's own ids
        raise RecordedDataError(f"{folder / 'problems.jsonl.gz'}: its problem_id column disagrees with its idx column")
    return raw.assign(problem_id=ids)


def load_math500(limit: int | None = None, seed: int = 0, hub: bool = True) -> pd.DataFrame:
    """All 500 MATH-500 problems with their human levels (difficulty_kind 'math_level'): the
    questions from the hub when it answers and agrees with the recorded members' questions, else
    the packaged copy; ``attrs['record']`` says which was used and why."""
    rec = recorded_problems()
    where = "packaged:recorded_math500"
    if hub:
        frame, why = math500_hub("the copy packaged with pika_utils")
        if frame is not None:
            same = (len(frame) == len(rec)
                    and [_norm_question(q) for q in frame["problem"]] == [_norm_question(q) for q in rec["question"]])
            where = why if same else f"{where} (the hub's {HUB} differs from the recorded questions)"
        else:
            where = f"{where} (hub not used: {why})"
    df = pd.DataFrame({
        "problem_id": rec["problem_id"], "source": SOURCE, "question": rec["question"],
        "answer": rec["answer"].astype(str), "difficulty": rec["level"].astype(float),
        "difficulty_kind": "math_level", "split": "",
        "meta": [json.dumps({"idx": int(i), "unique_id": u, "subject": s, "level": int(lv),
                             "question_source": where.split(" (")[0]})
                 for i, u, s, lv in zip(rec["idx"], rec["unique_id"], rec["subject"], rec["level"])],
    })
    out = validate_problems(rank_sample(df, limit, seed))
    out.attrs["record"] = {"question_source": where}
    return out


# --------------------------------------------------------------------------------------------
# Members: the shipped five, or a user's file of graded outcomes


@dataclass
class RecordedMember:
    """One member known by its outcomes: ``outcomes`` has problem_id, correct (0/1) and
    response and/or output_tokens (and optionally input_tokens)."""

    name: str
    outcomes: pd.DataFrame
    model: str
    mode: str
    size_b: float | None = None
    price: Mapping[str, float] | None = None  # {input_per_m, output_per_m}; else the size tier's
    source: str = ""


def shipped_member(name: str) -> RecordedMember:
    """One of the five shipped members, its rows aligned with ``recorded_problems``."""
    if name not in SHIPPED:
        raise ValueError(f"unknown recorded member {name!r}; shipped: {sorted(SHIPPED)}; a member of your own "
                         "is a mapping {name, file, size_b or price}")
    raw = _read_jsonl_gz(shipped_file(f"{name}.jsonl.gz"))
    out = pd.DataFrame({"problem_id": [problem_id(i) for i in raw["idx"]], "correct": raw["correct"].astype(int),
                        "response": raw["response"].astype(str), "pred": raw["pred"].astype(str)})
    return RecordedMember(name, out, source=f"packaged:recorded_math500/{name}.jsonl.gz", **SHIPPED[name])


_GRADES = {"true": 1, "false": 0, "1": 1, "0": 0}


def _grade(v) -> int | None:
    """A grade as 0/1: a boolean, the number 0 or 1, or that as text (a CSV cell); else None."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer, float, np.floating)) and v in (0, 1):
        return int(v)
    return _GRADES.get(v.strip().lower()) if isinstance(v, str) else None


def read_outcomes_file(path: str | Path, problems: pd.DataFrame, *, name: str | None = None) -> pd.DataFrame:
    """A user's graded outcomes, one row per problem: ``problem_id`` or ``question`` (matched to
    ``problems``), ``correct`` (true/false or 0/1), and ``response`` or ``output_tokens``. Every
    broken rule is an ``InputError`` naming the file, the column and the rows (counted from 1)."""
    path = Path(path)
    df = read_table(path, what=f"outcomes file of {name or path.stem}")
    where = f"{path}"
    keys = [k for k in OUTCOME_KEYS if k in df.columns]
    near = near_misses(df.columns, (*OUTCOME_KEYS, "correct", *OUTCOME_OPTIONAL))
    hint = "".join(f"; did you mean {k!r} for {c!r}?" for c, k in near.items())
    if not keys or "correct" not in df.columns or not any(c in df.columns for c in ("response", "output_tokens")):
        raise InputError(f"{where}: an outcomes file needs a problem key ({' or '.join(OUTCOME_KEYS)}, e.g. "
                         f"{problem_id(7)!r}), 'correct', and 'response' or 'output_tokens'; it has columns "
                         f"{list(df.columns)}{hint}")
    if near:  # a column that would be ignored but looks like a known one
        raise InputError(f"{where}: column(s) " + ", ".join(f"{c!r} (did you mean {k!r}?)" for c, k in near.items())
                         + "; rename them, or remove them if they are something else")
    errors: list[str] = []

    def rows(mask) -> str:  # a file's rows count from 1
        return _rows(df, np.asarray(mask, dtype=bool), None, first_row=1)

    if path.suffix.lower() == ".csv":  # a CSV's cells are text: an empty cell is missing
        df = df.replace("", None)
    grade = df["correct"].map(_grade)
    if grade.isna().any():
        errors.append(f"column 'correct' must be true/false or 0/1: {rows(grade.isna())}")
    df = df.assign(correct=grade)
    if "output_tokens" in df.columns:
        t = pd.to_numeric(df["output_tokens"], errors="coerce")
        bad = df["output_tokens"].notna() & ~(t.notna() & (t >= 0) & (t == np.floor(t.fillna(0))))
        if bad.any():
            errors.append(f"column 'output_tokens' must be a whole number >= 0: {rows(bad)}")
    if "input_tokens" in df.columns:
        t = pd.to_numeric(df["input_tokens"], errors="coerce")
        bad = df["input_tokens"].notna() & ~(t.notna() & (t >= 0) & (t == np.floor(t.fillna(0))))
        if bad.any():
            errors.append(f"column 'input_tokens' must be a whole number >= 0 (or empty: the question's tokens): {rows(bad)}")
    if "response" in df.columns:
        bad = df["response"].notna() & ~df["response"].map(lambda v: isinstance(v, str))
        if bad.any():
            errors.append(f"column 'response' must be text: {rows(bad)}")
    cost_missing = pd.Series(True, index=df.index)
    for c in ("response", "output_tokens"):
        if c in df.columns:
            cost_missing &= df[c].isna()
    if cost_missing.any():
        errors.append(f"neither 'response' nor 'output_tokens' is given (the cost is unknown): {rows(cost_missing)}")
    key = "problem_id" if "problem_id" in df.columns else "question"
    if key == "problem_id":
        ids = df["problem_id"].astype(str)
        unknown = ~ids.isin(set(problems["problem_id"]))
    else:
        by_q = {_norm_question(q): pid for q, pid in zip(problems["question"], problems["problem_id"])}
        ids = df["question"].map(lambda q: by_q.get(_norm_question(q)) if isinstance(q, str) else None)
        unknown = ids.isna()
    if unknown.any():
        errors.append(f"column {key!r}: {int(unknown.sum())} row(s) match no problem of the set "
                      f"({len(problems)} problems): {rows(unknown)}")
    dup = ids.duplicated(keep=False) & ~unknown
    if dup.any():
        errors.append(f"column {key!r}: the same problem appears more than once (one graded outcome per problem): "
                      f"{rows(dup)}")
    if errors:
        raise InputError(f"{where}: " + "; ".join(errors))
    out = pd.DataFrame({"problem_id": ids.to_numpy(), "correct": df["correct"].astype(int).to_numpy()})
    for c in OUTCOME_OPTIONAL:
        if c in df.columns:
            out[c] = df[c].to_numpy()
    return out


def resolve_members(spec: Sequence[str | Mapping], problems: pd.DataFrame) -> list[RecordedMember]:
    """A profile's ``recorded_members``: shipped names, or mappings {name, file, size_b | price,
    model, mode} naming a user's outcomes file; each checked to cover ``problems``."""
    out = []
    # a user's file is matched against every recorded problem, then cut to the chosen ones (as the
    # shipped members are), so a complete file works with a limited problem set
    universe = pd.concat([problems[["problem_id", "question"]], recorded_problems()[["problem_id", "question"]]])
    universe = universe.drop_duplicates("problem_id").reset_index(drop=True)
    for item in spec:
        if isinstance(item, str):
            out.append(shipped_member(item))
            continue
        if not isinstance(item, Mapping) or not {"name", "file"} <= set(item):
            raise InputError(f"recorded_members: {item!r} is neither a shipped member ({sorted(SHIPPED)}) nor a "
                             "mapping with 'name' and 'file' (and 'size_b' or 'price')")
        unknown = set(item) - {"name", "file", "size_b", "price", "model", "mode"}
        if unknown:
            raise InputError(f"recorded_members[{item['name']!r}]: unknown key(s) {sorted(unknown)}; "
                             "allowed: name, file, size_b, price, model, mode")
        if "size_b" not in item and "price" not in item:
            raise InputError(f"recorded_members[{item['name']!r}]: give 'size_b' (billions of parameters, priced by "
                             "its size tier) or 'price' {input_per_m, output_per_m}")
        _check_price(item)
        outcomes = read_outcomes_file(item["file"], universe, name=str(item["name"]))
        outcomes = outcomes[outcomes["problem_id"].isin(set(problems["problem_id"]))].reset_index(drop=True)
        out.append(RecordedMember(str(item["name"]), outcomes, str(item.get("model", item["name"])),
                                  str(item.get("mode", "recorded")), item.get("size_b"), item.get("price"),
                                  source=f"file:{item['file']}"))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise InputError(f"recorded_members: the names {names} repeat; give each member its own name")
    common_problems(out, problems)  # refused here when too few problems are answered by every member
    return out


#: The fewest problems that every member must have answered for routing them to mean anything
#: (cross-fitted in folds, each member's probe needs both outcomes in every training part).
MIN_COMMON_PROBLEMS = 50


def common_problems(members: Sequence[RecordedMember], problems: pd.DataFrame,
                    minimum: int = MIN_COMMON_PROBLEMS) -> pd.DataFrame:
    """The problems every member answered (a logged API model rarely covers a whole benchmark):
    routing compares members on the same problems, so it runs on these. Says how many when some
    are left out, and refuses a cut below ``minimum`` problems, naming the members that cover least
    (a problem set the user chose smaller, answered by every member, is theirs to choose)."""
    want = problems["problem_id"].astype(str)
    covered = [set(m.outcomes["problem_id"].astype(str)) for m in members]
    keep = want.isin(set.intersection(*covered)) if covered else pd.Series(True, index=problems.index)
    if keep.all():
        return problems
    if int(keep.sum()) < minimum:
        short = sorted(((len(set(want) & c), m.name, m.source) for m, c in zip(members, covered)))[:3]
        raise InputError(f"recorded members: only {int(keep.sum())} of the {len(want)} problems are answered by every "
                         f"member; routing needs at least {minimum}. Fewest: "
                         + "; ".join(f"{name!r} ({src}) answers {n}" for n, name, src in short)
                         + f". Log more problems, or limit the problem set to those you logged "
                           f"(recorded_sources: {{math500: {{limit: N}}}} keeps a seeded subset; problem ids look like "
                           f"{problem_id(7)!r}, as in the shipped problems.jsonl.gz)")
    print(f"[recorded] routing on the {int(keep.sum())} of {len(want)} problems that every member answered "
          f"({int((~keep).sum())} left out)", flush=True)
    out = problems[keep.to_numpy()].reset_index(drop=True)
    out.attrs = dict(problems.attrs)
    return out


def _check_price(item: Mapping) -> None:
    """A member's size (billions, with a price tier) or price (two non-negative numbers), named:
    the price module's own checks, as an InputError."""
    from ..core.prices import check_price, price_for_size

    where = f"recorded_members[{item['name']!r}]"
    try:
        if "price" in item:
            check_price(item["price"], where=f"{where}: price")
        if "size_b" in item:
            price_for_size(item["size_b"], where=f"{where}: size_b")
    except ValueError as e:
        raise InputError(str(e)) from None


def recorded_chains(member: str = "sky-t1-27b-long") -> pd.DataFrame:
    """One recorded member's responses with their problems: problem_id, question, answer, level,
    correct, response (the long reasoning chains of ``sky-t1-27b-long`` by default)."""
    m = shipped_member(member)
    p = recorded_problems()[["problem_id", "question", "answer", "level", "subject"]]
    return p.merge(m.outcomes[["problem_id", "correct", "response"]], on="problem_id", validate="1:1")
