"""Problem sets: one entry point, ``load_problems``, over every source (packaged offline ones in
``sources``, the paper's hub datasets in ``hub_sources``, code problems in ``code``, a user's
files in ``files``); the schema and splits live in ``table``."""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

import pandas as pd

from .code import LOADERS as CODE_LOADERS
from .hub_sources import HUB_DATASETS, load_hub
from .files import load_file
from .recorded import load_math500
from .sources import arithmetic_ladder, load_gsm8k100, load_mmath, products
from .table import validate_problems

# --------------------------------------------------------------------------- one entry point

LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ladder": arithmetic_ladder, "products": products, "mmath": load_mmath, "gsm8k100": load_gsm8k100,
    "math500": load_math500,  # all 500, with the recorded members' outcomes (problems.recorded)
    "file": load_file,
    **{f"hub:{n}": (lambda n: lambda **kw: load_hub(n, **kw))(n) for n in HUB_DATASETS},
    **CODE_LOADERS,  # humaneval (offline), hub:livecodebench, hub:mbpp
}
_LOADER_PARAMS = {"hub:" + n: inspect.signature(load_hub) for n in HUB_DATASETS}


def load_problems(sources: Mapping[str, dict] | Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Load and concatenate several sources into one validated table, e.g.
    ``{"ladder": {"n_per_level": 20}, "gsm8k100": {"limit": 50}}``; ``df.attrs["sources"]``
    records what each part was loaded with."""
    if isinstance(sources, str):
        sources = [sources]
    spec = dict(sources) if isinstance(sources, Mapping) else {s: {} for s in sources}
    unknown = [s for s in spec if s not in LOADERS]
    if unknown or not spec:
        raise ValueError(f"unknown problem sources {unknown or '(none given)'}; known: {sorted(LOADERS)}")
    parts, record = [], []
    for name, kwargs in spec.items():
        kwargs = dict(kwargs or {})
        sig = _LOADER_PARAMS.get(name) or inspect.signature(LOADERS[name])
        bad = [k for k in kwargs if k not in sig.parameters or k == "name"]
        if bad:
            allowed = [p for p in sig.parameters if p != "name"]
            raise TypeError(f"source {name!r} does not take {bad}; it takes {allowed}")
        _check_kwargs(name, sig, kwargs)
        if "seed" in sig.parameters:
            kwargs.setdefault("seed", seed)
        part = LOADERS[name](**kwargs)
        parts.append(part)
        record.append({"name": name, "params": kwargs, "n_problems": len(part),
                       "source_values": sorted(part["source"].unique()), **part.attrs.get("record", {})})
    df = validate_problems(pd.concat(parts, ignore_index=True))
    df.attrs["sources"] = record
    return df


#: What a value of each annotated type may be (an int counts as a float; a bool is no number).
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "Path": (str,), "bool": (bool,),
          "Sequence": (list, tuple), "list": (list, tuple), "dict": (dict,), "Mapping": (dict,)}


def _check_kwargs(source: str, sig: inspect.Signature, kwargs: Mapping) -> None:
    """Each argument of a source of the type its loader declares, refused with its name before
    anything is read (``n_per_level: eight`` or ``path: 5`` would fail deep inside the loader)."""
    for key, value in kwargs.items():
        ann = sig.parameters[key].annotation
        ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
        kinds = [k for k in _TYPES if k in ann.replace("[", " ").replace("|", " ").split()]
        if not kinds or (value is None and "None" in ann):
            continue
        allowed = tuple(t for k in kinds for t in _TYPES[k])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise TypeError(f"problem source {source!r}: {key}={value!r} must be {' or '.join(kinds)}"
                            f"{' or null' if 'None' in ann else ''}, got {type(value).__name__}")
