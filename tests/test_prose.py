"""Prose that matches the run: a chapter's Markdown may not state a parameter (K, a model size
range, the pool's modes) that the profiles it runs under (smoke and workshop) set otherwise; a
number that depends on a parameter is computed in a cell. The paper's own settings (K=50, its
1.5B-20B models) and the recorded pool's members (7B-32B) may be stated: they do not change with
the profile."""
from __future__ import annotations

import json
import re

import pytest

from pika_utils.book import runner as book

RUN_PROFILES = ("smoke", "workshop")
NOTEBOOKS = sorted((book.REPO_ROOT / "notebooks").glob("*.ipynb"))
#: Size ranges (billions of parameters) of models the book describes but does not run.
FIXED_RANGES = {("1.5", "20"), ("7", "32")}
K_RE = re.compile(r"\$?\bK\s*=\s*(\d+)\$?")
RANGE_RE = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?)\s*B?\s*[-–]\s*(\d+(?:\.\d+)?)\s*B\b")
MODES_RE = re.compile(r"\b(?:two|both|three) modes\b", re.IGNORECASE)


def _markdown(path):
    cells = json.loads(path.read_text())["cells"]
    return [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]


def _statements(pattern):
    return [(p.name, i, m) for p in NOTEBOOKS for i, text in _markdown(p) for m in pattern.finditer(text)]


def test_the_patterns_find_the_drift_they_are_for():
    """The two drifts a reader found: 'K=8' and '0.1-0.5B' for a run with K=4 and a 1.5B member,
    and a pool 'in two modes' that answers directly."""
    assert K_RE.search("each problem is sampled with K=8").group(1) == "8"
    assert RANGE_RE.search("small models (0.1-0.5B) answer").groups() == ("0.1", "0.5")
    assert MODES_RE.search("each model in two modes")


@pytest.mark.parametrize("profile", RUN_PROFILES)
def test_no_chapter_states_a_k_its_profile_contradicts(profile):
    k = book.load_profile(profile)["k"]
    paper_k = book.load_profile("paper-k50")["k"]
    bad = [(n, i, m.group(0)) for n, i, m in _statements(K_RE) if int(m.group(1)) not in (1, k, paper_k)]
    assert not bad, f"prose states K that the {profile} profile (k={k}) contradicts: {bad}; compute it in a cell"


def test_no_chapter_states_a_model_size_range_of_the_run():
    bad = [(n, i, m.group(0)) for n, i, m in _statements(RANGE_RE) if m.groups() not in FIXED_RANGES]
    assert not bad, f"prose states model size ranges that depend on the profile: {bad}; compute them in a cell"


@pytest.mark.parametrize("profile", RUN_PROFILES)
def test_the_pool_modes_in_prose_match_the_profile(profile):
    modes = book.load_profile(profile).get("pool_modes") or []
    said = {"two": 2, "both": 2, "three": 3}
    bad = [(n, i, m.group(0)) for n, i, m in _statements(MODES_RE) if said[m.group(0).split()[0].lower()] != len(modes)]
    assert not bad, f"prose names a number of pool modes that the {profile} profile ({modes}) contradicts: {bad}"
