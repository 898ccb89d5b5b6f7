"""Residual-stream activations at the end-of-instruction tokens, read with nnsight.

The end-of-instruction (EOI) tokens are the ones the chat template adds after the user's text,
with the generation prompt: the model's state there is what it "knows" before it writes. We
read the embeddings and every decoder block's output at those positions, stop the forward after
the last layer we need (the final norm and lm_head are never computed), and store the result in
safetensors chunks keyed by everything that determines them, so memory is bounded by one batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .batches import (
    eoi_token_count, eoi_tokens, fixed_batches, left_padded_batch, padded_from_ids,
    token_budget_batches, tokenize_prompts)
from ..core.prompts import chat_prompts

if TYPE_CHECKING:  # pandas and the store are imported where used, so the extractor itself needs
    import pandas as pd  # only torch, transformers and nnsight (the GPU benchmark's image)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def decoder_layers(model) -> Sequence[torch.nn.Module]:
    """The decoder blocks of a causal LM (Llama, Qwen2, Mistral, GPT-NeoX style)."""
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    for name in ("layers", "h"):
        if base is not None and hasattr(base, name):
            return getattr(base, name)
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


@dataclass(frozen=True)
class ExtractionConfig:
    """What is read: which layers (0 = embeddings, i = output of block i-1), how many EOI
    positions, the storage dtype and how prompts are batched."""

    layers: tuple[int, ...] | None = None  # None: all, embeddings included
    n_positions: int | None = None  # None: every EOI token
    dtype: str = "float32"
    batch_size: int = 16  # prompts per batch, when token_budget is None
    token_layers: tuple[int, ...] = ()  # also keep every prompt token at these layers (pooled probes)
    remote: bool = False  # run on NDIF (nnsight's remote execution) for very large models
    token_budget: int | None = None  # max padded tokens per batch (rows x longest); None: batch_size
    # the rollouts' chunks (this many prompts, by length, stable over problem ids), so that chapter
    # 1's sampling prefill can store them (``rollouts.run_rollouts(read=...)``); None: batch_size
    rollout_chunks: int | None = None

    def batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Prompt indices per batch: the rollouts' chunks, packed up to ``token_budget`` tokens, or
        ``batch_size`` each in length order."""
        if self.rollout_chunks is not None:  # the rollouts' plan: by length, stable over problem ids
            return fixed_batches(lengths, int(self.rollout_chunks))
        if self.token_budget is not None:
            return token_budget_batches(lengths, int(self.token_budget))
        return fixed_batches(lengths, int(self.batch_size))


