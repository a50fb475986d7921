# The README's two Quickstart commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint mutation clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "semigen needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The demo: the whole fit on the embedded digits, ending with the path of report.html.
demo: setup
	$(BIN)/semigen demo

test: setup
	$(BIN)/python -m pytest

# ruff; the layer rule (imports run down only, pyproject.toml); the configuration reference
lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python scripts/config_reference.py --check

# Each guarded behaviour broken in a copy of the code; the test that guards it must fail
mutation: setup
	$(BIN)/python scripts/mutation_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
