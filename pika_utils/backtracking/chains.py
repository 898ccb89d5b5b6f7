"""Chains of thought for the backtracking chapter: sampled, labelled, read.

Chains are rollouts (``rollouts.run_rollouts``: resumable chunks keyed by hash, graded), one per
problem, from a seeded sample of the profile's problems. The prompt is the generator's chat
template with an instruction from ``prompts``: the check-and-redo instruction for small instruct
models (which have no trained reasoning mode: their backtracking is *asked for*), or the paper's
plain instruction for R1-style reasoning models (which backtrack in their own ``<think>`` block).
The reader model later reads the very text the generator saw and wrote: ``prefix`` (the rendered
prompt) followed by ``text`` (the chain).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import labels as BL
from ..core import prices
from ..core import prompts
from ..generation.rollouts import RolloutRun, run_rollouts
from ..generation.sampling import SamplingConfig

#: bt_prompt values -> the instruction appended to each problem
BT_PROMPTS = {"check_and_redo": prompts.CHECK_AND_REDO_SUFFIX, "paper": prompts.PAPER_SUFFIX}


def chain_problems(problems: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of ``n`` problems (all of them if there are fewer), in problem_id order."""
    n = min(int(n), len(problems))
    return problems.sample(n=n, random_state=seed).sort_values("problem_id").reset_index(drop=True)


def chain_config(params: Mapping[str, Any]) -> SamplingConfig:
    """One chain per problem with the chapter's temperature, length and instruction."""
    return SamplingConfig(k=1, temperature=float(params["bt_temperature"]), top_p=float(params.get("top_p", 1.0)),
                          max_new_tokens=int(params["bt_max_new_tokens"]), prompt_suffix=BT_PROMPTS[params["bt_prompt"]],
                          system_prompt=None, seed=int(params["seed"]), chunk_size=int(params.get("chunk_size", 16)))


def generator_tokenizer(model: str, backend: str, source: str):
    """The generator's tokenizer, to render the prompt text it saw (vLLM: from the hub id)."""
    if backend == "transformers":
        from ..models.registry import load_model
        return load_model(model, source=source).tokenizer
    from transformers import AutoTokenizer

    from ..models.registry import MODEL_REGISTRY
    spec = MODEL_REGISTRY.get(model)
    return AutoTokenizer.from_pretrained(spec.hub_id if spec is not None and spec.hub_id else model)


def sample_chains(problems: pd.DataFrame, params: Mapping[str, Any]) -> tuple[RolloutRun, pd.DataFrame]:
    """Sample (or reuse) one chain per problem with the chapter's generator. Returns the run and
    a chains table: chain_id, problem_id, prefix (the rendered prompt), text, correct,
    finish_reason, output_tokens, and the rule-based sentence labels' counts."""
    gen, backend, source = params["bt_generator"], params["backend"], params["model_source"]
    price = dict(params.get("prices") or {})
    try:
        prices.get_price(gen, price)
    except KeyError:  # chains carry no cost in this chapter; an unpriced hub model is priced at 0
        price[gen] = {"input_per_m": 0.0, "output_per_m": 0.0}
    cfg = chain_config(params)
    run = run_rollouts(problems, gen, cfg, backend=backend, source=source, price_overrides=price)
    tok = generator_tokenizer(gen, backend, source)
    q = problems.set_index("problem_id")["question"]
    ro = run.rollouts
    prefix = prompts.chat_prompts(tok, q.loc[ro["problem_id"]].tolist(), cfg.prompt_suffix, cfg.system_prompt)
    chains = pd.DataFrame({
        "chain_id": [f"{p}#{s}" for p, s in zip(ro["problem_id"], ro["sample"])], "problem_id": ro["problem_id"],
        "prefix": prefix, "text": ro["text"], "correct": ro["correct"], "finish_reason": ro["finish_reason"],
        "output_tokens": ro["output_tokens"]})
    sents = [BL.annotate(t) for t in chains["text"]]
    chains["n_sentences"] = [len(s) for s in sents]
    chains["n_backtracking"] = [sum(x.backtracking for x in s) for s in sents]
    return run, chains


def sentence_table(chains: pd.DataFrame) -> pd.DataFrame:
    """Every sentence of every chain with its rule-based label: chain_id, index, span, text."""
    rows = [{"chain_id": cid, "sentence": i, "start": s.start, "end": s.end, "text": s.text,
             "backtracking": s.backtracking}
            for cid, sents in zip(chains["chain_id"], _sentences(chains)) for i, s in enumerate(sents)]
    return pd.DataFrame(rows, columns=["chain_id", "sentence", "start", "end", "text", "backtracking"])


def token_labels_for(tokens: pd.DataFrame, chains: pd.DataFrame) -> np.ndarray:
    """0/1 label of every row of a token table (``activations.tokens``), from the rule-based
    sentence spans of its chain and the token's character offsets in the chain's text."""
    sents = dict(zip(chains["chain_id"], _sentences(chains)))
    out = np.zeros(len(tokens), dtype=np.int8)
    for cid, idx in tokens.groupby("chain_id", sort=False).indices.items():
        offs = list(zip(tokens["start"].to_numpy()[idx], tokens["end"].to_numpy()[idx]))
        out[idx] = BL.token_labels(offs, sents[cid])
    return out


def _sentences(chains: pd.DataFrame) -> list:
    """Each chain's annotated sentences; for windows of longer chains (``full_text``, ``offset``:
    see ``backtracking.recorded``) the whole chain is annotated and clipped to the window."""
    if "full_text" not in chains:
        return [BL.annotate(t) for t in chains["text"]]
    from .recorded import window_sentences
    return [window_sentences(f, int(o), len(t)) for f, o, t in zip(chains["full_text"], chains["offset"], chains["text"])]


def reader_layers(lm, fracs) -> list[int]:
    from ..activations.tokens import evenly_spaced_layers
    return evenly_spaced_layers(int(lm.model.config.num_hidden_layers), fracs)


def llm_agreement(chains: pd.DataFrame, annotator: str, source: str = "auto", max_chains: int | None = None) -> dict:
    """Run the LLM annotator on the chains' sentences and compare its 'backtracking' label with
    the rule-based one: Cohen's kappa, the label counts, and the sentence table with both."""
    from ..models.registry import load_model

    lm = load_model(annotator, source=source)
    sub = chains if max_chains is None else chains.head(int(max_chains))
    llm = BL.llm_annotate(lm, sub["text"].tolist(), progress=True)
    sents = sentence_table(sub)
    sents["llm_label"] = [lab for labs in llm for lab in labs]
    sents["llm_backtracking"] = sents["llm_label"] == "backtracking"
    kappa = BL.cohen_kappa(sents["backtracking"].to_numpy(), sents["llm_backtracking"].to_numpy()) if len(sents) else float("nan")
    return {"annotator": annotator, "source": lm.source, "kappa": kappa, "n_sentences": len(sents),
            "rule_positive": int(sents["backtracking"].sum()), "llm_positive": int(sents["llm_backtracking"].sum()),
            "sentences": sents}
