"""What is known of a model before its weights load: its context length and its tokenizer, read
from a folder already on disk (a local folder, the hub's cache, a built offline copy) or, for the
tiny model, from its recipe; so inputs too long for the model are refused before anything is built,
downloaded or loaded. Nothing here builds or downloads."""
from __future__ import annotations

from pathlib import Path

from ..core.hub import hf_cache
from .cache import is_complete
from .registry import offline_cache_path, resolve_spec
from .tiny import tiny_recipe


def _folder_on_disk(spec, source: str = "auto") -> Path | None:
    """The folder ``locate_model`` would most likely use, when it is already on disk (a local
    folder, the hub's cache, a built offline copy); None rather than download or build anything."""
    if spec.offline and spec.offline.startswith("dir:"):
        return Path(spec.offline[4:])
    if source in ("auto", "hub") and spec.hub_id is not None:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(spec.hub_id, local_files_only=True, cache_dir=hf_cache(),
                                            allow_patterns=["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"]))
            if (folder / "config.json").exists():
                return folder
        except Exception:  # noqa: BLE001 - not in the hub's cache
            pass
        if source == "hub":
            return None
    folder = offline_cache_path(spec) if spec.offline else None
    return folder if folder is not None and is_complete(folder) else None


def context_hint(name: str, source: str = "auto") -> int | None:
    """The model's context length from a config already on disk (its offline cache, the hub's
    cache or a local folder; the tiny model's recipe), without loading or building it; None when
    not known yet."""
    import json

    try:
        spec = resolve_spec(name)
    except ValueError:
        return None
    if spec.offline == "local:tiny":
        return int(tiny_recipe()["config"]["max_position_embeddings"])
    folder = _folder_on_disk(spec, source)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (TypeError, OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    n = cfg.get("max_position_embeddings")
    return int(n) if isinstance(n, int) and n > 0 else None


def tokenizer_hint(name: str, source: str = "auto"):
    """The model's tokenizer (with its chat template) and context length, read without loading
    or building its weights: from a folder already on disk, or built in code for the tiny model;
    None when neither is at hand (then only the character pre-check applies before loading)."""
    context = context_hint(name, source)
    if context is None:
        return None
    spec = resolve_spec(name)
    folder = None if spec.offline == "local:tiny" else _folder_on_disk(spec, source)
    try:
        if folder is None:
            from .tiny import tiny_tokenizer

            tok = tiny_tokenizer()
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - a folder without a usable tokenizer: the load will say why
        return None
    return (tok, context) if tok.chat_template else None
