# braggml: `make demo` runs the main job on built-in simulated data; `make test` installs the test tools and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the CPU build of PyTorch first, so that the ml extra's range is already met
TORCH  ?= torch==2.13.0

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[cbf,ml]"

demo: install
	$(BIN)/braggml demo --out braggml-demo

test: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ml,cluster]"
	$(BIN)/python -m pytest

lint: $(BIN)/python
	$(BIN)/python -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) braggml-demo build dist src/*.egg-info .pytest_cache
