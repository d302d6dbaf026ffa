# Nephoscope: `make run` meters this host, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test unit integration bench lint format install install-test libvirt-build-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Installed state is stamped so repeated runs skip pip when nothing changed.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	@$(MAKE) --no-print-directory libvirt-build-deps
	$(PIP) install -e '.[test,postgresql,dev,libvirt]'
	@touch $@

# libvirt-python has no wheels: pip compiles it against libvirt's headers, found
# with pkg-config. On Debian/Ubuntu as root, install them when missing.
libvirt-build-deps:
	@if ! pkg-config --exists libvirt 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing libvirt-dev and pkg-config (to build libvirt-python)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    log=$$( (apt-get update -qq && apt-get install -y -qq libvirt-dev pkg-config \
	      $$(command -v cc >/dev/null || echo gcc)) 2>&1 ) || { echo "$$log" >&2; exit 1; }; \
	  else \
	    echo "libvirt-python needs libvirt's headers and pkg-config to build: install" \
	         "libvirt-dev and pkg-config (Debian, Ubuntu) or libvirt-devel and pkgconf" \
	         "(Fedora), and a C compiler, then run make again" >&2; \
	    exit 1; \
	  fi; \
	fi

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
	$(BIN)/python bench/compute_poll.py
	$(BIN)/python bench/notifications.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/rollup_statistics.py

lint: install-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src

format: install-test
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
