"""Odd inputs a demanding user tries on a fresh clone (issue 24), each refused before expensive
work with a message that names it: the file, the row and column, the key or the option. Every case
calls the real loaders, profile checks and command line on small files written here; cases that
must fail before a model is built point ``PIKA_CACHE_DIR`` at an empty folder (``cold_cache``), and
cases that must fail before weights load make loading them an error (``no_weights``)."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pika_utils import cli
from pika_utils.book.params import check_params
from pika_utils.core import store
from pika_utils.problems import tasks
from pika_utils.problems.files import InputError, load_file
from conftest import refused, cli_refused

MODEL = "tiny-random-llama"






def jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_with(column, values, **more):
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1), **more} for i in range(len(values))]
    for r, v in zip(rows, values):
        r[column] = v
    return rows


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    """An empty model cache: a model built or converted before the refusal would land in it."""
    cache = tmp_path / "cold-cache"
    cache.mkdir()
    monkeypatch.setenv("PIKA_CACHE_DIR", str(cache))
    yield cache
    assert not list(cache.iterdir()), "a model was built before the bad input was refused"


@pytest.fixture
def no_weights(monkeypatch):
    """Loading a model's weights fails the test."""
    from pika_utils.models import registry

    def fail(*a, **k):
        raise AssertionError("the model's weights were loaded before the bad input was refused")

    monkeypatch.setattr(registry, "_load_folder", fail)


def a_probe(folder: Path, weights_sha256: str = "0" * 64) -> Path:
    """A saved binary probe of the tiny model (64 weights, layer 1, the last prompt token), written
    by hand: only its files matter to the checks that run before a model loads."""
    from pika_utils.probes.files import save_probe

    save_probe(folder, np.linspace(-1, 1, 64), {
        "task": "classification", "target": "maj_correct", "layer": 1, "position": -1, "alpha": 1.0,
        "platt": [1.0, 0.0], "model": MODEL, "weights_sha256": weights_sha256, "prompt_suffix": "Reply.",
        "system_prompt": None, "n_layers": 4, "eoi_positions": [-1, -2]})
    return folder


# ---------------------------------------------------------------------------------------------
# A user's problem file: accepted in silence before

@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_answers_given_as_a_list_an_object_or_a_boolean_are_refused(tmp_path, suffix):
    rows = rows_with("answer", ["1", [1, 2], {"value": 3}, True])
    path = tmp_path / f"mine{suffix}"
    jsonl(path, rows) if suffix == ".jsonl" else path.write_text(json.dumps(rows))
    refused(lambda: load_file(path), str(path), "column 'answer'", "'an answer is text or an integer'",
            "row 2, row 3, row 4", "(got bool, dict, list)", exc=InputError)


@pytest.mark.parametrize("column,known", [("Difficulty", "difficulty"), ("Split", "split"), (" split", "split"),
                                          ("difficulity", "difficulty"), ("Problem ID", "problem_id")])
def test_a_near_miss_column_is_refused_naming_the_column_it_resembles(tmp_path, column, known):
    value = {"difficulty": 2, "split": "test", "problem_id": "a"}[known]
    path = jsonl(tmp_path / "mine.jsonl", [{"question": "What is 1 + 1?", "answer": "2", column: value}])
    refused(lambda: load_file(path), str(path), f"{column!r} (did you mean {known!r}?)", "would be ignored",
            exc=InputError)


def test_a_missing_column_names_the_near_miss_that_was_meant(tmp_path):
    path = jsonl(tmp_path / "mine.jsonl", [{"Question": "What is 1 + 1?", "answer": "2"}])
    refused(lambda: load_file(path), str(path), "no column(s) ['question']", "did you mean 'question' for 'Question'?",
            exc=InputError)


def test_a_problem_id_column_names_the_rows_and_its_duplicates_are_refused(tmp_path):
    path = jsonl(tmp_path / "mine.jsonl", rows_with("problem_id", ["a7", "b2", "a7"]))
    refused(lambda: load_file(path), str(path), "column 'problem_id'", "'ids are unique'",
            "row 1 (problem_id='a7')", "row 3 (problem_id='a7')", exc=InputError)
    ok = jsonl(tmp_path / "ok.jsonl", rows_with("problem_id", ["a7", "b2", "c9"]))
    assert load_file(ok)["problem_id"].tolist() == ["file:ok-a7", "file:ok-b2", "file:ok-c9"]
    both = jsonl(tmp_path / "both.jsonl", rows_with("problem_id", ["a", "b"], id="x"))
    refused(lambda: load_file(both), str(both), "['id', 'problem_id'] both name the rows", exc=InputError)


