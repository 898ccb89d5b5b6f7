"""The rollout engine, for real, on the smoke profile's tiny local model."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pika_utils.grading import maths as grading
from pika_utils.core import store
from pika_utils.generation.rollouts import run_rollouts, summarise
from pika_utils.generation.sampling import SamplingConfig

MODEL = "tiny-random-llama"


def make_problems(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "problem_id": [f"p{i:03d}" for i in range(n)],
        "question": [f"What is {i} + {i + 1}?" for i in range(n)],
        "answer": [str(2 * i + 1) for i in range(n)],
        "source": "test", "difficulty": [float(i % 3) for i in range(n)],
    })


CFG = SamplingConfig(k=3, temperature=1.0, max_new_tokens=6, chunk_size=3, seed=7)


def test_rollouts_rows_grades_and_summary(tmp_path):
    problems = make_problems(7)
    run = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)
    r = run.rollouts
    assert len(r) == 7 * 3 and not r.duplicated(["problem_id", "sample"]).any()
    assert r["output_tokens"].between(1, CFG.max_new_tokens).all()
    assert set(r["finish_reason"]) <= {"stop", "length"}
    assert (r.loc[r["finish_reason"] == "length", "output_tokens"] == CFG.max_new_tokens).all()
    gold = problems.set_index("problem_id")["answer"]
    for row in r.itertuples():  # the stored grade is the one grader's verdict
        assert row.correct == grading.grade(row.text, gold[row.problem_id]).correct
    s = run.summary
    assert len(s) == 7 and s["success_rate"].between(0, 1).all()
    assert (s["cost_per_rollout"] > 0).all() and "pass@3" in s
    assert run.meta["model_info"]["source"].startswith("local:")
    assert run.meta["versions"]["torch"]


def test_same_key_reuses_and_other_params_recompute(tmp_path):
    problems = make_problems(4)
    a = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)
    mtime = (a.dir / "rollouts.parquet").stat().st_mtime_ns
    b = run_rollouts(problems.sample(frac=1, random_state=1), MODEL, CFG, source="offline",
                     out_root=tmp_path, progress=False)  # row order does not matter
    assert b.dir == a.dir and (b.dir / "rollouts.parquet").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(a.rollouts, b.rollouts)
    c = run_rollouts(problems, MODEL, SamplingConfig(**{**CFG.__dict__, "temperature": 0.5}),
                     source="offline", out_root=tmp_path, progress=False)
    assert c.dir != a.dir


def test_seeded_runs_are_identical_across_folders(tmp_path):
    problems = make_problems(5)
    a = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path / "a", progress=False)
    b = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a.rollouts, b.rollouts)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.assign(problem_id=["p000"] * len(d)), "'problem_id'.*ids are unique"),
    (lambda d: d.assign(question=[""] + list(d["question"][1:])), "'question'.*not empty.*row 0 \\(problem_id='p000'\\)"),
    (lambda d: d.assign(answer=[None] + list(d["answer"][1:])), "'answer'.*gold answer.*problem_id='p000'"),
])
def test_bad_problems_are_named(tmp_path, mutate, match):
    with pytest.raises(ValueError, match=match):
        run_rollouts(mutate(make_problems(3)), MODEL, CFG, source="offline", out_root=tmp_path)


def test_unknown_model_and_missing_price(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'no-such-model'. Registered models: .*tiny-random-llama"):
        run_rollouts(make_problems(2), "no-such-model", CFG, out_root=tmp_path)
    with pytest.raises(KeyError, match="no price for model 'org/my-model'.*prices"):
        run_rollouts(make_problems(2), "org/my-model", CFG, out_root=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_corrupt_chunk_is_moved_aside_named_and_recomputed(tmp_path, capsys):
    problems = make_problems(6)
    run = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)
    (run.dir / "rollouts.parquet").unlink()  # as if the run had stopped before the final write
    chunk = run.dir / "chunks" / "chunk-00001.parquet"
    damaged = chunk.read_bytes()[:100]
    chunk.write_bytes(damaged)
    again = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)
    assert "chunk-00001.parquet is damaged" in capsys.readouterr().err
    aside = list(chunk.parent.glob("chunk-00001.parquet.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, never deleted
    pd.testing.assert_frame_equal(again.rollouts, run.rollouts)


def test_summarise_on_a_known_table():
    problems = pd.DataFrame({"problem_id": ["a", "b"], "question": ["q", "q"], "answer": ["4", "1/2"]})
    r = pd.DataFrame({
        "problem_id": ["a"] * 4 + ["b"] * 4, "model": "smollm2-135m", "sample": [0, 1, 2, 3] * 2,
        "extracted": ["4", "4", "5", None, "0.5", "\\frac{1}{2}", "3", "3"],
        "correct": [True, True, False, False, True, True, False, False],
        "prompt_tokens": 10, "output_tokens": [2, 2, 2, 2, 4, 4, 4, 4], "finish_reason": "stop",
    })
    s = summarise(r, problems).set_index("problem_id")
    assert s.loc["a", "success_rate"] == 0.5 and s.loc["a", "pass@4"] == 1.0
    assert s.loc["a", "pass@1"] == pytest.approx(0.5)
    assert bool(s.loc["a", "maj_correct"])
    # b: "0.5" and "\frac{1}{2}" are one answer (2 votes) against "3" (2 votes): a tie is no majority
    assert pd.isna(s.loc["b", "maj_answer"]) and not bool(s.loc["b", "maj_correct"])
    assert s.loc["b", "cost_per_rollout"] > s.loc["a", "cost_per_rollout"]


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    """Kill a real run with SIGKILL mid-way, start it again, and compare with a clean run."""
    problems = make_problems(40)
    pfile = store.write_parquet(tmp_path / "problems.parquet", problems)
    cmd = [sys.executable, "-m", "pika_utils.cli", "rollouts", "--problems", str(pfile), "--model", MODEL,
           "--k", "3", "--temperature", "1.0", "--max-new-tokens", "16", "--chunk-size", "1",
           "--seed", "7", "--source", "offline", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*/chunks/chunk-*.parquet")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(out.glob("*/chunks/chunk-*.parquet")))
    assert 1 <= done_at_kill < 40, "the kill should land mid-run"
    assert not list(out.glob("*/rollouts.parquet"))
    subprocess.run(cmd + ["--out", str(out)], env=env, check=True, capture_output=True)
    subprocess.run(cmd + ["--out", str(tmp_path / "clean")], env=env, check=True, capture_output=True)
    killed = store.read_parquet(next(out.glob("*/rollouts.parquet")))
    clean = store.read_parquet(next((tmp_path / "clean").glob("*/rollouts.parquet")))
    assert len(killed) == 120 and not killed.duplicated(["problem_id", "sample"]).any()
    pd.testing.assert_frame_equal(killed, clean)


def test_shared_prefill_gives_the_same_greedy_outputs_as_plain_generate():
    """Prefilling each prompt once and copying its cache K times must not change what the
    model generates: compared greedily, row by row, against one plain generate per prompt."""
    from pika_utils.models.registry import load_model
    from pika_utils.core.prompts import chat_prompts
    from pika_utils.generation.backends import TransformersBackend

    lm = load_model(MODEL, source="offline")
    prompts = chat_prompts(lm.tokenizer, ["What is 2 + 2?", "A much longer question, padded less: 17 * 3 - 4 = ?", "Hi"])
    greedy = SamplingConfig(k=1, temperature=0.0, max_new_tokens=10)
    plain = TransformersBackend(lm, shared_prefill=False).generate(prompts, greedy, 0)
    object.__setattr__(greedy, "k", 3)  # greedy with K copies: every copy must equal the plain one
    shared = TransformersBackend(lm, shared_prefill=True).generate(prompts, greedy, 0)
    for p, s in zip(plain, shared):
        assert len(s) == 3
        for c in s:
            assert (c.text, c.output_tokens, c.finish_reason) == (p[0].text, p[0].output_tokens, p[0].finish_reason)


def test_prefill_read_stores_the_activations_extraction_would(tmp_path, monkeypatch):
    """One forward for both: the activations kept from the rollouts' prefill are the ones nnsight
    extracts (same chunks, same key), the samples are those of a run that reads nothing, and
    chapter 2 then reuses the set instead of extracting."""
    import numpy as np

    from pika_utils.generation import pipeline
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations
    from pika_utils.models.registry import load_model

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    problems = make_problems(7).assign(question=[f"What is {i} + {i + 1}?" + " Think." * (i % 3) for i in range(7)])
    ecfg = ExtractionConfig(token_layers=(1,), rollout_chunks=CFG.chunk_size)
    read = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path / "a", progress=False, read=ecfg)
    plain = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(read.rollouts.drop(columns=[]), plain.rollouts)
    lm = load_model(MODEL, source="offline")
    stored = extract_activations(problems, lm, cfg=ecfg, progress=False)  # written by the rollouts
    assert stored.meta["written_by"].startswith("rollouts")
    fresh = extract_activations(problems, lm, cfg=ecfg, out_root=tmp_path / "fresh", progress=False)
    assert fresh.meta["written_by"] == "nnsight extraction" and fresh.meta["key"] == stored.meta["key"]
    assert stored.problem_ids == fresh.problem_ids
    np.testing.assert_allclose(stored.all(), fresh.all(), rtol=1e-4, atol=1e-5)
    xs, ms = stored.tokens(1)
    xf, mf = fresh.tokens(1)
    assert (ms == mf).all()
    np.testing.assert_allclose(xs[ms], xf[mf], rtol=1e-4, atol=1e-5)
    # the pipeline: chapter 1 with read, then chapter 2 finds the set instead of extracting
    params = {"backend": "transformers", "chunk_size": CFG.chunk_size, "token_layer_fracs": [0.5],
              "extract_dtype": "float32", "extract_layers": None, "model_source": "offline",
              "prompt_suffix": CFG.prompt_suffix, "system_prompt": CFG.system_prompt}
    assert pipeline.reads_while_sampling(params)
    run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path / "c", progress=False,
                 read=lambda lm: pipeline.extraction_config(params, lm))
    _, acts = pipeline.activations_for(problems, MODEL, params)
    assert acts.meta["written_by"].startswith("rollouts") and acts.meta["rollout_chunks"] == CFG.chunk_size


def test_a_stored_run_is_read_without_loading_the_model(tmp_path, monkeypatch):
    """Chapters after the first read chapter 1's runs: the key comes from the weights' location
    and the tokenizer, so the model itself is not loaded again."""
    from pika_utils.generation import rollouts

    problems = make_problems(5)
    first = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)

    def no_load(*a, **k):
        raise AssertionError("the model was loaded to read a stored run")

    monkeypatch.setattr(rollouts, "make_backend", no_load)
    again = run_rollouts(problems, MODEL, CFG, source="offline", out_root=tmp_path, progress=False)
    assert again.dir == first.dir
    pd.testing.assert_frame_equal(again.rollouts, first.rollouts)
    with pytest.raises(AssertionError, match="was loaded"):  # a new setting does need the model
        run_rollouts(problems, MODEL, CFG.__class__(**{**CFG.__dict__, "seed": 8}), source="offline",
                     out_root=tmp_path, progress=False)
