# Keel: every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# Every target runs the local development stack: the API accepts the development keys (docs/tenancy.md).
export KEEL_ENV ?= dev

.DEFAULT_GOAL := help
.PHONY: help setup demo demo-agent up down status test test-slow test-unit test-integration chaos chaos-selfcheck lint fmt typecheck \
        schemas schema-release codegen clean bench bench-scale bench-fairness

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Keel needs Python 3.11 (set PYTHON=...)")'
	@test -x $(PY) || { echo "keel: creating the virtual environment in $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "keel: installing Python packages (pyproject.toml) ..."
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP) ## install everything (idempotent): Python packages, Apache Kafka from Maven Central
	@bash infra/kafka.sh install

demo: setup ## start the local stack and run outbound_email with an accept-then-timeout on the send
	@$(VENV)/bin/keel demo

demo-agent: setup ## start the local stack and run the support_triage agent with a fault on the refund provider
	@$(VENV)/bin/keel demo agent

up: setup ## start the whole stack in the background (broker, database, registry, simulators, services, API)
	@$(VENV)/bin/keel up

down: ## stop everything `make up` started
	@test -x $(VENV)/bin/keel && $(VENV)/bin/keel down || true

status: ## show what runs
	@$(VENV)/bin/keel status

test: setup ## the suite (unit, integration, e2e) on a real broker and database; the slow tier is test-slow
	@$(PY) -m pytest

test-slow: setup ## the slow tier: small chaos under kill -9, fifty concurrent runs against one budget, the scheduler's restore at scale (CI runs it too)
	@$(PY) -m pytest -m slow

test-unit: setup ## only the unit tests (no processes)
	@$(PY) -m pytest tests/unit

test-integration: setup ## only the integration tests
	@$(PY) -m pytest tests/integration

chaos: setup ## the full chaos proof: 300 runs, kill -9 of services, registry, API and broker, take-over
	@KEEL_CHAOS_RUNS=$${KEEL_CHAOS_RUNS:-300} KEEL_CHAOS_SECONDS=$${KEEL_CHAOS_SECONDS:-120} \
		KEEL_CHAOS_RECOVERY_LIMIT_S=$${KEEL_CHAOS_RECOVERY_LIMIT_S:-5} \
		$(PY) -m pytest tests/chaos/test_chaos.py -s -p no:cacheprovider

chaos-selfcheck: setup ## break each guarantee on purpose and see the chaos verdict go red
	@$(PY) -m pytest tests/chaos/test_selfcheck.py -m selfcheck -s -p no:cacheprovider

bench: setup ## benchmark: Keel beside the raw Kafka floor, Celery + Redis and DBOS (KEEL_BENCH_RUNS=200 for a quick check)
	@$(PY) -m bench

bench-scale: setup ## scale curves: throughput and p50/p99 vs offered load and instances; recovery after kill -9
	@$(PY) -m bench.scale

bench-fairness: setup ## a quiet tenant's run latency alone and under a noisy tenant's 10,000-run burst, fair dispatch on and off
	@$(PY) -m bench.fairness

lint: setup ## ruff, mypy on libs/ and the services, and the import layers
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy libs/keel libs/keel_ops services
	@PYTHONPATH=libs:. $(VENV)/bin/lint-imports

typecheck: setup ## mypy on libs/ and the services
	@$(VENV)/bin/mypy libs/keel libs/keel_ops services

fmt: setup ## format the code
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

schemas: setup ## register schemas/ with the registry (on purpose; producers never auto-register)
	@$(VENV)/bin/keel schemas

codegen: setup ## regenerate the Python types from schemas/
	@$(PY) -m keel_ops.codegen

schema-release: setup ## snapshot changed contracts as new golden versions under tests/golden/schemas
	@$(PY) -m keel_ops.schema_release

clean: down ## remove the data directory (broker log, database, logs)
	rm -rf var
