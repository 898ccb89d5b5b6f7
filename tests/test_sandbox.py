"""The sandbox, for real: bubblewrap namespaces, a seccomp filter and resource limits hold each
hostile program by the operating system; the grader never lets the program near the expected
outputs, so none can be talked into a pass; the 164 HumanEval reference solutions pass.

The hostile programs below are written from the descriptions of attacks that harmed the host or
passed without solving the problem under the earlier, interpreter-level sandbox."""
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from pika_utils.grading import code as code_grading
from pika_utils.grading import harness, sandbox, sandbox_mounts

FAST = sandbox.Limits(wall_s=3.0, cpu_s=2, memory_mb=256, file_mb=1)
HE0 = "humaneval-000"  # has_close_elements(numbers, threshold) -> bool
RIGHT = ("def has_close_elements(numbers, threshold):\n"
         "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")


@pytest.fixture(scope="module")
def he0():
    from pika_utils.problems import tasks

    problems = tasks.load_problems({"humaneval": {}})
    return problems[problems["problem_id"] == HE0].reset_index(drop=True)


def grade(problems, *programs, limits=FAST):
    return code_grading.grade_codes([f"```python\n{p}\n```" for p in programs], problems,
                                    [problems["problem_id"].iloc[0]] * len(programs), limits=limits, workers=2)


def run(program: str, limits: sandbox.Limits = FAST) -> sandbox.SandboxResult:
    r = sandbox.run_program(program, limits)
    assert r.status in sandbox.REASONS and r.passed == (r.status == "pass")
    return r


# ------------------------------------------------------------------ verdicts

def test_right_wrong_and_broken_programs_get_their_reasons(he0):
    wrong = RIGHT.replace("< threshold", "> threshold")
    grades = grade(he0, RIGHT, wrong, "def has_close_elements(:\n", "import sys\nsys.exit(0)\n" + RIGHT,
                   "def has_close_elements(n, t):\n    return n[99]\n")
    assert [(g.correct, g.reason) for g in grades] == [
        (True, "pass"), (False, "assertion"), (False, "syntax_error"), (False, "exit_before_tests"),
        (False, "exception")]
    assert "IndexError" in grades[4].detail


def test_infinite_loop_and_sleep_are_killed(he0):
    (g,) = grade(he0, "def has_close_elements(n, t):\n    while True:\n        pass\n")
    assert g.reason == "timeout" and not g.correct
    r = run("import time\ntime.sleep(60)\n")
    assert r.status == "timeout" and "wall-clock" in r.detail


def test_memory_bombs():
    assert run("x = bytearray(10**10)\n").status == "memory"
    assert run("chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)\n").status == "memory"


def test_output_flooding_is_cut(he0):
    r = run("while True:\n    print('x' * 100_000)\n")
    assert not r.passed and len(r.stdout) <= 200_000
    (g,) = grade(he0, "import sys\ndef has_close_elements(n, t):\n    while True:\n        sys.stderr.write('x' * 100_000)\n")
    assert not g.correct


def test_many_programs_run_in_parallel_in_order(he0):
    programs = [RIGHT if i % 2 else RIGHT.replace("<", ">") for i in range(6)]
    assert [g.correct for g in grade(he0, *programs)] == [i % 2 == 1 for i in range(6)]


#: HumanEval problems whose tests do something other than compare one call with a constant:
#: helpers from the prompt (032 find_zero checks a root with ``poly``; 038 decodes what its own
#: encoder made from unseeded random strings), tolerances, a call repeated in an assert's message
#: (077), and loops over generated inputs (053).
HARD_TESTS = ["humaneval-000", "humaneval-002", "humaneval-032", "humaneval-033", "humaneval-038",
              "humaneval-050", "humaneval-053", "humaneval-077", "humaneval-099", "humaneval-145",
              "humaneval-151", "humaneval-163"]


def test_humaneval_reference_solutions_with_unusual_tests_pass():
    """The positive case on the tests most likely to trip the record-run-check grader."""
    from pika_utils.problems import tasks

    problems = tasks.load_problems({"humaneval": {}})
    checked = code_grading.reference_check(problems[problems["problem_id"].isin(HARD_TESTS)], workers=2)
    assert sorted(checked["problem_id"]) == HARD_TESTS
    assert checked["correct"].all(), checked[~checked["correct"]].to_dict("records")[:3]


