# The two entry points of the README: `make demo` and `make test`. Each does all set-up it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

RUCIO_VENV ?= .venv-rucio

.PHONY: deps venv rucio-venv demo up test check lint bench clean

deps:
	bash ops/install-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The Rucio server the integration tests start (tests/integration/rucio_server.py). Its own venv: the
# server pins SQLAlchemy, redis, ... versions t0dqm does not use; t0dqm itself needs only rucio-clients.
$(RUCIO_VENV)/.installed: ops/rucio-server-requirements.txt
	$(PYTHON) -m venv $(RUCIO_VENV)
	$(RUCIO_VENV)/bin/python -m pip install -q --upgrade pip
	$(RUCIO_VENV)/bin/python -m pip install -q -r ops/rucio-server-requirements.txt
	touch $@

rucio-venv: $(RUCIO_VENV)/.installed

demo: deps venv
	$(VENV)/bin/t0dqm demo

up: venv
	$(VENV)/bin/t0dqm up

test: deps venv rucio-venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Static checks, run by CI before the tests: formatting, lint, types (strict on policies, catalog, formats)
# and the import contracts that hold the layers (pyproject.toml: [tool.importlinter]).
check: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

lint: venv
	$(VENV)/bin/ruff check .

bench: deps venv
	$(PY) bench/bench_celery.py

clean:
	rm -rf t0dqm-data .pytest_cache build *.egg-info
