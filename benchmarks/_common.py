"""What the sampling benchmarks share: their command line and their prompts (a few real problems
from the packaged sources, in the model's chat template with the direct-answer suffix)."""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from pika_utils.core.prompts import DIRECT_SUFFIX, chat_prompts
from pika_utils.models.registry import load_model
from pika_utils.problems import tasks


def sampling_args(doc: str, *, model: str, k: int, max_new_tokens: int, batch: int = 16,
                  repeats: int = 2) -> argparse.Namespace:
    """--model, --k, --batch, --max-new-tokens and --repeats, with this benchmark's defaults."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--model", default=model)
    ap.add_argument("--k", type=int, default=k)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    ap.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats; the best of each is kept")
    return ap.parse_args()


def model_and_prompts(model: str, sources: Mapping[str, Any], n: int):
    """The model (offline copy) and the chat prompts of the first ``n`` problems of ``sources``."""
    problems = tasks.load_problems(sources)
    lm = load_model(model, source="offline")
    return lm, chat_prompts(lm.tokenizer, problems["question"].tolist()[:n], DIRECT_SUFFIX)
