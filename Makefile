# One command each on a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AMC_CACHE ?= $(CURDIR)/.cache

.PHONY: install demo test lint clean

$(BIN)/amc: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(BIN)/amc

install: $(BIN)/amc

demo: install
	$(BIN)/python experiments/demo.py

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check amc envs agents tests experiments
	$(BIN)/ruff format --check amc envs agents tests experiments

clean:
	rm -rf $(VENV) .cache runs
