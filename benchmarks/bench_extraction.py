"""EOI activation extraction: our nnsight reader (stops after the last block: no final norm, no
lm_head, only the EOI slices kept) against the paper code's approach, a full
``model(**batch, output_hidden_states=True)`` over every position, sliced afterwards.

    .venv/bin/python benchmarks/bench_extraction.py [--model smollm2-135m] [--repeats 3] [--rss-ns 32 96 192]
    .venv/bin/python benchmarks/bench_extraction.py --breakdown --rss-ns   # where the time goes, no RSS runs
    .venv/bin/python benchmarks/bench_extraction.py --gpu-shape              # needs CUDA (see gpu_shape.py)
    .venv/bin/python benchmarks/bench_extraction.py --gpu-shape --device cpu --tiny --n-prompts 64

Checks that both give the same vectors (exit 1 beyond 1e-4), measures peak RSS of
``extract_activations`` in fresh subprocesses as the number of prompts grows, and prints, last,
``extraction_speedup: <baseline s / ours s>`` measured in this run (per batch: best of N, the methods interleaved).
torch runs on ``--threads`` threads (default 1: the machine is shared).
``--gpu-shape`` instead times our extraction on random-weight Qwen2.5-1.5B and -7B shapes against a
bare forward of the same batches and against the paper code's way, at fixed batch sizes and token
budgets, and prints ``extraction_vs_bare_forward[...]`` and ``speedup_vs_paper_way[...]`` last.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_shape  # noqa: E402  (needs only torch, transformers, nnsight: imported before the rest)

if "--gpu-shape" not in sys.argv:  # the CPU benchmark uses the full environment
    from pika_utils.problems import tasks
    from pika_utils.activations.eoi import ExtractionConfig, NNsightExtractor, eoi_token_count, extract_activations, left_padded_batch
    from pika_utils.activations.batches import length_order
    from pika_utils.models.registry import load_model
    from pika_utils.core.prompts import DIRECT_SUFFIX, chat_prompts

TOLERANCE = 1e-4
RTOL = 1e-5  # relative to the largest activation
PROBLEMS = {"ladder": {"n_per_level": 10}, "gsm8k100": {"limit": 30},
            "mmath": {"subsets": ["math500"], "limit_per_subset": 30}}
#: a larger pool of real problems for the peak-memory runs (up to 240 prompts)
RSS_POOL = {"ladder": {"n_per_level": 20}, "gsm8k100": {"limit": 60},
            "mmath": {"subsets": ["math500"], "limit_per_subset": 60}}


def batches(prompts: Sequence[str], size: int) -> list[list[str]]:
    return [list(prompts[i:i + size]) for i in range(0, len(prompts), size)]


def ours(extractor: NNsightExtractor, prompts: Sequence[str], n_pos: int, size: int) -> torch.Tensor:
    """(N, L+1, n_pos, d): embeddings and every block output at the EOI tokens, via nnsight, in
    batches of similar length as ``extract_activations`` makes them; returned in prompt order."""
    layers = list(range(extractor.n_layers + 1))
    order = length_order(extractor.lm.tokenizer, prompts)
    got = torch.cat([extractor.extract(b, layers, n_pos)["eoi"] for b in batches([prompts[i] for i in order], size)])
    out = torch.empty_like(got)
    out[torch.as_tensor(order)] = got
    return out


def paper_baseline(lm, prompts: Sequence[str], n_pos: int, size: int) -> torch.Tensor:
    """The paper code's way: a full forward (lm_head over every position included) keeping every
    hidden state, then the EOI slices. Same left-padded ids and position ids as ours."""
    out = []
    with torch.inference_mode():
        for b in batches(prompts, size):
            enc = {k: v.to(lm.model.device) for k, v in left_padded_batch(lm.tokenizer, b).items()}
            res = lm.model(**enc, output_hidden_states=True)
            out.append(torch.stack([h[:, -n_pos:, :].float().cpu() for h in res.hidden_states], dim=1))
    return torch.cat(out)


def max_differences(mine: torch.Tensor, ref: torch.Tensor, final_norm: torch.nn.Module) -> tuple[float, float]:
    """Max |ours - reference| over layers 0..L-1, and at layer L after applying the final norm to
    ours (hidden_states[L] is taken after the norm; we read the block output before it)."""
    n_layers = mine.shape[1] - 1
    inner = (mine[:, :n_layers] - ref[:, :n_layers]).abs().max().item()
    with torch.inference_mode():
        last = final_norm(mine[:, n_layers].to(next(final_norm.parameters()).device)).float().cpu()
    return inner, (last - ref[:, n_layers]).abs().max().item()


def best_per_batch(fns: dict[str, Callable[[list[str]], object]], chunks: dict[str, Sequence[list[str]]],
                   repeats: int) -> dict[str, float]:
    """Sum over batches of each method's best time on its i-th batch (each method batches the
    same prompts its own way, in equally many batches). The methods alternate batch by batch
    (order flipped every repeat), so bursts of background load hit both alike."""
    n = len(next(iter(chunks.values())))
    best = {k: [float("inf")] * n for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for i in range(n):
            for name in order:
                t0 = time.perf_counter()
                fns[name](chunks[name][i])
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    return {k: sum(v) for k, v in best.items()}


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """VmHWM of this process. Unlike ru_maxrss it is not inherited from the parent across
    fork+exec (ru_maxrss in a child reported the benchmark parent's 3.8 GiB peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_during(fn: Callable[[], object]) -> tuple[object, float | None]:
    """fn's result and this process's peak RSS while it ran (None where it cannot be reset)."""
    ok = reset_peak_rss()
    out = fn()
    return out, (peak_rss_mib() if ok else None)


# ------------------------------------------------------------------------------------------
# Peak memory as the number of prompts grows (each size in a fresh process)


def rss_child(model: str, n: int, batch_size: int) -> None:
    """Run extract_activations on the first n problems of a seeded shuffle whose longest prompt
    is moved to the front (so every n has the same widest batch: growth then means accumulation,
    not a longer prompt); print peak RSS as JSON."""
    lm = load_model(model, source="offline")
    pool = tasks.load_problems(RSS_POOL).sample(frac=1.0, random_state=0).reset_index(drop=True)
    if n > len(pool):
        raise SystemExit(f"--rss-child {n}: only {len(pool)} problems in the pool; use n <= {len(pool)}")
    prompts = chat_prompts(lm.tokenizer, pool["question"].tolist(), DIRECT_SUFFIX)
    widths = [len(x) for x in lm.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(widths)), key=widths.__getitem__)
    problems = pool.iloc[[longest] + [i for i in range(len(pool)) if i != longest][: n - 1]]
    rss_loaded = peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        run = lambda: extract_activations(problems, lm, prompt_suffix=DIRECT_SUFFIX,  # noqa: E731
                                          cfg=ExtractionConfig(batch_size=batch_size), out_root=tmp, progress=False)
        acts, during = peak_during(run)
        shape = list(acts.meta["shape"])
    print(json.dumps({"n": n, "peak_rss_mib": peak_rss_mib() if during is None else max(rss_loaded, during),
                      "peak_during_extraction_mib": during, "rss_after_load_mib": rss_loaded,
                      "rss_after_trim_mib": rss_after_trim_mib(),
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "max_tokens": max(widths[i] for i in problems.index), "shape": shape}))


