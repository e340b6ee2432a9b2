# One command to set up, one to check, one to test (the README and .ci/run use these); `make docs` builds the site.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup lint docs test bench clean

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip -q
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# Every optional feature (serve, tables, report, hf, onnx, tensorboard) and the dev tools.
	$(BIN)/pip install -q -e '.[all,dev]'

lint:
	$(BIN)/ruff check nlpcli tests benchmarks
	$(BIN)/ruff format --check nlpcli tests benchmarks
	$(BIN)/mypy

# The MkDocs site of docs/ (strict: a broken link or a page missing from the nav fails the build).
docs:
	$(BIN)/mkdocs build --strict -d site

test:
	$(BIN)/python -m pytest -q -x --durations=10

# The result tables of docs/results.md (hours of CPU; each writes benchmarks/results/NAME.json). Needs ../shared/data.
bench:
	$(BIN)/python benchmarks/ner_benchmark.py cluener
	$(BIN)/python benchmarks/ner_benchmark.py cmeee
	$(BIN)/python benchmarks/ie_ske.py
	$(BIN)/python benchmarks/qa_benchmark.py
	$(BIN)/python benchmarks/lm_cgmh.py --sets 100 --steps 100
	$(BIN)/python benchmarks/chat_lccc.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .mypy_cache .ruff_cache
