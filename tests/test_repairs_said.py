"""Issue 33's two silent edges, said: an activation set rebuilt without its manifest says what was
missing, what it was rebuilt from and what that trusts (like a deleted summary.parquet, which is
"written again from" the rollouts); and a chapter run on its own with papermill refuses a
parameter no chapter has, with the error ``pika book`` gives, where papermill only warns."""
import json
import os
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
import yaml
from papermill.exceptions import PapermillExecutionError

from pika_utils.book import params as book_params
from pika_utils.book import runner
from pika_utils.core import store
from conftest import QUESTIONS, tiny_activations


# ------------------------------------------------------------------ a set rebuilt without its meta.json

def _no_extraction(*a, **k):
    raise AssertionError("activations were extracted again")


def test_an_activation_set_rebuilt_without_its_manifest_says_so(tmp_path, capsys, monkeypatch):
    from pika_utils.activations import eoi

    lm, problems, acts = tiny_activations(tmp_path)
    d, values, n = acts.dir, acts.all(), len(list(acts.dir.glob("acts-*.safetensors")))
    (d / "meta.json").unlink()
    capsys.readouterr()
    monkeypatch.setattr(eoi.NNsightExtractor, "extract_ids", _no_extraction)  # rebuilt from the chunks alone
    again = eoi.extract_activations(problems, lm, prompt_suffix="Reply.", cfg=eoi.ExtractionConfig(batch_size=8),
                                    out_root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert (f"{d / 'meta.json'} is missing; the set is rebuilt from the {n} of its {n} chunks stored in {d}, "
            "each trusted on its own sidecar (acts-NNNNN.json: its sha256 and size)") in err, err
    assert err.startswith("[pika] ")  # the channel every repair uses (store.say)
    assert (d / "meta.json").exists() and again.dir == d
    np.testing.assert_array_equal(again.all(), values)
    capsys.readouterr()
    eoi.extract_activations(problems, lm, prompt_suffix="Reply.", cfg=eoi.ExtractionConfig(batch_size=8),
                            out_root=tmp_path, progress=False)
    assert "is missing" not in capsys.readouterr().err  # a complete set: nothing to say


def test_a_token_set_rebuilt_without_its_manifest_says_so(tmp_path, capsys, tiny_lm):
    from pika_utils.activations.tokens import extract_token_activations

    chains = pd.DataFrame({"chain_id": [f"c{i}" for i in range(5)], "prefix": QUESTIONS[:5],
                           "text": [" Let me check that again." * (i + 1) for i in range(5)]})
    first = extract_token_activations(chains, tiny_lm, [1], batch_size=2, out_root=tmp_path, progress=False)
    (first.dir / "meta.json").unlink()
    capsys.readouterr()
    again = extract_token_activations(chains, tiny_lm, [1], batch_size=2, out_root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert f"{first.dir / 'meta.json'} is missing; the set is rebuilt from the 3 of its 3 chunks" in err, err
    assert "trusted on its own sidecar" in err and (first.dir / "meta.json").exists()
    assert again.meta["chunks"] == first.meta["chunks"]


# ------------------------------------------------------------------ papermill refuses unknown parameters

def _notebook(path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _execute(src, dst, parameters: dict):
    return papermill.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                                      progress_bar=False, cwd=str(store.REPO_ROOT), language="python")


def test_papermill_with_a_misspelled_parameter_is_refused_and_the_right_one_is_taken(tmp_path):
    """A small chapter (its parameters cell and the setup cell every chapter has)."""
    src = tmp_path / "small.ipynb"
    _notebook(src, '# Parameters (papermill overrides these)\nprofile = "workshop"\nk = 4\n',
              "from pika_utils.book.params import chapter_params\nparams = chapter_params(globals())\nprint(params)\n")
    with pytest.raises(PapermillExecutionError) as info:
        _execute(src, tmp_path / "bad.ipynb", {"kk": 16})
    assert info.value.ename == "ValueError"
    assert "profile key(s) ['kk'] are not parameters of any chapter" in info.value.evalue
    assert "check the spelling against the notebooks' 'parameters' cells" in info.value.evalue
    out = _execute(src, tmp_path / "good.ipynb", {"k": 16, "code_k": 3})  # another chapter's key passes, as in pika book
    printed = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert "'k': 16" in printed and "'profile': 'workshop'" in printed
    plain = _execute(src, tmp_path / "plain.ipynb", {})  # nothing injected: the defaults
    assert "'k': 4" in "".join(o.get("text", "") for o in plain.cells[-1].outputs)


def test_a_chapter_run_directly_with_papermill_refuses_kk_like_pika_book(tmp_path, capsys):
    """Chapter 1 as the README says to re-run it (papermill, ``-f`` the smoke profile, ``-p``),
    with ``-p kk 16``: refused in its setup cell, before any work, with pika book's error."""
    src = store.REPO_ROOT / "notebooks" / "01_rollouts.ipynb"
    profile = store.REPO_ROOT / "notebooks" / "profiles" / "smoke.yaml"
    r = subprocess.run([sys.executable, "-m", "papermill", str(src), str(tmp_path / "out.ipynb"), "-f", str(profile),
                        "-p", "kk", "16", "--cwd", str(store.REPO_ROOT)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PIKA_DATA_DIR": str(tmp_path / "data")})
    assert r.returncode != 0
    ours = "profile key(s) ['kk'] are not parameters of any chapter"
    assert ours in r.stderr + r.stdout, r.stderr[-2000:]
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    failed = [c for c in executed["cells"] if c["cell_type"] == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "chapter_params(globals())" in "".join(failed[0]["source"])
    assert not (tmp_path / "data").exists()  # nothing computed
    with pytest.raises(ValueError) as info:  # pika book's own refusal of the same key
        runner.split_parameters({**yaml.safe_load(profile.read_text()), "kk": 16},
                                {n: src.parent / f"{n}.ipynb" for n in runner.toc_chapters()})
    assert str(info.value).startswith(ours)


def test_the_parameter_table_is_exactly_the_chapters_parameters():
    """What makes "not parameters of any chapter" true when a chapter checks its own injection."""
    every = set()
    for nb in sorted((store.REPO_ROOT / "notebooks").glob("*.ipynb")):
        every |= set(runner.notebook_parameters(nb))
    assert every == set(book_params.PARAMETERS)


def test_outside_a_kernel_chapter_params_checks_the_values_only():
    assert book_params.chapter_params({"k": 3, "kk": 1, "In": "not a history"}) == {"k": 3}
    history = ["", "k = 4\n", "# Parameters\nk = 5\nkk = 16\n"]
    with pytest.raises(ValueError, match=r"\['kk'\] are not parameters of any chapter"):
        book_params.chapter_params({"k": 5, "kk": 16, "In": history})
    assert book_params.injected_parameters({"In": ["", "k = 4\n", "print(k)\n"]}) is None
