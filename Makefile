# The two commands (see README): `make demo` and `make test`. Each sets itself up.
.PHONY: demo test lint bench bootstrap clean

bootstrap:
	scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python -m exporter.demo $(DEMO_ARGS)

# Lint runs here once (ruff, ruff format, mypy), not again inside pytest.
test: lint
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	.venv/bin/ruff check encryip_runtime exporter tests benchmarks
	.venv/bin/ruff format --check encryip_runtime exporter tests benchmarks
	.venv/bin/mypy encryip_runtime exporter

bench: bootstrap
	.venv/bin/python -m benchmarks.run_all

clean:
	rm -rf .venv build *.egg-info demo-release
