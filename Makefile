# The front door: `make demo` runs the pipeline on the embedded defaults, `make test` runs
# the tests. Both create .venv and install the project into it when it is missing or stale.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip prints a warning per package for this machine's empty local index folders; hide only
# those. The braces keep grep's "nothing left" status from masking a failed pip (pipefail).
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install demo test test-fast lint format bench clean repro serve

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import visionloop, torch, torchvision, prefect, dvc, mlflow, great_expectations, sklearn"
	# bytecode now, not on the first `visionloop` call (an editable install compiles nothing)
	$(BIN)/python -m compileall -q src flows tasks
	touch $@

demo: $(STAMP)
	$(BIN)/python -m flows demo

# The venv's bin first on PATH: dvc.yaml's commands call `visionloop`, which a shell without
# `source .venv/bin/activate` would not find.
RUN := PATH="$(abspath $(BIN)):$$PATH"

repro: $(STAMP)
	$(RUN) dvc repro

serve: $(STAMP)
	$(RUN) visionloop serve

test: $(STAMP)
	$(BIN)/pytest -m "not gpu"

test-fast: $(STAMP)
	$(BIN)/pytest -m "not gpu and not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

# Benchmarks print ratios measured side by side; run them on an otherwise idle machine.
bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py --images 10000
	$(BIN)/python -m bench.train --threads 1
	$(BIN)/python bench/stack.py
	$(BIN)/python -m bench.serve --threads 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
