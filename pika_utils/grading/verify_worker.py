"""The math-verify worker: one long-lived subprocess that compares answers symbolically under a
hard deadline. math-verify's own timeouts use ``signal.alarm``, which fails outside the main
thread, so it runs in a process of its own; definitive verdicts are remembered."""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path


_REPO_ROOT = Path(__file__).resolve().parents[2]
_STARTUP_S = 120.0  # first import of sympy on a cold, busy 2-core machine
_GRACE_S = 0.5  # lets the worker's own soft timeout win before the hard kill


def _worker_main() -> None:
    """Serve comparisons line by line on stdin/stdout (JSON). Runs in the worker's main thread,
    so math-verify's signal-based timeouts work there as a soft limit."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything sympy prints goes to stderr, never into the protocol
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def parsed(s: str, soft: int) -> list:
        latex = s if any(t in s for t in ("$", "\\(", "\\[", "\\boxed")) else f"${s}$"
        try:
            return parse(latex, extraction_config=config, parsing_timeout=soft, raise_on_error=True)
        except Exception:  # noqa: BLE001 - an unparseable string is an answer, not a crash
            return []

    def compare(req: dict) -> str:
        soft = req["soft"]
        try:
            gold = parsed(req["gold"], soft)
            if not gold:
                return "unparseable_gold"
            pred = parsed(req["pred"], soft)
            if not pred:
                return "unparseable_answer"
            pairs = [(gold, pred), (pred, gold)] if req["symmetric"] else [(gold, pred)]
            for g, p in pairs:
                try:
                    if verify(g, p, timeout_seconds=soft, raise_on_error=True):
                        return "match"
                except Exception:  # noqa: BLE001 - sympy errors mean "not shown equal"
                    continue
            # only the raw-string fallback came back: the text was not read as mathematics
            if all(isinstance(x, str) for x in gold):
                return "unparseable_gold"
            return "unparseable_answer" if all(isinstance(x, str) for x in pred) else "mismatch"
        except TimeoutException:
            return "timeout"

    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a notebook interrupt is for the kernel; we end with stdin
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        proto.write(json.dumps({"status": compare(json.loads(line))}) + "\n")


class _Worker:
    """A math-verify subprocess shared by all threads; killed and restarted when it overruns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = -1
        self._buf = b""
        self.requests = 0  # how many comparisons reached math-verify (the fast path skips it)
        self.restarts = 0

    def _readline(self, deadline: float) -> str | None:
        """One protocol line, or None when the deadline passes or the worker has died."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def _start(self) -> None:
        paths = [str(_REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        boot = "from pika_utils.grading.verify_worker import _worker_main; _worker_main()"
        self._proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
        self._owner_pid, self._buf = os.getpid(), b""
        if self._readline(time.monotonic() + _STARTUP_S) is None:
            self.stop()
            raise RuntimeError(f"the math-verify grading worker did not start ({sys.executable}); "
                               "check that `python -c 'import math_verify'` works in this environment")

    def stop(self) -> None:
        if self._proc is not None and self._owner_pid == os.getpid():
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def compare(self, gold: str, pred: str, timeout_s: float, *, symmetric: bool,
                soft_timeout_s: float | None = None) -> str:
        """math-verify's verdict on two cleaned answers, or "timeout" past ``timeout_s`` seconds."""
        request = {"gold": gold, "pred": pred, "symmetric": symmetric,
                   "soft": max(1, math.ceil(soft_timeout_s if soft_timeout_s is not None else timeout_s))}
        with self._lock:
            if self._proc is None or self._owner_pid != os.getpid() or self._proc.poll() is not None:
                if self._owner_pid != os.getpid():
                    self._proc = None  # inherited through fork: the parent's worker is not ours
                self._start()
            self.requests += 1
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
                line = self._readline(time.monotonic() + timeout_s + _GRACE_S)
            except OSError:  # the worker died between requests (e.g. killed for memory)
                line = None
            if line is None:
                crashed = self._proc.poll() is not None
                self.stop()
                self.restarts += 1
                return "verifier_crashed" if crashed else "timeout"
            return json.loads(line)["status"]


WORKER = _Worker()
atexit.register(WORKER.stop)
_CACHE: OrderedDict[tuple[str, str, bool], str] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 100_000
_DEFINITIVE = {"match", "mismatch", "unparseable_gold", "unparseable_answer"}


def slow_compare(gold: str, pred: str, timeout_s: float, symmetric: bool) -> str:
    """math-verify through the worker, remembering definitive verdicts (never timeouts)."""
    key = (gold, pred, symmetric)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    status = WORKER.compare(gold, pred, timeout_s, symmetric=symmetric)
    if status in _DEFINITIVE:
        with _CACHE_LOCK:
            _CACHE[key] = status
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return status