@pytest.mark.parametrize("question,found", [
    ("\u200b\u200b", "a question has a visible character"),  # only zero-width characters
    ("What is 2\u200b + 2?", "U+200B"),  # a zero-width space inside
    ("What is 2 + 2?\x07", "U+0007"),  # a control character (bell)
    ("What is \u202e2 + 2?", "U+202E"),  # a direction override
    ("What is 2 + 2?\x00", "U+0000"),
])
def test_a_question_with_control_or_invisible_characters_is_refused(tmp_path, question, found):
    path = jsonl(tmp_path / "mine.jsonl", rows_with("question", ["What is 1 + 1?", question]))
    refused(lambda: load_file(path), str(path), "column 'question'", found, "row 2", exc=InputError)


def test_ordinary_whitespace_in_a_question_is_accepted(tmp_path):
    path = jsonl(tmp_path / "mine.jsonl", rows_with("question", ["What is\t1 + 1?", "Line one.\r\nWhat is 2 + 2?"]))
    assert len(load_file(path)) == 2


@pytest.mark.parametrize("ids,needles", [
    ([1, 2.5, False, 4], ["'an id is text or an integer'", "row 2 (id=2.5)", "row 3 (id=False)"]),
    ([1, 2, 3.0, 4], ["row 3 (id=3.0)"]),  # a fraction in one row: the others stay integers
    (["a", "b", 3, "d"], ["'ids are all text or all integers, not a mix'", "row 3 (id=3)"]),
])
def test_ids_that_are_not_text_or_integers_or_mixed_are_refused(tmp_path, ids, needles):
    path = jsonl(tmp_path / "mine.jsonl", rows_with("id", ids))
    msg = refused(lambda: load_file(path), str(path), "column 'id'", *needles, exc=InputError)
    assert "row 1 " not in msg  # the good rows are not named


# ---------------------------------------------------------------------------------------------
# Refused before, without a useful name

@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_a_question_holding_bytes_that_are_not_utf8_names_the_file_row_and_column(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"question,answer\nWhat is 1 + 1?,2\nWhat is 2 \xff 2?,4\n")
    elif suffix == ".jsonl":
        path.write_bytes(b'{"question": "What is 1 + 1?", "answer": "2"}\n{"answer": "4", "question": "What is 2 \xff 2?"}\n')
    elif suffix == ".json":
        path.write_bytes(b'[{"question": "What is 1 + 1?", "answer": "2"}, {"answer": "4", "question": "What is 2 \xff 2?"}]')
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        raw = pa.array([b"What is 1 + 1?", b"What is 2 \xff 2?"], pa.binary()).view(pa.string())  # unchecked
        pq.write_table(pa.table({"question": raw, "answer": ["2", "4"]}), path)
    refused(lambda: load_file(path), str(path), "is not UTF-8", "row 2, column 'question'", "\\xff", exc=InputError)


def test_a_question_argument_holding_an_undecodable_byte_is_named(capsys, tmp_path, cold_cache):
    probe = a_probe(tmp_path / "probe")
    # what Python makes of a command-line byte that is not UTF-8 (surrogateescape)
    cli_refused(capsys, ["label", "--probe", probe, "--question", "What is 2 \udcff 2?", "--out", tmp_path / "o.parquet"],
                "--question", "column 'question'", "row 1", "byte 0xff (not UTF-8)")


