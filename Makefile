# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench demo-hosts clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/hypercorn --config hypercorn.toml quart_app.asgi:app

test: lint
	$(BIN)/python -m pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The benchmark (bench/README.md): wrk must be installed (apt-get install wrk).
bench: $(VENV)/.test-installed
	$(BIN)/python -m bench --rounds 5 --duration 5 --concurrency 64

# Three hosts, one PostgreSQL table, one host stopped mid-load, then the database (docs/postgres.md).
demo-hosts: $(VENV)/.test-installed
	$(BIN)/python -m quart_app.tools.demo

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
