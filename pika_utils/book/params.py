"""The book's parameters: every key a profile may set, with its type and allowed values, in one
table. Chapters take their share with ``chapter_params(globals())`` and the runner checks a whole
profile with ``check_params`` before any chapter runs, so a typo or a wrong type fails in seconds
with the parameter's name."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Param:
    """One parameter: its kind ('int', 'float', 'bool', 'str', 'list', 'dict', 'any'), whether
    None is allowed, and an optional check that returns an error text or None."""

    kind: str
    optional: bool = False
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def _allowed(text: str, check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    check.allowed = text  # type: ignore[attr-defined]
    return check


def _range(lo: float | None = None, hi: float | None = None) -> Callable[[Any], str | None]:
    span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"

    def check(v: Any) -> str | None:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"must be in {span}"
        return None
    return _allowed(f"in {span}", check)


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return _allowed(f"one of {list(allowed)}", lambda v: None if v in allowed else f"must be one of {list(allowed)}")


def _list_of(kind: type, lo: float | None = None, hi: float | None = None, nonempty: bool = True):
    def check(v: list) -> str | None:
        if nonempty and not v:
            return "must not be empty"
        for x in v:
            ok = isinstance(x, kind) and not isinstance(x, bool) if kind is not bool else isinstance(x, bool)
            if kind is float and isinstance(x, int) and not isinstance(x, bool):
                ok = True
            if not ok:
                return f"must hold {kind.__name__} values, got {x!r}"
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                return f"values must be in [{lo}, {hi}], got {x!r}"
        return None
    return _allowed(f"of {kind.__name__} values" + (f" in [{lo}, {hi}]" if lo is not None or hi is not None else "")
                    + (", not empty" if nonempty else ""), check)


def _fractions(v: list) -> str | None:
    if len(v) != 3 or any(not isinstance(x, (int, float)) or isinstance(x, bool) or x < 0 for x in v) \
            or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
        return "must be three non-negative numbers (train, val, test) summing to 1"
    return None


def _pairs(v: list) -> str | None:
    if any(not isinstance(p, (list, tuple)) or len(p) != 2 or not all(isinstance(s, str) for s in p) for p in v):
        return "must be a list of [train_source, test_source] pairs"
    return None


PARAMETERS: dict[str, Param] = {
    "profile": Param("str", help="the profile's name, shown in each chapter"),
    "models": Param("list", check=_list_of(str), help="model names (registry), hub ids or local folders"),
    "model_source": Param("str", check=_one_of("auto", "hub", "offline")),
    "backend": Param("str", check=_one_of("transformers", "vllm")),
    "problem_sources": Param("dict", check=lambda v: _sources(v)),
    "model_revisions": Param("dict", optional=True, check=lambda v: _revisions(v),
                             help="hub commit (or tag) per model name, pinning what the hub serves"),
    "split_fractions": Param("list", check=_fractions),
    "k": Param("int", check=_range(1, 10_000), help="rollouts per problem"),
    "temperature": Param("float", check=_range(0.0, 10.0)),
    "top_p": Param("float", check=_allowed("in (0, 1]", lambda v: None if 0 < v <= 1 else "must be in (0, 1]")),
    "max_new_tokens": Param("int", check=_range(1, 1_000_000)),
    "prompt_suffix": Param("str", optional=True),
    "system_prompt": Param("str", optional=True),
    "chunk_size": Param("int", check=_range(1, 100_000)),
    "stop": Param("list", check=_list_of(str, nonempty=False), help="end each answer at the first of these strings"),
    "seed": Param("int", check=_range(0, 2**32 - 1)),
    "prices": Param("dict", optional=True, check=lambda v: _prices(v),
                    help="{model: {input_per_m, output_per_m}}: $ per million tokens (needed for a .gguf path or a hub id)"),
    "extract_layers": Param("list", optional=True, check=_list_of(int, 0)),
    "extract_dtype": Param("str", check=_one_of("float32", "float16", "bfloat16")),
    "extract_batch_size": Param("int", check=_range(1, 100_000)),
    "extract_token_budget": Param("int", optional=True, check=_range(1, 100_000_000),
                                  help="extraction batches of at most this many padded tokens (null: extract_batch_size)"),
    "vllm_tensor_parallel_size": Param("int", check=_range(1, 1024), help="GPUs per vLLM engine"),
    "vllm_data_parallel_size": Param("int", check=_range(1, 1024), help="vLLM data-parallel replicas"),
    "token_layer_fracs": Param("list", check=_list_of(float, 0.0, 1.0, nonempty=False)),
    "ndif_remote": Param("bool"),
    "targets": Param("list", check=lambda v: _list_of(str)(v) or _sub(v, ("success_rate", "maj_correct", "difficulty"))),
    "alphas": Param("list", check=_list_of(float, 1e-12)),
    "n_boot": Param("int", check=_range(10, 1_000_000)),
    "transfer_pairs": Param("list", check=_pairs),
    "poolings": Param("list", check=lambda v: _sub(v, ("attention", "linear_then_max", "linear_then_softmax",
                                                        "linear_then_rolling_max"))),
    "difficulty_kinds": Param("list", check=lambda v: _sub(v, ("designed_level", "human_irt", "math_level"))),
    "budget_models": Param("list", check=_list_of(str, nonempty=False)),
    "budgets": Param("list", check=_list_of(int, 0)),
    "budget_k": Param("int", check=_range(1, 10_000)),
    "budget_suffix": Param("str"),
    "budget_system_prompt": Param("str", optional=True),
    "answer_cue": Param("str", check=lambda v: None if v.strip() else "must not be blank"),
    "answer_tokens": Param("int", check=_range(1, 100_000)),
    "think_close": Param("str", optional=True),
    "route_budget": Param("int", check=_range(0, 1_000_000)),
    "pool_modes": Param("list", check=lambda v: _sub(v, ("direct", "cot")) or (None if v else "must not be empty"),
                        help="each model in the pool answering directly and/or step by step (cot, at route_budget)"),
    "model_limits": Param("dict", optional=True,
                          check=lambda v: None if all(isinstance(n, int) and not isinstance(n, bool) and n >= 2
                                                      for n in v.values()) else "values must be integers >= 2",
                          help="{model: n}: that model answers a seeded subset of n problems (splits kept)"),
    "difficulty_models": Param("list", optional=True, check=_list_of(str, nonempty=False),
                               help="the models whose activations chapter 4 reads for human difficulty"),
    "budget_limit": Param("int", optional=True, check=_range(2, 10_000_000),
                          help="budget-forced runs on at most this many problems (a seeded subset, splits kept)"),
    "difficulty_sources": Param("dict", optional=True,
                                help="problems with a human difficulty, read for chapter 4's probe (activations only)"),
    "cascade_grid": Param("int", check=_range(2, 1001)),
    "reader": Param("str", optional=True, check=lambda v: None if v.strip() else "must not be blank",
                    help="the model whose activations reader probes read for every member (null: the cheapest)"),
    # the recorded pool (chapters 6 and 7): models known by their graded outcomes
    "recorded_sources": Param("dict", check=lambda v: _sources(v),
                              help="the problems the recorded members answered, e.g. {math500: {}}"),
    "recorded_members": Param("list", check=lambda v: None if len(v) >= 2 else "must name at least two members",
                              help="shipped member names, or {name, file, size_b | price} for your own outcomes file"),
    "recorded_reader": Param("str", help="the small local model whose activations predict every recorded member"),
    "recorded_folds": Param("int", check=_range(2, 100), help="cross-fitting folds over the recorded problems"),
    "offdist_sources": Param("dict", check=lambda v: _sources(v) or _offdist(v),
                             help="a second recorded benchmark the kept Router is judged on, e.g. {olympiadbench: {}}"),
    # the code domain (chapter 10)
    "code_sources": Param("dict", check=lambda v: None if v else "must name at least one code source",
                          help="code problem sources, e.g. {humaneval: {limit: 60}}"),
    "code_models": Param("list", check=_list_of(str), help="models whose programs are generated and run"),
    "code_k": Param("int", check=_range(1, 10_000), help="programs sampled per code problem"),
    "code_max_new_tokens": Param("int", check=_range(1, 1_000_000), help="token limit of a program"),
    "code_shortest": Param("int", optional=True, check=_range(1, 1_000_000),
                           help="keep only this many problems, those with the shortest reference programs (null: all)"),
    # chapter 8: backtracking probes at temporal lags
    "bt_generator": Param("str", help="model that writes the chains of thought"),
    "bt_reader": Param("str", help="model whose residual stream is read at every chain token"),
    "bt_prompt": Param("str", check=_one_of("check_and_redo", "paper"),
                       help="instruction: ask a plain instruct model to check and redo steps, or the paper's"),
    "bt_n_chains": Param("int", check=_range(3, 1_000_000), help="chains (one per sampled problem)"),
    "bt_max_new_tokens": Param("int", check=_range(1, 1_000_000)),
    "bt_temperature": Param("float", check=lambda v: None if v > 0 else "must be > 0 (sampled chains)"),
    "bt_layers_fracs": Param("list", check=_list_of(float, 0.0, 1.0), help="reader layers as fractions of its depth"),
    "bt_lags": Param("list", check=_list_of(int, -10_000, 10_000)),
    "bt_Cs": Param("list", check=_list_of(float, 1e-12), help="inverse L2 strengths tried on validation chains"),
    "bt_extract_dtype": Param("str", check=_one_of("float32", "float16", "bfloat16")),
    "bt_batch_size": Param("int", check=_range(1, 100_000)),
    "bt_llm_annotator": Param("str", optional=True, help="instruct model for the six-label annotator (null: skip)"),
    "bt_llm_max_chains": Param("int", optional=True, check=_range(1, 1_000_000)),
    "bt_chains": Param("str", check=_one_of("recorded", "generated"),
                       help="read the shipped recorded reasoning chains, or chains bt_generator writes"),
    "bt_recorded_member": Param("str", help="the recorded member whose chains are read (bt_chains: recorded)"),
    "bt_window": Param("int", check=_range(8, 1_000_000), help="chain tokens read per recorded chain (one window)"),
    "bt_context": Param("int", check=_range(0, 1_000_000), help="chain tokens read before each window, unlabelled"),
    "bt_split_fractions": Param("list", check=_fractions, help="train/val/test shares of the chains"),
    "bt_max_train_tokens": Param("int", optional=True, check=_range(100, 100_000_000),
                                 help="training pairs per probe: every positive and a seeded sample of the rest"),
    # recoverability of failures (chapter 9)
    "recover_specialist": Param("str", help="S: the model whose failed rollouts are read and rescued"),
    "recover_reference": Param("str", help="A: S's ancestor (paper) or the nearest model sharing S's tokenizer"),
    "recover_n_problems": Param("int", check=_range(1, 1_000_000), help="at most this many failed problems of S"),
    "recover_best_of": Param("int", check=_range(1, 1_000), help="answers per intervention (rescue: any correct)"),
    "recover_top_k": Param("int", check=_range(1, 1_000_000), help="the top-k of A in the coverage gap G_cov"),
    "recover_window": Param("int", check=_range(0, 1_000_000), help="tokens either side of the junction"),
    "recover_temperature_lift": Param("float", check=_range(1.0, 100.0), help="temperature factor in the junction window"),
    "recover_steer_alpha": Param("float", check=_range(0.0, 1.0), help="how far S's logits move toward A's when steered"),
}


def _sub(v: list, allowed: tuple[str, ...]) -> str | None:
    bad = [x for x in v if x not in allowed]
    return f"unknown value(s) {bad}; allowed: {list(allowed)}" if bad else None


def _sources(v: Mapping) -> str | None:
    if not v:
        return "must name at least one source"
    from ..problems.tasks import LOADERS  # imported late: tasks reads files; params must stay light

    unknown = [k for k in v if k not in LOADERS]
    if unknown:
        return f"unknown source(s) {unknown}; known: {sorted(LOADERS)}"
    bad = [k for k, kw in v.items() if kw is not None and not isinstance(kw, Mapping)]
    if bad:
        return f"each source maps to its options (a mapping or null), not {[v[k] for k in bad]}"
    from ..problems.tasks import check_source_args

    for name, kwargs in v.items():  # each source's arguments: names and types, before any is read
        try:
            check_source_args(name, kwargs)
        except (TypeError, ValueError) as e:
            return str(e)
    return None


def _offdist(v: Mapping) -> str | None:
    from ..problems.recorded import BENCHMARKS

    other = sorted(set(BENCHMARKS) - {"math500"})
    return None if len(v) == 1 and list(v)[0] in other else (
        f"must name one shipped benchmark other than MATH-500, e.g. {{olympiadbench: {{}}}} (shipped: {other}); got {list(v)}")


def _prices(v: Mapping) -> str | None:
    from ..core.prices import check_price

    for model, price in v.items():
        try:
            check_price(price, f"prices[{model!r}]")
        except ValueError as e:
            return str(e)
    return None


def _revisions(v: Mapping) -> str | None:
    bad = {k: r for k, r in v.items() if not isinstance(k, str) or not isinstance(r, str) or not r.strip()}
    return f"must map model names to hub commits (strings), got {bad}" if bad else None


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list": "a list", "dict": "a mapping", "any": "any value"}


def _describe(spec: Param) -> str:
    allowed = getattr(spec.check, "allowed", None)
    return _KIND_WORDS[spec.kind] + (f" {allowed}" if allowed else "") + (" or null" if spec.optional else "")


def _kind_ok(kind: str, v: Any) -> bool:
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "list":
        return isinstance(v, (list, tuple))
    if kind == "dict":
        return isinstance(v, Mapping)
    return True


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of type and in range, or one error naming each bad key, its value and what it
    accepts. Unknown keys are left to the runner (which names the chapters' parameters)."""
    errors = []
    for key, value in params.items():
        spec = PARAMETERS.get(key)
        if spec is None or (value is None and spec.optional):
            continue
        if not _kind_ok(spec.kind, value):
            errors.append(f"{key}={value!r}: must be {_describe(spec)}, got {type(value).__name__}")
            continue
        why = spec.check(value) if spec.check else None
        if why:
            errors.append(f"{key}={value!r}: {why} (allowed: {_describe(spec)})")
    errors += _unknown_model_keys(params) + _model_files(params)
    if not errors:  # prices, once every value (``prices`` too) has its type
        errors += _unpriced_models(params)
    if errors:
        raise ValueError("bad parameter value(s):\n  " + "\n  ".join(errors))
    return dict(params)


