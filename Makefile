# Conveyor: `make run` starts the local stack, `make test` proves it. `make help` lists all.
SHELL := bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
# uv from PATH, else a private copy in .tools/uv (pip --target: allowed where PEP 668 marks
# the system Python externally managed, as on stock Debian and Ubuntu).
UV_HOME := .tools/uv
# On the recipes' PATH too: tests and tools call `uv`/`uvx` by name.
export PATH := $(CURDIR)/$(UV_HOME)/bin:$(PATH)
UV ?= $(shell command -v uv 2>/dev/null || echo $(UV_HOME)/bin/uv)
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

.PHONY: uv
uv: ## Install uv into .tools/uv if it is missing
	@command -v $(UV) >/dev/null 2>&1 || { \
	  python3 -m pip --version >/dev/null 2>&1 || { \
	    echo "installing the Debian package python3-pip"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
	      apt-get install -y -qq --no-install-recommends python3-pip >/dev/null; }; \
	  echo "installing uv $(UV_VERSION) into $(UV_HOME)"; \
	  python3 -m pip install --quiet --disable-pip-version-check --target $(UV_HOME) "uv==$(UV_VERSION)"; }

.PHONY: install
install: uv ## Create .venv from the lock file, with every workspace package
	$(UV) sync --frozen --all-packages

.PHONY: services
services: ## Install (Debian packages) and start RabbitMQ and PostgreSQL on 127.0.0.1 when missing
	@bash deploy/local/services.sh

.PHONY: run
run: install services ## Start the gateway (127.0.0.1:8000) and the three workers; Ctrl-C stops all
	$(UV) run conveyor-api migrate
	$(UV) run honcho start -f Procfile

.PHONY: lint
lint: install ## ruff and mypy
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(wildcard libs/*/src services/*/src)

.PHONY: format
format: install ## Apply ruff's fixes and formatting
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

.PHONY: test
test: install services tools prometheus chromium lint ## Lint, then the whole test suite against real RabbitMQ and PostgreSQL
	$(UV) run pytest $(PYTEST_ARGS)

.PHONY: audit
audit: install ## pip-audit the locked runtime dependencies (needs PyPI's per-version JSON API)
	@mkdir -p var && $(UV) export --frozen --no-dev --no-emit-workspace --no-hashes -q > var/requirements-audit.txt
	$(UV) run --with pip-audit==2.9.0 pip-audit --no-deps --disable-pip --progress-spinner off \
		-r var/requirements-audit.txt --desc on
	@echo "note: packages listed as 'not found on PyPI' were NOT audited (see docs/guarantees.md)"

.PHONY: docs
docs: install ## Regenerate docs/job-types.md and docs/configuration.md from the code
	$(UV) run python docs/build.py

.PHONY: generate
generate: docs ## Regenerate everything that lists the job types: docs, Procfile, compose, the chart's job-types.json
	$(UV) run python deploy/generate.py

.PHONY: chromium
chromium: ## Install Debian's chromium (the web console's browser tests) when missing
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing the Debian package chromium"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@/usr/bin/chromium --version 2>/dev/null

.PHONY: console-screenshots
console-screenshots: install chromium ## Retake docs/img/console-*.png from a real stack
	CONVEYOR_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/img $(UV) run pytest tests/api/test_console.py \
		-q -k "list_shows or training"

include deploy/deploy.mk
include deploy/observability.mk
include bench/bench.mk
