"""Problem sets: one entry point, ``load_problems``, over every source (packaged offline ones in
``sources``, the paper's hub datasets in ``hub_sources``, code problems in ``code``, a user's
files in ``files``); the schema and splits live in ``table``."""
from __future__ import annotations

import inspect
import re
from typing import Callable, Mapping, Sequence

import pandas as pd

from .code import LOADERS as CODE_LOADERS
from .hub_sources import HUB_DATASETS, load_hub
from .files import load_file
from .recorded import load_math500, load_olympiadbench
from .sources import arithmetic_ladder, load_gsm8k100, load_mmath, products
from .table import validate_problems

# --------------------------------------------------------------------------- one entry point

LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ladder": arithmetic_ladder, "products": products, "mmath": load_mmath, "gsm8k100": load_gsm8k100,
    "math500": load_math500,  # all 500, with the recorded members' outcomes (problems.recorded)
    "olympiadbench": load_olympiadbench,  # 675 problems, three recorded members (problems.recorded)
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
    for name, kwargs in spec.items():  # every source's arguments, before any is loaded
        check_source_args(name, kwargs)
    parts, record = [], []
    for name, kwargs in spec.items():
        kwargs = dict(kwargs or {})
        sig = _LOADER_PARAMS.get(name) or inspect.signature(LOADERS[name])
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


def check_source_args(source: str, kwargs: Mapping | None) -> None:
    """A source's arguments: each one its loader takes, of the type the loader declares, refused
    with the source, the key and the value before anything is read (``n_per_level: eight`` or
    ``path: 5`` would fail deep inside the loader). The book's profile check calls it too."""
    if source not in LOADERS:
        raise ValueError(f"unknown problem source {source!r}; known: {sorted(LOADERS)}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"problem source {source!r}: its arguments must be a mapping (or null), got {kwargs!r}")
    kwargs = dict(kwargs or {})
    sig = _LOADER_PARAMS.get(source) or inspect.signature(LOADERS[source])
    bad = [k for k in kwargs if k not in sig.parameters or k == "name"]
    if bad:
        allowed = [p for p in sig.parameters if p != "name"]
        raise TypeError(f"source {source!r} does not take {bad}; it takes {allowed}")
    for key, value in kwargs.items():
        ann = sig.parameters[key].annotation
        ann = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
        kinds = [k for k in _TYPES if k in ann.replace("[", " ").replace("|", " ").split()]
        if not kinds or (value is None and "None" in ann):
            continue
        if not _is_a(value, kinds):
            raise TypeError(f"problem source {source!r}: {key}={value!r} must be {' or '.join(kinds)}"
                            f"{' or null' if 'None' in ann else ''}, got {type(value).__name__}")
        inner = re.search(r"(?:Sequence|list)\[([^\]]+)\]", ann)  # the items of a list: Sequence[int]
        items = [k for k in _TYPES if inner and k in inner.group(1).replace("|", " ").split()]
        bad = [v for v in value if not _is_a(v, items)] if items and isinstance(value, (list, tuple)) else []
        if bad:
            raise TypeError(f"problem source {source!r}: {key}={value!r} must hold {' or '.join(items)} values, "
                            f"not {bad[0]!r} ({type(bad[0]).__name__})")


def _is_a(value, kinds: Sequence[str]) -> bool:
    allowed = tuple(t for k in kinds for t in _TYPES[k])
    return isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
