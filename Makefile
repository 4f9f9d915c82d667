# make reproduce | make test | make lab | make bench   (each installs .venv on first use)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
KERNEL := fer-lib
# No downloads at run time, and glibc allocator settings that made CPU inference 2-5x faster (docs/papers.md).
RUNENV := HF_HUB_OFFLINE=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 PYTHONHASHSEED=0
TEST_RESULTS ?= build/test-results

.PHONY: install reproduce test lab bench lint clean-results help

help:
	@echo "make reproduce   run notebooks 00-05 with papermill (PROFILE=smoke|default|paper, FER_DATA_ROOT=/path)"
	@echo "make test        pytest: unit tests + nbval over every notebook (smoke profile)"
	@echo "make lab         JupyterLab on the project kernel"
	@echo "make bench       benchmarks in bench/ (ratio tables under results/benchmarks/)"

install: $(STAMP)

$(STAMP): requirements.in requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.in -c requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (fer_lib)" \
	    --env HF_HUB_OFFLINE 1 --env MALLOC_MMAP_MAX_ 0 --env MALLOC_TRIM_THRESHOLD_ 100000000000 >/dev/null
	@touch $(STAMP)

reproduce: $(STAMP)
	$(RUNENV) $(PY) -m fer_lib reproduce --profile $(PROFILE) $(if $(FROM),--from $(FROM),)

# The suite runs inside scripts/offline.sh: no network but loopback, so a hidden download fails it.
test: $(STAMP)
	rm -rf $(TEST_RESULTS)
	$(RUNENV) FER_PROFILE=smoke FER_RESULTS_DIR=$(TEST_RESULTS) scripts/offline.sh $(PY) -m pytest tests notebooks \
	    --nbval-lax --nbval-cell-timeout=900 --timeout=1800 $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check fer_lib tests bench scripts
	$(PY) -m ruff format --check fer_lib tests bench scripts

lab: $(STAMP)
	$(RUNENV) $(VENV)/bin/jupyter lab --allow-root --no-browser --ServerApp.ip=127.0.0.1 notebooks

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(RUNENV) $(PY) $$b || exit $$?; done

clean-results:
	rm -rf results/notebooks results/tables results/figures results/metrics.csv results/README.md
