# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs torch (CPU) + retinaseg, runs the demo
#   make test   -> same set-up, then the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench browser clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,sam,deploy,web]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/retinaseg demo --out demo_out

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks tools

bench: setup
	$(PY) benchmarks/run_all.py

# The system Chromium that the web page's browser tests drive (Debian/Ubuntu; Playwright never
# downloads one). Not part of `make test`: those tests skip without it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
