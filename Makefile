# The two commands of the README. Each sets up .venv/ by itself when needed.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup.sh
	bash scripts/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ase-mlmd demo -o out/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check ase_mlmd tests benchmarks
	$(VENV)/bin/ruff format --check ase_mlmd tests benchmarks