def rss_after_trim_mib() -> float | None:
    """Current RSS after glibc gives its free lists back (None off glibc): what is really live,
    as opposed to heap that the allocator keeps for reuse."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def rss_by_n(model: str, ns: Sequence[int], batch_size: int) -> dict[int, dict]:
    out = {}
    for n in ns:
        cmd = [sys.executable, os.path.abspath(__file__), "--model", model, "--batch", str(batch_size),
               "--rss-child", str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"peak-memory child for n={n} failed:\n{res.stderr[-3000:]}")
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ------------------------------------------------------------------------------------------


def breakdown(lm, extractor: NNsightExtractor, prompts: list[str], n_pos: int, size: int, repeats: int) -> None:
    """Where the time goes: the decoder stack alone (what ours cannot beat without changing the
    batches), the full forward without hidden states, and ours on length-sorted batches."""
    def run(full: bool) -> Callable[[list[str]], object]:
        def fn(chunk: list[str]) -> None:
            with torch.inference_mode():
                (lm.model if full else lm.model.model)(**left_padded_batch(lm.tokenizer, chunk))
        return fn

    chunks = batches(prompts, size)
    layers = list(range(extractor.n_layers + 1))
    t = best_per_batch({"bare": run(False), "full": run(True),
                        "ours": lambda c: extractor.extract(c, layers, n_pos)},
                       {"bare": chunks, "full": chunks, "ours": chunks}, repeats)
    srt = batches([prompts[i] for i in length_order(lm.tokenizer, prompts)], size)
    t_sorted = best_per_batch({"ours_sorted": lambda c: extractor.extract(c, layers, n_pos)}, {"ours_sorted": srt}, repeats)
    real = sum(len(x) for x in lm.tokenizer(prompts, add_special_tokens=False)["input_ids"])
    padded = lambda cs: sum(left_padded_batch(lm.tokenizer, c)["input_ids"].numel() for c in cs)  # noqa: E731
    print(f"breakdown_bare_decoder_stack_s: {t['bare']:.3f}")
    print(f"breakdown_full_forward_no_hidden_states_s: {t['full']:.3f}")
    print(f"breakdown_ours_s: {t['ours']:.3f}")
    print(f"breakdown_ours_length_sorted_batches_s: {t_sorted['ours_sorted']:.3f}")
    print(f"breakdown_padded_over_real_tokens: {padded(chunks) / real:.3f} (length-sorted: {padded(srt) / real:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-ns", type=int, nargs="*", default=[32, 96, 192],
                    help="prompt counts for the peak-memory runs (none: skip them)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--breakdown", action="store_true", help="also time the bare decoder stack and sorted batches")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--gpu-shape", action="store_true",
                    help="random Qwen2.5-1.5B/7B shapes: ours vs a bare forward and vs the paper's way")
    gpu_shape.add_arguments(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.gpu_shape:
        return gpu_shape.run(args)
    if args.rss_child is not None:
        return rss_child(args.model, args.rss_child, args.batch)

    problems = tasks.load_problems(PROBLEMS)
    lm = load_model(args.model, source="offline")
    prompts = chat_prompts(lm.tokenizer, problems["question"].tolist(), DIRECT_SUFFIX)
    n_pos = eoi_token_count(lm.tokenizer, DIRECT_SUFFIX)
    extractor = NNsightExtractor(lm)
    layers = list(range(extractor.n_layers + 1))

    # one untimed pass each: the equality check, the warm-up, and each method's peak memory
    ref, rss_paper = peak_during(lambda: paper_baseline(lm, prompts, n_pos, args.batch))
    mine, rss_ours = peak_during(lambda: ours(extractor, prompts, n_pos, args.batch))
    inner, last = max_differences(mine, ref, lm.model.model.norm)
    print(f"model: {args.model}, prompts: {len(prompts)}, batch: {args.batch}, layers: {mine.shape[1]}, "
          f"eoi positions: {n_pos}, threads: {torch.get_num_threads()}")
    print(f"max_abs_diff_layers_0_to_L-1: {inner:.3g}")
    print(f"max_abs_diff_layer_L_after_norm: {last:.3g}")
    # ours batches prompts by length, so padding (and float summation order) differs from the
    # baseline's batches: compare with a tolerance relative to the activations' scale
    scale = float(ref.abs().max())
    tol = TOLERANCE + RTOL * scale
    print(f"largest_abs_activation: {scale:.3g}, tolerance: {tol:.3g}")
    if not (inner <= tol and last <= tol):
        raise SystemExit(f"FAIL: our activations differ from output_hidden_states by {max(inner, last):.3g} "
                         f"(> {tol:.3g}); the speedup would be meaningless")
    if rss_paper is not None and rss_ours is not None:
        print(f"peak_rss_mib_during_paper_baseline: {rss_paper:.0f}")
        print(f"peak_rss_mib_during_ours: {rss_ours:.0f}")

    by_length = [prompts[i] for i in length_order(lm.tokenizer, prompts)]
    best = best_per_batch({"paper": lambda c: paper_baseline(lm, c, n_pos, args.batch),
                           "ours": lambda c: extractor.extract(c, layers, n_pos)},
                          {"paper": batches(prompts, args.batch), "ours": batches(by_length, args.batch)},
                          args.repeats)
    print(f"paper_baseline_s: {best['paper']:.3f}")
    print(f"ours_s: {best['ours']:.3f}")
    if args.breakdown:
        breakdown(lm, extractor, prompts, n_pos, args.batch, args.repeats)

    if args.rss_ns:
        rss = rss_by_n(args.model, args.rss_ns, args.batch)
        for n, r in rss.items():
            print(f"peak_rss_mib[n={n}]: {r['peak_rss_mib']:.0f} (after model load {r['rss_after_load_mib']:.0f}, "
                  f"live after extraction and malloc_trim {r['rss_after_trim_mib'] or float('nan'):.0f}, "
                  f"longest prompt {r['max_tokens']} tokens)")
        lo, hi = min(rss), max(rss)
        print(f"extraction_peak_rss_growth: {rss[hi]['peak_rss_mib'] / rss[lo]['peak_rss_mib']:.3f}")
    print(f"extraction_speedup: {best['paper'] / best['ours']:.2f}")


if __name__ == "__main__":
    main()
