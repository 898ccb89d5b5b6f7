#!/usr/bin/env bash
# What the book needs from the operating system rather than from PyPI: bubblewrap, the sandbox that
# chapter 10 runs generated programs in. `make book` and `.ci/run` call this.
#
# It installs bubblewrap where it can without asking for a password (as root, or with password-less
# sudo; apt-get, dnf, zypper or pacman) and says so. Where it cannot, it prints the one command to
# run and exits 0: the runner's preflight then stops the run before chapter 1 with that command.
# Not Linux (macOS, Windows): nothing to do; chapter 10 says there why no program ran.
# --require: exit 1 when bubblewrap is still missing afterwards (CI, whose tests need it).
set -u
require=0
[ "${1:-}" = "--require" ] && require=1
if [ "$(uname -s)" != Linux ] || command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "[system] bubblewrap (the code sandbox of chapter 10) is not installed, and installing it needs root:" >&2
    echo "[system]   sudo apt-get install -y bubblewrap   (Fedora: sudo dnf install -y bubblewrap)" >&2
    exit $require
fi
if command -v apt-get >/dev/null 2>&1; then
    echo "[system] installing bubblewrap (the code sandbox) with apt-get"
    $SUDO apt-get install -y -q bubblewrap >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q bubblewrap >/dev/null; }
elif command -v dnf >/dev/null 2>&1; then
    echo "[system] installing bubblewrap (the code sandbox) with dnf"
    $SUDO dnf install -y -q bubblewrap
elif command -v zypper >/dev/null 2>&1; then
    echo "[system] installing bubblewrap (the code sandbox) with zypper"
    $SUDO zypper --non-interactive install bubblewrap
elif command -v pacman >/dev/null 2>&1; then
    echo "[system] installing bubblewrap (the code sandbox) with pacman"
    $SUDO pacman -S --noconfirm bubblewrap
fi
if ! command -v bwrap >/dev/null 2>&1; then
    echo "[system] bubblewrap could not be installed here; install the 'bubblewrap' package by hand" >&2
    exit $require
fi
exit 0
