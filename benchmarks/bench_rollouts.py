"""Rollout throughput: shared prefill (one prefill per prompt, cache copied K times) against
plain ``generate(num_return_sequences=K)`` on the same prompts, model and sampling settings.

    .venv/bin/python benchmarks/bench_rollouts.py [--model smollm2-135m] [--k 8] [--repeats 2]

Prints rollouts/s for both and, last, ``shared_prefill_speedup: <ratio>`` measured in this run.
"""
from __future__ import annotations

import time

from _common import model_and_prompts, sampling_args
from pika_utils.generation.backends import TransformersBackend
from pika_utils.generation.sampling import SamplingConfig


def main() -> None:
    args = sampling_args(__doc__, model="smollm2-135m", k=8, max_new_tokens=16)
    lm, prompts = model_and_prompts(args.model, {"ladder": {"n_per_level": 2}, "gsm8k100": {"limit": 2},
                                                 "mmath": {"subsets": ["math500"], "limit_per_subset": 2}}, args.batch)
    cfg = SamplingConfig(k=args.k, temperature=0.7, max_new_tokens=args.max_new_tokens)
    best = {}
    for _ in range(args.repeats):  # interleaved, best of N: the machine is noisy
        for shared in (False, True):
            be = TransformersBackend(lm, shared_prefill=shared)
            t0 = time.perf_counter()
            be.generate(prompts, cfg, seed=0)
            rate = len(prompts) * args.k / (time.perf_counter() - t0)
            best[shared] = max(best.get(shared, 0.0), rate)
    print(f"model: {args.model}, prompts: {len(prompts)}, k: {args.k}, max_new_tokens: {args.max_new_tokens}")
    print(f"plain_rollouts_per_s: {best[False]:.2f}")
    print(f"shared_rollouts_per_s: {best[True]:.2f}")
    print(f"shared_prefill_speedup: {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
