# Two entry points, each doing all set-up first:
#   make train   set up, then train on the embedded digits and print the evaluation
#   make test    set up, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

train: setup
	$(BIN)/python -m nngk_lab.train --save_dir runs/digits --resume

test: setup
	$(BIN)/python -m pytest -q
