# The two commands a new machine needs (README): `make demo` and `make test`. Both set everything up first.
.PHONY: bootstrap demo test lint bench-quick down reliability

bootstrap:
	./scripts/bootstrap

demo: bootstrap
	.venv/bin/landline demo

# Two workers (pytest-xdist), each with its own local stack: most stack tests wait on the emulators, not the CPU.
# The slowest tests are listed at the end, so CI shows where its 30 minutes go.
test: bootstrap
	.venv/bin/python -m pytest -n 2 --dist loadfile -m "not slow" --durations=40 tests

lint: bootstrap
	.venv/bin/ruff check shared functions infra tests bench
	.venv/bin/mypy

# RELIABILITY.md from a run of every fault scenario (tests marked `scenario`, tests/faults.py).
reliability: bootstrap
	rm -f build/reliability.json
	.venv/bin/python -m pytest -n 2 --dist loadfile -m "scenario and not slow" tests
	.venv/bin/python -m tests.reliability_table build/reliability.json -o RELIABILITY.md

down:
	.venv/bin/landline down
