# Two commands do all set-up on a fresh machine (Python >= 3.11 with pip and venv):
#   make demo   - builds .venv, installs metricpose, runs the end-to-end demo
#   make test   - builds .venv if needed, lints and runs the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo
DEMO_PRESET ?= default

.PHONY: demo test bench bench-demo install lint format

install: $(STAMP)

# Reinstalls only when pyproject.toml changes; the package itself is editable.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metricpose demo --out $(DEMO_OUT) --preset $(DEMO_PRESET)

test: $(STAMP)
	$(BIN)/ruff check metricpose tests bench
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-demo: $(STAMP)
	$(BIN)/python bench/run.py --demo

lint: $(STAMP)
	$(BIN)/ruff check metricpose tests bench

format: $(STAMP)
	$(BIN)/ruff format metricpose tests bench
