# Entry points, each doing all set-up first:
#   make train   set up, then train on the embedded digits and print the evaluation
#   make test    set up, then run the test suite
#   make results set up, then train NNGK and the softmax baseline on the digits, evaluate
#                both and compare them (the README's results table and runs/comparison.png)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test results
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

results: setup
	$(BIN)/python -m nngk_lab.train --save_dir runs/nngk --resume --no_progress
	$(BIN)/python -m nngk_lab.train --save_dir runs/softmax --loss softmax --resume --no_progress
	$(BIN)/python -m nngk_lab.evaluate --save_dir runs/nngk --no_progress
	$(BIN)/python -m nngk_lab.evaluate --save_dir runs/softmax --no_progress
	$(BIN)/python -m nngk_lab.compare runs/nngk runs/softmax --markdown --out runs/comparison.png