#: The keys that name models: lists of them, and single ones.
MODEL_LISTS = ("models", "budget_models", "difficulty_models", "code_models")
MODEL_KEYS = ("reader", "recorded_reader", "bt_generator", "bt_reader", "bt_llm_annotator", "recover_specialist", "recover_reference")


def _unknown_model_keys(params: Mapping[str, Any]) -> list[str]:
    """``model_limits`` and ``model_revisions`` may only name models the profile uses: a typo would
    silently drop a limit or a pin. Checked where the profile's ``models`` are known."""
    if not isinstance(params.get("models"), list):
        return []
    named = set(_named_models(params))
    out = []
    for key in ("model_limits", "model_revisions"):
        unknown = sorted(set(params.get(key) or {}) - named) if isinstance(params.get(key), dict) else []
        if unknown:
            out.append(f"{key} names {unknown}, which no model key of this profile uses; the profile's models "
                       f"are {sorted(named)}: a typo would silently drop the setting")
    return out


def _named_models(params: Mapping[str, Any], keys: tuple[str, ...] = MODEL_LISTS + MODEL_KEYS) -> dict[str, str]:
    """Every model the profile's ``keys`` name, with the first key naming it."""
    out: dict[str, str] = {}
    for k in keys:
        v = params.get(k)
        for m in v if isinstance(v, list) else [v]:
            if isinstance(m, str):
                out.setdefault(m, k)
    return out


