# The two entry points of the README: `make demo` and `make test`. Each does all set-up it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: deps venv demo up test lint bench clean

deps:
	bash ops/install-deps.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	$(VENV)/bin/t0dqm demo

up: venv
	$(VENV)/bin/t0dqm up

test: deps venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: deps venv
	$(PY) bench/bench_celery.py

clean:
	rm -rf t0dqm-data .pytest_cache build *.egg-info
