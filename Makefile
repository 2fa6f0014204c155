# Quickstart targets. `make demo` and `make test` each set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-run

.PHONY: install demo test lint typecheck bench clean

$(BIN)/recsys: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/recsys

demo: install
	$(BIN)/recsys demo --workdir $(DEMO_DIR)

test: install
	$(BIN)/ruff check recsys training serving streams tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check recsys training serving streams tests benchmarks
	$(BIN)/ruff format --check recsys training serving streams tests benchmarks

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
