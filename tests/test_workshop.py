"""End-to-end on the workshop's real models (slow: minutes on a 2-core CPU).

    make test-slow      # or: .venv/bin/pytest -m slow
"""
import json

import pytest

from pika_utils.book import runner as book

pytestmark = pytest.mark.slow


def test_workshop_models_span_the_ladder(tmp_path, monkeypatch):
    """Chapter 1 through papermill with both offline models on a small ladder: the designed
    levels must mean something to them (easy levels solved more often than hard ones)."""
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    params = {**book.load_profile("workshop"), "k": 4,
              "problem_sources": {"ladder": {"n_per_level": 6, "levels": [1, 2, 5, 6]}}}
    book.execute_chapters(params, chapters=["01_rollouts"], root=tmp_path, progress=False)
    from pika_utils.generation import pipeline

    problems, runs, summary = pipeline.rollout_stage(params)  # reads the runs the notebook wrote
    assert set(runs) == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    for m, r in runs.items():
        assert r.meta["model_info"]["source"].startswith(("hub:", "pypi:"))
    qwen = summary[summary["model"] == "qwen2.5-coder-0.5b"].groupby("difficulty")["success_rate"].mean()
    assert qwen.loc[1.0] > 0.5 > qwen.loc[6.0]
    nb = json.loads((tmp_path / "book" / "chapters" / "01_rollouts.ipynb").read_text())
    assert nb["metadata"]["pika"]["parameters"]["k"] == 4