def _model_files(params: Mapping[str, Any]) -> list[str]:
    """A model given as a .gguf path is a readable GGUF file (``models.gguf.check_gguf_file``),
    checked before any chapter runs."""
    from ..models.gguf import check_gguf_file  # late: params must stay light

    out = []
    for model, key in _named_models(params).items():
        if model.lower().endswith(".gguf"):
            try:
                check_gguf_file(Path(model).expanduser())
            except (OSError, ValueError) as e:
                out.append(f"{key}: {e}")
    return out


#: The keys whose models sample rollouts, each priced (``core.prices``).
PRICED_LISTS = ("models", "budget_models")


def _unpriced_models(params: Mapping[str, Any]) -> list[str]:
    """Every model given by a path or hub id that samples rollouts has a price: the price table
    knows the registered models, but a .gguf path or a hub id has none until the profile's
    ``prices`` gives one; refused before any chapter runs. (A name the registry lacks is refused
    by the chapter that loads it, with the registered names.)"""
    from ..core.prices import get_price

    out = []
    for model, key in _named_models(params, PRICED_LISTS).items():
        if "/" not in model and not model.lower().endswith(".gguf"):
            continue
        try:
            get_price(model, params.get("prices"))
        except (KeyError, ValueError) as e:
            out.append(f"{key}: {e.args[0] if isinstance(e, KeyError) else e}")
    return out