@pytest.mark.slow
def test_every_humaneval_reference_solution_passes():
    """The positive case: all 164 canonical solutions pass (recorded, run, checked; 2 workers)."""
    from pika_utils.problems import tasks

    problems = tasks.load_problems({"humaneval": {}})
    checked = code_grading.reference_check(problems, workers=2)
    assert len(checked) == 164
    assert checked["correct"].all(), checked[~checked["correct"]].to_dict("records")[:3]


# ------------------------------------------------------------------ the operating system holds

@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()\n",  # a fork bomb
    "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()\n",
    "import subprocess\nsubprocess.run(['true'])\n",
    "import os\nos.system('true')\n",
    "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))\n",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)\n",
])
def test_processes_and_sockets_are_refused(program):
    r = run(program)
    assert r.status in ("forbidden", "exception") and not r.passed


def test_the_kernel_refuses_processes_and_sockets_not_only_the_label():
    """Caught and printed, the errors are the kernel's: EPERM from the seccomp filter. Threads,
    which the standard library uses, still work."""
    r = run("import os, socket, threading\n"
            "for name, f in (('fork', os.fork), ('socket', socket.socket)):\n"
            "    try:\n        f()\n    except OSError as e:\n        print(name, e.errno)\n"
            "t = threading.Thread(target=print, args=('thread ran',)); t.start(); t.join()\n")
    assert "fork 1" in r.stdout and "socket 1" in r.stdout and "thread ran" in r.stdout
    assert r.status == "forbidden"  # and the attempt is named


def test_no_process_outlives_the_grader():
    """Attack: a daemon left running after the verdict (double fork, setsid, background spawn)."""
    marker = "31337.5"
    r = run("import os, subprocess\n"
            "for f in (lambda: os.fork(), lambda: subprocess.Popen(['sleep', '" + marker + "'], start_new_session=True),\n"
            "          lambda: os.posix_spawn('/usr/bin/sleep', ['sleep', '" + marker + "'], {})):\n"
            "    try:\n        f()\n    except OSError as e:\n        print('refused', e.errno)\n")
    assert r.stdout.count("refused 1") == 3, r.stdout
    alive = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert alive.stdout.strip() == ""


def test_the_host_folders_cannot_be_reached_even_through_directory_descriptors(tmp_path):
    """Attack: writes, renames and deletions outside the program's folder via dir_fd."""
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    host = str(tmp_path)
    r = run("import os\n"
            f"steps = [lambda: os.open({host!r}, os.O_RDONLY), lambda: os.open('/', os.O_RDONLY)]\n"
            "for s in steps:\n"
            "    try:\n        fd = s()\n    except OSError as e:\n        print('open', type(e).__name__); continue\n"
            "    for op in (lambda: os.open('new.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd),\n"
            "               lambda: os.rename('keep.txt', 'gone.txt', src_dir_fd=fd, dst_dir_fd=fd),\n"
            "               lambda: os.unlink('keep.txt', dir_fd=fd),\n"
            "               lambda: os.open('usr/evil', os.O_CREAT | os.O_WRONLY, dir_fd=fd)):\n"
            "        try:\n            op(); print('DONE')\n        except OSError as e:\n            print('refused', e.errno)\n"
            "open('mine.txt', 'w').write('ok')\nprint('own', open('mine.txt').read())\n")
    assert "DONE" not in r.stdout and "open FileNotFoundError" in r.stdout and "own ok" in r.stdout
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"] and victim.read_text() == "precious"
    assert not os.path.exists("/usr/evil")


