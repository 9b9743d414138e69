# The two commands a user needs: `make demo` and `make test`. Both set up
# everything they need (Debian packages, .venv) and are safe to repeat.

VENV := .venv/bin
APT_BASE := make git ca-certificates

.PHONY: setup demo test unit lint fmt bench lock clean

setup:
	@scripts/bootstrap.sh $(APT_BASE)

demo: setup
	@scripts/demo.sh

test: setup lint
	$(VENV)/pytest

unit: setup
	$(VENV)/pytest tests/unit

lint: setup
	$(VENV)/ruff check src tests benchmarks
	$(VENV)/ruff format --check src tests benchmarks
	$(VENV)/mypy --strict src

fmt: setup
	$(VENV)/ruff format src tests benchmarks
	$(VENV)/ruff check --fix src tests benchmarks

bench: setup
	$(VENV)/python -m benchmarks

lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
