# UniChest Book — one command to set up and build the book, one to set up and test.
#   make book   create .venv (first time only), execute every notebook, build the HTML book
#   make test   create .venv (first time only), run the test suite
# Re-running is fast: the environment is rebuilt only when requirements.txt or pyproject.toml change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= tutorial
PYTEST_ARGS ?=

.PHONY: setup book test bench clean-book clean-cache
setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchvision, unichest_lib; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@touch $(STAMP)

book: $(STAMP)
	UNICHEST_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build book
	@echo "Open _build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

clean-book:
	rm -rf _build book/_build

clean-cache:
	rm -rf .cache/unichest
