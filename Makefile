# Quickstart targets. `make demo` and `make test` each set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-run

.PHONY: install install-gpu browser demo test lint typecheck bench clean

$(BIN)/recsys: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/recsys

# Both onnxruntime wheels install the `onnxruntime` package: the GPU build must be the one left.
install-gpu: install
	$(BIN)/pip install -q -e '.[gpu]'
	$(BIN)/pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.20,<2"
	$(BIN)/python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

demo: install
	$(BIN)/recsys demo --workdir $(DEMO_DIR) --loop

# The dashboard's browser test drives Debian's Chromium through its WebDriver.
browser:
	@command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else echo "the dashboard test needs Chromium and its driver: apt-get install chromium chromium-driver" >&2; exit 1; fi; }

test: install browser
	$(BIN)/ruff check recsys training serving streams deploy tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=12

lint: install
	$(BIN)/ruff check recsys training serving streams deploy tests benchmarks
	$(BIN)/ruff format --check recsys training serving streams tests benchmarks

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
