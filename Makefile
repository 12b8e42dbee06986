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

# one pytest-xdist worker per core (at most 4), each test file on one worker so its module
# fixtures are built once; `pytest -q` alone runs the same tests serially
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python bench/rasterizer.py

clean:
	rm -rf runs .pytest_cache
