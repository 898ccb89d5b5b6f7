"""Generation backends behind one interface: ``transformers`` (batched ``generate`` with a shared
prefill, CPU or GPU) and ``vllm`` (``SamplingParams(n=K)``, where vLLM is installed)."""
from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

import numpy as np

from .sampling import Completion, SamplingConfig

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Generates ``cfg.k`` completions for each prompt; ``identity`` keys the run's cache."""

    name: str

    def identity(self) -> dict: ...
    def count_tokens(self, prompts: Sequence[str]) -> list[int]: ...
    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]: ...


def transformers_identity(model: str, weights_sha256: str, chat_template, dtype: str = "float32") -> dict:
    """What keys a transformers run (with the problems and sampling settings): the model, its
    weights, its chat template and the dtype it computes in (absent for float32, so the runs made
    before the dtype was recorded keep their keys). Computable without loading the weights."""
    out = {"backend": "transformers", "model": model, "weights_sha256": weights_sha256, "chat_template": chat_template}
    return out if dtype == "float32" else {**out, "dtype": dtype}


class TransformersBackend:
    """Batched sampling with ``model.generate``; left padding so every prompt ends where
    generation starts."""

    name = "transformers"

    def __init__(self, lm, shared_prefill: bool = True) -> None:
        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.model = lm.model
        self.shared_prefill = shared_prefill

    def identity(self) -> dict:
        return transformers_identity(self.lm.name, self.lm.weights_sha256, self.tokenizer.chat_template,
                                     str(self.model.dtype).removeprefix("torch."))

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]:
        """K samples per prompt. With ``shared_prefill`` each prompt is prefilled once and its
        key-value cache copied K times, instead of prefilling K identical copies."""
        return self.generate_reading(prompts, cfg, seed, None)[0]

    def generate_reading(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int,
                         read=None) -> tuple[list[list[Completion]], dict]:
        """``generate``, also keeping the activations ``read`` (a ``activations.prefill_read.PrefillRead``)
        names from the prompt's prefill: one forward of each prompt serves both."""
        import torch
        from transformers import DynamicCache

        from ..activations.prefill_read import reading

        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        eos_ids = _eos_ids(self.model, tok)
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens, do_sample=sample,
            pad_token_id=tok.pad_token_id, eos_token_id=eos_ids,
        )
        if cfg.stop:  # a sequence that has written a stop string is finished (the batch ends when all are)
            kwargs.update(stop_strings=list(cfg.stop), tokenizer=tok)
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        acts: dict = {}
        with torch.inference_mode():
            if self.shared_prefill and cfg.k > 1 and ids.shape[1] > 1:
                # prefill all but the last prompt token once, then repeat the cache K times;
                # generate() processes only the uncached last token onwards
                cache = DynamicCache(config=self.model.config)
                if read is None:
                    self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                               past_key_values=cache, use_cache=True, logits_to_keep=1)  # no lm_head over the prompt
                else:  # the whole prompt, read at its last tokens, then the cache cut back by one
                    with reading(self.model, read) as acts:
                        self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                   use_cache=True, logits_to_keep=1)
                    cache.crop(-1)  # drop the last token: generate() feeds it again
                cache.batch_repeat_interleave(cfg.k)
                torch.manual_seed(seed)
                out = self.model.generate(input_ids=ids.repeat_interleave(cfg.k, 0),
                                          attention_mask=mask.repeat_interleave(cfg.k, 0),
                                          past_key_values=cache, **kwargs)
            else:
                if read is not None:  # no prefill to share: one forward to read
                    with reading(self.model, read) as acts:
                        self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
                torch.manual_seed(seed)
                out = self.model.generate(**enc, num_return_sequences=cfg.k, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:].cpu().numpy()
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            row = []
            for j in range(cfg.k):
                ids = new[i * cfg.k + j]
                stop = np.flatnonzero(np.isin(ids, eos_ids))
                n = int(stop[0]) + 1 if len(stop) else len(ids)
                text = tok.decode(ids[:n], skip_special_tokens=True)
                finish = "stop" if len(stop) else "length"
                cut = cut_at_stop(text, cfg.stop)
                if cut is not None:  # count the tokens up to the one that completed the stop string
                    n = next(m for m in range(1, n + 1) if cut_at_stop(tok.decode(ids[:m], skip_special_tokens=True), cfg.stop) is not None)
                    text, finish = cut, "stop"
                row.append(Completion(text, n, finish))
            results.append(row)
        if read is not None and read.token_layers:
            acts["mask"] = mask.to(torch.uint8).cpu()
        return results, acts


def cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """The text before the first stop string, or None if none occurs."""
    hits = [text.find(s) for s in stop if s in text]
    return text[:min(hits)] if hits else None


def _eos_ids(model, tok) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


class VLLMBackend:
    """vLLM sampling with ``SamplingParams(n=k)``: the paper's setting on GPUs."""

    name = "vllm"

    def __init__(self, model_id: str, **llm_kwargs) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "backend='vllm' needs vLLM, which is a CUDA build: create the GPU environment "
                "with `conda env create -f environment.yml` (see README, 'GPUs and vLLM')"
            ) from e
        self.model_id = model_id
        self.llm = LLM(model=model_id, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.llm_kwargs = llm_kwargs

    def identity(self) -> dict:
        revision = None
        try:
            from huggingface_hub import model_info
            revision = model_info(self.model_id).sha
        except Exception as e:  # offline: key by id only, and say so
            log.warning("could not resolve the hub revision of %s (%s); keying by id only", self.model_id, e)
        return {"backend": self.name, "model": self.model_id, "revision": revision,
                "chat_template": self.tokenizer.chat_template, "llm_kwargs": self.llm_kwargs}

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig, seed: int) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_tokens=cfg.max_new_tokens, seed=seed, stop=list(cfg.stop) or None)
        outs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [[Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                 for c in o.outputs] for o in outs]


def make_backend(model: str, backend: str = "transformers", *, source: str = "auto",
                 device: str | None = None, dtype: str | None = None, revision: str | None = None,
                 **kwargs) -> Backend:
    """Resolve a model name through the registry and wrap it in the chosen backend; ``revision``
    pins the hub commit (recorded in the run's identity)."""
    if backend == "transformers":
        from ..models.registry import load_model
        return TransformersBackend(load_model(model, source=source, device=device, dtype=dtype, revision=revision))
    if backend == "vllm":
        from ..models.registry import MODEL_REGISTRY
        spec = MODEL_REGISTRY.get(model)
        hub_id = spec.hub_id if spec is not None else model
        if hub_id is None:
            raise ValueError(f"model {model!r} has no hub id, so vLLM cannot load it; use backend='transformers'")
        extra = {"revision": revision} if revision else {}
        return VLLMBackend(hub_id, dtype=dtype if dtype not in (None, "float32") else "auto", **extra, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose 'transformers' or 'vllm'")