def test_host_secrets_never_reach_any_output(tmp_path, monkeypatch):
    """Attack: /etc/shadow, a secret file and the host's environment read into the verdict."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-file-token")
    monkeypatch.setenv("PIKA_TEST_SECRET", "hunter2-env-token")
    program = ("import os, glob, json\nfound = []\n"
               f"for path in ['/etc/shadow', '/etc/passwd', {str(secret)!r}, '/proc/1/environ', '/proc/self/environ',\n"
               f"             '/proc/{os.getpid()}/environ', *glob.glob('/proc/*/environ')]:\n"
               "    try:\n        found.append(open(path, 'rb').read()[:200].decode('utf-8', 'replace'))\n"
               "    except OSError as e:\n        found.append(type(e).__name__)\n"
               "print(json.dumps({'found': found, 'env': dict(os.environ), 'root': sorted(os.listdir('/')),\n"
               "                  'etc': sorted(os.listdir('/etc'))}))\n")
    r = run(program)
    text = r.stdout + r.detail
    assert "s3cr3t-file-token" not in text and "hunter2" not in text and "root:" not in text
    seen = json.loads(r.stdout)
    assert seen["found"][:3] == ["FileNotFoundError"] * 3
    assert set(seen["root"]) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "proc", "dev", "tmp", "etc", "root"}
    assert seen["etc"] in ([], ["ld.so.cache"]) and set(seen["env"]) <= {"PATH", "LANG", "PYTHONHASHSEED", "HOME", "PWD"}


def test_a_host_process_cannot_be_killed():
    """Attack: a host process killed by pid, and everything killed with kill(-1)."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        r = run("import os, signal\n"
                f"for pid in ({victim.pid}, -1, 1):\n"
                "    try:\n        os.kill(pid, signal.SIGKILL); print('sent', pid)\n"
                "    except OSError as e:\n        print('refused', pid, type(e).__name__)\n")
        assert f"refused {victim.pid} ProcessLookupError" in r.stdout
        assert victim.poll() is None, "the host's process was killed"
    finally:
        victim.kill()
        victim.wait()


def test_the_environment_is_empty(monkeypatch):
    monkeypatch.setenv("PIKA_TEST_SECRET", "hunter2")
    r = run("import os\nprint(sorted(os.environ))\n")
    assert r.passed and "PIKA_TEST_SECRET" not in r.stdout


# ------------------------------------------------------------------ every writable mount capped

MB = 1024 * 1024
#: How much more of the host's memory a run may hold (tmpfs pages, shared memory, memfd: Shmem;
#: inodes, extended attributes: Slab) at its peak and after it: well under the hundreds of MB each
#: attack below tries to hold (512 MB), well over what other work on a shared machine moves.
HELD_TOLERANCE_MB = 128


def _meminfo_kb(*keys: str) -> int:
    with open("/proc/meminfo") as f:
        info = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
    return sum(info[k] for k in keys)


def held_mb() -> float:
    """What the host holds outside processes' address spaces: where a tmpfs's pages (Shmem) and
    inodes and extended attributes (Slab) go. MemAvailable itself moves by hundreds of MB with
    other work on a shared machine; these two do not."""
    return _meminfo_kb("Shmem", "Slab") / 1024


class HostMemory:
    """Samples ``held_mb`` while the body runs: ``peak`` is its largest rise, ``after`` its rise
    once the sandbox's namespaces are gone (their teardown is asynchronous: waited for, a little)."""

    def __enter__(self):
        import threading

        self.before, self.peak, self._stop = held_mb(), 0.0, threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak = max(self.peak, held_mb() - self.before)
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import time

        self._stop.set()
        self._thread.join()
        for _ in range(50):
            self.after = held_mb() - self.before
            if self.after < HELD_TOLERANCE_MB:
                break
            time.sleep(0.2)
        return False

    def assert_unharmed(self):
        assert self.peak < HELD_TOLERANCE_MB, f"the host held {self.peak:.0f} MB more during the run"
        assert self.after < HELD_TOLERANCE_MB, f"the host still holds {self.after:.0f} MB more after the run"


def fill_program(path: str, file_bytes: int, total: int = 512 * MB) -> str:
    """Attack: many files just under the file-size limit in ``path`` (not one big file, which the
    limit stops), up to ``total`` bytes, held for a moment; the bytes that landed are reported."""
    return ("import json, os, time\n"
            f"path, size, total = {path!r}, {file_bytes}, {total}\n"
            "written, files, error, piece = 0, 0, None, b'x' * 65536\n"
            "try:\n"
            "    os.makedirs(path, exist_ok=True)\n"
            "    while written < total:\n"
            "        fd = os.open(os.path.join(path, 'f%d' % files), os.O_CREAT | os.O_WRONLY, 0o600)\n"
            "        files += 1\n"
            "        try:\n"
            "            left = size\n"
            "            while left > 0:\n"
            "                n = os.write(fd, piece[:left]); written += n; left -= n\n"
            "        finally:\n"
            "            os.close(fd)\n"
            "except OSError as e:\n"
            "    error = e.errno\n"
            "time.sleep(0.5)\n"
            "os.write(2, ('RESULT ' + json.dumps([written, files, error]) + '\\n').encode())\n")


