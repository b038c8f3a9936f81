# stemkit: one entry point for a new machine that has only Python (and apt).
#   make demo   set up .venv and run the main job (writes demo/stemkit_demo.html)
#   make test   set up .venv and run the test suite
#   make lab    set up .venv and start JupyterLab on the notebooks
# Every install goes through constraints.txt, which pins torch==2.13.0.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-all lab clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "stemkit needs Python >= 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	touch $(STAMP)

demo: venv
	$(BIN)/stemkit demo --output demo/stemkit_demo.html

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lab: venv
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) demo .pytest_cache
