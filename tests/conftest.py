"""Shared test inputs built for real with the smoke profile's tiny local model."""
import pandas as pd

QUESTIONS = [f"Calculate {i} + {i * 7}." + " again" * (i % 5) for i in range(40)]


def tiny_activations(out_root, n: int = 40):
    """(model, problems, activations) of the tiny model on ``n`` ladder-like questions, prompt
    suffix "Reply.", batches of 8: what probe and router tests train on."""
    from pika_utils.activations import ExtractionConfig, extract_activations
    from pika_utils.models import load_model

    lm = load_model("tiny-random-llama", source="offline")
    problems = pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)], "question": QUESTIONS[:n]})
    acts = extract_activations(problems, lm, prompt_suffix="Reply.", cfg=ExtractionConfig(batch_size=8),
                               out_root=out_root, progress=False)
    return lm, problems, acts


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lm():
    """The smoke profile's tiny model, loaded once per test session."""
    from pika_utils.models import load_model

    return load_model("tiny-random-llama", source="offline")


def run_smoke_chapter(tmp_path, monkeypatch, name: str) -> dict:
    """Execute one chapter on the smoke profile into a staged book under ``tmp_path`` (its own
    data folder) and return the executed notebook as JSON."""
    import json

    from pika_utils import book

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    seconds = book.execute_chapters("smoke", chapters=[name], root=tmp_path, progress=False)
    assert set(seconds) == {name}
    return json.loads((tmp_path / "book" / "chapters" / f"{name}.ipynb").read_text())