def result_of(r: sandbox.SandboxResult):
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _tmp_cap(limits: sandbox.Limits) -> int:
    return sandbox_mounts.tmp_bytes(limits.file_mb) if sandbox_mounts.capped_tmp_supported() else 0


def _hidden_package_folder() -> str:
    folders = sandbox_mounts.package_folders(sandbox.python_home()[1])
    return folders[0] if folders else "/usr/lib/python3/dist-packages"


#: Every place a program could try to write, and how many bytes it may hold there ("tmp": the
#: capped /tmp, which is also its working folder; 0: nothing).
WRITABLE_PATHS = [("/tmp", "tmp"), (".", "tmp"), ("/tmp/sub/dir", "tmp"), ("/dev", 0), ("/dev/shm", 0),
                  ("/dev/mqueue", 0), ("/dev/pts", 0), ("/run", 0), ("/run/user/0", 0), ("/var/tmp", 0),
                  ("/proc/self", 0), ("/", 0), ("/etc", 0), ("/usr/lib", 0), ("HIDDEN", 0)]


@pytest.mark.parametrize("path,cap", WRITABLE_PATHS, ids=[p for p, _ in WRITABLE_PATHS])
def test_every_writable_path_stops_at_its_cap_and_the_host_keeps_its_memory(path, cap):
    """The attack that wrote 800 MB into /dev and /dev/shm: files just under the per-file limit,
    one after another, in every place a program might write."""
    path = _hidden_package_folder() if path == "HIDDEN" else path
    cap = _tmp_cap(FAST) if cap == "tmp" else cap
    with HostMemory() as host:
        r = run(fill_program(path, FAST.file_mb * MB - 4096), FAST)
    written, files, error = result_of(r)
    assert written <= cap, f"{written / MB:.0f} MB written in {files} files under {path}"
    assert error is not None, "the writing never stopped"
    if cap:
        assert error == 28 and written > cap // 2  # ENOSPC: the cap stopped it, not something else
    host.assert_unharmed()


def test_nothing_but_tmp_is_writable_and_proc_is_read_only():
    """A walk of the whole tree: a file can be made in /tmp alone, and no file of /proc opens for
    writing (where the host runs as root the sandbox's uid is root's on the host, and the kernel
    lets root's uid write host sysctls such as vm.nr_hugepages, which reserves host memory for
    good, unless /proc is mounted read-only) but the descriptors' own links (the standard streams)."""
    program = ("import os\nfolders, files = [], []\n"
               "for root, dirs, names in os.walk('/'):\n"
               "    if root.startswith('/proc/') and root.count('/') > 4:\n        dirs[:] = []\n"
               "    try:\n"
               "        os.close(os.open(os.path.join(root, '.w'), os.O_CREAT | os.O_WRONLY, 0o600))\n"
               "        os.unlink(os.path.join(root, '.w')); folders.append(root)\n"
               "    except OSError:\n        pass\n"
               "    if root.startswith('/proc') and '/fd' not in root:\n"
               "        for n in names:\n"
               "            try:\n                os.close(os.open(os.path.join(root, n), os.O_WRONLY | os.O_NONBLOCK))\n"
               "                files.append(os.path.join(root, n))\n"
               "            except OSError:\n                pass\n"
               "os.write(2, ('RESULT ' + __import__('json').dumps([folders, files, 0]) + '\\n').encode())\n")
    folders, files, _ = result_of(run(program, sandbox.Limits(wall_s=30, cpu_s=20, memory_mb=256, file_mb=1)))
    assert folders == (["/tmp"] if sandbox_mounts.capped_tmp_supported() else [])
    assert files == [], files[:10]