def unknown_keys_error(unknown: list[str], chapters: str) -> ValueError:
    """The one refusal of parameters no chapter declares: ``pika book`` (``runner.split_parameters``)
    and a chapter run on its own with papermill (``chapter_params``) both raise it."""
    return ValueError(f"profile key(s) {unknown} are not parameters of any chapter ({chapters}); "
                      "check the spelling against the notebooks' 'parameters' cells")


#: The first line of the cell papermill injects (tagged ``injected-parameters``).
_INJECTED_HEADER = "# Parameters\n"


def _assigned_names(source: str) -> set[str]:
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def injected_parameters(namespace: Mapping[str, Any]) -> tuple[set[str], set[str]] | None:
    """(the names papermill injected, the names the chapter's own 'parameters' cell declares),
    read from the kernel's record of the cells it ran (IPython's ``In``): papermill puts its cell,
    which starts with ``# Parameters``, right after the chapter's parameters cell. None outside a
    kernel or where nothing was injected."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    for i in range(len(history) - 1, 0, -1):
        if isinstance(history[i], str) and history[i].startswith(_INJECTED_HEADER):
            return _assigned_names(history[i]), _assigned_names(str(history[i - 1]))
    return None


def chapter_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A chapter's parameters from its namespace (``globals()`` after the parameters cell):
    every profile key it defines, checked, and nothing else. A name papermill injected that no
    chapter declares (``papermill ... -p kk 16``) is refused as ``pika book`` refuses it: papermill
    itself only warns, and the chapter would run on its defaults. A key of another chapter passes,
    as in ``pika book``: ``-f`` a whole profile is how the README re-runs one chapter. (``PARAMETERS``
    holds exactly the chapters' parameters; tests/test_repairs_said.py checks it.)"""
    injected = injected_parameters(namespace)
    if injected is not None:
        unknown = sorted(injected[0] - injected[1] - set(PARAMETERS))
        if unknown:
            raise unknown_keys_error(unknown, "the book's parameters, pika_utils.book.params.PARAMETERS, "
                                              "and this chapter's own 'parameters' cell")
    return check_params({k: namespace[k] for k in PARAMETERS if k in namespace})
