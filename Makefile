# stemkit: one entry point for a new machine that has only Python (and apt).
#   make demo   set up .venv and run the main job (writes demo/stemkit_demo.html)
#   make test   set up .venv and run the test suite
#   make lab    set up .venv and start JupyterLab on the notebooks
#   make browser  install Debian's chromium for the browser tests (tests/viz) if none is found
# Every install goes through constraints.txt, which pins torch==2.13.0.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv browser demo test test-all lab clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "stemkit needs Python >= 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
	touch $(STAMP)

# The browser tests drive this chromium through playwright, which never downloads a browser of its own.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium found: $$(command -v chromium || command -v chromium-browser)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "no chromium and no apt-get here: the browser tests in tests/viz will be skipped"; \
	fi

demo: venv
	$(BIN)/stemkit demo --output demo/stemkit_demo.html

test: venv browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: venv browser
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lab: venv
	@if [ "$$(id -u)" -eq 0 ]; then ROOT_FLAG=--allow-root; else ROOT_FLAG=; fi; \
		$(BIN)/jupyter lab $$ROOT_FLAG notebooks/

clean:
	rm -rf $(VENV) demo .pytest_cache
