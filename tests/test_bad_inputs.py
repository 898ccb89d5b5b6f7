"""Bad inputs, fed for real to every entry point (the book runner, `pika rollouts`, `pika label`,
saved probes and Routers, stored runs): each must be refused with a message that names the input,
before expensive work, and leave every earlier output unchanged.

The earlier output is a finished tiny-model rollout run (and a saved probe); an autouse fixture
fingerprints its folder before each case and checks it after. Cases that must fail before a model
loads point ``PIKA_CACHE_DIR`` at an empty folder: had the tiny model loaded, it would have been
built there."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pika_utils import cli
from pika_utils.core import store
from pika_utils.problems.files import InputError
from pika_utils.book.params import check_params
from pika_utils.generation.rollouts import run_rollouts
from pika_utils.generation.sampling import SamplingConfig
from conftest import refused, cli_refused

MODEL = "tiny-random-llama"
CFG = SamplingConfig(k=2, temperature=1.0, max_new_tokens=4, chunk_size=2, seed=3)


def make_problems(n: int) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)],
                         "question": [f"What is {i} + {i + 1}?" for i in range(n)],
                         "answer": [str(2 * i + 1) for i in range(n)]})


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A finished rollout run and a saved binary probe: the outputs no bad input may touch."""
    from conftest import tiny_activations
    from pika_utils.probes import protocol as P

    root = tmp_path_factory.mktemp("earlier")
    run = run_rollouts(make_problems(4), MODEL, CFG, source="offline", out_root=root / "runs", progress=False)
    lm, problems, acts = tiny_activations(root / "acts", n=40)
    lab = pd.DataFrame({"problem_id": problems["problem_id"], "question": problems["question"],
                        "maj_correct": [float(i % 5 >= 2) for i in range(40)],
                        "split": ["train"] * 24 + ["val"] * 8 + ["test"] * 8})
    rep = P.eoi_probe(acts, lab, "maj_correct", model=lm.name, layers=[1, 2], n_boot=20)
    probe = P.save_trained_probe(root / "probe", rep, acts, prompt_suffix="Reply.", labels=lab)
    return {"root": root, "run": run, "lm": lm, "acts": acts, "probe": probe, "problems": problems}


@pytest.fixture(autouse=True)
def unchanged(earlier):
    before = fingerprint(earlier["root"])
    yield
    assert fingerprint(earlier["root"]) == before, "a bad input changed an earlier output"


@pytest.fixture
def no_model(tmp_path, monkeypatch):
    """An empty model cache: a model that loads would be built into it."""
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    monkeypatch.setenv("PIKA_CACHE_DIR", str(cache))
    yield cache
    assert not list(cache.iterdir()), "a model was loaded before the bad input was refused"






# ---------------------------------------------------------------------------------------------
# Profile parameters: the book runner, before any chapter (and before the notebooks are read)

SMOKE = None


def smoke_with(**over):
    from pika_utils.book.runner import load_profile

    global SMOKE
    SMOKE = SMOKE or load_profile("smoke")
    return {**SMOKE, **over}


@pytest.mark.parametrize("override,needles", [
    ({"k": 2.5}, ["k=2.5", "an integer in [1, 10000]"]),
    ({"k": True}, ["k=True", "an integer"]),
    ({"k": "eight"}, ["k='eight'", "an integer in [1, 10000]"]),
    ({"k": 0}, ["k=0", "[1, 10000]"]),
    ({"models": []}, ["models=[]", "not be empty"]),
    ({"models": [3]}, ["models=[3]", "str values"]),
    ({"temperature": -1.0}, ["temperature=-1.0", "[0.0, 10.0]"]),
    ({"top_p": 0}, ["top_p=0", "(0, 1]"]),
    ({"split_fractions": [0.5, 0.5, 0.5]}, ["split_fractions", "summing to 1"]),
    ({"extract_dtype": "int8"}, ["extract_dtype='int8'", "float32"]),
    ({"problem_sources": {"nope": {}}}, ["problem_sources", "unknown source(s) ['nope']", "ladder"]),
    ({"problem_sources": {}}, ["problem_sources", "at least one source"]),
    ({"model_revisions": {"smollm2-135m": 3}}, ["model_revisions", "hub commits"]),
    ({"seed": -1}, ["seed=-1"]),
    ({"model_limits": {"tiny-random-lama": 10}}, ["model_limits names ['tiny-random-lama']", "tiny-random-llama"]),
    ({"model_revisions": {"smollm2-135m": "0" * 40}}, ["model_revisions names ['smollm2-135m']", "a typo"]),
])
def test_profile_values_are_checked_with_name_and_allowed_values(override, needles):
    refused(lambda: check_params(smoke_with(**override)), *needles, exc=ValueError)


