# Nephoscope: `make run` meters this host, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test unit integration bench lint format install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Installed state is stamped so repeated runs skip pip when nothing changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test,postgresql,dev]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/nephoscope run $(if $(CONFIG),--config $(CONFIG))

test: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install-test
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install-test
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/ingest.py

lint: install-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src

format: install-test
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
