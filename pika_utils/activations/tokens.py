"""Residual-stream activations at every token of a chain of thought, read with nnsight.

The reader model reads the text the generator saw and wrote: the generator's prompt (its chat
template rendered as text) followed by the chain. The whole string is tokenised once with the
reader's tokenizer; the tokens whose characters lie in the chain are kept (the prompt only gives
context). The trace is ``activations.NNsightExtractor``'s (left padding with mask-derived
positions, stops after the last layer read). Chains are stored in safetensors chunks of one
batch each, keyed by everything that determines them, with a token table (chain, position,
token id, character offsets in the chain) beside them; memory is bounded by one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core import store
from .eoi import NNsightExtractor, _DTYPES, say_manifest_missing

TOKEN_COLUMNS = ("chain_id", "pos", "n_tokens", "token_id", "start", "end")


def evenly_spaced_layers(n_layers: int, fracs: Sequence[float]) -> list[int]:
    """Layer indices (1 = output of block 0, ``n_layers`` = the last block) at fractions of the
    depth, rounded, distinct and at least 1."""
    return sorted({min(n_layers, max(1, int(round(f * n_layers)))) for f in fracs})


def chain_token_table(tokenizer, prefixes: Sequence[str], texts: Sequence[str], chain_ids: Sequence[str],
                      max_tokens: int | None = None) -> tuple[list[list[int]], pd.DataFrame]:
    """Tokenise ``prefix + text`` per chain; return the full token ids and a table of the chain's
    tokens (those starting at or after the prefix's end), offsets relative to the chain's text."""
    full, rows = [], []
    for cid, pre, text in zip(chain_ids, prefixes, texts):
        enc = tokenizer(pre + text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        first = next((i for i, (s, e) in enumerate(offs) if s >= len(pre) and e > s), len(ids))
        if max_tokens is not None and len(ids) > max_tokens:
            raise ValueError(f"chain {cid} has {len(ids)} tokens with its prompt, more than the reader's "
                             f"context of {max_tokens}")
        full.append(ids)
        n = len(ids) - first
        for p, i in enumerate(range(first, len(ids))):
            s, e = offs[i]
            rows.append((cid, p, n, ids[i], max(0, s - len(pre)), max(0, e - len(pre))))
    return full, pd.DataFrame(rows, columns=list(TOKEN_COLUMNS))


@dataclass
class TokenActivationSet:
    """Stored token activations: ``tokens`` (one row per chain token, chains contiguous, in
    position order) and lazy access to one layer at a time as an (n_tokens, d_model) array."""

    dir: Path
    meta: dict
    tokens: pd.DataFrame

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    def layer(self, layer: int) -> np.ndarray:
        from safetensors import safe_open

        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not extracted; layers={self.layers}")
        li = self.layers.index(layer)
        parts = []
        for c in range(self.meta["n_chunks"]):
            path = self.dir / f"acts-{c:05d}.safetensors"
            store.check_chunk_for_read(path, self.meta.get("chunks"), where=f"{self.dir.name}/meta.json",
                                       fix=_RERUN)
            with safe_open(str(path), framework="pt") as f:
                parts.append(f.get_slice("acts")[:, li, :].float().numpy())
        return np.concatenate(parts)


_RERUN = ("Run the same token extraction again (extract_token_activations, chapter 8): the damaged "
          "file is moved aside and recomputed, and nothing else is redone.")


def _stored_token_set(out: Path, n_chunks: int) -> TokenActivationSet | None:
    """The complete set in ``out`` when its manifest is written and every chunk and the token
    table match the sha256 it and their sidecars record; a damaged or deleted one is named
    (moved aside) and None returned, so it is recomputed and the rest kept."""
    if not (out / "meta.json").exists():
        say_manifest_missing(out, [out / f"acts-{c:05d}.safetensors" for c in range(n_chunks)])
        return None
    meta = store.read_json(out / "meta.json")
    manifest = meta.get("chunks") or {}
    where = f"{out.name}/meta.json"
    files = [out / f"acts-{c:05d}.safetensors" for c in range(n_chunks)] + [out / "tokens.parquet"]
    if not all([store.chunk_ok(p, manifest.get(p.name), where=where) for p in files]):
        return None
    return TokenActivationSet(out, meta, store.read_parquet(out / "tokens.parquet"))


def extract_token_activations(chains: pd.DataFrame, lm, layers: Sequence[int], *, dtype: str = "float16",
                              batch_size: int = 8, out_root: Path | None = None,
                              progress: bool = True) -> TokenActivationSet:
    """Read (or reuse) the residual stream at ``layers`` (1 = block 0's output) at every chain
    token of ``chains`` (columns chain_id, prefix, text). float16 on disk by default: half the
    space, about three significant digits, plenty for a linear probe."""
    if chains["chain_id"].duplicated().any():
        raise ValueError("duplicate chain_id in the chains table")
    layers = [int(x) for x in layers]
    extractor = NNsightExtractor(lm)
    if not layers or min(layers) < 1 or max(layers) > extractor.n_layers:
        raise ValueError(f"layers must be in 1..{extractor.n_layers}, got {layers}")
    # batch chains of similar length together (less padding); rows are stored in this order
    lengths = (chains["prefix"].str.len() + chains["text"].str.len()).to_numpy()
    chains = chains.iloc[np.argsort(lengths, kind="stable")].reset_index(drop=True)
    ctx = getattr(lm.model.config, "max_position_embeddings", None)
    full, tokens = chain_token_table(lm.tokenizer, chains["prefix"].tolist(), chains["text"].tolist(),
                                     chains["chain_id"].tolist(), ctx)
    key_obj = {"model": lm.name, "weights_sha256": lm.weights_sha256,
               "chains": store.stable_hash(chains[["chain_id", "prefix", "text"]].to_dict(orient="list")),
               "layers": layers, "dtype": dtype, "batch_size": batch_size}
    key = store.stable_hash(key_obj)
    out = Path(out_root or store.data_dir() / "token_activations") / f"{lm.name}-{key}"
    n_chunks = (len(chains) + batch_size - 1) // batch_size
    done = _stored_token_set(out, n_chunks)
    if done is not None:
        return done
    from safetensors.torch import save_file
    from tqdm import tqdm

    n_chain_tok = tokens.groupby("chain_id", sort=False)["pos"].size().reindex(chains["chain_id"]).fillna(0).astype(int).tolist()
    for c in tqdm(range(n_chunks), desc=f"token activations {lm.name}", disable=not store.show_progress(progress)):
        path = out / f"acts-{c:05d}.safetensors"
        if store.chunk_ok(path):  # its sha256 checked; a damaged chunk is moved aside (named) and recomputed
            continue
        sl = slice(c * batch_size, (c + 1) * batch_size)
        got = _extract_ids(extractor, full[sl], layers)  # (b, L, width, d), left padded
        width = got.shape[2]
        keep = [got[i, :, width - n:, :].transpose(0, 1) for i, n in enumerate(n_chain_tok[sl])]
        acts = torch.cat(keep) if keep else torch.zeros((0, len(layers), got.shape[-1]))
        tmp = path.with_name(f".{path.name}.tmp")
        out.mkdir(parents=True, exist_ok=True)
        save_file({"acts": acts.to(_DTYPES[dtype]).contiguous()}, str(tmp), metadata={"key": key, "chunk": str(c)})
        store.seal_file(tmp, path)  # its sha256 and size in acts-NNNNN.json, then the rename
    store.write_parquet_chunk(out / "tokens.parquet", tokens)
    files = [out / f"acts-{c:05d}.safetensors" for c in range(n_chunks)] + [out / "tokens.parquet"]
    meta = {**key_obj, "key": key, "chain_ids": chains["chain_id"].tolist(), "n_chunks": n_chunks,
            "n_tokens": int(len(tokens)), "d_model": int(lm.model.config.hidden_size),
            "layer_names": [f"block {x - 1} output" for x in layers], "model_info": lm.info(),
            "versions": store.versions(), "created": store.now_iso(), "chunks": store.chunk_manifest(files)}
    store.write_json(out / "meta.json", meta)  # written last: marks the set complete
    return TokenActivationSet(out, meta, tokens)


def _extract_ids(extractor: NNsightExtractor, ids: Sequence[Sequence[int]], layers: Sequence[int]) -> torch.Tensor:
    """The extractor's trace on already tokenised sequences (so the kept tokens are exactly the
    ones whose offsets were recorded): (batch, len(layers), width, d_model) float32."""
    width = max(len(x) for x in ids)
    tok = extractor.lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(list(x))
        mask[i, width - len(x):] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    nn = extractor.nn
    base = nn.model if hasattr(nn, "model") else nn.transformer
    blocks = base.layers if hasattr(base, "layers") else base.h
    saved = {}
    with torch.inference_mode(), nn.trace(dict(batch)) as tracer:
        for layer in sorted(layers):  # modules are read in execution order
            o = blocks[layer - 1].output
            saved[layer] = (o[0] if isinstance(o, tuple) else o).save()
        tracer.stop()  # later blocks, the final norm and lm_head are never computed
    return torch.stack([_v(saved[x]).float().cpu() for x in layers], dim=1)


def _v(x):
    return x.value if hasattr(x, "value") else x