@pytest.mark.parametrize("sources, needles", [
    ({"file": {"path": 5}}, ["'file'", "path=5", "str or Path"]),
    ({"ladder": {"n_per_level": "eight"}}, ["'ladder'", "n_per_level='eight'", "must be int"]),
    ({"ladder": {"n_per_level": True}}, ["n_per_level=True", "got bool"]),
    ({"mmath": {"subsets": "math500"}}, ["subsets='math500'", "Sequence"]),
])
def test_a_source_argument_of_the_wrong_type_is_named(sources, needles):
    from pika_utils.problems import tasks

    refused(lambda: tasks.load_problems(sources), *needles, exc=TypeError)


def test_a_profile_that_is_not_yaml_is_named_with_its_line(capsys, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("k: 4\nmodels: [tiny-random-llama\nseed: 0\n")
    cli_refused(capsys, ["book", "--profile", bad, "--plan"], "mine.yaml is not valid YAML at line", "column")


@pytest.mark.parametrize("param,needles", [
    ("k=2.5", ["k=2.5", "[1, 10000]"]), ("k=true", ["k=True", "[1, 10000]"]),
    ("k=eight", ["k='eight'", "[1, 10000]"]), ("k", ["KEY=VALUE"]),
    ("kk=1", ["['kk']", "not parameters of any chapter"]),
])
def test_book_command_line_refuses_overrides_cleanly(capsys, tmp_path, no_model, param, needles):
    cli_refused(capsys, ["book", "--profile", "smoke", "--chapters", "01_rollouts", "--no-build",
                         "--root", tmp_path / "book", "-p", param], *needles)
    assert not (tmp_path / "book" / "book" / "chapters").exists()  # no chapter ran


# ---------------------------------------------------------------------------------------------
# Problem tables: run_rollouts (what the book calls) and `pika rollouts`

def _with(**cols):
    return make_problems(3).assign(**{k: v for k, v in cols.items()})


@pytest.mark.parametrize("table,needles", [
    (make_problems(0), ["no rows"]),
    (make_problems(3).drop(columns="answer"), ["no column(s) ['answer']"]),
    (_with(question=[1, 2, 3]), ["'question'", "a question is text (got int)", "problem_id='p000'"]),
    (_with(question=["ok", None, "ok"]), ["'question'", "not empty", "problem_id='p001'"]),
    (_with(question=["ok", "ok", "   "]), ["'question'", "not empty", "problem_id='p002'"]),
    (_with(problem_id=["a", "a", "b"]), ["'problem_id'", "ids are unique", "problem_id='a'"]),
    (_with(answer=["1", "", "3"]), ["'answer'", "gold answer", "problem_id='p001'"]),
    (_with(answer=[1.5, 2.0, 3.0]), ["'answer'", "text or an integer"]),
    (_with(question=["x" * 100_000, "ok", "ok"]), ["'question'", "16,384 characters", "problem_id='p000'"]),
])
def test_bad_problem_tables_are_refused_before_the_model_loads(earlier, table, needles):
    runs = earlier["root"] / "runs"  # beside the finished run: nothing may appear there
    refused(lambda: run_rollouts(table, MODEL, CFG, source="offline", out_root=runs, progress=False),
            *needles, exc=InputError)


def test_prompt_longer_than_the_context_is_refused_before_generation(earlier):
    table = _with(question=["ok", "y" * 5000, "ok"])  # under the character pre-check, over 4096 tokens
    refused(lambda: run_rollouts(table, MODEL, CFG, source="offline", out_root=earlier["root"] / "runs",
                                 progress=False),
            "problem_id='p001'", "exceed the model's context of 4096 tokens", exc=InputError)


def _write(path: Path, data) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize("name,content,needles", [
    ("latin1.jsonl", '{"problem_id": "a", "question": "Combien fait 2 + 2 ?", "answer": "4"}\n'
                     '{"problem_id": "b", "question": "Qu\'est-ce qu\'un carr\xe9 ?", "answer": "x"}\n'.encode("latin-1"),
     ["latin1.jsonl is not UTF-8", "line 2"]),
    ("bytes.csv", b"problem_id,question,answer\na,What is 2+2\xff?,4\n", ["bytes.csv is not UTF-8", "line 2"]),
    ("bad.jsonl", '{"problem_id": "a", "question": "q", "answer": "1"}\n{"problem_id": \n', ["bad.jsonl, line 2"]),
    ("list.jsonl", '[1, 2]\n', ["list.jsonl, line 1", "JSON object"]),
    ("scalar.json", '42', ["scalar.json", "list of objects"]),
    ("empty.jsonl", '', ["empty.jsonl is empty"]),
    ("notes.txt", 'What is 2 + 2?', ["notes.txt", "unknown format '.txt'"]),
    ("ints.jsonl", '{"problem_id": "a", "question": 7, "answer": "1"}\n', ["ints.jsonl", "'question'", "(got int)"]),
    ("noanswer.csv", 'problem_id,question,answer\na,What is 1+1?,\n', ["noanswer.csv", "'answer'", "gold answer"]),
    ("broken.parquet", b"PAR1 not really", ["broken.parquet is corrupt or partial"]),
])
def test_rollouts_command_line_names_the_file(capsys, tmp_path, no_model, name, content, needles):
    src = _write(tmp_path / name, content)
    cli_refused(capsys, ["rollouts", "--problems", src, "--model", MODEL, "--source", "offline",
                         "--out", tmp_path / "out", "--quiet"], *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,needles", [
    (["--k", "0"], ["k=0", "[1, 10000]"]),
    (["--top-p", "1.5"], ["top_p=1.5", "(0, 1]"]),
    (["--model", "no-such-model"], ["unknown model 'no-such-model'", MODEL]),
    (["--price", "-1", "0.2"], ["--price -1.0 0.2", "numbers >= 0"]),
])
def test_rollouts_command_line_names_the_option(capsys, tmp_path, no_model, extra, needles):
    src = store.write_parquet(tmp_path / "p.parquet", make_problems(2))
    cli_refused(capsys, ["rollouts", "--problems", src, "--model", MODEL, "--source", "offline",
                         "--out", tmp_path / "out", "--quiet", *extra], *needles)
    assert not (tmp_path / "out").exists()