def test_many_empty_files_and_folders_stop_at_the_inode_cap():
    """Attack: empty files, folders and links (no bytes, ~1 KB of kernel memory each: 700,000 of
    them in 5 CPU seconds held 700 MB under a byte cap alone)."""
    program = ("import os\nn, error = 0, None\n"
               "try:\n"
               "    while n < 200000:\n"
               "        os.close(os.open('e%d' % n, os.O_CREAT | os.O_WRONLY)); os.mkdir('d%d' % n)\n"
               "        os.symlink('x', 's%d' % n); n += 3\n"
               "except OSError as e:\n    error = e.errno\n"
               "os.write(2, b'RESULT [%d, %d, %d]\\n' % (n, n, error or 0))\n")
    with HostMemory() as host:
        r = run(program, sandbox.Limits(wall_s=10, cpu_s=5, memory_mb=256, file_mb=1))
    made, _, error = result_of(r)
    assert made <= (sandbox_mounts.TMP_INODES if sandbox_mounts.capped_tmp_supported() else 0), made
    assert error in (28, 30)  # ENOSPC at the cap, EROFS where /tmp is read-only
    host.assert_unharmed()


def test_memory_held_outside_files_and_address_space_is_refused_by_the_kernel():
    """Attack: what needs no mount: extended attributes on a /tmp file (kernel memory), System V
    shared memory, message queues and semaphores, POSIX queues (no /dev/mqueue needed), memfd,
    file watches (each pins an inode of /usr), and fallocate past the file-size limit on /tmp and
    on the host's own stdout/stderr files."""
    program = ("import ctypes, ctypes.util, json, os\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "rt = ctypes.CDLL(ctypes.util.find_library('rt') or None, use_errno=True)\n"
               "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
               "def errno_of(f):\n"
               "    ctypes.set_errno(0)\n"
               "    try:\n        ret = f()\n    except OSError as e:\n        return e.errno\n"
               "    return ctypes.get_errno() if ret == -1 else 'DONE'\n"
               "open('x', 'w').close()\n"
               "fd = os.open('y', os.O_CREAT | os.O_WRONLY)\n"
               "out = {'xattr': errno_of(lambda: os.setxattr('x', 'user.a', b'v' * 60000)),\n"
               "       'shmget': errno_of(lambda: libc.shmget(0, 512 << 20, 0o1600)),\n"
               "       'msgget': errno_of(lambda: libc.msgget(0, 0o1600)),\n"
               "       'semget': errno_of(lambda: libc.semget(0, 1, 0o1600)),\n"
               "       'mq_open': errno_of(lambda: rt.mq_open(b'/q', os.O_CREAT | os.O_RDWR, 0o600, None)),\n"
               "       'memfd': errno_of(lambda: os.memfd_create('m')),\n"
               "       'inotify': errno_of(lambda: libc.inotify_init1(0)),\n"
               "       'fanotify': errno_of(lambda: libc.fanotify_init(0, 0)),\n"
               "       'fallocate /tmp': errno_of(lambda: libc.fallocate(fd, 1, 0, 512 << 20)),\n"
               "       'fallocate stdout': errno_of(lambda: libc.fallocate(1, 1, 0, 512 << 20)),\n"
               "       'fallocate stderr': errno_of(lambda: libc.fallocate(2, 1, 0, 512 << 20))}\n"
               "os.write(2, ('RESULT ' + json.dumps(out) + '\\n').encode())\n")
    with HostMemory() as host:
        r = run(program)
    refused = result_of(r)
    assert "DONE" not in refused.values(), refused
    assert all(v == 95 for k, v in refused.items() if k.startswith("fallocate")), refused  # EOPNOTSUPP
    assert all(v == 1 for k, v in refused.items() if not k.startswith("fallocate")), refused  # EPERM
    host.assert_unharmed()


def test_floods_on_the_standard_streams_stop_at_the_file_size_limit():
    """Attack: the answer and printed streams (files on the host) written past their limit, through
    the descriptors and through /dev/stdout: the writes fail at the file-size limit (EFBIG: Python
    ignores SIGXFSZ), so the run ends long before its deadline, failed."""
    for target in ("1", "2", "os.open('/dev/stdout', os.O_WRONLY)", "os.open('/proc/self/fd/2', os.O_WRONLY)"):
        with HostMemory() as host:
            r = run(f"import os\nfd = {target}\nwhile True:\n    os.write(fd, b'x' * 65536)\n")
        assert not r.passed and r.status != "timeout", (target, r)  # stopped by the limit, not the clock
        host.assert_unharmed()


