"""The Hugging Face hub as a place that may or may not answer: one quick reachability check and
one reading of the offline flags, shared by the model and the dataset loaders."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

#: Seconds to wait for the hub before deciding it is unreachable (no network fails in ms).
HUB_CHECK_TIMEOUT_S = 5.0


def env_flag(var: str) -> bool:
    """True when an environment switch such as HF_HUB_OFFLINE is set to 1/true/yes/on."""
    return os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hf_cache() -> Path:
    """The hub cache folder, read from the environment at call time (tests and users change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def hub_reachable(timeout: float | None = None) -> tuple[bool, str]:
    """One quick request to the hub endpoint, so that no network fails in milliseconds rather
    than after the hub client's retries (about 25 s). Honours proxy variables."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                               timeout=HUB_CHECK_TIMEOUT_S if timeout is None else timeout).close()
    except urllib.error.HTTPError:
        return True, endpoint  # it answered
    except (urllib.error.URLError, OSError) as e:
        return False, f"{endpoint}: {getattr(e, 'reason', e)}"
    return True, endpoint
