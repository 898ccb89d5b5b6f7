"""Peak memory of the book's heaviest stage against the size of its weights: the workshop's largest
model loaded, sampling a batch with chapter 2's activations read from the same prefill (chapter 1's
work), once in float32 and once in the dtype the book now holds it in (``registry.compute_dtype``:
bfloat16 on a CPU with native bfloat16), each in a process of its own so neither inherits the
other's memory.

    .venv/bin/python benchmarks/bench_memory.py [--model qwen2.5-coder-1.5b] [--batch 16]

Prints each run's peak resident memory, its weights' bytes in memory and their ratio, and, last,
``peak_memory_saving: <float32 peak / book's peak>`` measured in this run. (The converted copy must
be cached: run the book's chapter 1, or load the model once, first.)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import torch
from pika_utils.activations.batches import eoi_token_count
from pika_utils.activations.eoi import decoder_layers
from pika_utils.activations.prefill_read import read_layout
from pika_utils.core.prompts import DIRECT_SUFFIX, chat_prompts
from pika_utils.generation.backends import TransformersBackend
from pika_utils.generation.sampling import SamplingConfig
from pika_utils.models.registry import load_model
from pika_utils.problems import tasks

model, dtype, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
lm = load_model(model, source="offline", dtype=None if dtype == "book" else dtype)
questions = tasks.load_problems({"products": {"n": batch}})["question"].tolist()[:batch]
prompts = chat_prompts(lm.tokenizer, questions, DIRECT_SUFFIX)
layers = list(range(len(decoder_layers(lm.model)) + 1))
n_pos = eoi_token_count(lm.tokenizer, DIRECT_SUFFIX)
cfg = SamplingConfig(k=4, temperature=0.7, max_new_tokens=8, stop=("\n",))
TransformersBackend(lm).generate_reading(prompts, cfg, 0, read_layout(layers, n_pos, (len(layers) // 2,), torch.float32))
weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
print(json.dumps({"dtype": str(lm.model.dtype).removeprefix("torch."), "weights_bytes": weights,
                  "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run(model: str, dtype: str, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model, dtype, str(batch)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {dtype} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    runs = {"float32": run(args.model, "float32", args.batch), "book": run(args.model, "book", args.batch)}
    for name, r in runs.items():
        print(f"{name:>8} ({r['dtype']}): peak {r['peak_bytes'] / 2**30:.2f} GiB, weights {r['weights_bytes'] / 2**30:.2f} GiB, "
              f"peak / weights {r['peak_bytes'] / r['weights_bytes']:.2f}")
    print(f"peak_memory_saving: {runs['float32']['peak_bytes'] / runs['book']['peak_bytes']:.2f}")


if __name__ == "__main__":
    main()
