"""Plan mode: check a whole profile and say what a run of it would cost, in seconds, before any
sampling. A paper-scale run should fail on a typo at once, not after an hour on a GPU.

Nothing heavy runs here: no weights are loaded and no hub is contacted. Model shapes come from
a ``config.json`` already on this machine (the packaged offline copy or the Hugging Face cache)
or else from the hand table below; dataset sizes come from loading offline sources (cheap) or
from the known sizes of the hub datasets. Every number says where it came from.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: Architecture numbers of the registry's models, as published in each model's hub config.json
#: (written down by hand: the hub is unreachable here). Used when no config is cached locally.
#: eoi = tokens the chat template adds after the user's text (Qwen/SmolLM ChatML: <|im_end|> \n
#: <|im_start|> assistant \n; R1-Distill: <｜Assistant｜><think>\n; gpt-oss harmony: an estimate).
_SHAPE_FIELDS = ("layers", "d_model", "vocab", "heads", "kv_heads", "head_dim", "params_b", "dtype", "max_pos", "eoi")
MODEL_SHAPES: dict[str, dict[str, Any]] = {name: dict(zip(_SHAPE_FIELDS, row)) for name, row in {
    "qwen2.5-math-1.5b": (28, 1536, 151936, 12, 2, 128, 1.54, "bfloat16", 4096, 5),
    "qwen2.5-math-7b": (28, 3584, 152064, 28, 4, 128, 7.62, "bfloat16", 4096, 5),
    "r1-distill-qwen-7b": (28, 3584, 152064, 28, 4, 128, 7.62, "bfloat16", 131072, 3),
    # MoE, 32 experts (4 active, 3.6B active parameters); experts in MXFP4: ~13.8 GB of weights
    "gpt-oss-20b": (24, 2880, 201088, 64, 8, 64, 20.9, "mxfp4+bfloat16", 131072, 3),
    "smollm2-135m": (30, 576, 49152, 9, 3, 64, 0.135, "bfloat16", 8192, 5),
    "qwen2.5-coder-0.5b": (24, 896, 151936, 14, 2, 64, 0.494, "bfloat16", 32768, 5),
    "qwen2.5-coder-1.5b": (28, 1536, 151936, 12, 2, 128, 1.54, "bfloat16", 32768, 5),
}.items()}
MODEL_SHAPES["gpt-oss-20b"]["weight_bytes"] = 13.8e9
#: Sizes of the hub datasets' splits (dataset cards); "expected": not checked here.
HUB_SIZES: dict[tuple[str, str], int] = {
    ("math-lighteval", "test"): 5000, ("math-lighteval", "train"): 7500,
    ("gsm8k", "test"): 1319, ("gsm8k", "train"): 7473,
    ("aime-1983-2024", "train"): 933, ("aime-2025", "test"): 30,
    ("e2h-amc", "eval"): 2975, ("e2h-amc", "train"): 1000,
}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Mean prompt length assumed for hub problems when no tokenizer is here (for token layers).
ASSUMED_PROMPT_TOKENS = 200
GIB = 1024 ** 3


@dataclass
class Plan:
    """What a profile would run, with the problems found in it (``errors`` stop the run)."""

    profile: str
    models: list[dict] = field(default_factory=list)
    datasets: list[dict] = field(default_factory=list)
    rollouts: list[dict] = field(default_factory=list)
    activations: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_problems(self) -> int:
        return sum(d["n"] for d in self.datasets)


# ----------------------------------------------------------------------------- model shapes


def _local_config(name: str, hub_id: str | None) -> tuple[dict | None, str | None]:
    """A config.json on this machine: the packaged offline copy's, else the Hugging Face cache's."""
    from ..core.store import cache_dir

    for folder in sorted((cache_dir() / "models").glob(f"{name}-*")):
        if (folder / "config.json").exists() and (folder / "pika_model.json").exists():
            return json.loads((folder / "config.json").read_text()), str(folder / "config.json")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(hub_id, "config.json")
            if isinstance(path, str):
                return json.loads(Path(path).read_text()), path
        except Exception:  # noqa: BLE001 - no cache, or an old huggingface_hub: use the table
            pass
    return None, None


def _dense_params(c: Mapping[str, Any]) -> float:
    """Parameters of a dense Llama/Qwen2-style decoder from its config (biases and norms ignored)."""
    d, L, v = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or d // c["num_attention_heads"]
    kv = c.get("num_key_value_heads", c["num_attention_heads"]) * hd
    per_layer = d * c["num_attention_heads"] * hd * 2 + 2 * d * kv + 3 * d * c["intermediate_size"]
    return L * per_layer + v * d * (1 if c.get("tie_word_embeddings") else 2)


def model_shape(name: str) -> dict[str, Any]:
    """Layers, width, vocabulary, parameters, dtype and EOI count of a model, and their source."""
    from ..models.registry import resolve_spec

    spec = resolve_spec(name)
    cfg, path = _local_config(name, spec.hub_id)
    if cfg is not None:
        cfg = cfg.get("text_config", cfg)
        shape = dict(layers=cfg["num_hidden_layers"], d_model=cfg["hidden_size"], vocab=cfg["vocab_size"],
                     heads=cfg["num_attention_heads"], kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
                     head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
                     dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
                     max_pos=cfg.get("max_position_embeddings"), source=f"config.json ({path})")
        if cfg.get("model_type") in ("llama", "qwen2", "mistral"):
            shape["params_b"] = _dense_params(cfg) / 1e9
        else:
            shape["params_b"] = MODEL_SHAPES.get(name, {}).get("params_b", spec.params_b)
        shape["eoi"] = MODEL_SHAPES.get(name, {}).get("eoi")
        shape["tokenizer_dir"] = str(Path(path).parent) if (Path(path).parent / "tokenizer.json").exists() else None
    elif name in MODEL_SHAPES:
        shape = {**MODEL_SHAPES[name], "source": "pika_utils.book.plan.MODEL_SHAPES (hub config, by hand)"}
    elif name == "tiny-random-llama":
        from ..models.tiny import tiny_recipe, tiny_tokenizer

        c = tiny_recipe()["config"]
        shape = dict(layers=c["num_hidden_layers"], d_model=c["hidden_size"], vocab=len(tiny_tokenizer()),
                     heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"],
                     head_dim=c["hidden_size"] // c["num_attention_heads"], dtype="float32",
                     max_pos=c["max_position_embeddings"], source="pika_utils.models.tiny.tiny_recipe (built locally)")
        shape["params_b"] = _dense_params({**c, "vocab_size": shape["vocab"]}) / 1e9
    else:
        raise ValueError(f"no shape known for model {name!r}: add it to pika_utils.book.plan.MODEL_SHAPES or cache its config.json")
    shape.update(name=name, hub_id=spec.hub_id, offline=spec.offline)
    return shape


def gpu_memory(shape: Mapping[str, Any], tp: int = 1) -> dict[str, float]:
    """Weights in their dtype (per GPU under tensor parallelism) and KV cache per 1k tokens."""
    nbytes = DTYPE_BYTES.get(shape["dtype"], 2)
    weights = shape.get("weight_bytes") or shape["params_b"] * 1e9 * nbytes
    kv = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * min(nbytes, 2) * 1000
    return {"weights_gib": weights / GIB, "weights_gib_per_gpu": weights / GIB / tp, "kv_gib_per_1k_tokens": kv / GIB}


# ----------------------------------------------------------------------------- checks


def check_sources(sources: Mapping[str, Any], errors: list[str], warnings: list[str]) -> list[dict]:
    """Every problem source and its arguments; counts from loading offline ones, known sizes for
    hub ones (stated as expected)."""
    from ..problems import hub_sources, tasks

    rows = []
    for name, kwargs in dict(sources or {}).items():
        kwargs = dict(kwargs or {})
        if name not in tasks.LOADERS:
            errors.append(f"problem source {name!r} is unknown; known: {sorted(tasks.LOADERS)}")
            continue
        sig = inspect.signature(hub_sources.load_hub if name.startswith("hub:") else tasks.LOADERS[name])
        bad = [k for k in kwargs if k not in sig.parameters or k == "name"]
        if bad:
            errors.append(f"problem source {name!r} does not take {bad}; it takes "
                          f"{[p for p in sig.parameters if p != 'name']}")
            continue
        if name.startswith("hub:"):
            hub = name.removeprefix("hub:")
            spec, split = hub_sources.HUB_DATASETS[hub], kwargs.get("split", "test")
            if split not in spec.splits:
                warnings.append(f"{name}: {spec.repo} has splits {list(spec.splits)}, not {split!r}; "
                                f"the loader would use {spec.splits[-1]!r}")
                split = spec.splits[-1]
            size = HUB_SIZES.get((hub, split))
            n = min(size, kwargs["limit"]) if size is not None and kwargs.get("limit") else size
            rows.append({"source": name, "where": f"hub {spec.repo} [{split}]", "n": n or 0,
                         "count": "expected" if n is not None else "unknown"})
        else:
            try:
                n = len(tasks.load_problems({name: kwargs}))
            except Exception as e:  # noqa: BLE001 - report any loader failure as a plan error
                errors.append(f"problem source {name!r} failed to load: {type(e).__name__}: {e}")
                continue
            rows.append({"source": name, "where": "offline", "n": n, "count": "loaded"})
    return rows


def _check_values(params: Mapping[str, Any], errors: list[str]) -> None:
    """Values a chapter would reject only after earlier chapters ran: the runner's own check
    (types, ranges, model keys, prices) first, so the plan says what ``pika book`` would say."""
    from .params import check_params

    try:
        check_params(params)
    except ValueError as e:
        errors.extend(line.strip() for line in str(e).splitlines()[1:] if line.strip())
        return
    try:
        from ..generation.pipeline import vllm_engine_args

        vllm_engine_args(params)
    except ValueError as e:
        errors.append(str(e))


def _check_models(params: Mapping[str, Any], errors: list[str]) -> dict[str, dict]:
    from ..models.registry import resolve_spec
    from ..core.prices import get_price

    shapes = {}
    for m in dict.fromkeys(list(params.get("models") or []) + list(params.get("budget_models") or [])):
        try:
            spec = resolve_spec(m)
            shapes[m] = model_shape(m)
        except ValueError as e:
            errors.append(str(e))
            continue
        if params.get("backend") == "vllm" and spec.hub_id is None:
            errors.append(f"model {m!r} has no hub id, so backend 'vllm' cannot load it")
        if params.get("model_source") == "offline" and spec.offline is None:
            errors.append(f"model {m!r} has no offline source, and model_source is 'offline'")
        try:
            get_price(m, params.get("prices"))
        except Exception as e:  # noqa: BLE001 - rollouts would fail here, before sampling
            errors.append(f"no price for {m!r}: {e}")
    return shapes


# ----------------------------------------------------------------------------- the plan


def make_plan(profile: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Plan:
    """Check a profile (keys against the notebooks' parameters, values, models, sources) and
    estimate its rollouts, generated tokens, activation storage and GPU memory."""
    from .runner import REPO_ROOT, absolute_paths, load_profile, split_parameters, toc_chapters

    params = dict(profile) if isinstance(profile, Mapping) else load_profile(profile)
    params.update(overrides or {})
    plan = Plan(profile=str(params.get("profile", profile if not isinstance(profile, Mapping) else "?")))
    try:
        split_parameters(params, {n: REPO_ROOT / "notebooks" / f"{n}.ipynb" for n in toc_chapters()})
    except (ValueError, FileNotFoundError) as e:
        plan.errors.append(str(e))
    _check_values(params, plan.errors)
    if not plan.errors:
        params = absolute_paths(params)  # as the runner reads them: against the directory it runs in
    shapes = _check_models(params, plan.errors)
    plan.datasets = check_sources(params.get("problem_sources"), plan.errors, plan.warnings)
    from ..generation.pipeline import vllm_engine_args

    try:
        tp = vllm_engine_args(params).get("tensor_parallel_size", 1)
    except ValueError:
        tp = 1
    budget = params.get("extract_token_budget")
    plan.settings = {"backend": params.get("backend"), "model_source": params.get("model_source"),
                     "vllm_tensor_parallel_size": tp,
                     "vllm_data_parallel_size": int(params.get("vllm_data_parallel_size") or 1),
                     "extraction_batches": f"token budget {budget}" if budget else
                     f"{params.get('extract_batch_size', 16)} prompts", "ndif_remote": bool(params.get("ndif_remote"))}
    for m, s in shapes.items():
        plan.models.append({**s, **gpu_memory(s, tp),
                            "revision": "not pinned: hub default branch, resolved commit recorded at run time"
                            if s["hub_id"] else "n/a (built or packaged locally; weights sha256 recorded)"})
    if any(s["hub_id"] for s in shapes.values()) and params.get("model_source") == "hub":
        plan.warnings.append("hub revisions are not pinned in the registry: the run records the commit it "
                             "resolved (and the weights' sha256), but a later run may resolve another")
    from .preflight import run_checks

    for f in run_checks(params, toc_chapters()):  # the runner's preflight: the same checks, the same words
        (plan.errors if f.fatal else plan.warnings).append(str(f).replace("\n    ", " "))
    plan.rollouts = _rollout_rows(params, plan.n_problems)
    plan.activations = _activation_rows(params, shapes, plan.n_problems)
    return plan


def _rollout_rows(params: Mapping[str, Any], n: int) -> list[dict]:
    """Rollout runs by chapter; equal settings share a run (the store's keys), counted once."""
    rows: dict[tuple, dict] = {}
    ans = int(params.get("answer_tokens") or 0)
    for m in params.get("models") or []:
        rows[(m, "direct")] = {"model": m, "run": "direct (ch. 1)", "rollouts": n * int(params.get("k", 0)),
                               "max_tokens_each": int(params.get("max_new_tokens", 0))}
    budget_sets = [(m, b) for m in params.get("budget_models") or [] for b in params.get("budgets") or []]
    if params.get("route_budget") is not None:
        budget_sets += [(m, params["route_budget"]) for m in params.get("models") or []]
    for m, b in budget_sets:
        rows.setdefault((m, int(b)), {"model": m, "run": f"budget {int(b)} (ch. 5-7)",
                                      "rollouts": n * int(params.get("budget_k", 0)), "max_tokens_each": int(b) + ans})
    for r in rows.values():
        r["max_generated_tokens"] = r["rollouts"] * r["max_tokens_each"]
    return list(rows.values())


def _activation_rows(params: Mapping[str, Any], shapes: Mapping[str, dict], n: int) -> list[dict]:
    """Storage per activation set: problems x (layers+1) x EOI positions x d_model x bytes, plus
    the token layers (problems x layers x mean prompt tokens x d_model x bytes, mean assumed)."""
    nbytes = DTYPE_BYTES.get(params.get("extract_dtype", "float32"), 4)
    fracs = params.get("token_layer_fracs") or ()
    sets = [(m, "direct prompt") for m in params.get("models") or []]
    sets += [(m, "reasoning prompt") for m in dict.fromkeys(list(params.get("budget_models") or []) +
                                                         list(params.get("models") or []))]
    rows = []
    for m, prompt in sets:
        if m not in shapes:
            continue
        s = shapes[m]
        layers = len(params["extract_layers"]) if params.get("extract_layers") else s["layers"] + 1
        eoi, eoi_src = _eoi_count(s, params, prompt)
        n_tok = len({int(round(f * s["layers"])) for f in fracs})
        eoi_bytes = n * layers * eoi * s["d_model"] * nbytes
        tok_bytes = n * n_tok * ASSUMED_PROMPT_TOKENS * s["d_model"] * nbytes
        rows.append({"model": m, "prompt": prompt, "layers": layers, "eoi_positions": eoi, "eoi_source": eoi_src,
                     "eoi_gib": eoi_bytes / GIB, "token_layers": n_tok, "token_gib": tok_bytes / GIB})
    return rows


def _eoi_count(shape: Mapping[str, Any], params: Mapping[str, Any], prompt: str) -> tuple[int, str]:
    """EOI positions from the model's own tokenizer when it is on this machine (no weights), else
    from the table."""
    if shape.get("tokenizer_dir"):
        try:
            from transformers import AutoTokenizer

            from ..activations.batches import eoi_token_count

            tok = AutoTokenizer.from_pretrained(shape["tokenizer_dir"])
            reasoning = prompt.startswith("reasoning")
            suffix = params.get("budget_suffix" if reasoning else "prompt_suffix") or ""
            system = params.get("budget_system_prompt" if reasoning else "system_prompt")
            return eoi_token_count(tok, suffix, system), "tokenizer"
        except Exception:  # noqa: BLE001 - fall back to the table's count
            pass
    return int(shape.get("eoi") or 5), "table"


def render(plan: Plan) -> str:
    """The plan as text for the terminal."""
    out = [f"plan for profile {plan.profile!r} (nothing was run; no weights were loaded)",
           "settings: " + ", ".join(f"{k} {v}" for k, v in plan.settings.items()), "", "models:"]
    for m in plan.models:
        out.append(f"  {m['name']:<20} hub {m['hub_id'] or '-'} | revision: {m['revision']} | {m['layers']} layers, "
                   f"d_model {m['d_model']}, vocab {m['vocab']}, {m['params_b']:.3g}B params, {m['dtype']} | GPU: "
                   f"{m['weights_gib']:.2f} GiB weights ({m['weights_gib_per_gpu']:.2f} per GPU), "
                   f"{m['kv_gib_per_1k_tokens'] * 1024:.1f} MiB KV cache per 1k tokens | source: {m['source']}")
    out += ["", "datasets:"]
    out += [f"  {d['source']:<22} {d['where']:<45} {d['n']:>7} problems ({d['count']})" for d in plan.datasets]
    out.append(f"  total: {plan.n_problems} problems")
    out += ["", "rollouts:"]
    for r in plan.rollouts:
        out.append(f"  {r['model']:<20} {r['run']:<22} {r['rollouts']:>9} rollouts, <= {r['max_tokens_each']} tokens "
                   f"each: <= {r['max_generated_tokens']:,} generated tokens")
    out.append(f"  total: {sum(r['rollouts'] for r in plan.rollouts):,} rollouts, <= "
               f"{sum(r['max_generated_tokens'] for r in plan.rollouts):,} generated tokens (upper bound)")
    out += ["", "activation storage:"]
    for a in plan.activations:
        out.append(f"  {a['model']:<20} {a['prompt']:<17} {a['layers']} layers x {a['eoi_positions']} EOI positions ({a['eoi_source']}): "
                   f"{a['eoi_gib']:.3f} GiB; {a['token_layers']} token layer(s): ~{a['token_gib']:.3f} GiB "
                   f"(at {ASSUMED_PROMPT_TOKENS} prompt tokens on average, assumed)")
    out.append(f"  total: ~{sum(a['eoi_gib'] + a['token_gib'] for a in plan.activations):.2f} GiB")
    out += [""] + [f"warning: {w}" for w in plan.warnings] + [f"ERROR: {e}" for e in plan.errors]
    out.append("plan: OK" if not plan.errors else f"plan: {len(plan.errors)} error(s); fix them before running")
    return "\n".join(out)
