# Two commands: `make demo` and `make test`. Each creates or refreshes .venv first (pip only,
# torch first so pip keeps the local CPU build; see ../shared/NOTES.md).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv test lint demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check hma tests benchmarks experiments
	$(BIN)/ruff format --check hma tests benchmarks experiments

test: lint
	$(BIN)/python -m pytest -q -ra

demo: venv
	$(BIN)/python -m hma.demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
