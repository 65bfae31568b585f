# Quick start: `make demo` and `make test` each create or refresh .venv from pyproject.toml, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_WORKERS ?= 2

.PHONY: demo test test-all bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.base
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: $(VENV)/.base
	$(BIN)/jaxtalk demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=15

test-all: $(VENV)/.test
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "" --durations=25

bench: $(VENV)/.test
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: $(VENV)/.test
	$(BIN)/ruff check jaxtalk tests bench convert train

clean:
	rm -rf $(VENV) outputs .pytest_cache
