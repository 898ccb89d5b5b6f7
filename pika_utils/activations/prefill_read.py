"""Activations read during sampling's prefill, so a prompt is run through the model once for both.

Chapter 1 prefills every prompt before it samples; the activations chapter 2 reads are that same
forward's layer outputs at the end-of-instruction tokens. Forward hooks on the embeddings and the
decoder blocks keep those outputs (the modules nnsight reads in ``activations``), in the layout
``activations.NNsightExtractor.extract_ids`` returns, so either one can write a set's chunk.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


@dataclass(frozen=True)
class PrefillRead:
    """What to keep: these layers at the last ``n_positions`` tokens, every token at ``token_layers``."""

    layers: tuple[int, ...]
    n_positions: int
    token_layers: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32


@contextmanager
def reading(model, read: PrefillRead) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks active for the forwards inside the block; the dict it yields holds, after the forward,
    ``eoi`` (batch, layers, positions, d) and, with token layers, ``tokens`` (batch, token layers, width, d)."""
    from .eoi import decoder_layers

    modules = {0: model.get_input_embeddings(), **{i + 1: b for i, b in enumerate(decoder_layers(model))}}
    wanted = sorted(set(read.layers) | set(read.token_layers))
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(modules)):
        raise ValueError(f"layers must be in 0..{len(modules) - 1}, got {wanted}")
    eoi: dict[int, torch.Tensor] = {}
    tokens: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(_module, _inputs, out):
            out = out[0] if isinstance(out, tuple) else out
            if layer in read.layers:
                eoi[layer] = out[:, -read.n_positions:, :].to(read.dtype).cpu()
            if layer in read.token_layers:
                tokens[layer] = out.to(read.dtype).cpu()
        return hook

    result: dict[str, torch.Tensor] = {}
    handles = [modules[x].register_forward_hook(keep(x)) for x in wanted]
    try:
        yield result
    finally:
        for h in handles:
            h.remove()
    if len(eoi) == len(read.layers):  # the forward ran: assemble in the requested layer order
        result["eoi"] = torch.stack([eoi[x] for x in read.layers], 1)
        if read.token_layers:
            result["tokens"] = torch.stack([tokens[x] for x in read.token_layers], 1)


def read_layout(layers: Sequence[int], n_positions: int, token_layers: Sequence[int], dtype: torch.dtype) -> PrefillRead:
    return PrefillRead(tuple(int(x) for x in layers), int(n_positions), tuple(int(x) for x in token_layers), dtype)
