# Two commands: `make demo` and `make test`. Each creates or refreshes .venv first (pip only,
# torch first so pip keeps the local CPU build; see ../shared/NOTES.md).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
# installed without its declared deps: its mink pin needs numpy<2 (pyproject.toml lists the rest)
ROBOSUITE := robosuite==1.5.2
DEMO_OUT ?= demo-out

.PHONY: venv test lint demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(ROBOSUITE)
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
