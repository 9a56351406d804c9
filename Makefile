# Convenience targets; everything here is also a plain command.
PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-small bench-sqlite

# The full table (N = 100k, 1M; D = 1, 30) on $METERING_TEST_MYSQL_URL.
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

# A quick check that the benchmark works (a few minutes on 2 cores).
bench-small:
	$(PYTHON) benchmarks/run.py --events 100k --history-days 1 $(BENCH_ARGS)

bench-sqlite:
	$(PYTHON) benchmarks/run.py --db sqlite --events 100k --history-days 1 $(BENCH_ARGS)
