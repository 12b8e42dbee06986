# fourreal: `make demo` and `make test` each set everything up on a fresh machine.
# PyTorch is pinned to the local CPU build here; GPU users install their CUDA build of
# torch>=2.4 first (pyproject keeps the range) and then `pip install -e .[all]`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
EXTRAS ?= test,colmap,video,view,browser,batch
STAMP  := $(VENV)/.fourreal-installed

.PHONY: install demo test test-all bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23" "setuptools>=70" wheel
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fourreal run recipes/demo.yaml --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python bench/rasterizer.py

clean:
	rm -rf runs .pytest_cache
