"""One integrity rule for every stored artefact (issue 24): a file's sha256 is recorded when it is
written (its sidecar, and the run's or set's manifest, or the probe's sealed JSON, or the model
cache's sidecar) and checked whenever it is used; a mismatch names the file and says what to do
or what happens, and nothing damaged is used or silently recomputed.

Each damage kind is done for real to a really written artefact of the smoke profile's tiny model:
bytes flipped in place (same size, mtime restored), a sidecar deleted, a chunk rewritten together
with its sidecar, a JSON field edited, a file deleted, a run killed at its very end."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pika_utils.core import store
from pika_utils.generation.rollouts import run_rollouts
from pika_utils.generation.sampling import SamplingConfig
from conftest import refused

MODEL = "tiny-random-llama"
CFG = SamplingConfig(k=2, temperature=1.0, max_new_tokens=4, chunk_size=2, seed=5)


def make_problems(n: int) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": [f"p{i:03d}" for i in range(n)],
                         "question": [f"What is {i} + {i + 1}?" + " Think." * (i % 3) for i in range(n)],
                         "answer": [str(2 * i + 1) for i in range(n)]})


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Flip one byte in place, keeping the size, the inode and the modification time."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(int(st.st_size * where))
        b = f.read(1)
        f.seek(int(st.st_size * where))
        f.write(bytes([b[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns




def extraction_params() -> dict:
    return {"backend": "transformers", "chunk_size": CFG.chunk_size, "token_layer_fracs": [0.5],
            "extract_dtype": "float32", "extract_layers": None, "model_source": "offline",
            "prompt_suffix": CFG.prompt_suffix, "system_prompt": CFG.system_prompt}


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_lm):
    """A finished rollout run whose prefill stored its activation set, and a saved binary probe."""
    from conftest import TINY_SPLITS, tiny_activations
    from pika_utils.generation import pipeline
    from pika_utils.probes import protocol as P

    root = tmp_path_factory.mktemp("made")
    problems = make_problems(6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIKA_DATA_DIR", str(root / "data"))
        run = run_rollouts(problems, MODEL, CFG, source="offline", out_root=root / "data" / "rollouts", progress=False,
                           read=lambda lm: pipeline.extraction_config(extraction_params(), lm))
    (acts_dir,) = (root / "data" / "activations").iterdir()
    assert store.read_json(acts_dir / "meta.json")["written_by"].startswith("rollouts")
    lm, p40, acts40 = tiny_activations(root / "acts40", n=40)
    lab = pd.DataFrame({"problem_id": p40["problem_id"], "question": p40["question"],
                        "maj_correct": [float(i % 5 >= 2) for i in range(40)], "split": TINY_SPLITS})
    rep = P.eoi_probe(acts40, lab, "maj_correct", model=lm.name, layers=[1, 2], n_boot=20)
    probe = P.save_trained_probe(root / "probe", rep, acts40, prompt_suffix="Reply.", labels=lab)
    return {"root": root, "run": run, "problems": problems, "acts_dir": acts_dir, "probe": probe, "lm": tiny_lm}


def _copy_run(made, tmp_path) -> tuple[Path, Path]:
    src = made["run"].dir
    shutil.copytree(src, tmp_path / "runs" / src.name)
    return tmp_path / "runs", tmp_path / "runs" / src.name


def _rerun(root, made, capsys):
    run = run_rollouts(made["problems"], MODEL, CFG, source="offline", out_root=root, progress=False)
    return run, capsys.readouterr().err


def _copy_acts(made, tmp_path) -> Path:
    dst = tmp_path / "acts" / made["acts_dir"].name
    shutil.copytree(made["acts_dir"], dst)
    return dst


def _acts_set(d: Path):
    from pika_utils.activations.eoi import ActivationSet

    return ActivationSet(d, store.read_json(d / "meta.json"))


def _extract(made, root):
    from pika_utils.activations.eoi import extract_activations
    from pika_utils.generation import pipeline

    cfg = pipeline.extraction_config(extraction_params(), made["lm"])
    return extract_activations(made["problems"], made["lm"], prompt_suffix=CFG.prompt_suffix, cfg=cfg,
                               out_root=root, progress=False)


# ---------------------------------------------------------------------------------------------
# Activation chunks: their sha256 is checked on every read (hashed once per process) and on reuse


def test_activation_chunk_with_flipped_bytes_is_refused_on_read_then_recomputed(tmp_path, capsys, made):
    d = _copy_acts(made, tmp_path)
    good = _acts_set(d).all()
    chunk = d / "acts-00001.safetensors"
    flip_byte(chunk)
    refused(lambda: _acts_set(d).layer(1, -1), str(chunk), "sha256 differs", "Run the same extraction again",
            exc=ValueError)
    again = _extract(made, d.parent)  # what the message says to do
    err = capsys.readouterr().err
    assert "acts-00001.safetensors is damaged" in err and "moved it aside" in err
    assert len(list(d.glob("acts-00001.safetensors.damaged-*"))) == 1
    np.testing.assert_allclose(again.all(), good, rtol=1e-4, atol=1e-5)  # nnsight's read of the prefill's batch
    assert again.meta["written_by"].startswith("nnsight extraction of 1 of")


def test_activation_chunk_with_flipped_bytes_and_its_sidecar_deleted_is_refused(tmp_path, capsys, made):
    d = _copy_acts(made, tmp_path)
    chunk = d / "acts-00002.safetensors"
    (d / "acts-00002.json").unlink()
    _acts_set(d).layer(1, -1)  # intact: the set's manifest (meta.json) still records its sha256
    flip_byte(chunk, 0.7)
    refused(lambda: _acts_set(d).layer(1, -1), str(chunk), "sha256 differs", "meta.json", exc=ValueError)
    # mid-extraction (no manifest yet), a chunk without its sidecar cannot be checked: recomputed, said
    (d / "meta.json").unlink()
    (d / "acts-00000.json").unlink()
    _extract(made, d.parent)
    err = capsys.readouterr().err
    assert "acts-00000.safetensors is damaged (no sha256 is recorded for it (its sidecar acts-00000.json is missing" in err
    assert "acts-00002.safetensors is damaged" in err


def test_activation_chunk_and_sidecar_rewritten_together_are_caught_by_the_manifest(tmp_path, capsys, made):
    d = _copy_acts(made, tmp_path)
    chunk = d / "acts-00001.safetensors"
    flip_byte(chunk)
    side = store.read_json(d / "acts-00001.json")
    (d / "acts-00001.json").write_text(json.dumps({**side, "sha256": store.file_sha256(chunk)}))
    refused(lambda: _acts_set(d).all(), str(chunk), "records another sha256 or size than", exc=ValueError)
    _extract(made, d.parent)
    assert "acts-00001.safetensors is damaged" in capsys.readouterr().err


def test_activation_chunk_deleted_from_a_complete_set_is_named_and_recomputed(tmp_path, capsys, made):
    d = _copy_acts(made, tmp_path)
    (d / "acts-00002.safetensors").unlink()
    refused(lambda: _acts_set(d).layer(1, -1), "acts-00002.safetensors is damaged (it is missing)", exc=ValueError)
    _extract(made, d.parent)
    assert "acts-00002.safetensors is missing" in capsys.readouterr().err
    assert (d / "acts-00002.safetensors").exists()


def test_activation_chunk_of_an_earlier_version_without_checksums_says_so(tmp_path, made):
    d = _copy_acts(made, tmp_path)
    meta = store.read_json(d / "meta.json")
    store.write_json(d / "meta.json", {k: v for k, v in meta.items() if k != "chunks"})
    for side in d.glob("acts-*.json"):
        side.unlink()
    refused(lambda: _acts_set(d).layer(1, -1), "acts-00000.safetensors", "no sha256 is recorded",
            "earlier version of pika_utils", "Run the same extraction again", exc=ValueError)


# ---------------------------------------------------------------------------------------------
# Rollouts: every chunk and table is listed in the run's manifest (meta.json)


def test_rollouts_chunk_rewritten_together_with_its_sidecar_is_caught(tmp_path, capsys, made):
    root, d = _copy_run(made, tmp_path)
    (d / "rollouts.parquet").unlink()  # the chunks are needed again
    chunk = d / "chunks" / "chunk-00001.parquet"
    edited = pd.read_parquet(chunk).assign(correct=True, text="edited")
    data = store.parquet_bytes(edited)
    side = store.read_json(d / "chunks" / "chunk-00001.json")
    (d / "chunks" / "chunk-00001.json").write_text(json.dumps({**side, "sha256": hashlib.sha256(data).hexdigest(),
                                                               "bytes": len(data)}))
    chunk.write_bytes(data)
    assert store.chunk_problem(chunk) is None  # consistent with its sidecar: only the manifest knows
    run, err = _rerun(root, made, capsys)
    assert f"{chunk} is damaged (its sidecar chunk-00001.json records another sha256 or size than meta.json" in err
    assert "moved it aside" in err
    pd.testing.assert_frame_equal(run.rollouts, made["run"].rollouts)
    assert "edited" not in set(run.rollouts["text"])


def test_final_table_rewritten_together_with_its_sidecar_is_caught(tmp_path, capsys, made):
    root, d = _copy_run(made, tmp_path)
    final = d / "rollouts.parquet"
    data = store.parquet_bytes(pd.read_parquet(final).assign(correct=True))
    side = store.read_json(d / "rollouts.json")
    (d / "rollouts.json").write_text(json.dumps({**side, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}))
    final.write_bytes(data)
    run, err = _rerun(root, made, capsys)
    assert f"{final} is damaged" in err and "rebuilt from the chunks" in err
    pd.testing.assert_frame_equal(run.rollouts, made["run"].rollouts)


def test_deleted_final_table_and_summary_are_named_when_rebuilt(tmp_path, capsys, made):
    root, d = _copy_run(made, tmp_path)
    (d / "rollouts.parquet").unlink()
    (d / "summary.parquet").unlink()
    (d / "chunks" / "chunk-00002.parquet").unlink()
    run, err = _rerun(root, made, capsys)
    assert f"{d / 'rollouts.parquet'} is missing (meta.json lists it); it will be rebuilt from the chunks" in err
    assert f"{d / 'chunks' / 'chunk-00002.parquet'} is missing (meta.json lists it); it will be recomputed" in err
    pd.testing.assert_frame_equal(run.rollouts, made["run"].rollouts)
    (d / "summary.parquet").unlink()
    run, err = _rerun(root, made, capsys)
    assert f"{d / 'summary.parquet'} is missing; it is written again" in err
    pd.testing.assert_frame_equal(store.read_parquet(d / "summary.parquet"), made["run"].summary)


def test_rollouts_of_an_earlier_version_get_a_manifest_when_reused(tmp_path, capsys, made):
    root, d = _copy_run(made, tmp_path)
    meta = store.read_json(d / "meta.json")
    store.write_json(d / "meta.json", {k: v for k, v in meta.items() if k not in ("chunks", "tables")})
    run, _ = _rerun(root, made, capsys)
    pd.testing.assert_frame_equal(run.rollouts, made["run"].rollouts)
    again = store.read_json(d / "meta.json")
    assert set(again["chunks"]) == set(meta["chunks"]) and set(again["tables"]) == {"rollouts.parquet", "summary.parquet"}
    assert "chunks" not in run.meta and "tables" not in run.meta  # the run's own metadata is as before


# ---------------------------------------------------------------------------------------------
# Resume: killed at the very end, the activation set the prefill was storing is completed


class Killed(BaseException):
    pass


def test_killed_at_the_very_end_the_resumed_run_completes_the_activation_set(tmp_path, monkeypatch, made):
    """Killed after every chunk (rollouts and activations) is written, just before the set's
    manifest: the resumed run writes it; nothing is extracted again and no second set appears."""
    from pika_utils.activations import eoi
    from pika_utils.generation import pipeline

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "data"))
    read = lambda lm: pipeline.extraction_config(extraction_params(), lm)  # noqa: E731
    finish = eoi.SetPlan.finish

    def killed(self, written_by):
        raise Killed()

    monkeypatch.setattr(eoi.SetPlan, "finish", killed)
    with pytest.raises(Killed):
        run_rollouts(made["problems"], MODEL, CFG, source="offline", out_root=tmp_path / "data" / "rollouts",
                     progress=False, read=read)
    (acts_dir,) = (tmp_path / "data" / "activations").iterdir()
    assert not (acts_dir / "meta.json").exists() and list(acts_dir.glob("acts-*.safetensors"))
    monkeypatch.setattr(eoi.SetPlan, "finish", finish)
    before = {p.name: p.read_bytes() for p in acts_dir.glob("acts-*.safetensors")}

    def no_extraction(*a, **k):
        raise AssertionError("activations were extracted again")

    monkeypatch.setattr(eoi.NNsightExtractor, "extract_ids", no_extraction)
    run = run_rollouts(made["problems"], MODEL, CFG, source="offline", out_root=tmp_path / "data" / "rollouts",
                       progress=False, read=read)
    pd.testing.assert_frame_equal(run.rollouts, made["run"].rollouts)
    assert store.read_json(acts_dir / "meta.json")["written_by"].startswith("rollouts")
    _, acts = pipeline.activations_for(made["problems"], MODEL, extraction_params())
    assert acts.dir == acts_dir and [p.name for p in (tmp_path / "data" / "activations").iterdir()] == [acts_dir.name]
    assert {p.name: p.read_bytes() for p in acts_dir.glob("acts-*.safetensors")} == before
    np.testing.assert_array_equal(acts.all(), _acts_set(made["acts_dir"]).all())


def test_run_that_finished_without_its_set_manifest_is_completed_by_chapter_2(tmp_path, monkeypatch, made):
    """The state the previous version left when killed at the very end (final table written, the
    set's manifest not): chapter 2 completes that set from its chunks instead of extracting all
    of them again into a second folder (whose values differed by up to 2.7e-6)."""
    from pika_utils.activations import eoi
    from pika_utils.generation import pipeline

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "data"))
    _copy_run(made, tmp_path / "data")  # data/runs/<run>
    acts_dir = tmp_path / "data" / "activations" / made["acts_dir"].name
    shutil.copytree(made["acts_dir"], acts_dir)
    (acts_dir / "meta.json").unlink()
    run_rollouts(made["problems"], MODEL, CFG, source="offline", out_root=tmp_path / "data" / "runs", progress=False)

    def no_extraction(*a, **k):
        raise AssertionError("activations were extracted again")

    monkeypatch.setattr(eoi.NNsightExtractor, "extract_ids", no_extraction)
    _, acts = pipeline.activations_for(made["problems"], MODEL, extraction_params())
    assert acts.dir == acts_dir and len(list((tmp_path / "data" / "activations").iterdir())) == 1
    assert acts.meta["written_by"].startswith("nnsight extraction of 0 of")
    np.testing.assert_array_equal(acts.all(), _acts_set(made["acts_dir"]).all())


# ---------------------------------------------------------------------------------------------
# Saved probes: the weights' sha256 and a seal over every field of probe.json


def _probe_copy(made, tmp_path) -> Path:
    return Path(shutil.copytree(made["probe"], tmp_path / "probe"))


def _edit_json(path: Path, **fields) -> None:
    j = json.loads(path.read_text())
    for k, v in fields.items():
        if v is KeyError:
            j.pop(k, None)
        else:
            j[k] = v
    path.write_text(json.dumps(j))


def test_probe_saved_without_hashes_is_refused_with_what_to_do(tmp_path, made):
    from pika_utils.probes.files import ProbeError, load_probe

    d = _probe_copy(made, tmp_path)
    _edit_json(d / "probe.json", coef_sha256=KeyError, fields_sha256=KeyError)  # as an earlier version saved it
    flip_byte(d / "probe.safetensors", 0.8)
    refused(lambda: load_probe(d), str(d / "probe.json"), "records no coef_sha256 and no fields_sha256",
            "earlier version", "save the probe again", exc=ProbeError)


@pytest.mark.parametrize("field,other", [  # another valid value: the router would route on it
    ("layer", lambda v, info: 2 if v == 1 else 1),
    ("position", lambda v, info: next(p for p in info["eoi_positions"] if p != v)),
    ("model", lambda v, info: "smollm2-135m"), ("alpha", lambda v, info: v * 10),
    ("platt", lambda v, info: [v[0] * 2, v[1] - 1]), ("prompt_suffix", lambda v, info: "Answer."),
    ("target", lambda v, info: "success_rate"), ("coef_sha256", lambda v, info: "0" * 64),
])
def test_probe_json_field_edited_is_refused(tmp_path, made, field, other):
    from pika_utils.probes.files import ProbeError, load_probe
    from pika_utils.routing.router import Router

    d = _probe_copy(made, tmp_path)
    info = json.loads((d / "probe.json").read_text())
    value = other(info[field], info)
    assert info[field] != value
    _edit_json(d / "probe.json", **{field: value})
    needles = ["sha256 differs"] if field == "coef_sha256" else ["fields differ", "fields_sha256"]
    refused(lambda: load_probe(d), "save the probe again", *needles, exc=ProbeError)
    refused(lambda: Router({"a": d}, {"a": 1.0}, lam=0.1), "pool member 'a'", exc=ProbeError)


def test_probe_weights_with_flipped_bytes_are_refused(tmp_path, made):
    from pika_utils.probes.files import ProbeError, load_probe

    d = _probe_copy(made, tmp_path)
    load_probe(d)
    flip_byte(d / "probe.safetensors", 0.9)
    refused(lambda: load_probe(d), str(d / "probe.safetensors"), "sha256 differs", exc=ProbeError)


def test_resealed_probe_json_is_caught_by_a_saved_router(tmp_path, made):
    from pika_utils.probes.files import SEAL, load_probe
    from pika_utils.routing.router import Router

    d = _probe_copy(made, tmp_path)
    path = Router({"a": d}, {"a": 1.0}, lam=0.1).save(tmp_path / "router.json")
    info = {k: v for k, v in json.loads((d / "probe.json").read_text()).items() if k != SEAL}
    info["layer"] = 1
    (d / "probe.json").write_text(json.dumps({**info, SEAL: store.json_sha256(info)}))
    load_probe(d)  # consistent on its own
    refused(lambda: Router.load(path), str(path), "the probe of 'a'", "probe.json", "refit the router", exc=ValueError)


# ---------------------------------------------------------------------------------------------
# The converted-model cache: the sha256 is checked on the first load in a process


def _tiny_cache(tmp_path, monkeypatch) -> Path:
    from pika_utils.models.registry import locate_model

    monkeypatch.setenv("PIKA_CACHE_DIR", str(tmp_path / "cache"))
    return locate_model(MODEL, source="offline").folder


def test_cached_weights_with_flipped_bytes_same_size_and_mtime_are_refused(tmp_path, monkeypatch):
    from pika_utils.models import cache

    folder = _tiny_cache(tmp_path, monkeypatch)
    meta = store.read_json(folder / cache.META_FILE)
    cache.verify_weights(folder, meta)
    weights = folder / "model.safetensors"
    flip_byte(weights)
    refused(lambda: cache.verify_weights(folder, meta), str(weights), "has sha256", f"delete {folder}",
            exc=RuntimeError)
    store.forget_verified()  # a new process: the first load hashes
    refused(lambda: cache.verify_weights(folder, meta), str(weights), "has sha256", exc=RuntimeError)


def test_unchanged_cached_weights_are_not_hashed_again_by_the_next_process(tmp_path, monkeypatch):
    """A chapter that only looks a model up must not re-read gigabytes: the last full check's
    stamp (size, mtime, ctime, inode) stands for the sha256 while the file is unchanged."""
    from pika_utils.models import cache

    folder = _tiny_cache(tmp_path, monkeypatch)
    meta = store.read_json(folder / cache.META_FILE)
    cache.verify_weights(folder, meta)
    store.forget_verified()  # a new process
    hashed = []
    monkeypatch.setattr(cache, "sha256_matches", lambda p, want: hashed.append(p) or store.sha256_matches(p, want))
    cache.verify_weights(folder, meta)
    assert hashed == []
    flip_byte(folder / "model.safetensors")  # same size and mtime; ctime moves
    refused(lambda: cache.verify_weights(folder, meta), "has sha256", exc=RuntimeError)
    assert len(hashed) == 1


def test_load_model_refuses_cached_weights_with_flipped_bytes_same_size_and_mtime(tmp_path, monkeypatch):
    from pika_utils.models.registry import load_model

    folder = _tiny_cache(tmp_path, monkeypatch)
    load_model(MODEL, source="offline")
    flip_byte(folder / "model.safetensors")
    store.forget_verified()  # a new process
    refused(lambda: load_model(MODEL, source="offline"), "model.safetensors has sha256", "delete", exc=RuntimeError)


def test_cache_folder_without_its_sidecar_is_named(tmp_path, monkeypatch):
    from pika_utils.models import cache
    from pika_utils.models.registry import locate_model

    folder = _tiny_cache(tmp_path, monkeypatch)
    (folder / cache.META_FILE).unlink()
    refused(lambda: locate_model(MODEL, source="offline"), str(folder), "not a complete model cache",
            f"delete {folder}", exc=RuntimeError)


# ---------------------------------------------------------------------------------------------
# Other stored chunks under the same rule


def test_token_activation_chunk_with_flipped_bytes_is_refused_then_recomputed(tmp_path, capsys, made):
    from pika_utils.activations.tokens import extract_token_activations

    chains = pd.DataFrame({"chain_id": ["a", "b", "c"], "prefix": ["Q: 1+1? A:", "Q: 2+2? A:", "Q: 3? A:"],
                           "text": [" two", " four, I think", " three"]})
    first = extract_token_activations(chains, made["lm"], [1, 2], batch_size=2, out_root=tmp_path, progress=False)
    good = first.layer(2)
    chunk = first.dir / "acts-00001.safetensors"
    flip_byte(chunk)
    refused(lambda: first.layer(2), str(chunk), "sha256 differs", "Run the same token extraction again",
            exc=ValueError)
    again = extract_token_activations(chains, made["lm"], [1, 2], batch_size=2, out_root=tmp_path, progress=False)
    assert "acts-00001.safetensors is damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(again.layer(2), good)


def test_json_chunks_get_their_own_sidecar(tmp_path, capsys):
    """A JSON record written as a chunk (the recoverability chapter's per-problem records) keeps a
    sidecar of its own, instead of overwriting its checksum with its data."""
    path = store.write_chunk(tmp_path / "problem-0000.json", json.dumps({"x": 1}).encode())
    assert store.sidecar_path(path).name == "problem-0000.sidecar.json" and store.chunk_ok(path)
    flip_byte(path, 0.6)
    assert not store.chunk_ok(path)
    assert "problem-0000.json is damaged" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Cached tables (the routing pools): listed with their sha256 in the pool's record


def test_cached_tables_are_reused_only_when_every_sha256_matches(tmp_path, capsys):
    import pandas as pd

    from pika_utils.core import cached_tables

    tables = {"a": pd.DataFrame({"x": [1, 2]}), "b": pd.DataFrame({"y": ["p", "q"]})}
    assert cached_tables.stored_tables(tmp_path, "pool.json", tables) is None  # nothing yet
    cached_tables.store_tables(tmp_path, "pool.json", tables, {"members": ["m"]})
    meta, back = cached_tables.stored_tables(tmp_path, "pool.json", tables)
    assert meta["members"] == ["m"] and back["a"].equals(tables["a"]) and set(meta["tables"]) == {"a.parquet", "b.parquet"}
    flip_byte(tmp_path / "b.parquet")
    store.forget_verified()
    assert cached_tables.stored_tables(tmp_path, "pool.json", tables) is None  # computed again, never read
    assert "b.parquet is damaged" in capsys.readouterr().err
    assert not (tmp_path / "b.parquet").exists() and not (tmp_path / "pool.json").exists()


def test_cached_tables_of_an_earlier_version_are_named_and_computed_again(tmp_path, capsys):
    import pandas as pd

    from pika_utils.core import cached_tables

    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "a.parquet", index=False)  # as before checksums
    store.write_json(tmp_path / "pool.json", {"members": ["m"]})
    assert cached_tables.stored_tables(tmp_path, "pool.json", ["a"]) is None
    assert "records no sha256 for it" in capsys.readouterr().err
