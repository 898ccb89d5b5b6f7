"""The runner and the book: profiles, papermill, Jupyter Book, for real on the smoke profile."""
import json
import re
from pathlib import Path

import pytest

from pika_utils.book import environment, front_page
from pika_utils.book import runner as book
from pika_utils.core import store

NOTEBOOKS = sorted((book.REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_source_notebooks_have_no_outputs_and_a_parameters_cell():
    assert NOTEBOOKS
    for p in NOTEBOOKS:
        cells = json.loads(p.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), p
        assert any("parameters" in c["metadata"].get("tags", []) for c in cells), p


def test_every_study_chapter_ends_with_exercises_and_solutions():
    """Exercises live in the notebooks only (no script pastes them in): chapters 1-10 each hold at
    least two sphinx-exercise blocks, each with a folded solution that has code to run."""
    for p in NOTEBOOKS:
        if not p.name[:2].isdigit() or int(p.name[:2]) > 10:
            continue
        cells = json.loads(p.read_text())["cells"]
        text = ["".join(c["source"]) for c in cells]
        labels = [re.search(r":label: (\S+)", s).group(1) for s in text if s.startswith(":::{exercise}")]
        assert len(labels) >= 2, f"{p.name}: {len(labels)} exercise(s)"
        for label in labels:
            start = next(i for i, s in enumerate(text) if s.startswith(f":::{{solution-start}} {label}"))
            end = next(i for i, s in enumerate(text) if i > start and s.startswith(":::{solution-end}"))
            assert ":class: dropdown" in text[start], f"{p.name}: the solution of {label} is not folded"
            assert any(cells[i]["cell_type"] == "code" for i in range(start, end)), f"{p.name}: {label} has no code"


def test_toc_chapters_exist_as_notebooks():
    names = book.toc_chapters()
    assert names[:4] == ["01_rollouts", "02_activations", "03_probes", "04_difficulty"]
    for n in names:
        assert (book.REPO_ROOT / "notebooks" / f"{n}.ipynb").exists()


#: What keys chapter 1's rollouts (and the activations their prefill stores): a chapter that reads
#: them back must declare every one, or it computes another key and samples everything again
ROLLOUT_KEYS = {"models", "model_source", "backend", "problem_sources", "split_fractions", "k", "temperature",
                "top_p", "max_new_tokens", "prompt_suffix", "system_prompt", "stop", "seed", "chunk_size",
                "model_limits", "model_revisions"}
EXTRACTION_KEYS = {"extract_layers", "extract_dtype", "extract_batch_size", "token_layer_fracs", "ndif_remote",
                   "extract_token_budget", "chunk_size", "backend"}


def _declared_and_code(path):
    cells = json.loads(path.read_text())["cells"]
    params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    declared = set(re.findall(r"^(\w+)\s*=", "".join(params["source"]), re.M))
    return declared, "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_that_read_chapter_1_declare_what_keys_it(path):
    declared, code = _declared_and_code(path)
    if any(f in code for f in ("rollout_stage(", "recover_stage(", "build_pool(", "reader_pool(")) or path.stem == "01_rollouts":
        assert ROLLOUT_KEYS <= declared, f"{path.name} lacks {sorted(ROLLOUT_KEYS - declared)}"
    if "activations_for(" in code or path.stem == "01_rollouts":
        assert EXTRACTION_KEYS <= declared, f"{path.name} lacks {sorted(EXTRACTION_KEYS - declared)}"


@pytest.mark.parametrize("profile", ["smoke", "workshop", "paper", "paper-k50"])
def test_every_profile_key_is_a_chapter_parameter(profile):
    params = book.load_profile(profile)
    notebooks = {n: book.REPO_ROOT / "notebooks" / f"{n}.ipynb" for n in book.toc_chapters()}
    shares = book.split_parameters(params, notebooks)
    assert set().union(*[set(s) for s in shares.values()]) == set(params)


def test_unknown_profile_key_and_unknown_profile_are_named():
    notebooks = {"01_rollouts": book.REPO_ROOT / "notebooks" / "01_rollouts.ipynb"}
    with pytest.raises(ValueError, match=r"\['temprature'\] are not parameters of any chapter"):
        book.split_parameters({"k": 2, "temprature": 0.5}, notebooks)
    with pytest.raises(FileNotFoundError, match="no profile 'nope'.*smoke"):
        book.load_profile("nope")


def test_failing_cell_names_notebook_and_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    params = {**book.load_profile("smoke"), "models": ["no-such-model"]}
    with pytest.raises(book.ChapterFailed, match=r"notebooks/01_rollouts\.ipynb failed in cell \d+.*no-such-model"):
        book.execute_chapters(params, root=tmp_path, progress=False, preflight=False)  # (the preflight names it first)


def test_smoke_book_end_to_end(smoke_book):
    """papermill runs every chapter on the smoke profile and Jupyter Book renders them."""
    tmp_path, index = smoke_book
    assert index.exists()
    min_figures = {"01_rollouts": 3, "02_activations": 1, "03_probes": 2, "04_difficulty": 2}
    for name in book.toc_chapters():
        executed = json.loads((tmp_path / "book" / "chapters" / f"{name}.ipynb").read_text())
        assert executed["metadata"]["pika"]["parameters"]["profile"] == "smoke"
        injected = executed["metadata"]["papermill"]["parameters"]
        profile = book.load_profile("smoke")
        assert injected and all(profile[k] == v for k, v in injected.items())  # its share of the profile
        html = (tmp_path / "_build" / "html" / "book" / "chapters" / f"{name}.html").read_text()
        assert len(re.findall(r"<img [^>]*src=", html)) >= min_figures.get(name, 1), f"{name} lacks its figures"
        assert "<table" in html, f"{name} lacks a results table"
    html = (tmp_path / "_build" / "html" / "book" / "chapters" / "01_rollouts.html").read_text()
    assert "success_rate" in html and "Smoke profile" in html
    rollouts_nb = json.loads((tmp_path / "book" / "chapters" / "01_rollouts.ipynb").read_text())
    assert rollouts_nb["metadata"]["papermill"]["parameters"]["k"] == 4
    # the environment: the lock's sha256 and the full pip freeze in every chapter's metadata,
    # shown once on the Environment page
    lock_sha = store.file_sha256(book.REPO_ROOT / environment.LOCK_FILE)
    env = rollouts_nb["metadata"]["pika"]["environment"]
    assert env["lock_sha256"] == lock_sha
    assert any(line.startswith("torch==") for line in env["pip_freeze"]) and len(env["pip_freeze"]) > 100
    page = (tmp_path / "_build" / "html" / "book" / "environment.html").read_text()
    assert lock_sha in page and "torch==" in page and "pip freeze" in page
    assert 'href="environment.html"' in (tmp_path / "_build" / "html" / "book" / "intro.html").read_text()  # in the navigation


def test_smoke_book_chapters_9_and_10_say_what_they_found(smoke_book):
    """What the separate chapter tests (now `slow`) check, read from the smoke book's own run:
    chapter 9's figures, lessons and claims; chapter 10's verdict reasons and its K."""
    root, _ = smoke_book
    ch9 = json.loads((root / "book" / "chapters" / "09_recoverability.ipynb").read_text())
    text = json.dumps(ch9["cells"])
    assert "Smoke profile" in text and "What we learned" in text and "image/png" in text
    assert ch9["metadata"]["papermill"]["parameters"]["recover_best_of"] == 2
    assert any(p.name.startswith("c9-") for p in (root / "runs" / "verdicts" / "smoke").rglob("*.json"))  # recorded or dropped
    ch10 = json.loads((root / "book" / "chapters" / "10_code.ipynb").read_text())
    text = json.dumps(ch10["cells"])
    assert "Smoke profile" in text and "no_code" in text and "whole chapter" in text and "bubblewrap" in text
    assert ch10["metadata"]["papermill"]["parameters"]["code_k"] == 2


def test_environment_page_without_executed_chapters(tmp_path):
    book.stage_book(tmp_path)
    page = environment.write_environment_page(tmp_path).read_text()
    assert store.file_sha256(book.REPO_ROOT / environment.LOCK_FILE) in page
    assert "none executed" in page and "pip freeze" in page


def check_clean_pages(root: Path) -> None:
    """A reader sees results only: no progress bar, stderr stream or Python warning in an executed
    chapter; exercises' solutions ran; the rendered HTML loads no script or stylesheet from outside."""
    for name in book.toc_chapters(root):
        nb = json.loads((root / "book" / "chapters" / f"{name}.ipynb").read_text())
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", "")) + json.dumps(out.get("data", {}))
                assert out.get("name") != "stderr", f"{name} cell {i} writes to stderr: {text[:300]}"
                assert "it/s]" not in text and "%|" not in text, f"{name} cell {i} shows a progress bar"
                assert not re.search(r"\w*Warning\b", text), f"{name} cell {i} shows a warning: {text[:300]}"
                assert out.get("output_type") != "error", f"{name} cell {i} failed"
        if any(c["metadata"].get("pika") == "exercise" for c in nb["cells"]):
            sol = [c for c in nb["cells"] if c["metadata"].get("pika") == "exercise" and c["cell_type"] == "code"]
            assert sol and all(c.get("outputs") for c in sol), f"{name}: an exercise's solution produced nothing"
    for html in (root / "_build" / "html").rglob("*.html"):
        text = html.read_text()
        outside = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not outside, f"{html.name} loads {outside[:3]}"


def test_smoke_book_pages_are_clean(smoke_book):
    """The executed smoke chapters carry no progress bar or warning; exercises run; no CDN."""
    check_clean_pages(smoke_book[0])


def test_smoke_book_pages_a_reader_reads(smoke_book):
    """The first page says what the run found; the verdict page's table is a reader's (claims in
    full, interval beside the estimate, coloured verdicts, no raw NaN or scientific notation);
    chapter 8 read windows of the recorded reasoning chains (the workshop's default)."""
    root, _ = smoke_book
    intro = (root / "_build" / "html" / "book" / "intro.html").read_text()
    assert "What this run found" in intro and "claims" in intro and "smoke" in intro
    page = (root / "_build" / "html" / "book" / "chapters" / "11_verdicts.html").read_text()
    tables = re.findall(r"<table.*?</table>", page, re.S)
    table = next(t for t in tables if "estimate [95% interval]" in t)
    assert "background:#" in table  # the verdicts as coloured labels
    for t in tables:  # every table of the page: a dash for missing values, plain decimals
        assert "NaN" not in t and not re.search(r"\de-\d", t)
    ch8 = (root / "book" / "chapters" / "08_backtracking.ipynb").read_text()
    assert "recorded chains of sky-t1-27b-long" in ch8


def test_the_first_page_says_what_this_run_found(tmp_path, monkeypatch):
    """book/findings.md is read from the saved verdicts of the chapters just run: counts, and the
    headline claims with their intervals and chapter links; a chapter not run this time is not
    counted."""
    from pika_utils.book import verdicts

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    (tmp_path / "book" / "chapters").mkdir(parents=True)
    (tmp_path / "book" / "chapters" / "06_utility_router.ipynb").write_text("{}")
    verdicts.record("smoke", verdicts.Claim("c6-recorded-beats-best", "06", "Routing beats the best member", "p",
                                            "accuracy minus the best's", 0.05, 0.01, 0.09, n=500,
                                            selection="cross-fitted"))
    verdicts.record("smoke", verdicts.Claim("c6-other", "06", "Another", "p", "q", 0.0, -0.3, 0.3, n=40, selection="none"))
    verdicts.record("smoke", verdicts.Claim("c3-old", "03", "From an earlier run", "p", "q", 0.5, 0.4, 0.6, n=9, selection="none"))
    text = front_page.write_findings(tmp_path, "smoke", chapters=["06_utility_router"]).read_text()
    assert "Of **2 claims**" in text and "**1 were reproduced**" in text and "**1 stay undecided**" in text
    assert "- **reproduced**: Routing beats the best member. accuracy minus the best's: 0.050 [0.010, 0.090], n = 500" in text
    assert "{doc}`chapter 6 <chapters/06_utility_router>`" in text and "earlier run" not in text


def test_each_profile_builds_in_its_own_folder():
    assert book.profile_root("workshop") == book.BOOKS_DIR / "workshop"
    assert book.profile_root("paper-k50") != book.profile_root("paper")  # both say `profile: paper`
    assert book.profile_root(book.PROFILES_DIR / "smoke.yaml") == book.BOOKS_DIR / "smoke"
