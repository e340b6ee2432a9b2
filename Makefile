# One command to set up, one to check, one to test (the README and .ci/run use these).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup lint test bench clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'

lint:
	$(BIN)/ruff check nlpcli tests benchmarks
	$(BIN)/ruff format --check nlpcli tests benchmarks
	$(BIN)/mypy

test:
	$(BIN)/python -m pytest -q -x --durations=10

# The README's result tables (hours of CPU; each writes benchmarks/results/NAME.json). Needs ../shared/data.
bench:
	$(BIN)/python benchmarks/ner_benchmark.py cluener
	$(BIN)/python benchmarks/ner_benchmark.py cmeee
	$(BIN)/python benchmarks/ie_ske.py
	$(BIN)/python benchmarks/qa_benchmark.py
	$(BIN)/python benchmarks/lm_cgmh.py --sets 100 --steps 100
	$(BIN)/python benchmarks/chat_lccc.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
