# The two commands a user needs: `make demo` and `make test`. Both set up
# everything they need (Debian packages, .venv) and are safe to repeat.

VENV := .venv/bin
APT_BASE := make git ca-certificates
APT_LAB := qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client
# virt-v2v: an independent reader of the OVAs xenkit writes (tests/unit/test_motion_virt_v2v.py);
# thermald: drives the clamp's cooling device (tests/unit/test_clamp_thermald.py)
APT_TEST := virt-v2v thermald

.PHONY: setup demo test unit lint fmt bench lock clean

setup:
	@scripts/bootstrap.sh $(APT_BASE)

demo:
	@scripts/bootstrap.sh $(APT_BASE) $(APT_LAB)
	@scripts/demo.sh

test: lint
	@scripts/bootstrap.sh $(APT_BASE) $(APT_LAB) $(APT_TEST)
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
