# Set-up is implicit: each target creates .venv and installs the package (with test tools) when missing or
# when pyproject.toml changed. Plain pip on purpose: it honours local wheel caches and pip constraints.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test test-all lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job: the method comparison on the embedded offline testbed
	$(BIN)/visprompt demo

test: $(STAMP)  ## the default test suite (CPU, tiny models; slow tests excluded), then the Ray cluster fault test and the README's example
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m "ray_cluster or docs"

test-all: $(STAMP)  ## every test, including the slow ones
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
