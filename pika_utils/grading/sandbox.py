"""Run untrusted Python in a sandbox that holds by the operating system.

Each run is ``python -I -S`` (isolated, standard library only) started by bubblewrap (``bwrap``,
the maintained tool Flatpak uses) in its own user, mount, PID, network, IPC, UTS and cgroup
namespaces:

- **files**: a read-only root holding only ``/usr`` and the Python installation, read-only, a fresh
  read-only ``/proc`` of its own PID namespace, a minimal read-only ``/dev`` (no ``/dev/shm``), and
  a small ``/tmp`` capped in bytes and inodes (its working folder and the only writable place;
  read-only where no capped tmpfs can be mounted). No home, no project, no ``/etc``, no data
  sets. Every tmpfs is capped: see ``sandbox_mounts``;
- **network**: its own namespace, with no device but a downed loopback;
- **processes**: a seccomp filter refuses fork, vfork, clone without ``CLONE_THREAD``, ptrace,
  namespaces, mounts and sockets; threads stay possible, bounded by the address-space limit. It
  also refuses the memory a program could hold outside its address space and its files: System V
  shared memory, queues and semaphores, POSIX queues, memfd, extended attributes (kernel memory
  on a tmpfs), file watches (inotify, fanotify) and ``fallocate`` (which can reserve disk or
  tmpfs past the file-size limit). The whole tree is killed at the wall-clock deadline (and
  dies with its parent);
- **identity**: uid 65534 inside, no capabilities, an empty environment, a new session;
- **limits** (set before the program is read): CPU seconds, address space, file size, open files.

Where bubblewrap or the seccomp filter is not available (no ``bwrap``, a kernel without user
namespaces, an architecture without a filter here), :func:`available` says why and every run
raises :class:`SandboxUnavailable`: code is never run without the sandbox.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from . import sandbox_mounts

#: Verdicts a run can end with; every one but "pass" is a failure.
REASONS = ("pass", "syntax_error", "assertion", "exception", "timeout", "memory", "forbidden",
           "exit_before_tests", "output_limit", "crash")

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
                "bubblewrap; it needs unprivileged user namespaces, or root)")


class SandboxUnavailable(RuntimeError):
    """No operating-system sandbox here: code is not run, and nothing is graded."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. ``wall_s`` kills the whole tree; ``cpu_s`` is the kernel's CPU
    limit; ``memory_mb`` the address space; ``file_mb`` the largest file (stdout included), and a
    quarter of its /tmp (which also holds at most ``sandbox_mounts.TMP_INODES`` inodes);
    ``nofile`` open files; ``max_output`` the bytes of stdout/stderr read back."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 4
    nofile: int = 64
    max_output: int = 1 << 20


@dataclass
class Run:
    """What came back from one sandboxed process: its answer on stdout and how it ended."""

    returncode: int | None
    timed_out: bool
    stdout: bytes
    stderr: str
    seconds: float


