"""Torch's CPU threads set to the cores that are actually free: on a small machine where another
process holds a core, two torch threads ran six times slower than one (DESIGN.md)."""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def _busy_idle() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, idle


def free_cores(window_s: float = 0.3) -> int:
    """Cores left idle by every other process over a short window (this process is idle while it
    measures); at least 1. Without /proc, all cores."""
    n = os.cpu_count() or 1
    try:
        b0, i0 = _busy_idle()
        time.sleep(window_s)
        b1, i1 = _busy_idle()
    except OSError:
        return n
    total = (b1 - b0) + (i1 - i0)
    return max(1, min(n, round(n * (i1 - i0) / total))) if total > 0 else n


def set_torch_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, or $PIKA_THREADS, or the free cores now."""
    import torch

    env = os.environ.get("PIKA_THREADS", "").strip()
    n = threads or (int(env) if env.isdigit() and int(env) > 0 else free_cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.info("torch uses %d CPU thread(s)", n)
    return n


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), for every timing the book reports: these
    machines differ by 2-3x, so a time without its CPU cannot be compared."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX): there a large model
    held in bfloat16 needs half the memory at no loss of speed; elsewhere torch emulates it slowly."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