def test_without_a_capped_tmpfs_nothing_is_writable(monkeypatch, he0):
    """Where no capped /tmp can be mounted, none is: /tmp is read-only, programs still run."""
    monkeypatch.setattr(sandbox.sandbox_mounts, "capped_tmp_supported", lambda: False)
    r = run(fill_program("/tmp", FAST.file_mb * MB - 4096))
    assert result_of(r)[0] == 0 and result_of(r)[2] == 30  # EROFS
    assert [g.correct for g in grade(he0, RIGHT)] == [True]


def test_the_books_parallel_grading_under_the_same_attacks(he0):
    """Chapter 10's path (rollouts graded by domain, the grading limits, as many sandboxes as
    cores) with hostile programs that fill every mount, make inodes, hold shared memory or forge
    bubblewrap's start error: none passes, grading goes on, the host keeps its memory; the right
    program graded beside them still passes."""
    from pika_utils.grading import by_domain

    size = code_grading.GRADING_LIMITS.file_mb * MB - 4096
    bodies = [fill_program(p, size) for p in ("/tmp", "/dev", "/dev/shm", "/run", _hidden_package_folder())]
    bodies += ["import os\nfor i in range(100000):\n    os.mkdir('d%d' % i)\n",
               "import ctypes\nlibc = ctypes.CDLL(None)\nfor i in range(20):\n    libc.shmget(0, 256 << 20, 0o1600)\n",
               "import os\nos.write(2, b\"bwrap: Can't mount tmpfs on /newroot\")\nos._exit(1)\n"]
    hostile = ["def has_close_elements(numbers, threshold):\n"
               + "".join("    " + line + "\n" for line in body.splitlines()) + "    return numbers\n"
               for body in bodies]
    df = pd.DataFrame({"problem_id": HE0, "text": [f"```python\n{p}\n```" for p in [*hostile, RIGHT]]})
    with HostMemory() as host:
        graded = by_domain.grade_frame(df, he0)
    assert not graded["correct"].iloc[:-1].any(), graded[["correct", "grade_reason"]]
    assert graded["correct"].iloc[-1]
    host.assert_unharmed()


# ------------------------------------------------------------------ no pass without solving

def test_an_object_equal_to_everything_is_not_plain_data(he0):
    grades = grade(he0, "class E:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                        "def has_close_elements(n, t):\n    return E()\n",
                   "class T(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
                   "def has_close_elements(n, t):\n    return T(1)\n")
    assert [g.correct for g in grades] == [False, False]
    assert all("not plain data" in g.detail for g in grades), [g.detail for g in grades]


def test_printing_or_writing_the_pass_line_is_not_a_pass(he0):
    """Attack: a __main__ that prints the harness's pass line (to print, to fd 1, then exits)."""
    pass_line = json.dumps({"status": "pass", "detail": ""})
    grades = grade(he0, f"print({pass_line!r})\n" + RIGHT.replace("<", ">"),
                   f"import os\nos.write(1, {pass_line.encode()!r})\nos._exit(0)\n",
                   f"import os\ndef has_close_elements(n, t):\n    os.write(1, {pass_line.encode()!r})\n    os._exit(0)\n")
    assert [g.correct for g in grades] == [False, False, False], grades


def test_patching_the_harness_or_the_verdict_is_not_a_pass(he0):
    """Attack: the verdict patched after the tests (the harness's encoder, its output, atexit)."""
    grades = grade(
        he0,
        "import __main__\n__main__.encode = lambda x, depth=0: True\ndef has_close_elements(n, t):\n    return 0\n",
        "import __main__, json\n__main__.json.dumps = lambda *a, **k: '{\"status\": \"pass\", \"detail\": \"\"}'\n"
        "def has_close_elements(n, t):\n    return 0\n",
        "import atexit, os\natexit.register(lambda: os.write(1, b'{\"status\": \"pass\"}'))\n"
        "def has_close_elements(n, t):\n    return False\n")
    assert [g.correct for g in grades] == [False, False, False], grades