def gguf_header(version=3, n_tensors=2, n_kv=3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


GGUF_CASES = {
    "missing": (None, ["does not exist"]),
    "folder": ("folder", ["is a folder"]),
    "empty": (b"", ["is empty (0 bytes)"]),
    "not gguf": (b"PK\x03\x04" + bytes(100), ["is not a GGUF file", "b'PK\\x03\\x04'"]),
    "cut in the header": (b"GGUF\x03\x00", ["is a damaged or truncated GGUF file", "GGUF header"]),
    "unknown version": (gguf_header(version=7) + bytes(100), ["GGUF version 7"]),
    "no tensors": (gguf_header(n_tensors=0) + bytes(100), ["announces no tensors"]),
    "counts beyond its size": (gguf_header(n_tensors=2**40) + bytes(100), ["1,099,511,627,776 tensor(s)", "cannot fit"]),
    "damaged body": (gguf_header() + bytes(range(256)) * 8, ["damaged or truncated GGUF file"]),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_a_bad_gguf_path_is_named_before_anything_is_hashed_or_loaded(capsys, tmp_path, cold_cache, case):
    content, needles = GGUF_CASES[case]
    path = tmp_path / "mine.gguf"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    problems = jsonl(tmp_path / "p.jsonl", rows_with("question", ["What is 1 + 1?"]))
    err = cli_refused(capsys, ["rollouts", "--problems", problems, "--model", path, "--out", tmp_path / "out", "--quiet"],
                      f"model file {path}", *needles)
    assert "no price" not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_gguf_path_in_a_profile_is_named_before_any_chapter(tmp_path):
    from pika_utils.book.runner import load_profile

    path = tmp_path / "mine.gguf"
    path.write_bytes(b"")
    profile = {**load_profile("smoke"), "models": [str(path)], "prices": {str(path): {"input_per_m": 0.1, "output_per_m": 0.2}}}
    refused(lambda: check_params(profile), "models:", f"model file {path} is empty", exc=ValueError)


def test_a_model_without_a_price_says_how_to_give_one(capsys, tmp_path, cold_cache):
    problems = jsonl(tmp_path / "p.jsonl", rows_with("question", ["What is 1 + 1?"]))
    base = ["rollouts", "--problems", problems, "--out", tmp_path / "out", "--quiet"]
    cli_refused(capsys, base + ["--model", "my-org/my-model"], "no price for model 'my-org/my-model'", "--price", "--size-b")
    cli_refused(capsys, base + ["--model", MODEL, "--size-b", "500"], "--size-b=500.0", "no price tier", "80.0B")
    cli_refused(capsys, base + ["--model", MODEL, "--size-b", "-1"], "--size-b=-1.0", "> 0")
    cli_refused(capsys, base + ["--model", MODEL, "--size-b", "1", "--price", "1", "2"], "not both")


def test_size_b_prices_the_run_by_its_tier(capsys, tmp_path):
    from pika_utils.core.prices import price_for_size

    src = jsonl(tmp_path / "p.jsonl", rows_with("question", ["What is 1 + 1?", "What is 2 + 2?"]))
    assert cli.main(["rollouts", "--problems", str(src), "--model", MODEL, "--source", "offline", "--k", "1",
                     "--max-new-tokens", "2", "--quiet", "--size-b", "30", "--out", str(tmp_path / "a")]) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dir"])
    ro = store.read_parquet(run_dir / "rollouts.parquet")
    summary = store.read_parquet(run_dir / "summary.parquet").set_index("problem_id")
    p_in, p_out = price_for_size(30)
    expected = ((ro["prompt_tokens"] * p_in + ro["output_tokens"] * p_out) / 1e6).groupby(ro["problem_id"]).mean()
    np.testing.assert_allclose(summary.loc[expected.index, "cost_per_rollout"], expected)


@pytest.mark.parametrize("sources,needles", [
    ({"file": {"path": 5}}, ["problem source 'file'", "path=5", "str or Path"]),
    ({"ladder": {"n_per_level": "eight"}}, ["problem source 'ladder'", "n_per_level='eight'", "must be int"]),
    ({"ladder": {"levels": [1, "two"]}}, ["levels=[1, 'two']", "not 'two' (str)"]),
    ({"file": {"paths": ["a.jsonl", 5]}}, ["paths=['a.jsonl', 5]", "not 5 (int)"]),
])
def test_a_source_argument_of_the_wrong_type_stops_the_book_before_any_chapter(capsys, tmp_path, sources, needles):
    cli_refused(capsys, ["book", "--profile", "smoke", "--chapters", "01_rollouts", "--no-build", "--root",
                         tmp_path / "book", "-p", f"problem_sources={json.dumps(sources)}"], "problem_sources", *needles)
    assert not (tmp_path / "book" / "book" / "chapters").exists()
    refused(lambda: tasks.load_problems(sources), *needles, exc=TypeError)  # the same check, the same words


def test_a_router_cost_given_as_text_or_a_boolean_names_the_member(tmp_path):
    from pika_utils.routing.router import Router

    dirs = {m: a_probe(tmp_path / m) for m in ("small", "large")}
    refused(lambda: Router(dirs, {"small": "1.0", "large": 2.0}, lam=0.5), "'small'", "'1.0'", "not a number",
            exc=ValueError)
    refused(lambda: Router(dirs, {"small": 1.0, "large": True}, lam=0.5), "'large'", "True", exc=ValueError)


def test_a_price_given_as_text_is_refused_with_the_model_and_key():
    from pika_utils.book.runner import load_profile

    profile = {**load_profile("smoke"), "prices": {MODEL: {"input_per_m": "0.1", "output_per_m": 0.2}}}
    refused(lambda: check_params(profile), f"prices[{MODEL!r}]", "input_per_m='0.1' is not a number", exc=ValueError)


def test_a_profile_that_is_not_yaml_names_the_file_and_line(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("k: 4\nmodels: [tiny-random-llama\nseed: 0\n")
    cli_refused(capsys, ["book", "--profile", bad, "--no-build", "--root", tmp_path / "book"],
                str(bad), "is not valid YAML at line", "column")


@pytest.mark.parametrize("key", ["model_limits", "model_revisions"])
def test_a_model_key_naming_a_model_the_profile_lacks_is_refused(capsys, tmp_path, key):
    value = {"model_limits": {"tiny-random-lama": 10}, "model_revisions": {"tiny-random-lama": "0" * 40}}[key]
    cli_refused(capsys, ["book", "--profile", "smoke", "--chapters", "01_rollouts", "--no-build", "--root",
                         tmp_path / "book", "-p", f"{key}={json.dumps(value)}"],
                f"{key} names ['tiny-random-lama']", f"the profile's models are ['{MODEL}']", "a typo")
    assert not (tmp_path / "book" / "book" / "chapters").exists()


@pytest.mark.parametrize("param,needles", [
    ("kk=1", ["['kk']", "not parameters of any chapter"]),
    ("bt_window=16", ["['bt_window']", "none of the chapters this run executes (01_rollouts)", "08_backtracking"]),
])
def test_an_override_that_no_chapter_of_the_run_takes_is_refused_before_executing(capsys, tmp_path, param, needles):
    cli_refused(capsys, ["book", "--profile", "smoke", "--chapters", "01_rollouts", "--no-build", "--root",
                         tmp_path / "book", "-p", param], *needles)
    assert not (tmp_path / "book" / "book" / "chapters").exists()


# ---------------------------------------------------------------------------------------------
# Files too large to read: refused from their size or metadata, before reading

def test_a_parquet_decompression_bomb_is_refused_from_its_metadata(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"question": ["0" * 3_000_000], "answer": ["1"]}), path, compression="zstd")
    assert path.stat().st_size < 10_000  # a few kB on disk, megabytes once read
    monkeypatch.setenv("PIKA_MAX_INPUT_BYTES", "1000000")
    refused(lambda: tasks.load_problems({"file": {"path": str(path)}}), str(path), "bytes uncompressed",
            "over the limit of 1,000,000 bytes", "PIKA_MAX_INPUT_BYTES", exc=InputError)


def test_a_parquet_file_with_too_many_rows_is_refused_from_its_metadata(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"question": pa.array(["What is 1 + 1?"] * 50_000).dictionary_encode(),
                             "answer": pa.array(["2"] * 50_000).dictionary_encode()}), path)
    monkeypatch.setenv("PIKA_MAX_INPUT_ROWS", "1000")
    refused(lambda: load_file(path), str(path), "50,000 rows", "over the limit of 1,000 rows", "PIKA_MAX_INPUT_ROWS",
            exc=InputError)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_text_file_with_too_many_rows_is_refused(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        path.write_text("question,answer\n" + "What is 1 + 1?,2\n" * 50)
    else:
        jsonl(path, rows_with("question", ["What is 1 + 1?"] * 50))
    monkeypatch.setenv("PIKA_MAX_INPUT_ROWS", "20")
    refused(lambda: load_file(path), str(path), "over the limit of 20 rows", "PIKA_MAX_INPUT_ROWS", exc=InputError)


def test_an_endless_jsonl_is_refused(tmp_path):
    path = tmp_path / "zeros.jsonl"
    os.symlink("/dev/zero", path)
    refused(lambda: load_file(path), str(path), "is not a regular file", exc=InputError)


def test_a_jsonl_line_of_zeros_is_refused_at_the_line_limit(tmp_path, monkeypatch):
    path = tmp_path / "zeros.jsonl"
    path.write_bytes(b'{"question": "What is 1 + 1?", "answer": "2"}\n' + b"\0" * 5000)
    monkeypatch.setenv("PIKA_MAX_LINE_BYTES", "1000")
    refused(lambda: load_file(path), f"{path}, line 2", "over the limit of 1,000 bytes in one line",
            "PIKA_MAX_LINE_BYTES", exc=InputError)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_a_text_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"big{suffix}"
    path.write_text("question,answer\n" + "What is 1 + 1?,2\n" * 200)
    monkeypatch.setenv("PIKA_MAX_INPUT_BYTES", "1000")
    refused(lambda: load_file(path), str(path), "the file has 3,416 bytes", "over the limit of 1,000 bytes",
            "PIKA_MAX_INPUT_BYTES", exc=InputError)


def test_a_limit_that_is_not_a_number_is_named(tmp_path, monkeypatch):
    path = jsonl(tmp_path / "p.jsonl", rows_with("question", ["What is 1 + 1?"]))
    monkeypatch.setenv("PIKA_MAX_INPUT_ROWS", "ten")
    refused(lambda: load_file(path), "PIKA_MAX_INPUT_ROWS='ten'", exc=InputError)


# ---------------------------------------------------------------------------------------------
# Checks that ran only once the model had loaded

def test_label_refuses_an_existing_out_before_the_model_loads(capsys, tmp_path, cold_cache):
    probe = a_probe(tmp_path / "probe")
    out = store.write_parquet(tmp_path / "o.parquet", pd.DataFrame({"x": [1]}))
    before = out.read_bytes()
    cli_refused(capsys, ["label", "--probe", probe, "--question", "What is 1 + 1?", "--out", out],
                f"--out {out} already exists", "refusing to overwrite")
    assert out.read_bytes() == before


def test_route_refuses_an_existing_out_before_the_models_load(capsys, tmp_path, cold_cache):
    from pika_utils.routing.router import Router

    router = Router({m: a_probe(tmp_path / m) for m in ("small", "large")}, {"small": 1.0, "large": 2.0}, lam=0.5)
    saved = router.save(tmp_path / "router.json")
    out = store.write_parquet(tmp_path / "o.parquet", pd.DataFrame({"x": [1]}))
    cli_refused(capsys, ["route", "--router", saved, "--question", "What is 1 + 1?", "--out", out],
                f"--out {out} already exists")


def test_a_probe_trained_on_other_weights_is_refused_before_they_load(capsys, tmp_path, no_weights):
    from pika_utils.routing.router import Router

    probe = a_probe(tmp_path / "probe", weights_sha256="ab" * 32)
    cli_refused(capsys, ["label", "--probe", probe, "--question", "What is 1 + 1?", "--out", tmp_path / "o.parquet"],
                f"the probe in {probe}", f"{MODEL} weights abababababab", "train it again")
    router = Router({"small": probe, "large": a_probe(tmp_path / "large", "ab" * 32)}, {"small": 1.0, "large": 2.0},
                    lam=0.5)
    refused(lambda: router.route(["What is 1 + 1?"], source="offline"), "the probe of", "weights abababababab",
            exc=ValueError)


def test_a_question_too_long_for_the_context_is_refused_on_a_cold_cache_before_the_model_is_built(
        capsys, tmp_path, cold_cache):
    # 6,000 tokens of the tiny model's byte tokenizer: over its 4,096-token context, under the
    # character pre-check (4 x 4,096 characters)
    long = "What is " + "1+" * 3000 + "1?"
    src = jsonl(tmp_path / "long.jsonl", rows_with("question", ["What is 1 + 1?", long]))
    cli_refused(capsys, ["rollouts", "--problems", src, "--model", MODEL, "--source", "offline",
                         "--out", tmp_path / "out", "--quiet"],
                str(src), "row 2 (problem_id=", "exceed the model's context of 4096 tokens")
    assert not (tmp_path / "out").exists()
