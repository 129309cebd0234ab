# Set-up is part of every target: a local virtual environment built from requirements.txt.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean-venv

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

## demo: the main job, a short real ASID training + validation on CPU (see README)
demo: $(STAMP)
	$(VENV)/bin/python -m asid_arch.cli.demo

## lint: flake8 and isort on the package and the tests (settings in setup.cfg)
lint: $(STAMP)
	$(VENV)/bin/python -m flake8 asid_arch tests
	$(VENV)/bin/python -m isort --check-only --diff asid_arch tests

## test: the linters, then the whole test suite in two workers (pytest's "no tests collected", exit 5, fails too)
test: lint
	$(VENV)/bin/python -m pytest -q -rs -p no:cacheprovider -n 2 tests

## test-fast: the tests not marked slow (the inner loop: a few minutes on 2 cores)
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -p no:cacheprovider -n 2 -m "not slow" tests

clean-venv:
	rm -rf $(VENV)