@dataclass
class SandboxResult:
    """A run's verdict: ``status`` (one of REASONS), its detail, and the harness's answer."""

    status: str
    detail: str
    returncode: int | None
    seconds: float
    stdout: str  # what the program printed (its stderr stream: stdout carries the answer)
    answer: dict | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def read_answer(run: Run, limits: Limits) -> SandboxResult:
    """Decide how a run ended. Only a whole, well-formed answer on stdout counts; a process killed,
    cut or exited early fails closed with the most specific reason."""
    printed = run.stderr
    base = dict(returncode=run.returncode, seconds=run.seconds, stdout=printed)
    if run.timed_out:
        return SandboxResult("timeout", f"killed at the {limits.wall_s:g} s wall-clock limit", **base)
    if len(run.stdout) > limits.max_output:
        return SandboxResult("output_limit", f"answer longer than {limits.max_output} bytes", **base)
    try:
        answer = json.loads(run.stdout.decode("utf-8")) if run.stdout else None
    except (UnicodeDecodeError, ValueError):
        answer = False
    if isinstance(answer, dict) and isinstance(answer.get("status"), str):
        status, detail = answer["status"], str(answer.get("detail", ""))[:500]
        if status in ("ok", "pass") and run.returncode != 0:
            return SandboxResult("crash", f"exit code {run.returncode} after answering", **base)
        if status not in (*REASONS, "ok", "checker_error"):
            return SandboxResult("crash", f"unknown status {status!r}", **base)
        return SandboxResult(status, detail, answer=answer, **base)
    rc = run.returncode
    sig = -rc if rc is not None and rc < 0 else rc - 128 if rc is not None and rc > 128 else None
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return SandboxResult("timeout", f"killed by {signal.Signals(sig).name} (CPU limit {limits.cpu_s} s)", **base)
    if sig == signal.SIGXFSZ:
        return SandboxResult("output_limit", "killed by SIGXFSZ (file size limit)", **base)
    if answer is False:
        return SandboxResult("crash", "the answer on stdout is not the harness's (something else wrote there)", **base)
    if rc == 0:
        return SandboxResult("exit_before_tests", "the process exited 0 before answering", **base)
    if sig:
        return SandboxResult("crash", f"killed by signal {sig}", **base)
    return SandboxResult("exit_before_tests", f"the process exited with code {rc} before answering", **base)


# ---------------------------------------------------------------------------- seccomp

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# The refused system calls' numbers per architecture (None: absent there). The last lines of each:
# memory held outside the address space and the files (System V shared memory, queues and
# semaphores, POSIX queues, memfd, extended attributes), fallocate, and file watches (each pins
# an inode of the bound trees and about 1 KB of kernel memory).
_SYSCALLS = {
    "x86_64": dict(fork=57, vfork=58, clone=56, clone3=435, ptrace=101, mount=165, umount2=166, unshare=272,
                   setns=308, bpf=321, perf_event_open=298, keyctl=250, add_key=248, request_key=249,
                   userfaultfd=323, io_uring_setup=425, pivot_root=155, chroot=161, socket=41,
                   kexec_load=246, init_module=175, finit_module=313, process_vm_readv=310,
                   process_vm_writev=311,
                   shmget=29, shmat=30, msgget=68, semget=64, mq_open=240, memfd_create=319, memfd_secret=447,
                   setxattr=188, lsetxattr=189, fsetxattr=190, setxattrat=463, fallocate=285,
                   inotify_init=253, inotify_init1=294, fanotify_init=300),
    "aarch64": dict(fork=None, vfork=None, clone=220, clone3=435, ptrace=117, mount=40, umount2=39,
                    unshare=97, setns=268, bpf=280, perf_event_open=241, keyctl=219, add_key=217,
                    request_key=218, userfaultfd=282, io_uring_setup=425, pivot_root=41, chroot=51,
                    socket=198, kexec_load=104, init_module=105, finit_module=273, process_vm_readv=270,
                    process_vm_writev=271,
                    shmget=194, shmat=196, msgget=186, semget=190, mq_open=180, memfd_create=279, memfd_secret=447,
                    setxattr=5, lsetxattr=6, fsetxattr=7, setxattrat=463, fallocate=47,
                    inotify_init=None, inotify_init1=26, fanotify_init=262),
}
_CLONE_THREAD = 0x00010000
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS, _EOPNOTSUPP = 1, 38, 95
#: fallocate says "not supported", so glibc's posix_fallocate falls back to writing (file-size limit).
_ERRNO = {"fallocate": _EOPNOTSUPP}


