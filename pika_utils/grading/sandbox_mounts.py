"""What a sandboxed program can see and write: the filesystem half of ``grading.sandbox``.

Every tmpfs lives in the host's memory, and the address-space limit does not count its pages, so
none may grow past a cap:

- the root, ``/dev`` and the empty folders that hide installed packages are tmpfs mounts made
  read-only once set up (each also given a small ``--size``): nothing can be written there;
- ``/proc`` is read-only too: where the host runs as root, the sandbox's uid is root's on the
  host, and the kernel lets that uid write the host's sysctls (``vm.nr_hugepages`` reserves host
  memory until someone sets it back) through a writable ``/proc``;
- ``/dev`` is minimal: a read-only tmpfs holding bind mounts of the five device nodes a program
  may want (null, zero, full, random, urandom) and the ``fd``/``std*`` links. No ``/dev/shm``,
  no ``/dev/pts``, no ``/dev/mqueue`` (POSIX queues, System V shared memory, memfd and extended
  attributes, which need no mount, are refused by the seccomp filter instead);
- ``/tmp``, the working folder and the only writable place, is capped in bytes *and* in inodes.
  bubblewrap can cap a tmpfs's bytes (``--size``) but not its inodes, and a program that makes
  empty files holds about 1 KB of kernel memory per file (700,000 files in 5 CPU seconds here,
  about 700 MB, whatever the byte cap). So the tmpfs is mounted with both caps by ``mount`` in a
  user and mount namespace of its own (``unshare``, from util-linux), and bubblewrap, started
  inside that namespace, binds it on ``/tmp``. Where that cannot be done (no ``unshare`` or
  ``mount``, user namespaces refused), ``/tmp`` is a read-only folder: no tmpfs that cannot be
  capped is mounted.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sysconfig
import tempfile
from functools import lru_cache
from pathlib import Path

#: Inodes (files, folders, links) the sandbox's /tmp can hold, its root folder included.
TMP_INODES = 512
#: Device nodes bound into the read-only /dev (writes to them store nothing).
DEVICES = ("null", "zero", "full", "random", "urandom")
_SMALL = str(64 * 1024)  # the --size of the read-only tmpfs mounts: they hold only mount points
_MOUNT_TMP = '"$1" -t tmpfs -o "$2" pika-sandbox-tmp "$3" && shift 3 && exec "$@"'


def tmp_bytes(file_mb: int) -> int:
    """The byte cap of /tmp: four times the largest file a program may write."""
    return max(1, file_mb) * 4 * 1024 * 1024


def root_links() -> list[str]:
    """/bin, /lib, /lib64, /sbin as the host has them: a symlink into /usr, or a read-only folder."""
    args = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    return args


def package_folders(home: str) -> list[str]:
    """Installed packages' folders under the bound trees, hidden behind empty folders: a data set
    installed as a package (HumanEval's tests among them) must not be readable from inside."""
    found = set()
    for root in (home, "/usr", "/usr/local"):
        for pattern in ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages",
                        "lib64/python3*/site-packages"):
            found.update(os.path.realpath(p) for p in glob.glob(os.path.join(root, pattern)) if os.path.isdir(p))
    purelib = os.path.realpath(sysconfig.get_paths(vars={"base": home, "platbase": home})["purelib"])
    if os.path.isdir(purelib):
        found.add(purelib)
    return sorted(p for p in found if p.startswith(("/usr/", home + "/")))


def _read_only_tmpfs(path: str) -> list[str]:
    """An empty tmpfs on ``path``, small and then read-only (the remount comes last, see below)."""
    return ["--size", _SMALL, "--tmpfs", path]


def filesystem_args(home: str, capped_tmp: str | None) -> list[str]:
    """bubblewrap's arguments for everything the program sees, ending with every tmpfs and
    ``/proc`` made read-only: only ``/tmp`` is writable. ``capped_tmp``: the host-side path of
    the capped tmpfs to bind on /tmp (None: /tmp is a read-only folder)."""
    args = ["--ro-bind", "/usr", "/usr", *root_links()]
    if not (home == "/usr" or home.startswith("/usr/")):
        args += ["--ro-bind", home, home]
    hidden = package_folders(home)
    for d in hidden:
        args += _read_only_tmpfs(d)
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    args += ["--proc", "/proc", *_read_only_tmpfs("/dev")]
    for name in DEVICES:
        args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    args += ["--symlink", "/proc/self/fd", "/dev/fd"]
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        args += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
    args += ["--bind", capped_tmp, "/tmp"] if capped_tmp else ["--dir", "/tmp"]
    for d in (*hidden, "/dev", "/proc", "/"):
        args += ["--remount-ro", d]
    return args


def tmp_options(file_mb: int) -> str:
    """The capped /tmp's mount options: bytes, inodes, and no programs run from it."""
    return f"size={tmp_bytes(file_mb)},nr_inodes={TMP_INODES},mode=0755,nosuid,nodev,noexec"


def capped_tmp_wrapper(mount_point: str, file_mb: int) -> list[str]:
    """The command prefix that mounts the capped tmpfs on ``mount_point`` in a user and mount
    namespace of its own, then execs what follows (bubblewrap) in its place: same process, so
    the caller's kill and bubblewrap's die-with-parent still hold. The tmpfs is seen by no one
    else and freed when the last process in that namespace exits."""
    unshare, mount = shutil.which("unshare") or "unshare", shutil.which("mount") or "mount"
    return [unshare, "--user", "--map-root-user", "--mount", "--", "/bin/sh", "-c", _MOUNT_TMP, "sh", mount,
            tmp_options(file_mb), mount_point]


@lru_cache(maxsize=1)
def capped_tmp_supported() -> bool:
    """Whether a capped /tmp can be mounted here (checked once, for real, with a tiny tmpfs)."""
    if not (shutil.which("unshare") and shutil.which("mount") and os.path.exists("/bin/sh")):
        return False
    with tempfile.TemporaryDirectory(prefix="pika-sbx-probe-") as d:
        try:
            r = subprocess.run([*capped_tmp_wrapper(d, 1), shutil.which("stat") or "stat", "-f", "-c", "%c", d],
                               cwd="/", capture_output=True, text=True, timeout=20, env={})  # as run_raw runs it
        except (OSError, subprocess.TimeoutExpired):
            return False
    return r.returncode == 0 and r.stdout.strip() == str(TMP_INODES)
