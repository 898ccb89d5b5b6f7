"""Reading new questions for a Router (``pika route``, ``pika route --evaluate``): the reader's
end-of-instruction states of questions of very different lengths, batched in the order given
against batched in order of prompt length (``probes.protocol.eoi_features(by_length=...)``), on
the same questions, interleaved. OlympiadBench's questions (shipped with the recorded pool) run
from one line to a page, as a user's traffic does.

    .venv/bin/python benchmarks/bench_route_read.py [--model smollm2-135m] [--n 160] [--repeats 2]

Prints each way's best time, the largest difference between their states, and, last,
``length_order_speedup: <given order / length order>`` measured in this run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pika_utils.models.registry import load_model
from pika_utils.probes.protocol import eoi_features
from pika_utils.problems.recorded import recorded_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best of each is kept")
    args = ap.parse_args()
    lm = load_model(args.model, source="offline")
    questions = recorded_problems("olympiadbench")["question"].tolist()[:args.n]
    layers = [len(lm.model.model.layers) // 2]
    kw = dict(prompt_suffix="Reply with just the number.", system_prompt="You are a helpful assistant.",
              batch_size=16)
    best = {True: np.inf, False: np.inf}
    states = {}
    for _ in range(args.repeats):
        for by_length in (False, True):
            t0 = time.perf_counter()
            states[by_length] = eoi_features(lm, questions, layers, 2, by_length=by_length, **kw)
            best[by_length] = min(best[by_length], time.perf_counter() - t0)
    gap = float(np.abs(states[True] - states[False]).max())
    print(f"{args.n} questions, {args.model}: given order {best[False]:.1f} s, length order {best[True]:.1f} s; "
          f"largest state difference {gap:.2e}")
    print(f"length_order_speedup: {best[False] / best[True]:.2f}")


if __name__ == "__main__":
    main()
