# The README's two Quickstart commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint mutation clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "semigen needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What a user gets: semigen (with the offline ImageNet network module 1 chooses among).
$(VENV)/.installed-user: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Development and the tests: also pytest, ruff, import-linter, hypothesis, selenium, timm, ...
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed-user

setup: $(VENV)/.installed-dev

# The demo: the whole fit on the embedded digits, ending with the path of report.html.
demo: $(VENV)/.installed-user
	$(BIN)/semigen demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# ruff; the layer rule (imports run down only, pyproject.toml); the configuration reference
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python scripts/config_reference.py --check

# Each guarded behaviour broken in a copy of the code; the test that guards it must fail
mutation: $(VENV)/.installed-dev
	$(BIN)/python scripts/mutation_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
