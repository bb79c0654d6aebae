# All set-up happens here: `make demo` and `make test` bootstrap .venv themselves (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.saim-installed
OUT ?= out

.PHONY: setup demo emulate test test-unit test-integration chaos lint bench proto totalseg clean

setup: $(STAMP)

$(STAMP): requirements/base.txt requirements/dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The main job on embedded defaults: the emulated SAIM scenario on synthetic phantoms, with the classical baseline.
demo: setup
	$(BIN)/saim emulate --data synthetic --baseline classical --seed 0 \
		--report $(OUT)/demo-report.json --plot $(OUT)/demo-miou.png

test: setup
	$(BIN)/python -m pytest tests -q

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q

lint: setup
	$(BIN)/ruff check src tests

totalseg: setup
	$(BIN)/saim data totalseg $(OUT)/totalseg --cache-dir .cache

clean:
	rm -rf $(OUT) .pytest_cache
