# Benchmarks: the blog pattern vs Conveyor, side by side (bench/README.md). Included
# from the root Makefile; `make -f bench/bench.mk bench-quick` also works alone.
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/uv/bin/uv)
BENCH_WITH ?= --with matplotlib==3.11.2

.PHONY: bench-tools
bench-tools: ## Install wrk and hey (Debian) for the benchmarks if missing
	@command -v wrk >/dev/null 2>&1 && command -v hey >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk hey; }

.PHONY: bench
bench: bench-tools ## Full benchmark (~12 min): results in bench/results/ (latest.md, latest.png)
	$(UV) run $(BENCH_WITH) python -m bench.run

.PHONY: bench-quick
bench-quick: bench-tools ## Benchmark smoke run (<2 min): fails only when a ratio collapses
	$(UV) run python -m bench.run --quick
