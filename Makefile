# make reproduce | make test | make lab | make bench   (each installs .venv on first use)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= default
KERNEL := fer-lib
# No downloads at run time, and glibc allocator settings that made CPU inference 2-5x faster (docs/papers.md).
# OMP_WAIT_POLICY=PASSIVE: spinning OpenMP threads made 2-thread training 3-8x slower on the shared 2 cores
# (bench/bench_train.py: efficientnet_lite0 3.7 img/s spinning vs 26-43 passive at load 3.8).
RUNENV := HF_HUB_OFFLINE=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 PYTHONHASHSEED=0 OMP_WAIT_POLICY=PASSIVE
# Everything `make test` writes goes under build/test (absolute: nbval kernels run in notebooks/).
TEST_BUILD := $(CURDIR)/build/test
# 1 (or --publish) writes the committed results/; by default a run goes to the git-ignored runs/<profile>/.
PUBLISH ?=
PUBLISH_FLAG := $(if $(filter 1 yes true,$(PUBLISH)),--publish,)
# Publishing from a tree with uncommitted changes is refused; ALLOW_DIRTY=1 (--allow-dirty) overrides it.
ALLOW_DIRTY ?=
ALLOW_DIRTY_FLAG := $(if $(filter 1 yes true,$(ALLOW_DIRTY)),--allow-dirty,)

.PHONY: install reproduce test test-fast lab bench lint notebooks clean-runs clean-results help

help:
	@echo "make reproduce   run notebooks 00-06 with papermill into runs/PROFILE/ (PROFILE=smoke|default|paper,"
	@echo "                 FER_DATA_ROOT=/path; PUBLISH=1 writes the committed results/ instead, refused"
	@echo "                 with uncommitted changes unless ALLOW_DIRTY=1)"
	@echo "make test        pytest: unit tests + nbval over every notebook (smoke profile), all under build/test"
	@echo "make test-fast   the unit tests without nbval, slow and notebook tests (the loop while developing)"
	@echo "make lab         JupyterLab on the project kernel (jupyter_server_config.py)"
	@echo "make bench       benchmarks in bench/ (ratio tables under runs/default/benchmarks/, PUBLISH=1: results/)"
	@echo "make notebooks   rewrite notebooks/*.ipynb in the canonical form JupyterLab saves (no outputs)"

# Every time (cheap, idempotent): the git clean filter that stores notebooks/*.ipynb without outputs
# (.gitattributes), Lab's cell timing (the Lab run's seconds in run_times.csv; the filter drops it) and no
# news / update checks (Lab would ask at every start, and the request fails offline).
LAB_DEFAULTS := $(VENV)/etc/jupyter/labconfig/default_setting_overrides.json
install: $(STAMP)
	@$(PY) scripts/normalize_notebooks.py --install-filter
	@mkdir -p $(dir $(LAB_DEFAULTS)) && \
	    echo '{"@jupyterlab/notebook-extension:tracker": {"recordTiming": true}, "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $(LAB_DEFAULTS)

$(STAMP): requirements.in requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.in -c requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (fer_lib)" \
	    --env HF_HUB_OFFLINE 1 --env OMP_WAIT_POLICY PASSIVE --env MALLOC_MMAP_MAX_ 0 --env MALLOC_TRIM_THRESHOLD_ 100000000000 >/dev/null
	@touch $(STAMP)

reproduce: $(STAMP)
	$(RUNENV) $(PY) -m fer_lib reproduce --profile $(PROFILE) $(if $(FROM),--from $(FROM),) $(PUBLISH_FLAG) $(ALLOW_DIRTY_FLAG)

# The suite runs inside scripts/offline.sh: no network but loopback, so a hidden download fails it.
# Outputs are removed after a pass and kept (for a look) after a failure; pytest's exit code is kept.
test: $(STAMP)
	rm -rf $(TEST_BUILD)
	$(RUNENV) FER_PROFILE=smoke FER_PROGRESS=0 FER_RESULTS_DIR=$(TEST_BUILD)/results FER_DATA_DIR=$(TEST_BUILD)/data PYTHONDONTWRITEBYTECODE=1 \
	    FER_HYPOTHESIS_DIR=$(TEST_BUILD)/hypothesis scripts/offline.sh $(PY) -m pytest -o cache_dir=$(TEST_BUILD)/pytest-cache \
	    tests notebooks --nbval-lax --nbval-cell-timeout=900 --timeout=1800 $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 0 ]; then rm -rf $(TEST_BUILD); else echo "test outputs kept in $(TEST_BUILD)"; fi; exit $$rc

# The loop while developing: the unit tests without nbval and without the `slow` and `notebooks` marks
# (make test, which CI runs, runs everything). Same environment and offline namespace as make test.
FAST_BUILD := $(CURDIR)/build/test-fast
test-fast: $(STAMP)
	rm -rf $(FAST_BUILD)
	$(RUNENV) FER_PROFILE=smoke FER_PROGRESS=0 FER_RESULTS_DIR=$(FAST_BUILD)/results FER_DATA_DIR=$(FAST_BUILD)/data PYTHONDONTWRITEBYTECODE=1 \
	    FER_HYPOTHESIS_DIR=$(FAST_BUILD)/hypothesis scripts/offline.sh $(PY) -m pytest -o cache_dir=$(FAST_BUILD)/pytest-cache \
	    tests -m "not slow and not notebooks" -q --timeout=600 $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 0 ]; then rm -rf $(FAST_BUILD); else echo "test outputs kept in $(FAST_BUILD)"; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check fer_lib tests bench scripts
	$(PY) -m ruff format --check fer_lib tests bench scripts

# Lab's root is the repository (runs/, results/ browsable); its file browser opens notebooks/, where the
# kernels run, as under papermill. PORT=8899 picks the port (default: 8888, else the next free one).
PORT ?=
lab: install
	$(RUNENV) $(VENV)/bin/jupyter lab --config=$(CURDIR)/jupyter_server_config.py --allow-root --no-browser \
	    --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=$(CURDIR) $(if $(PORT),--ServerApp.port=$(PORT),)

notebooks: $(STAMP)
	$(PY) scripts/normalize_notebooks.py

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(RUNENV) $(if $(PUBLISH_FLAG),FER_PUBLISH=1,) $(PY) $$b || exit $$?; done

# Exploratory runs and test outputs; the published results/ stay.
clean-runs:
	rm -rf runs build/test

clean-results:
	rm -rf results/notebooks results/tables results/figures results/metrics.csv results/README.md
