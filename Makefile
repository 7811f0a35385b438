# UniChest Book — one command to set up and build the book, one to set up and test.
#   make book   create .venv (first time only), execute every notebook, build the HTML book
#   make test   create .venv (first time only), run the test suite
#   make ledger every study measured live and recorded in results/<PROFILE>/ (STUDY=<name>: one)
# Re-running is fast: the environment is rebuilt only when requirements.txt or pyproject.toml change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= tutorial
PYTEST_ARGS ?=

.PHONY: setup book ledger test bench clean-book clean-cache
setup: $(STAMP)

# The pinned torch 2.14.1 is a CUDA build on x86_64: the venv takes about 6.7 GB. Check the
# disk first so a full disk fails with a message instead of half-way through pip.
NEED_GB ?= 8

$(STAMP): requirements.txt pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4/1048576)}'); \
	if [ ! -x $(PY) ] && [ "$$free" -lt $(NEED_GB) ]; then \
	  echo "setup: only $$free GB free on $$(df -P . | awk 'NR==2 {print $$6}'); the environment needs about $(NEED_GB) GB."; \
	  echo "setup: free some space (or set NEED_GB=<n> to override) and run make again."; exit 1; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchvision, unichest_lib; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@touch $(STAMP)

# --all: every page is read and every chapter executed again. Sphinx would otherwise keep
# the pages of the last build (made at another PROFILE, or with older library code) whenever
# the page sources did not change. Trained checkpoints still come from the artifact store.
book: $(STAMP)
	UNICHEST_PROFILE=$(PROFILE) UNICHEST_PROGRESS=0 $(VENV)/bin/jupyter-book build --all book
	@echo "Open _build/html/index.html"

# The full ledger, measured live and recorded: every chapter with all its studies, every score
# trained and scored in this build (UNICHEST_EVIDENCE=live) and written to results/<PROFILE>/
# with its provenance (UNICHEST_RECORD=1). STUDY=<name> re-measures one study alone and
# rewrites only its scores; STUDY=list names them with their cost.
STUDY ?=
ledger: $(STAMP)
ifeq ($(STUDY),)
	UNICHEST_FULL_LEDGER=1 UNICHEST_EVIDENCE=live UNICHEST_RECORD=1 \
	  UNICHEST_RECORD_COMMAND="make ledger PROFILE=$(PROFILE)" $(MAKE) book
else
	$(PY) bench/ledger.py $(STUDY) --profile $(PROFILE)
endif

# Two pytest workers (pytest-xdist), one torch thread each: the tests are many small runs whose
# Python and I/O parts would leave a second core idle; the long chapter runs start first
# (tests/conftest.py). TEST_JOBS=0 runs everything in this process.
TEST_JOBS ?= 2
test: $(STAMP)
	$(if $(filter 0,$(TEST_JOBS)),,OMP_NUM_THREADS=1) $(PY) -m pytest \
	  $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist worksteal) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py

clean-book:
	rm -rf _build book/_build

clean-cache:
	rm -rf .cache/unichest