class NNsightExtractor:
    """Reads EOI activations from one loaded model with nnsight, batch by batch.

    Per batch the work besides the forward is kept to a constant: inside the trace each layer's
    EOI slice is copied into one buffer on the model's device, and that buffer crosses to the CPU
    once (not once per layer), in the storage dtype when one is given."""

    def __init__(self, lm, remote: bool = False) -> None:
        from nnsight import TransformersModel

        self.lm = lm
        self.remote = remote
        self.n_layers = len(decoder_layers(lm.model))
        if remote:  # NDIF knows a model by its hub id: wrap the id (nnsight builds it on the meta
            # device), not the local copy, whose key would be a local folder
            self.nn = TransformersModel(ndif_repo_id(lm), tokenizer=lm.tokenizer)
        else:
            self.nn = TransformersModel(lm.model, tokenizer=lm.tokenizer, task="text-generation")
        self.max_length = getattr(lm.model.config, "max_position_embeddings", None)

    def extract(self, prompts: Sequence[str], layers: Sequence[int], n_positions: int,
                token_layers: Sequence[int] = (), out_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """``eoi``: (batch, len(layers), n_positions, d_model) in ``out_dtype``; with
        ``token_layers`` also ``tokens``: (batch, len(token_layers), width, d_model) over the
        whole (left-padded) prompt and its ``mask``."""
        ids = tokenize_prompts(self.lm.tokenizer, prompts, self.max_length)
        return self.extract_ids(ids, layers, n_positions, token_layers, out_dtype)

    def extract_ids(self, ids: Sequence[Sequence[int]], layers: Sequence[int], n_positions: int,
                    token_layers: Sequence[int] = (), out_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """``extract`` on prompts already tokenised (``tokenize_prompts``): no tokeniser call."""
        batch = padded_from_ids(ids, self.lm.tokenizer.pad_token_id)
        layers, token_layers = [int(x) for x in layers], [int(x) for x in token_layers]
        wanted = sorted(set(layers) | set(token_layers))
        if wanted[0] < 0 or wanted[-1] > self.n_layers:
            raise ValueError(f"layers must be in 0..{self.n_layers}, got {wanted}")
        base = self.nn.model if hasattr(self.nn, "model") else self.nn.transformer
        blocks = base.layers if hasattr(base, "layers") else base.h
        embed = base.embed_tokens if hasattr(base, "embed_tokens") else base.wte
        eoi_at = {x: i for i, x in enumerate(layers)}
        tok_at = {x: i for i, x in enumerate(token_layers)}
        with torch.inference_mode(), self.nn.trace(dict(batch), remote=self.remote) as tracer:
            eoi_buf = tok_buf = None
            for layer in wanted:  # modules are read in execution order
                out = embed.output if layer == 0 else blocks[layer - 1].output
                out = out[0] if isinstance(out, tuple) else out  # transformers 5: a tensor
                if eoi_buf is None:  # one buffer per kind, on the model's device, filled layer by layer
                    n, t, d = out.shape
                    eoi_buf = out.new_empty((n, len(layers), n_positions, d)).save()
                    if token_layers:
                        tok_buf = out.new_empty((n, len(token_layers), t, d)).save()
                if layer in eoi_at:
                    eoi_buf[:, eoi_at[layer]] = out[:, -n_positions:, :]
                if layer in tok_at:
                    tok_buf[:, tok_at[layer]] = out
            tracer.stop()  # later blocks, the final norm and lm_head are never computed
        # one device->host copy per kind and batch, converted on the device first
        result = {"eoi": _value(eoi_buf).to(out_dtype).cpu()}
        if token_layers:
            result["tokens"] = _value(tok_buf).to(out_dtype).cpu()
            result["mask"] = batch["attention_mask"].to(torch.uint8)
        return result


def ndif_repo_id(lm) -> str:
    """The hub id to run ``lm`` on NDIF: only a model loaded from the hub has one there."""
    source = str(getattr(lm, "source", ""))
    if not source.startswith("hub:"):
        raise ValueError(f"ndif_remote: {getattr(lm, 'name', lm)!r} was loaded from {source or 'an unknown source'}, "
                         "not the hub; NDIF runs hub models only (set model_source: hub)")
    return source.removeprefix("hub:")


def _value(x):
    return x.value if hasattr(x, "value") else x


def extract_in_order(extractor: NNsightExtractor, prompts: Sequence[str], layers: Sequence[int], n_positions: int,
                     cfg: "ExtractionConfig", ids: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """(N, len(layers), n_positions, d) float32 for every prompt, batched as ``cfg`` says and
    returned in the prompts' own order (each prompt read exactly once)."""
    ids = tokenize_prompts(extractor.lm.tokenizer, prompts, extractor.max_length) if ids is None else ids
    parts, rows = [], []
    for idx in cfg.batches([len(x) for x in ids]):
        parts.append(extractor.extract_ids([ids[i] for i in idx], layers, n_positions)["eoi"])
        rows.append(idx)
    got = torch.cat(parts)
    out = torch.empty_like(got)
    out[torch.as_tensor(np.concatenate(rows))] = got
    return out


def hidden_states_reference(lm, prompts: Sequence[str], layers: Sequence[int], n_positions: int) -> torch.Tensor:
    """The same activations from ``output_hidden_states=True`` (a full forward), for checking."""
    batch = left_padded_batch(lm.tokenizer, prompts)
    with torch.inference_mode():
        out = lm.model(**{k: v.to(lm.model.device) for k, v in batch.items()}, output_hidden_states=True)
    return torch.stack([out.hidden_states[layer][:, -n_positions:, :].float().cpu() for layer in layers], dim=1)


@dataclass
class ActivationSet:
    """Stored activations: metadata, the problem ids in row order, and lazy access by layer."""

    dir: Path
    meta: dict

    @property
    def problem_ids(self) -> list[str]:
        return list(self.meta["problem_ids"])

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    def rows_for(self, problem_ids: Sequence[str], model: str | None = None) -> np.ndarray:
        """Row indices of ``problem_ids`` in this set; an error if the activations come from
        another model or lack some of the labelled problems."""
        if model is not None and model != self.meta["model"]:
            raise ValueError(f"activations in {self.dir} are from model {self.meta['model']!r}, "
                             f"but the labels are for {model!r}")
        index = {pid: i for i, pid in enumerate(self.meta["problem_ids"])}
        missing = [p for p in problem_ids if p not in index]
        if missing:
            raise ValueError(f"{len(missing)} labelled problem(s) have no activations in {self.dir} "
                             f"(e.g. {missing[:3]}): the activations were extracted for another prompt set")
        return np.array([index[p] for p in problem_ids], dtype=int)

    def _chunks(self) -> list[Path]:
        from ..core import store

        paths = [self.dir / f"acts-{i:05d}.safetensors" for i in range(self.meta["n_chunks"])]
        for p in paths:  # sha256 against meta.json's manifest and the sidecar (hashed once per process)
            store.check_chunk_for_read(p, self.meta.get("chunks"), where=f"{self.dir.name}/meta.json")
        return paths

    def layer(self, layer: int, position: int = -1) -> np.ndarray:
        """(N, d_model) float32 array for one layer and one EOI position (-1: the last token)."""
        from safetensors import safe_open

        li = self.layers.index(layer)
        parts = []
        for path in self._chunks():
            with safe_open(str(path), framework="pt") as f:
                parts.append(f.get_slice("eoi")[:, li, position, :].float().numpy())
        return np.concatenate(parts)

    def tokens(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Every prompt token at one of the ``token_layers``: (N, T_max, d) left-padded, and the
        (N, T_max) mask of real tokens."""
        from safetensors import safe_open

        if layer not in self.meta.get("token_layers", []):
            raise ValueError(f"layer {layer} was not extracted over all tokens; token_layers={self.meta.get('token_layers')}")
        li = self.meta["token_layers"].index(layer)
        xs, ms = [], []
        for path in self._chunks():
            with safe_open(str(path), framework="pt") as f:
                xs.append(f.get_slice("tokens")[:, li, :, :].float().numpy())
                ms.append(f.get_tensor("mask").numpy().astype(bool))
        width = max(x.shape[1] for x in xs)
        X = np.zeros((sum(len(x) for x in xs), width, xs[0].shape[-1]), dtype=np.float32)
        M = np.zeros(X.shape[:2], dtype=bool)
        row = 0
        for x, m in zip(xs, ms):  # left padding: align every chunk on the right
            X[row:row + len(x), width - x.shape[1]:] = x
            M[row:row + len(x), width - x.shape[1]:] = m
            row += len(x)
        return X, M

    def all(self) -> np.ndarray:
        """(N, layers, positions, d_model): everything, for small sets."""
        from safetensors.torch import load_file

        return np.concatenate([load_file(str(p))["eoi"].float().numpy() for p in self._chunks()])


@dataclass
class SetPlan:
    """Where a set of activations lives and how its chunks are cut: the one place that keys a
    set, shared by the extractor and by rollouts that read activations while they sample."""

    out: Path
    key: str
    meta: dict
    ids: list  # token ids of every prompt, in the set's row order
    plan: list  # row indices of each chunk (into the problem_id-sorted problems)
    layers: list
    n_pos: int
    dtype: "torch.dtype"

    def chunk_path(self, c: int) -> Path:
        return self.out / f"acts-{c:05d}.safetensors"

    def chunk_done(self, c: int) -> bool:
        from ..core import store
        return store.chunk_ok(self.chunk_path(c))

    def write_chunk(self, c: int, tensors: dict) -> None:
        """One batch's tensors, checksummed (``store.seal_file``) and renamed into place."""
        from safetensors.torch import save_file

        from ..core import store
        path = self.chunk_path(c)
        tmp = path.with_name(f".{path.name}.tmp")
        self.out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": self.key, "chunk": str(c)})
        store.seal_file(tmp, path)  # its sha256 and size in acts-NNNNN.json, then the rename

    def stored(self) -> "ActivationSet | None":
        """The complete set on disk (its manifest written, every chunk matching the sha256 that
        the manifest and its sidecar record), or None; a chunk damaged or deleted since is named
        (moved aside), to be recomputed."""
        from ..core import store
        if not (self.out / "meta.json").exists():
            say_manifest_missing(self.out, [self.chunk_path(c) for c in range(len(self.plan))])
            return None
        meta = store.read_json(self.out / "meta.json")
        manifest = meta.get("chunks") or {}
        where = f"{self.out.name}/meta.json"
        if not all([store.chunk_ok(p, manifest.get(p.name), where=where)
                    for p in map(self.chunk_path, range(len(self.plan)))]):
            return None
        return ActivationSet(self.out, meta)

    def started(self) -> bool:
        """Whether some chunk of the set is on disk (a run that stored them stopped before the
        set's manifest was written): resume this set rather than extract another."""
        return any(self.chunk_path(c).exists() for c in range(len(self.plan)))

    def finish(self, written_by: str) -> "ActivationSet":
        """Write the manifest (last: it marks the set complete) once every chunk is on disk."""
        from ..core import store
        paths = [self.chunk_path(c) for c in range(len(self.plan))]
        meta = {**self.meta, "written_by": written_by, "chunks": store.chunk_manifest(paths)}
        store.write_json(self.out / "meta.json", meta)
        return ActivationSet(self.out, meta)


def say_manifest_missing(out: Path, chunks: list[Path]) -> None:
    """Where a set's manifest (``meta.json``, the record of every chunk's sha256) is missing but
    some of its chunks are stored (deleted, or a run stopped before writing it), the set is rebuilt
    from them: say so, like every repair, with what that trusts. Silent for a set not begun."""
    from ..core import store

    stored = [p for p in chunks if p.exists()]
    if stored:
        store.say(f"{out / 'meta.json'} is missing; the set is rebuilt from the {len(stored)} of its {len(chunks)} "
                  f"chunks stored in {out}, each trusted on its own sidecar (acts-NNNNN.json: its sha256 and "
                  "size), as no manifest lists them; a chunk without a sidecar, or unlike it, is recomputed, "
                  "and the manifest is written again from them")


def plan_set(problems: "pd.DataFrame", lm, *, prompt_suffix: str = "", system_prompt: str | None = None,
             cfg: ExtractionConfig = ExtractionConfig(), n_layers: int | None = None,
             out_root: Path | None = None) -> SetPlan:
    """The key, folder, row order and chunks of ``lm``'s activations on ``problems``."""
    from ..core import store

    if problems["problem_id"].duplicated().any():
        raise ValueError("duplicate problem_id in the problems table")
    problems = problems.sort_values("problem_id").reset_index(drop=True)
    n_layers = len(decoder_layers(lm.model)) if n_layers is None else n_layers
    layers = list(range(n_layers + 1)) if cfg.layers is None else [int(x) for x in cfg.layers]
    n_eoi = eoi_token_count(lm.tokenizer, prompt_suffix, system_prompt)
    n_pos = n_eoi if cfg.n_positions is None else min(int(cfg.n_positions), n_eoi)
    prompts = chat_prompts(lm.tokenizer, problems["question"].tolist(), prompt_suffix, system_prompt)
    key_obj = {
        "model": lm.name, "weights_sha256": lm.weights_sha256, "prompts": store.stable_hash(prompts),
        "layers": layers, "n_positions": n_pos, "dtype": cfg.dtype, "batch_size": cfg.batch_size,
        "token_layers": [int(x) for x in cfg.token_layers],
    }
    computed_in = str(lm.model.dtype).removeprefix("torch.")
    if computed_in != "float32":  # absent for float32, so the sets extracted before it keep their key
        key_obj["compute_dtype"] = computed_in
    if cfg.rollout_chunks is not None:  # another chunk layout (and padding): another set
        key_obj.pop("batch_size")
        key_obj["rollout_chunks"] = int(cfg.rollout_chunks)
    elif cfg.token_budget is not None:  # absent when None, so the sets extracted before it keep their key
        key_obj.pop("batch_size")
        key_obj["token_budget"] = int(cfg.token_budget)
    key = store.stable_hash(key_obj)
    out = Path(out_root or store.data_dir() / "activations") / f"{store.path_safe(lm.name)}-{key}"
    # tokenise once; by default batch prompts of similar length together (less padding, less
    # compute). Rows are stored batch after batch; ActivationSet.rows_for maps problem ids to rows
    ids = tokenize_prompts(lm.tokenizer, prompts, getattr(lm.model.config, "max_position_embeddings", None))
    plan = cfg.batches([len(x) for x in ids])
    order = np.concatenate(plan)
    meta = {
        **key_obj, "key": key, "problem_ids": problems["problem_id"].iloc[order].tolist(), "n_chunks": len(plan),
        "chunk_rows": [int(len(b)) for b in plan],
        "positions": list(range(-n_pos, 0)), "eoi_tokens": eoi_tokens(lm.tokenizer, prompt_suffix, system_prompt)[-n_pos:],
        "shape": [len(prompts), len(layers), n_pos, int(lm.model.config.hidden_size)],
        "layer_names": ["embeddings" if x == 0 else f"block {x - 1} output" for x in layers],
        "model_info": lm.info(), "versions": store.versions(), "prompt_suffix": prompt_suffix,
    }
    return SetPlan(out, key, meta, ids, plan, layers, n_pos, _DTYPES[cfg.dtype])


def extract_activations(
    problems: pd.DataFrame,
    lm,
    *,
    prompt_suffix: str = "",
    system_prompt: str | None = None,
    cfg: ExtractionConfig = ExtractionConfig(),
    out_root: Path | None = None,
    progress: bool = True,
) -> ActivationSet:
    """Extract (or reuse) EOI activations for every problem, in problem_id order, chunk by chunk;
    chunks that rollouts already stored while sampling (``cfg.rollout_chunks``) are kept."""
    from ..core import store

    extractor = NNsightExtractor(lm, remote=cfg.remote)
    sp = plan_set(problems, lm, prompt_suffix=prompt_suffix, system_prompt=system_prompt, cfg=cfg,
                  n_layers=extractor.n_layers, out_root=out_root)
    done = sp.stored()
    if done is not None:
        return done
    from tqdm import tqdm

    kept = 0
    for c, idx in enumerate(tqdm(sp.plan, desc=f"activations {lm.name}", disable=not store.show_progress(progress))):
        if sp.chunk_done(c):  # checksum verified; a damaged chunk is moved aside and recomputed
            kept += 1
            continue
        sp.write_chunk(c, extractor.extract_ids([sp.ids[i] for i in idx], sp.layers, sp.n_pos, cfg.token_layers,
                                                out_dtype=sp.dtype))
    if kept:
        log.info("%s: kept %d stored chunk(s) of %d, extracted the others", sp.out, kept, len(sp.plan))
    return sp.finish("nnsight extraction" if not kept else
                     f"nnsight extraction of {len(sp.plan) - kept} of {len(sp.plan)} chunks, {kept} stored earlier "
                     "(by the rollouts' prefill or an interrupted extraction)")
