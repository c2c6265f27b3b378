# The two commands a new machine needs (README): `make demo` and `make test`. Both set everything up first.
.PHONY: bootstrap demo test lint bench-quick down

bootstrap:
	./scripts/bootstrap

demo: bootstrap
	.venv/bin/landline demo

test: bootstrap
	.venv/bin/python -m pytest -m "not slow" tests

lint: bootstrap
	.venv/bin/ruff check shared functions infra tests bench
	.venv/bin/mypy

down:
	.venv/bin/landline down
