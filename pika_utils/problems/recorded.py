"""Recorded members: models known only by files of their graded outcomes, read instead of run.

The project ships five 7B-32B models' graded answers on all 500 MATH-500 problems, and three of
them on the 675 open-answer problems of OlympiadBench (a second, harder benchmark), each under
``data/recorded_<benchmark>/`` (Apache-2.0, changed as its ``NOTICE.md`` says), including real long
reasoning chains. Every read checks the file's sha256 against the folder's ``SHA256SUMS.json``; a
damaged or missing file is an error naming it. A user's own outcomes file (JSONL, JSON, CSV,
Parquet; e.g. logged from models called through an API) is read by ``outcomes.read_outcomes_file``
with the bad-input rules of ``files``."""
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
from .files import InputError
from .outcomes import OUTCOME_KEYS, OUTCOME_OPTIONAL, read_outcomes_file  # noqa: F401 - re-exported
from .sources import MATH500_HUB as HUB, _norm_question, math500_hub
from .table import rank_sample, validate_problems

DATA_DIR = Path(__file__).with_name("data")
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


@dataclass(frozen=True)
class Benchmark:
    """A benchmark whose recorded outcomes ship with the package: its problems and, for some of
    the ``SHIPPED`` members, one graded response per problem."""

    key: str  # the problem source's name and the problem ids' prefix
    title: str
    folder: Path
    members: tuple[str, ...]


BENCHMARKS: dict[str, Benchmark] = {
    "math500": Benchmark("math500", "MATH-500", DATA_DIR / "recorded_math500", tuple(SHIPPED)),
    "olympiadbench": Benchmark("olympiadbench", "OlympiadBench", DATA_DIR / "recorded_olympiadbench",
                               ("qwen2.5-14b-instruct", "gemma-2-27b-it", "sky-t1-32b-short")),
}
RECORDED_DIR = BENCHMARKS["math500"].folder


