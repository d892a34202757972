# Entry points, each doing all set-up first:
#   make train   set up, then train on the embedded digits and print the evaluation
#   make test    set up, then run the test suite
#   make results set up, then train NNGK and the softmax baseline on the digits, evaluate
#                both and compare them (docs/results.md's table and runs/comparison.png)
#   make docs    set up, then execute the notebooks (fast mode, cached in build/) and render
#                them with docs/ into site/ (open site/index.html)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup train test results docs
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-docs.txt pyproject.toml
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

docs: setup
	$(BIN)/python tools/build_site.py
