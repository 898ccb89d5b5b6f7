"""Shared test inputs built for real with the smoke profile's tiny local model."""
import os

# numpy's OpenBLAS on one thread, as the runner gives the chapters' kernels (book/runner.py,
# KERNEL_THREADS_ENV): the probe tests' many small fits otherwise wait on OpenBLAS's threads. Set
# before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

QUESTIONS = [f"Calculate {i} + {i * 7}." + " again" * (i % 5) for i in range(40)]


def tiny_activations(out_root, n: int = 40):
    """(model, problems, activations) of the tiny model on ``n`` ladder-like questions, prompt
    suffix "Reply.", batches of 8: what probe and router tests train on."""
    from pika_utils.activations.eoi import ExtractionConfig, extract_activations
    from pika_utils.models.registry import load_model

    lm = load_model("tiny-random-llama", source="offline")
    problems = pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)], "question": QUESTIONS[:n]})
    acts = extract_activations(problems, lm, prompt_suffix="Reply.", cfg=ExtractionConfig(batch_size=8),
                               out_root=out_root, progress=False)
    return lm, problems, acts


#: The splits of ``tiny_activations``'s 40 problems for probe and router tests.
TINY_SPLITS = ["train"] * 24 + ["val"] * 8 + ["test"] * 8


def tiny_member_probes(tmp, labels_of, fit, extra=None):
    """Saved probes for pool 'members' on the tiny model's activations: ``labels_of(n)`` gives
    each member's binary labels, ``fit(acts, labels_frame, lm)`` the report of one probe, and
    ``extra(member, lm)`` anything more for its probe.json. Returns (lm, problems, acts, dirs,
    reports), dirs and reports by member."""
    from pika_utils.probes import protocol as P

    lm, problems, acts = tiny_activations(tmp)
    dirs, reports = {}, {}
    for member, labels in labels_of(len(problems)).items():
        lab = pd.DataFrame({"problem_id": problems["problem_id"], "question": problems["question"],
                            "maj_correct": labels, "split": TINY_SPLITS})
        reports[member] = fit(acts, lab, lm)
        dirs[member] = P.save_trained_probe(tmp / member.replace("/", "_"), reports[member], acts, prompt_suffix="Reply.",
                                            labels=lab, **({"extra": extra(member, lm)} if extra else {}))
    return lm, problems, acts, dirs, reports


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The whole smoke book, executed and rendered once per test session for the tests that read
    it (test_book's and test_prose's): (its root, the rendered index)."""
    from pika_utils.book import runner as book

    root = tmp_path_factory.mktemp("smoke_book")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIKA_DATA_DIR", str(root / "runs"))
        index = book.make_book("smoke", root=root)
    return root, index


@pytest.fixture(scope="session")
def tiny_lm():
    """The smoke profile's tiny model, loaded once per test session."""
    from pika_utils.models.registry import load_model

    return load_model("tiny-random-llama", source="offline")


def run_smoke_chapter(tmp_path, monkeypatch, name: str) -> dict:
    """Execute one chapter on the smoke profile into a staged book under ``tmp_path`` (its own
    data folder) and return the executed notebook as JSON."""
    import json

    from pika_utils.book import runner as book

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    seconds = book.execute_chapters("smoke", chapters=[name], root=tmp_path, progress=False)
    assert set(seconds) == {name}
    return json.loads((tmp_path / "book" / "chapters" / f"{name}.ipynb").read_text())


def refused(fn, *needles, exc=Exception) -> str:
    """Run ``fn``; it must raise ``exc`` whose message contains every needle. Returns the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{n!r} not in the message: {msg}"
    return msg


def cli_refused(capsys, argv, *needles) -> str:
    """`pika ...` in-process: exit status 2, one message (no traceback) naming the input."""
    from pika_utils import cli

    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"
    return err
