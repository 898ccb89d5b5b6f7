"""Run untrusted Python (a model's program and its tests) in a separate, limited process.

Never ``exec`` in our own process. Each program runs as ``python -I -S`` (isolated mode, no
site-packages: the standard library only) in a fresh temporary directory, with an empty
environment, and a small bootstrap, given on the command line, that before it runs a line of the
program:

1. sets resource limits (CPU seconds, address space, file size, processes, open files, no core);
2. moves into a new network namespace where the kernel allows it (root, or unprivileged user
   namespaces): the process then has no network device but a downed loopback;
3. drops to the ``nobody`` user when started as root, so files outside its directory, other
   users' processes and ``/proc/<pid>/environ`` are out of reach at the operating-system level;
4. installs an audit hook (``sys.addaudithook``, which cannot be removed) that refuses sockets,
   subprocesses, fork/exec/kill, ctypes, writes and deletions outside the temporary directory,
   and reads of /proc and /sys. Any refused attempt fails the run ("forbidden"), even if the
   program caught the exception.

The program comes in on stdin with a random nonce; the bootstrap writes its verdict, tagged with
the nonce, to a private file descriptor, and "pass" only after the tests ran to the end. So a
``sys.exit(0)`` or ``os._exit(0)`` before the tests, or output that imitates a verdict, cannot pass.
The parent kills the whole process group at the wall-clock deadline. Output is capped by the file
size limit (stdout and stderr are files) and only the first ``max_output`` bytes are read back.

What this does not defend against: a program written to attack this bootstrap from inside the
same interpreter (it could, in principle, find the nonce in memory). The operating-system layers
(limits, namespace, unprivileged user) are there for that case; run real adversarial code in a
container or VM.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

#: Verdicts a run can end with; every one but "pass" is a failure.
REASONS = ("pass", "syntax_error", "assertion", "exception", "timeout", "memory", "forbidden",
           "exit_before_tests", "output_limit", "crash")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. ``wall_s`` kills the process group; ``cpu_s`` is the kernel's
    CPU-time limit; ``memory_mb`` the address space; ``file_mb`` the largest file it may write
    (stdout and stderr included); ``nproc`` processes/threads of its user; ``nofile`` open files."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 1
    nproc: int = 8
    nofile: int = 64
    max_output: int = 4096  # bytes of stdout/stderr kept in the result
    network_namespace: bool = True  # try one; the audit hook refuses sockets regardless
    drop_user: bool | None = None  # when root, run as nobody (65534); None: only where nobody can
    #                                read the standard library (not when Python lives under /root)


@dataclass
class SandboxResult:
    status: str  # one of REASONS
    detail: str  # the exception line, the refused call, the signal...
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    netns: bool | None  # whether the program ran in its own network namespace

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# The bootstrap runs first in the child. It reads {"nonce", "fd", "limits", "program"} from stdin.
# Kept free of f-strings and of anything beyond the standard library, and short: it is the sandbox.
_BOOTSTRAP = r'''
import sys, os, json, resource
_cfg = json.loads(sys.stdin.read()); sys.stdin.close()
_nonce, _fd, _lim = _cfg.pop("nonce"), _cfg.pop("fd"), _cfg.pop("limits")
_program, _root = _cfg.pop("program"), os.path.realpath(os.getcwd())
def _say(status, detail=""):
    try:
        os.write(_fd, (_nonce + " " + json.dumps([status, str(detail)[:500]]) + "\n").encode())
    except OSError:
        pass
def _setlimit(which, soft, hard=None):
    try:
        resource.setrlimit(which, (soft, soft if hard is None else hard))
    except (ValueError, OSError):
        pass
_netns = False
if _lim["network_namespace"]:
    try:
        import ctypes
        _netns = ctypes.CDLL(None, use_errno=True).unshare(0x40000000) == 0  # CLONE_NEWNET
    except Exception:
        _netns = False
if _lim["drop_user"] and os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
_mb = 1024 * 1024
_setlimit(resource.RLIMIT_CPU, _lim["cpu_s"], _lim["cpu_s"] + 1)
_setlimit(resource.RLIMIT_AS, _lim["memory_mb"] * _mb)
_setlimit(resource.RLIMIT_FSIZE, _lim["file_mb"] * _mb)
_setlimit(resource.RLIMIT_NPROC, _lim["nproc"])
_setlimit(resource.RLIMIT_NOFILE, _lim["nofile"])
_setlimit(resource.RLIMIT_CORE, 0)
_say("started", "netns" if _netns else "no-netns")
_violations = []
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_REFUSED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "pty.", "os.kill", "os.killpg", "os.setuid", "ctypes.", "gc.get_referrers",
            "gc.get_objects", "gc.get_referents", "sys.addaudithook", "os.add_dll_directory",
            "_posixsubprocess", "os.startfile", "resource.setrlimit", "resource.prlimit",
            "sys._current_frames", "webbrowser.", "urllib.Request", "http.client.", "ftplib.",
            "smtplib.", "imaplib.", "poplib.", "nntplib.", "telnetlib.", "os.chroot", "os.unshare",
            "os.setns", "syslog.", "mmap.__new__", "os.mkfifo", "os.mknod")
_PATHS_1 = ("os.remove", "os.rmdir", "os.rename", "os.replace", "shutil.rmtree", "shutil.move",
            "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate", "os.mkdir", "os.utime",
            "os.chflags", "os.lchown", "os.setxattr", "os.removexattr", "shutil.copyfile", "shutil.copytree")
def _inside(path):
    if isinstance(path, int):
        return path in (0, 1, 2)
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == _root or p.startswith(_root + os.sep)
def _refuse(event, what):
    _violations.append(event + ": " + what)
    raise PermissionError("sandbox refused " + event + " (" + what + ")")
def _hook(event, args):
    if event.startswith(_REFUSED):
        _refuse(event, repr(args)[:120])
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE)
        if writes and not _inside(path):
            _refuse("open for writing", repr(path))
        if not isinstance(path, int):
            p = os.path.realpath(os.fsdecode(path))
            if p.startswith(("/proc", "/sys")) and not _inside(path):
                _refuse("open", p)
    elif event in _PATHS_1:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                _refuse(event, repr(a))
sys.addaudithook(_hook)
del _cfg
def _main():
    try:
        code = compile(_program, "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        return "syntax_error", type(e).__name__ + ": " + str(e)
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, env)
    except SystemExit as e:
        return "exit_before_tests", "SystemExit(" + repr(e.code) + ") before the tests finished"
    except SyntaxError as e:  # the candidate compiled by a test harness
        return "syntax_error", type(e).__name__ + ": " + str(e)
    except AssertionError as e:
        return "assertion", ("AssertionError: " + str(e)).strip()
    except MemoryError as e:
        return "memory", "MemoryError"
    except RecursionError as e:
        return "exception", "RecursionError: " + str(e)
    except OSError as e:
        if getattr(e, "errno", None) == 27:  # EFBIG: the file size limit (stdout too)
            return "output_limit", "output or file past the size limit"
        return "exception", type(e).__name__ + ": " + str(e)
    except BaseException as e:
        return "exception", type(e).__name__ + ": " + str(e)
    return "pass", ""
_status, _detail = _main()
if _violations:
    _status, _detail = "forbidden", "; ".join(_violations[:3])
_say(_status, _detail)
os._exit(0 if _status == "pass" else 1)
'''


def stdlib_readable_by_others() -> bool:
    """Whether a user other than the owner can read the standard library (every folder above it
    searchable, the folders readable): the condition for dropping to nobody without breaking imports."""
    import math
    import sysconfig

    for folder in {sysconfig.get_paths()["stdlib"], os.path.dirname(os.path.abspath(math.__file__))
                   if hasattr(math, "__file__") else sysconfig.get_paths()["stdlib"]}:
        p = os.path.realpath(folder)
        if not os.stat(p).st_mode & 0o004:
            return False
        while True:
            if not os.stat(p).st_mode & 0o001:
                return False
            if p == os.path.dirname(p):
                break
            p = os.path.dirname(p)
    return True


def _drop_user(limits: Limits) -> bool:
    if os.geteuid() != 0:
        return False
    return stdlib_readable_by_others() if limits.drop_user is None else bool(limits.drop_user)


def network_namespace_available() -> bool:
    """Whether a child here can enter a new network namespace (checked by really doing it)."""
    r = run_program("import socket\n", Limits(wall_s=10, drop_user=False))
    return bool(r.netns)


def _read_capped(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(n + 1)
    except OSError:
        return ""
    text = data[:n].decode("utf-8", "replace")
    return text + ("\n[... output cut]" if len(data) > n else "")


def run_program(program: str, limits: Limits = Limits(), python: str | None = None) -> SandboxResult:
    """Run ``program`` (a Python source text: the candidate followed by its tests) in the sandbox
    and return its verdict. Never raises for anything the program does."""
    nonce = secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="pika-sbx-")  # the program's cwd (its only writable place)
    private = tempfile.mkdtemp(prefix="pika-sbx-io-")  # outputs and verdict, 0700: not reachable by path
    t0 = time.perf_counter()
    try:
        drop = _drop_user(limits)
        if drop:
            os.chown(work, 65534, 65534)
        os.chmod(work, 0o700)
        out_path, err_path, verdict_path = (os.path.join(private, n) for n in ("stdout", "stderr", "verdict"))
        with open(out_path, "wb") as out, open(err_path, "wb") as err, open(verdict_path, "wb") as verdict:
            fd = verdict.fileno()
            payload = json.dumps({"nonce": nonce, "fd": fd, "limits": {**asdict(limits), "drop_user": drop}, "program": program})
            proc = subprocess.Popen(
                [python or sys.executable, "-I", "-S", "-c", _BOOTSTRAP], stdin=subprocess.PIPE, stdout=out,
                stderr=err, cwd=work, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, pass_fds=(fd,),
                start_new_session=True, close_fds=True)
            timed_out = False
            try:
                proc.stdin.write(payload.encode())
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole session, whatever it started
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        seconds = time.perf_counter() - t0
        said = []
        with open(verdict_path, "rb") as f:
            for line in f.read(1 << 20).decode("utf-8", "replace").splitlines():
                if line.startswith(nonce + " "):
                    try:
                        said.append(json.loads(line[len(nonce) + 1:]))
                    except ValueError:
                        pass
        netns = None
        if said and said[0][0] == "started":
            netns = said[0][1] == "netns"
            said = said[1:]
        status, detail = _verdict(said, proc.returncode, timed_out, limits)
        return SandboxResult(status, detail, proc.returncode, seconds, _read_capped(out_path, limits.max_output),
                             _read_capped(err_path, limits.max_output), netns)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


def _verdict(said: list, returncode: int | None, timed_out: bool, limits: Limits) -> tuple[str, str]:
    """Decide a run's status: only the bootstrap's own "pass" after the tests, with exit code 0,
    is a pass; everything else fails closed with the most specific reason available."""
    if timed_out:
        return "timeout", f"killed at the {limits.wall_s:g} s wall-clock limit"
    if said:
        status, detail = said[-1]
        if status == "pass" and returncode != 0:
            return "crash", f"exit code {returncode} after the tests"
        return (status, detail) if status in REASONS else ("crash", f"unknown verdict {status!r}")
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout", f"killed by {signal.Signals(sig).name} (CPU limit {limits.cpu_s} s)"
        if sig == signal.SIGXFSZ:
            return "output_limit", "killed by SIGXFSZ (file size limit)"
        return "crash", f"killed by {signal.Signals(sig).name}"
    if returncode == 0:
        return "exit_before_tests", "the process exited 0 before the tests reported"
    return "exit_before_tests", f"the process exited with code {returncode} before the tests reported"


def default_workers() -> int:
    """Parallel runs: the cores this process may use (each run is one single-threaded process)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(programs: Sequence[str], limits: Limits = Limits(), workers: int | None = None,
             progress: bool = False) -> list[SandboxResult]:
    """Run many programs, at most ``workers`` at a time (default: the machine's cores), in order."""
    workers = workers or default_workers()
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
        it = pool.map(lambda p: run_program(p, limits), programs)
        from ..core.store import show_progress

        if show_progress(progress):
            from tqdm import tqdm
            it = tqdm(it, total=len(programs), desc="sandbox", unit="program")
        return list(it)
