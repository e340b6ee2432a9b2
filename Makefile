# One command to set up, one to test (the README and .ci/run use these).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test bench clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'

test:
	$(BIN)/python -m pytest -q -x --durations=10

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
