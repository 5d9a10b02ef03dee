# Two commands on a fresh machine: `make demo`, `make test`. Both bootstrap uv and the environment.
UV := bash scripts/uv.sh
RUN := $(UV) run --frozen

.PHONY: sync demo test check lint format typecheck pytest bench clean

sync:
	@$(UV) sync --frozen --all-extras --quiet

demo: sync
	@$(RUN) python scripts/demo.py

test: sync check pytest

check: lint typecheck

lint:
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: sync
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck:
	$(RUN) mypy

pytest:
	$(RUN) pytest

bench: sync
	$(RUN) --group bench python -m bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
