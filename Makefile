# Set-up is part of every target: a local virtual environment built from requirements.txt.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test clean-venv

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

## demo: the main job, a short real ASID training + validation on CPU (see README)
demo: $(STAMP)
	$(VENV)/bin/python -m asid_arch.cli.demo

## test: the test suite (pytest's "no tests collected", exit 5, fails too)
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -p no:cacheprovider tests

clean-venv:
	rm -rf $(VENV)