def test_the_expected_outputs_are_nowhere_the_program_can_look(he0):
    """Attack: reading the expected outputs (the data set's file, the harness's memory, stdin)."""
    from pika_utils.problems.code import humaneval_file

    data = str(humaneval_file())
    program = ("import gc, os, sys\n"
               "def has_close_elements(n, t):\n"
               "    seen = []\n"
               "    for o in gc.get_objects():\n"
               "        if isinstance(o, str) and ('assert' in o or 'check(' in o):\n"
               "            seen.append(o)\n"
               "    f = sys._getframe()\n"
               "    while f:\n"
               "        seen += [repr(v) for v in f.f_locals.values() if 'assert' in repr(v)]\n"
               "        f = f.f_back\n"
               "    try:\n        seen.append(open(" + repr(data) + ", 'rb').read())\n"
               "    except OSError:\n        pass\n"
               "    seen.append(os.read(0, 1000) if True else b'')\n"
               "    seen.append(sys.stdin.read() if not sys.stdin.closed else '')\n"
               "    sys.stderr.write('FOUND ' + repr([s[:80] for s in seen if s]))\n"
               "    return any(s for s in seen)\n")
    (g,) = grade(he0, program)
    assert not g.correct
    r = run(f"import os\nprint(os.path.exists({data!r}), os.path.exists({os.getcwd()!r}))\n")
    assert r.stdout.strip() == "False False"


def test_reading_the_cases_from_the_standard_streams_is_not_a_pass():
    """Attack on a stdin/stdout problem: read every stream for the expected output."""
    probs = pd.DataFrame([{"problem_id": "io-1", "source": "user", "question": "Print the sum of two integers.",
                           "answer": "(no reference solution: graded by its tests)", "difficulty": 1.0,
                           "difficulty_kind": "none", "split": "", "domain": "code", "entry_point": "",
                           "tests": json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "5 7\n", "output": "12\n"}]),
                           "meta": "{}"}])
    cheat = ("import sys, os, gc\ntext = sys.stdin.read()\n"
             "blob = [o for o in gc.get_objects() if isinstance(o, str) and 'output' in o]\n"
             "print(blob[0] if blob else text)\n")
    right = "a, b = map(int, input().split())\nprint(a + b)\n"
    grades = code_grading.grade_codes([f"```python\n{p}\n```" for p in (cheat, right)], probs, ["io-1", "io-1"], workers=2)
    assert [g.correct for g in grades] == [False, True]


# ------------------------------------------------------------------ plain data, and no sandbox at all

@pytest.mark.parametrize("value", [None, True, 3, -2**70, 1.5, float("inf"), "é", [1, [2]], (1, "a"), {1: (2,)},
                                   {"$tuple": 1}, {1, 2}, frozenset({"a"}), b"\x00\xff", 1 + 2j])
def test_plain_data_round_trips(value):
    back = harness.decode(json.loads(json.dumps(harness.encode(value))))
    assert back == value and type(back) is type(value)


def test_not_plain_data_is_refused():
    for bad in (object(), print, type("I", (int,), {})(3), [1, {2: object()}]):
        with pytest.raises(harness.NotPlainData):
            harness.encode(bad)
    for forged in ({"$exec": "x"}, {"$dict": [[1]]}, {"a": 1, "b": 2}):
        with pytest.raises(harness.NotPlainData):
            harness.decode(forged)


def test_no_bubblewrap_means_no_grading_and_says_how_to_install(monkeypatch, he0):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox._probe.cache_clear()
    try:
        assert "bubblewrap" in sandbox.available()
        with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
            grade(he0, RIGHT)
        with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
            from pika_utils.coding import pipeline
            pipeline.code_stage({})
    finally:
        sandbox._probe.cache_clear()


def test_the_seccomp_filter_is_well_formed():
    prog = sandbox.seccomp_filter("x86_64")
    assert len(prog) % 8 == 0 and len(prog) // 8 < 255
    assert sandbox.seccomp_filter("aarch64") != prog
    with pytest.raises(sandbox.SandboxUnavailable, match="riscv"):
        sandbox.seccomp_filter("riscv64")
