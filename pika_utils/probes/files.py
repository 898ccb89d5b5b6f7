"""Saved probes without pickle: the weight vector in safetensors, everything else in JSON, and a
complete check of a probe folder (schema, ranges, the weights' sha256) before any model loads."""
from __future__ import annotations

import hashlib

import numpy as np


#: The field of probe.json that seals every other one (``store.json_sha256``).
SEAL = "fields_sha256"

_RESAVE = ("save the probe again from its fit (probes.protocol.save_trained_probe; chapter 3 saves "
           "its probes when it runs) or refit it")


def save_probe(path, coef: np.ndarray, info: dict) -> None:
    """Write ``probe.safetensors`` (the weight vector) and ``probe.json`` (layer, position,
    alpha, Platt coefficients, hashes, versions, the weights file's sha256 and length) into
    folder ``path``. probe.json is sealed: ``fields_sha256`` is the sha256 of every other field
    (the weights' ``coef_sha256`` among them), so an edit to any field that changes what the
    probe computes (layer, position, model, alpha, platt, prompt, ...) is refused on load."""
    from pathlib import Path

    from safetensors.numpy import save

    from ..core import store

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    coef = np.asarray(coef, dtype=np.float64)
    data = save({"coef": coef})
    store.atomic_write_bytes(path / "probe.safetensors", data)
    record = {k: v for k, v in info.items() if k != SEAL}
    record.update({"d_model": int(coef.shape[0]), "coef_sha256": hashlib.sha256(data).hexdigest(),
                   "versions": store.versions(), "saved": store.now_iso()})
    store.write_json(path / "probe.json", {**record, SEAL: store.json_sha256(record)})


class ProbeError(ValueError):
    """A saved probe folder that cannot be trusted: names the folder, the field and the rule."""


_TASKS = ("regression", "classification")


def validate_probe_dir(path) -> tuple[np.ndarray, dict]:
    """Check a saved probe folder completely before any model loads: probe.json's schema, types
    and ranges (task, layer, a negative end-of-instruction position, Platt pair for binary
    probes), the weights file against the sha256 recorded at save time, and the weight vector's
    shape and values. Returns (coef, info) or raises ``ProbeError`` naming the folder and field."""
    import json
    import math
    from pathlib import Path

    from ..core import store

    path = Path(path)
    where = f"probe folder {path}"
    if not path.is_dir():
        raise ProbeError(f"{where} does not exist (a saved probe is a folder with probe.safetensors + probe.json)")
    jf, wf = path / "probe.json", path / "probe.safetensors"
    for f in (jf, wf):
        if not f.exists():
            raise ProbeError(f"{where} has no {f.name} (a saved probe is probe.safetensors + probe.json)")
    try:
        info = json.loads(jf.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ProbeError(f"{jf} is not valid JSON ({type(e).__name__}: {e}); save the probe again") from None
    if not isinstance(info, dict):
        raise ProbeError(f"{jf} must hold a JSON object, got {type(info).__name__}")

    def bad(field: str, rule: str) -> ProbeError:
        return ProbeError(f"{jf}: field {field!r}={info.get(field)!r}: {rule}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need = ("task", "target", "layer", "position", "model", "weights_sha256", "prompt_suffix")
    missing = [k for k in need if k not in info]
    if missing:
        raise ProbeError(f"{jf} lacks field(s) {missing}; a saved probe records {list(need)} "
                         "(save it with pika_utils.probes.protocol.save_trained_probe)")
    if info["task"] not in _TASKS:
        raise bad("task", f"must be one of {list(_TASKS)}")
    if not isinstance(info["target"], str):
        raise bad("target", "must be a string")
    if not is_int(info["layer"]) or info["layer"] < 0:
        raise bad("layer", "must be an integer >= 0 (0 = embeddings, i = output of block i-1)")
    if "n_layers" in info and is_int(info["n_layers"]) and info["layer"] > info["n_layers"]:
        raise bad("layer", f"must be at most the model's {info['n_layers']} blocks")
    if not is_int(info["position"]) or info["position"] >= 0:
        raise bad("position", "must be a negative integer: an end-of-instruction position counted from "
                              "the end of the prompt (-1 = the last token)")
    eoi = info.get("eoi_positions")
    if isinstance(eoi, list) and eoi and info["position"] not in eoi:
        raise bad("position", f"must be one of the stored end-of-instruction positions {eoi}")
    if not isinstance(info["model"], str) or not info["model"]:
        raise bad("model", "must name the model the probe reads")
    sha = info["weights_sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise bad("weights_sha256", "must be the 64-hex-digit sha256 of the model's weights")
    if not isinstance(info["prompt_suffix"], str):
        raise bad("prompt_suffix", "must be a string")
    if info.get("system_prompt") is not None and not isinstance(info["system_prompt"], str):
        raise bad("system_prompt", "must be a string or null")
    platt = info.get("platt")
    if info["task"] == "classification":
        if not (isinstance(platt, list) and len(platt) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in platt)):
            raise bad("platt", "a binary (classification) probe needs [a, b]: two finite numbers fitted on validation")
    elif platt is not None:
        raise bad("platt", "must be null for a regression probe")
    missing = [k for k in ("coef_sha256", SEAL) if not isinstance(info.get(k), str)]
    if missing:  # saved before probes recorded them: nothing to check the weights or fields against
        raise ProbeError(f"{jf} records no {' and no '.join(missing)}: the probe was saved by an earlier version of "
                         f"pika_utils, so its weights and fields cannot be checked against what was saved; {_RESAVE}")
    if not store.sha256_matches(wf, info["coef_sha256"]):
        raise ProbeError(f"{wf}: its sha256 differs from the coef_sha256 recorded in probe.json when it was "
                         f"saved (edited or damaged); {_RESAVE}")
    try:
        from safetensors.numpy import load_file
        tensors = load_file(str(wf))
    except Exception as e:  # safetensors raises its own error types
        raise ProbeError(f"{wf} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    if set(tensors) != {"coef"}:
        raise ProbeError(f"{wf} must hold exactly one tensor 'coef', got {sorted(tensors)}")
    coef = tensors["coef"]
    if coef.ndim != 1 or coef.size == 0:
        raise ProbeError(f"{wf}: 'coef' must be a non-empty vector, got shape {list(coef.shape)}")
    if "d_model" in info and (not is_int(info["d_model"]) or coef.shape[0] != info["d_model"]):
        raise ProbeError(f"{wf}: 'coef' has {coef.shape[0]} values, probe.json records d_model={info['d_model']!r}")
    if not np.isfinite(coef).all():
        raise ProbeError(f"{wf}: 'coef' holds {int((~np.isfinite(coef)).sum())} NaN/inf value(s)")
    if store.json_sha256({k: v for k, v in info.items() if k != SEAL}) != info[SEAL]:
        raise ProbeError(f"{jf}: its fields differ from the ones sealed by {SEAL} when it was saved (a field such "
                         "as layer, position, model, alpha or platt was edited, and the probe would compute "
                         f"something else); {_RESAVE}")
    return coef.astype(np.float64), info


def load_probe(path) -> tuple[np.ndarray, dict]:
    """The weight vector and the JSON description of a saved probe, validated first
    (``validate_probe_dir``); a folder that is not a probe is a ``FileNotFoundError``."""
    from pathlib import Path

    path = Path(path)
    if not (path / "probe.safetensors").exists():
        raise FileNotFoundError(f"{path} holds no saved probe (probe.safetensors + probe.json)")
    return validate_probe_dir(path)