def test_rollouts_price_option_prices_the_run(capsys, tmp_path):
    """--price gives a model the price table lacks (a .gguf file) its $; here it overrides the
    tiny model's, and the run's costs follow it."""
    src = store.write_parquet(tmp_path / "p.parquet", make_problems(2))
    args = ["rollouts", "--problems", str(src), "--model", MODEL, "--source", "offline", "--k", "1",
            "--max-new-tokens", "2", "--quiet", "--price", "1000", "2000"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    run_dir = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dir"]
    ro = store.read_parquet(Path(run_dir) / "rollouts.parquet")
    summary = store.read_parquet(Path(run_dir) / "summary.parquet").set_index("problem_id")
    expected = ((ro["prompt_tokens"] * 1000 + ro["output_tokens"] * 2000) / 1e6).groupby(ro["problem_id"]).mean()
    np.testing.assert_allclose(summary.loc[expected.index, "cost_per_rollout"], expected)


def test_missing_problems_file_is_named(capsys, tmp_path, no_model):
    cli_refused(capsys, ["rollouts", "--problems", tmp_path / "nope.jsonl", "--model", MODEL,
                         "--out", tmp_path / "out"], "nope.jsonl does not exist")


# ---------------------------------------------------------------------------------------------
# Saved probes: `pika label`, predict_texts and Router, all before a model loads

def _edit_probe(src: Path, dst: Path, *, info=None, coef=None, resha=True, json_text=None, drop=None) -> Path:
    shutil.copytree(src, dst)
    if coef is not None:
        from safetensors.numpy import save
        data = save({"coef": np.asarray(coef, dtype=np.float64)})
        (dst / "probe.safetensors").write_bytes(data)
        if resha:
            j = json.loads((dst / "probe.json").read_text())
            j["coef_sha256"] = hashlib.sha256(data).hexdigest()
            (dst / "probe.json").write_text(json.dumps(j))
    if info is not None:
        j = json.loads((dst / "probe.json").read_text())
        for k, v in info.items():
            if v is KeyError:
                j.pop(k)
            else:
                j[k] = v
        (dst / "probe.json").write_text(json.dumps(j))
    if json_text is not None:
        (dst / "probe.json").write_text(json_text)
    if drop:
        (dst / drop).unlink()
    return dst


PROBE_CASES = {
    "position 0": (dict(info={"position": 0}), ["'position'=0", "negative integer"]),
    "position +2": (dict(info={"position": 2}), ["'position'=2", "negative integer"]),
    "position not stored": (dict(info={"position": -9}), ["'position'=-9", "stored end-of-instruction positions"]),
    "platt null": (dict(info={"platt": None}), ["'platt'=None", "binary"]),
    "platt short": (dict(info={"platt": [1.0]}), ["'platt'=[1.0]", "two finite numbers"]),
    "layer negative": (dict(info={"layer": -1}), ["'layer'=-1", ">= 0"]),
    "layer too deep": (dict(info={"layer": 99}), ["'layer'=99", "at most the model's 4 blocks"]),
    "task unknown": (dict(info={"task": "ranking"}), ["'task'='ranking'", "classification"]),
    "sha malformed": (dict(info={"weights_sha256": "abc"}), ["'weights_sha256'='abc'", "64-hex"]),
    "field missing": (dict(info={"layer": KeyError}), ["lacks field(s) ['layer']"]),
    "empty json": (dict(json_text=""), ["probe.json is not valid JSON"]),
    "json list": (dict(json_text="[]"), ["probe.json must hold a JSON object"]),
    "coef too short": (dict(coef=np.ones(63)), ["'coef' has 63 values", "d_model=64"]),
    "coef edited": (dict(coef=np.ones(64), resha=False), ["probe.safetensors", "sha256 differs"]),
    "coef nan": (dict(coef=np.full(64, np.nan)), ["NaN/inf"]),
    "no weights": (dict(drop="probe.safetensors"), ["no probe.safetensors"]),
}


@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_label_refuses_a_damaged_probe_before_loading_the_model(capsys, tmp_path, no_model, earlier, case):
    kw, needles = PROBE_CASES[case]
    probe = _edit_probe(earlier["probe"], tmp_path / "probe", **kw)
    src = store.write_parquet(tmp_path / "q.parquet", make_problems(3))
    cli_refused(capsys, ["label", "--probe", probe, "--problems", src, "--out", tmp_path / "o.parquet"],
                str(probe), *needles)
    assert not (tmp_path / "o.parquet").exists()


def test_predict_texts_validates_the_probe_first(tmp_path, no_model, earlier):
    from pika_utils.probes.protocol import predict_texts

    probe = _edit_probe(earlier["probe"], tmp_path / "probe", info={"position": 0})
    refused(lambda: predict_texts(probe, ["What is 1 + 1?"]), "'position'=0", exc=ValueError)


def test_probe_folder_that_does_not_exist(capsys, tmp_path, no_model):
    src = store.write_parquet(tmp_path / "q.parquet", make_problems(3))
    cli_refused(capsys, ["label", "--probe", tmp_path / "nothing", "--problems", src, "--out", tmp_path / "o.parquet"],
                "nothing does not exist")


@pytest.mark.parametrize("name,content,column,needles", [
    ("q.jsonl", '{"question": "What is 1 + 1?"}\n', "text", ["no column(s) ['text']", "'question'"]),
    ("q.jsonl", '{"question": "What is 1 + 1?"}\n{"question": ""}\n', "question", ["'question'", "not empty", "row 2"]),
    ("q.jsonl", '{"question": 12}\n', "question", ["'question'", "(got int)"]),
    ("q.jsonl", '{"question": "caf\xe9"}\n'.encode("latin-1"), "question", ["q.jsonl is not UTF-8"]),
    ("q.csv", "question\n", "question", ["no rows"]),
])
def test_label_names_the_questions_file(capsys, tmp_path, no_model, earlier, name, content, column, needles):
    src = _write(tmp_path / name, content)
    cli_refused(capsys, ["label", "--probe", earlier["probe"], "--problems", src, "--column", column,
                         "--out", tmp_path / "o.parquet"], str(src), *needles)


def test_label_never_overwrites_a_different_output(capsys, tmp_path, earlier):
    src = store.write_parquet(tmp_path / "q.parquet", make_problems(3))
    out = earlier["root"] / "runs" / earlier["run"].dir.name / "summary.parquet"  # an earlier output
    cli_refused(capsys, ["label", "--probe", earlier["probe"], "--problems", src, "--out", out],
                str(out), "refusing to overwrite")


def test_router_names_the_member_with_a_bad_probe(tmp_path, no_model, earlier):
    from pika_utils.routing.router import Router

    bad = _edit_probe(earlier["probe"], tmp_path / "bad", info={"position": 0})
    refused(lambda: Router({"good": earlier["probe"], "bad": bad}, {"good": 1.0, "bad": 2.0}, lam=0.1),
            "pool member 'bad'", "'position'=0", exc=ValueError)


@pytest.mark.parametrize("edit,needles", [
    (lambda d: d.pop("probe_dirs"), ["'probe_dirs'", "save the router again"]),
    (lambda d: d.update(kind="something"), ["is not a saved Router"]),
    (lambda d: d["probe_dirs"].update(a="../nowhere"), ["the probe of 'a' is missing"]),
])
def test_router_load_names_what_is_wrong(tmp_path, no_model, earlier, edit, needles):
    from pika_utils.routing.router import Router

    probe = shutil.copytree(earlier["probe"], tmp_path / "a")
    path = Router({"a": probe}, {"a": 1.0}, lam=0.1).save(tmp_path / "router.json")
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    refused(lambda: Router.load(path), str(path) if "kind" not in str(needles) else "router.json", *needles,
            exc=ValueError)


# ---------------------------------------------------------------------------------------------
# Damaged stored work: named, moved aside, recomputed; everything else kept

def _copy_run(earlier, tmp_path) -> Path:
    src = earlier["run"].dir
    root = tmp_path / "runs"
    shutil.copytree(src, root / src.name)
    return root


def _rerun(root, capsys):
    run = run_rollouts(make_problems(4), MODEL, CFG, source="offline", out_root=root, progress=False)
    return run, capsys.readouterr().err


def test_edited_rollout_chunk_is_named_moved_aside_and_recomputed(tmp_path, capsys, earlier):
    root = _copy_run(earlier, tmp_path)
    d = root / earlier["run"].dir.name
    (d / "rollouts.parquet").unlink()  # as if stopped before the final write
    chunk = d / "chunks" / "chunk-00001.parquet"
    other = (d / "chunks" / "chunk-00000.parquet").read_bytes()
    edited = pd.read_parquet(chunk).assign(correct=True, text="edited")
    edited.to_parquet(chunk, index=False)  # a valid Parquet file with changed rows
    run, err = _rerun(root, capsys)
    assert "chunk-00001.parquet is damaged" in err and "moved it aside" in err
    assert len(list(chunk.parent.glob("chunk-00001.parquet.damaged-*"))) == 1
    assert (d / "chunks" / "chunk-00000.parquet").read_bytes() == other  # untouched chunk kept as is
    pd.testing.assert_frame_equal(run.rollouts, earlier["run"].rollouts)


def test_damaged_final_table_is_rebuilt_from_the_chunks(tmp_path, capsys, earlier):
    root = _copy_run(earlier, tmp_path)
    final = root / earlier["run"].dir.name / "rollouts.parquet"
    final.write_bytes(final.read_bytes()[:-10])
    run, err = _rerun(root, capsys)
    assert "rollouts.parquet is damaged" in err
    pd.testing.assert_frame_equal(run.rollouts, earlier["run"].rollouts)


def test_deleted_summary_of_a_reused_run_is_rebuilt(tmp_path, capsys, earlier):
    root = _copy_run(earlier, tmp_path)
    summary = root / earlier["run"].dir.name / "summary.parquet"
    summary.unlink()
    run, _ = _rerun(root, capsys)
    assert summary.exists()
    pd.testing.assert_frame_equal(store.read_parquet(summary), earlier["run"].summary)


def _acts_copy(earlier, tmp_path) -> Path:
    src = earlier["acts"].dir
    dst = tmp_path / "acts" / src.name
    shutil.copytree(src, dst)
    return dst


def _extract(earlier, root):
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations

    return extract_activations(earlier["problems"], earlier["lm"], prompt_suffix="Reply.",
                               cfg=ExtractionConfig(batch_size=8), out_root=root, progress=False)


def test_truncated_activation_chunk_is_recomputed_on_resume(tmp_path, capsys, earlier):
    d = _acts_copy(earlier, tmp_path)
    (d / "meta.json").unlink()  # killed before the set was complete
    chunk = d / "acts-00002.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:500])
    acts = _extract(earlier, d.parent)
    assert "acts-00002.safetensors is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(acts.layer(2, -1), earlier["acts"].layer(2, -1))


def test_edited_activation_chunk_of_the_same_size_is_recomputed_on_resume(tmp_path, capsys, earlier):
    d = _acts_copy(earlier, tmp_path)
    (d / "meta.json").unlink()
    chunk = d / "acts-00001.safetensors"
    raw = bytearray(chunk.read_bytes())
    raw[-8:] = b"\x00" * 8
    chunk.write_bytes(bytes(raw))
    acts = _extract(earlier, d.parent)
    assert "acts-00001.safetensors is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(acts.layer(4, -1), earlier["acts"].layer(4, -1))


def test_truncated_chunk_of_a_complete_set_is_named_on_read_then_recomputed(tmp_path, capsys, earlier):
    from pika_utils.activations.eoi import ActivationSet

    d = _acts_copy(earlier, tmp_path)
    chunk = d / "acts-00003.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:1000])
    damaged = ActivationSet(d, store.read_json(d / "meta.json"))
    refused(lambda: damaged.layer(1, -1), str(chunk), "is damaged", "moved aside and recomputed", exc=ValueError)
    acts = _extract(earlier, d.parent)  # what the message says to do
    assert "acts-00003.safetensors is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(acts.layer(1, -1), earlier["acts"].layer(1, -1))


@pytest.mark.parametrize("damage,needles", [
    (lambda f: f.write_bytes(f.read_bytes()[:-4]), ["model.safetensors has", "bytes, its sidecar says"]),
    (lambda f: f.write_bytes(f.read_bytes()[:-4] + b"\x00\x00\x00\x01"), ["model.safetensors has sha256", "damaged"]),
])
def test_damaged_converted_weights_are_named(tmp_path, monkeypatch, damage, needles):
    from pika_utils.models.registry import load_model

    monkeypatch.setenv("PIKA_CACHE_DIR", str(tmp_path / "cache"))
    load_model(MODEL, source="offline")  # builds and verifies the cache
    weights = next((tmp_path / "cache" / "models").glob(f"{MODEL}-*/model.safetensors"))
    damage(weights)
    refused(lambda: load_model(MODEL, source="offline"), *needles, "delete", exc=RuntimeError)


@pytest.mark.parametrize("name,kw,needles", [
    (MODEL, {"source": "offline", "revision": "abc123"}, ["'tiny-random-llama' has no hub id", "revision='abc123'"]),
    ("smollm2-135m", {"source": "offline", "revision": "abc123"}, ["source='offline'", "revision='abc123'"]),
    (MODEL, {"source": "offline", "revision": "  "}, ["revision='  '"]),
])
def test_a_revision_pin_that_cannot_be_honoured_is_refused(no_model, name, kw, needles):
    from pika_utils.models.registry import load_model

    refused(lambda: load_model(name, **kw), *needles, exc=ValueError)