def seccomp_filter(machine: str | None = None) -> bytes:
    """The classic-BPF program bwrap loads: foreign ABIs killed, new processes, namespaces, mounts,
    tracing, sockets and memory outside the limits refused with EPERM (fallocate with EOPNOTSUPP),
    clone3 with ENOSYS (so libc falls back to clone, whose flags can be read: a thread is allowed,
    a process is not)."""
    machine = machine or platform.machine()
    if machine not in _SYSCALLS:
        raise SandboxUnavailable(f"no seccomp filter for the {machine} architecture")
    nr = _SYSCALLS[machine]

    def ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    prog = [ins(LD, 4), ins(JEQ, _AUDIT_ARCH[machine], 1, 0), ins(RET, _RET_KILL), ins(LD, 0)]
    if machine == "x86_64":  # the x32 ABI's numbers
        prog += [ins(JGE, 0x40000000, 0, 1), ins(RET, _RET_KILL)]
    for name, n in nr.items():
        if n is None or name in ("clone", "clone3"):
            continue
        prog += [ins(JEQ, n, 0, 1), ins(RET, _RET_ERRNO | _ERRNO.get(name, _EPERM))]
    prog += [ins(JEQ, nr["clone3"], 0, 1), ins(RET, _RET_ERRNO | _ENOSYS),
             ins(JEQ, nr["clone"], 0, 3), ins(LD, 16), ins(JSET, _CLONE_THREAD, 1, 0),
             ins(RET, _RET_ERRNO | _EPERM), ins(RET, _RET_ALLOW)]
    return b"".join(prog)


# ---------------------------------------------------------------------------- the command

def python_home() -> tuple[str, str]:
    """The interpreter and the installation folder the sandbox binds read-only (the base
    installation, not a virtual environment: the program gets the standard library only)."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def bwrap_command(limits: Limits, seccomp_fd: int, capped_tmp: str | None = None,
                  status_fd: int | None = None) -> list[str]:
    """bubblewrap's command line. ``capped_tmp``: the capped tmpfs to bind on /tmp, mounted by the
    ``sandbox_mounts.capped_tmp_wrapper`` this command runs under (None: /tmp is read-only).
    ``status_fd``: where bubblewrap writes the child's pid once the sandbox has started (the
    program cannot reach it), so an error the program prints is never taken for bubblewrap's."""
    exe, home = python_home()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
    return [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONHASHSEED", "0", "--setenv", "HOME", "/tmp",
            *sandbox_mounts.filesystem_args(home, capped_tmp), "--chdir", "/tmp", "--seccomp", str(seccomp_fd),
            *(["--json-status-fd", str(status_fd)] if status_fd is not None else []),
            "--", exe, "-I", "-S", "-c", _harness_source()]


@lru_cache(maxsize=1)
def _harness_source() -> str:
    return (Path(__file__).with_name("harness.py")).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- running

def _read_capped(path: str, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n + 1)
    except OSError:
        return b""


def run_raw(request: dict, limits: Limits = Limits()) -> Run:
    """Run the harness in the sandbox with ``request`` (its mode and data) on stdin. Never raises
    for anything the program does; raises :class:`SandboxUnavailable` where there is no sandbox."""
    request = {**request, "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
               "nofile": limits.nofile}
    private = tempfile.mkdtemp(prefix="pika-sbx-")  # stdout, stderr, the filter: 0700, outside the sandbox
    t0 = time.perf_counter()
    try:
        os.chmod(private, 0o700)
        filter_path = os.path.join(private, "seccomp.bpf")
        Path(filter_path).write_bytes(seccomp_filter())
        out_path, err_path = os.path.join(private, "stdout"), os.path.join(private, "stderr")
        status_r, status_w = os.pipe()  # bubblewrap says there once the sandbox has started
        with open(out_path, "wb") as out, open(err_path, "wb") as err, open(filter_path, "rb") as filt, \
                open(status_r, "rb", buffering=0) as status:
            try:
                capped_tmp = None
                if sandbox_mounts.capped_tmp_supported():
                    capped_tmp = os.path.join(private, "tmp")
                    os.mkdir(capped_tmp, 0o700)
                cmd = bwrap_command(limits, filt.fileno(), capped_tmp, status_fd=status_w)
                if capped_tmp:
                    cmd = [*sandbox_mounts.capped_tmp_wrapper(capped_tmp, limits.file_mb), *cmd]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env={},
                                        pass_fds=(filt.fileno(), status_w), start_new_session=True, close_fds=True)
            finally:
                os.close(status_w)
            timed_out = False
            try:
                proc.stdin.write(json.dumps(request).encode())
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # bwrap and, with it, its whole namespace
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            os.set_blocking(status.fileno(), False)
            started = b'"child-pid"' in (status.read(4096) or b"")
        stderr = _read_capped(err_path, 4096).decode("utf-8", "replace")
        # bubblewrap's own error, not one the program printed: the program never ran
        if not started and proc.returncode not in (0, None) and not timed_out:
            raise SandboxUnavailable(f"bubblewrap could not start the sandbox: {stderr.strip()[:300]}. "
                                     f"{INSTALL_HINT}")
        return Run(proc.returncode, timed_out, _read_capped(out_path, limits.max_output), stderr,
                   time.perf_counter() - t0)
    finally:
        shutil.rmtree(private, ignore_errors=True)


