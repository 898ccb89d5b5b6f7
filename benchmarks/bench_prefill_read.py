"""One forward per prompt: rollouts that keep chapter 2's activations from their own prefill,
against rollouts followed by a separate nnsight extraction (what the book did before), on the
same prompts, model, sampling settings and extraction settings.

    .venv/bin/python benchmarks/bench_prefill_read.py [--model qwen2.5-coder-0.5b] [--repeats 2]

Prints seconds for both and, last, ``prefill_read_speedup: <ratio>`` (separate / fused) measured
in this run.
"""
from __future__ import annotations

import time

from _common import model_and_prompts, sampling_args
from pika_utils.activations.batches import eoi_token_count, tokenize_prompts
from pika_utils.activations.eoi import NNsightExtractor, decoder_layers
from pika_utils.activations.prefill_read import read_layout
from pika_utils.core.prompts import DIRECT_SUFFIX
from pika_utils.generation.backends import TransformersBackend
from pika_utils.generation.sampling import SamplingConfig


def main() -> None:
    args = sampling_args(__doc__, model="qwen2.5-coder-0.5b", k=4, max_new_tokens=8)
    lm, prompts = model_and_prompts(args.model, {"products": {"n": args.batch // 2}, "ladder": {"n_per_level": 2}},
                                    args.batch)
    cfg = SamplingConfig(k=args.k, temperature=0.7, max_new_tokens=args.max_new_tokens, stop=("\n",))
    layers = list(range(len(decoder_layers(lm.model)) + 1))
    n_pos = eoi_token_count(lm.tokenizer, DIRECT_SUFFIX)
    mid = (len(layers) // 2,)
    be, ex = TransformersBackend(lm), NNsightExtractor(lm)
    ids = tokenize_prompts(lm.tokenizer, prompts)
    best = {}
    for _ in range(args.repeats):  # interleaved, best of N: the machine is noisy
        t0 = time.perf_counter()
        be.generate(prompts, cfg, seed=0)
        ex.extract_ids(ids, layers, n_pos, mid)
        best["separate"] = min(best.get("separate", float("inf")), time.perf_counter() - t0)
        t0 = time.perf_counter()
        be.generate_reading(prompts, cfg, 0, read_layout(layers, n_pos, mid, __import__("torch").float32))
        best["fused"] = min(best.get("fused", float("inf")), time.perf_counter() - t0)
    print(f"model: {args.model}, prompts: {len(prompts)}, k: {args.k}, max_new_tokens: {args.max_new_tokens}, "
          f"layers: {len(layers)}, EOI positions: {n_pos}")
    print(f"separate_seconds (rollouts, then nnsight extraction): {best['separate']:.2f}")
    print(f"fused_seconds (activations kept from the sampling prefill): {best['fused']:.2f}")
    print(f"prefill_read_speedup: {best['separate'] / best['fused']:.2f}")


if __name__ == "__main__":
    main()
