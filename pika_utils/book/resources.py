"""What a chapter costs the machine: the peak resident memory of everything it ran (the kernel and
the processes it started, such as grading workers), sampled while it runs, and what the machine has
free (memory, disk) for the preflight to compare with.

Why sampled rather than read from ``getrusage``: the kernel is papermill's child, and a child's
``ru_maxrss`` only reaches us as the maximum over *all* children that ever ended, so a chapter that
peaks lower than an earlier one would show the earlier one's figure. Summing the resident set of the
process tree every fraction of a second gives each chapter its own peak (it may miss a spike shorter
than the interval, and it counts pages two processes share twice: an upper bound in that respect).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

MIB = 1024 ** 2
GIB = 1024 ** 3


def tree_rss(pid: int | None = None) -> int:
    """Resident bytes of ``pid``'s descendants (not ``pid`` itself): the kernels and workers a
    chapter started. 0 where nothing runs."""
    import psutil

    try:
        children = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for c in children:
        try:
            total += c.memory_info().rss
        except psutil.Error:  # ended between the listing and the read
            pass
    return total


class PeakMemory:
    """A context manager that samples ``tree_rss`` every ``interval`` seconds in a thread and keeps
    the largest value in ``peak_bytes``::

        with PeakMemory() as mem:
            papermill.execute_notebook(...)
        mem.peak_bytes
    """

    def __init__(self, interval: float = 0.25, pid: int | None = None) -> None:
        self.interval = interval
        self.pid = pid
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._run, name="pika-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GIB


def available_memory() -> int:
    """Bytes of memory the machine can give a new process without swapping (MemAvailable)."""
    import psutil

    return int(psutil.virtual_memory().available)


def existing_parent(path: Path) -> Path:
    """``path`` itself, or its nearest parent that exists (a folder not yet made lives there)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    return int(shutil.disk_usage(existing_parent(path)).free)