def benchmark(key: str) -> Benchmark:
    """A shipped benchmark by name; an error naming the known ones."""
    if key not in BENCHMARKS:
        raise ValueError(f"unknown recorded benchmark {key!r}; shipped: {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]


class RecordedDataError(RuntimeError):
    """A shipped recorded file is missing or does not match its recorded checksum."""


def problem_id(idx: int, bench: str = SOURCE) -> str:
    """A shipped benchmark's problems by their index in its order (``math500-007``,
    ``olympiadbench-123``)."""
    return f"{bench}-{int(idx):03d}"


def shipped_file(name: str, folder: Path = RECORDED_DIR) -> Path:
    """A shipped file, after checking its sha256 against the folder's ``SHA256SUMS.json``."""
    sums_path = folder / "SHA256SUMS.json"
    path = folder / name
    if not sums_path.is_file() or not path.is_file():
        missing = sums_path if not sums_path.is_file() else path
        raise RecordedDataError(f"{missing} is missing: the recorded outcomes ({folder.name}) ship with pika_utils; "
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


def recorded_problems(bench: str = SOURCE) -> pd.DataFrame:
    """A shipped benchmark's problems exactly as the recorded members saw them (MATH-500's 500 by
    default), with their ``problem_id``."""
    folder = benchmark(bench).folder
    raw = _read_jsonl_gz(shipped_file("problems.jsonl.gz", folder))
    ids = [problem_id(i, bench) for i in raw["idx"]]
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


OLYMPIADBENCH_HUB = ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP")


def _olympiadbench_hub(rec: pd.DataFrame) -> tuple[list[str] | None, str]:
    """The questions from the hub (``OLYMPIADBENCH_HUB``), matched to the recorded problems by
    ``olympiadbench_id``; or None and why not (the caller uses the packaged copy and says so)."""
    from .hub_sources import _offline_libraries, datasets_or_fail

    repo, config = OLYMPIADBENCH_HUB
    try:
        datasets, offline, _ = datasets_or_fail(repo, "Offline: the copy packaged with pika_utils.")
        with _offline_libraries(offline):
            hub = datasets.load_dataset(repo, config, split="train").to_pandas()
    except Exception as e:  # noqa: BLE001 - any hub failure falls back to the packaged copy, and says so
        return None, f"{type(e).__name__}: {str(e).split('. ')[0][:160]}"
    by_id = dict(zip(hub["id"].astype(int), hub["question"].astype(str)))
    missing = [int(i) for i in rec["olympiadbench_id"] if int(i) not in by_id]
    if missing:
        return None, f"the hub's {repo} ({config}) lacks {len(missing)} of the recorded ids, e.g. {missing[:3]}"
    qs = [by_id[int(i)] for i in rec["olympiadbench_id"]]
    if [_norm_question(q) for q in qs] != [_norm_question(q) for q in rec["question"]]:
        return None, f"the hub's {repo} ({config}) words some questions differently from the recorded ones"
    return qs, f"hub:{repo}/{config}"


def load_olympiadbench(limit: int | None = None, seed: int = 0, hub: bool = True) -> pd.DataFrame:
    """The 675 open-answer, text-only, English maths problems of OlympiadBench that three recorded
    members answered (no human level: difficulty_kind 'none'): matched on the hub by
    ``olympiadbench_id`` when it answers and agrees, else the packaged copy; ``attrs['record']``
    says which was used and why."""
    rec = recorded_problems("olympiadbench")
    where = "packaged:recorded_olympiadbench"
    if hub:
        qs, why = _olympiadbench_hub(rec)
        where = why if qs is not None else f"{where} (hub not used: {why})"
    df = pd.DataFrame({
        "problem_id": rec["problem_id"], "source": "olympiadbench", "question": rec["question"],
        "answer": rec["answer"].astype(str), "difficulty": np.nan, "difficulty_kind": "none", "split": "",
        "meta": [json.dumps({"idx": int(i), "olympiadbench_id": int(o), "subfield": sf, "answer_type": at,
                             "question_source": where.split(" (")[0]})
                 for i, o, sf, at in zip(rec["idx"], rec["olympiadbench_id"], rec["subfield"], rec["answer_type"])],
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


def shipped_member(name: str, bench: str = SOURCE) -> RecordedMember:
    """One of the shipped members on one benchmark, its rows aligned with ``recorded_problems``."""
    b = benchmark(bench)
    if name not in SHIPPED:
        raise ValueError(f"unknown recorded member {name!r}; shipped: {sorted(SHIPPED)}; a member of your own "
                         "is a mapping {name, file, size_b or price}")
    if name not in b.members:
        raise InputError(f"recorded member {name!r} has no recorded outcomes on {b.title}; the members shipped "
                         f"there are {list(b.members)}")
    raw = _read_jsonl_gz(shipped_file(f"{name}.jsonl.gz", b.folder))
    out = pd.DataFrame({"problem_id": [problem_id(i, bench) for i in raw["idx"]], "correct": raw["correct"].astype(int),
                        "response": raw["response"].astype(str), "pred": raw["pred"].astype(str)})
    return RecordedMember(name, out, source=f"packaged:{b.folder.name}/{name}.jsonl.gz", **SHIPPED[name])


def resolve_members(spec: Sequence[str | Mapping], problems: pd.DataFrame, bench: str = SOURCE) -> list[RecordedMember]:
    """A profile's ``recorded_members`` on benchmark ``bench``: shipped names, or mappings {name,
    file, size_b | price, model, mode} naming a user's outcomes file; each checked to cover
    ``problems`` (at least ``MIN_COMMON_PROBLEMS`` answered by every member)."""
    out = []
    # a user's file is matched against every recorded problem, then cut to the chosen ones (as the
    # shipped members are), so a complete file works with a limited problem set
    universe = pd.concat([problems[["problem_id", "question"]], recorded_problems(bench)[["problem_id", "question"]]])
    universe = universe.drop_duplicates("problem_id").reset_index(drop=True)
    for item in spec:
        if isinstance(item, str):
            out.append(shipped_member(item, bench))
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
                    minimum: int = MIN_COMMON_PROBLEMS, advice: str | None = None) -> pd.DataFrame:
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
                         + (f". {advice}" if advice else
                            f". Log more problems, or limit the problem set to those you logged "
                            f"(recorded_sources: {{math500: {{limit: N}}}} keeps a seeded subset; problem ids look like "
                            f"{problem_id(7)!r}, as in the shipped problems.jsonl.gz)"))
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


#: Column names an outcome log may use for the standard ones (what an API log often calls them).
LOG_ALIASES = {"model": "member", "tokens": "output_tokens", "problem": "question"}


def read_outcome_log(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Graded outcomes of several members in one file (JSONL, JSON, CSV, Parquet): ``member``,
    ``problem_id`` or ``question``, ``correct``, and ``response`` or ``output_tokens`` (optionally
    ``input_tokens``); ``model``, ``problem`` and ``tokens`` are read as member, question and
    output_tokens. With both ``problem_id`` and ``question``, the log's own ids and texts; with the
    questions alone, they are matched to the shipped benchmarks' problems where they are one of
    them (their ids), else get an id of their own; bare problem ids must be shipped ones. Returns
    (outcomes: member, problem_id, correct, ...; problems: problem_id, question)."""
    from .files import read_table
    from .outcomes import check_outcomes
    from .table import question_id

    path = Path(path)
    df = read_table(path, what="outcome log")
    df = df.rename(columns={a: c for a, c in LOG_ALIASES.items() if a in df.columns and c not in df.columns})
    shipped = pd.concat([recorded_problems(b)[["problem_id", "question"]] for b in BENCHMARKS], ignore_index=True)
    problems = shipped
    for col in ("problem_id", "question"):
        if col in df.columns:
            blank = df[col].isna() | df[col].map(lambda v: isinstance(v, str) and not v.strip())
            if blank.any():
                raise InputError(f"{path}: column {col!r} is missing or empty in row(s) "
                                 f"{', '.join(str(i + 1) for i in np.flatnonzero(blank.to_numpy())[:5])}")
    if "question" in df.columns:
        looks_like_id = df["question"].astype(str).str.fullmatch(r"(" + "|".join(BENCHMARKS) + r")-\d{3}")
        if looks_like_id.all():
            raise InputError(f"{path}: the question column holds problem ids (e.g. {df['question'].iloc[0]!r}); name "
                             "the column 'problem_id' (a 'problem' column is read as the question's text)")
    if "question" in df.columns and "problem_id" in df.columns:  # the log's own ids and texts
        pairs = df[["problem_id", "question"]].astype(str).drop_duplicates()
        clash = pairs["problem_id"].duplicated(keep=False)
        if clash.any():
            ids = sorted(set(pairs.loc[clash, "problem_id"]))
            raise InputError(f"{path}: column 'problem_id': {len(ids)} id(s) come with more than one question text "
                             f"(e.g. {ids[:3]}); give each problem one id and one text")
        problems = pairs.reset_index(drop=True)
    elif "question" in df.columns:  # the log's own questions: shipped ids where they are shipped problems
        known = {_norm_question(q): pid for q, pid in zip(shipped["question"], shipped["problem_id"])}
        qs = [q for q in dict.fromkeys(df["question"]) if isinstance(q, str) and q.strip()]
        problems = pd.DataFrame({"problem_id": [known.get(_norm_question(q)) or question_id("log", q) for q in qs],
                                 "question": qs}).drop_duplicates("problem_id", ignore_index=True)
    try:
        out = check_outcomes(df, problems, where=str(path), csv=path.suffix.lower() == ".csv", by="member")
    except InputError as e:
        if "question" not in df.columns and "match no problem" in str(e):
            raise InputError(f"{e}; a log of problems that are not shipped ones must give each problem's text in a "
                             "'question' column (ids are known only for the shipped benchmarks: "
                             f"{', '.join(b + '-NNN' for b in BENCHMARKS)})") from None
        raise
    return out, problems[problems["problem_id"].isin(set(out["problem_id"]))].reset_index(drop=True)