@lru_cache(maxsize=1)
def _probe() -> str | None:
    try:
        r = run_raw({"mode": "check", "tests": "assert 1 + 1 == 2\n", "entry_point": "f", "calls": [],
                     "results": []}, Limits(wall_s=20))
    except SandboxUnavailable as e:
        return str(e)
    try:
        if json.loads(r.stdout)["status"] == "pass":
            return None
    except ValueError:
        pass
    return f"the sandbox started but did not answer (exit {r.returncode}): {r.stderr.strip()[:300]}"


def bwrap_version() -> str:
    """bubblewrap's version, for the record of how programs were run."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "absent"
    out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().split()[-1] if out.returncode == 0 and out.stdout.strip() else "unknown"


def available() -> str | None:
    """None where code can be run here in the sandbox; otherwise why not (checked once, for real)."""
    return _probe()


def require() -> None:
    """Refuse, before any generation or grading, where there is no sandbox."""
    why = available()
    if why:
        raise SandboxUnavailable(f"code problems cannot be graded here: {why}")


def run_program(program: str, limits: Limits = Limits(), stdin: str = "") -> SandboxResult:
    """Run ``program`` as a script once (``stdin`` as its input) and say how it ended: "pass" when
    it ran to its end, else why not. For trying things by hand; grading goes through ``code``."""
    result = read_answer(run_raw({"mode": "stdio", "program": program, "inputs": [stdin]}, limits), limits)
    if result.status == "pass":
        result.status, result.detail = "crash", "a forged answer (the program wrote its own verdict)"
    if result.status == "forbidden" and isinstance(result.answer, dict) and isinstance(result.answer.get("results"), list):
        result.stdout = "".join(str(c.get("printed", "")) for c in result.answer["results"] if isinstance(c, dict)) + result.stdout
    if result.status != "ok":
        return result
    try:
        (case,) = result.answer["results"]
        assert isinstance(case["printed"], str)
    except (KeyError, TypeError, ValueError, AssertionError):
        result.status, result.detail = "crash", "a malformed answer"
        return result
    result.stdout = case["printed"] + result.stdout
    if case["error"]:
        status = "memory" if case["error"].startswith("MemoryError") else "exception"
        result.status, result.detail = status, case["error"]
    else:
        result.status, result.detail = "pass", ""
    return result


def default_workers() -> int:
    """Parallel runs: the cores this process may use (each run is one single-threaded process)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many_raw(requests: Sequence[dict], limits: Limits = Limits(), workers: int | None = None,
                 progress: bool = False, desc: str = "sandbox") -> list[Run]:
    """Run many requests, at most ``workers`` at a time (default: the machine's cores), in order."""
    if not requests:
        return []
    require()
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=min(workers, len(requests))) as pool:
        it = pool.map(lambda r: run_raw(r, limits), requests)
        from ..core.store import show_progress

        if show_progress(progress):
            from tqdm import tqdm
            it = tqdm(it, total=len(requests), desc=desc, unit="program")
        return list(it)
