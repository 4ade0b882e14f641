# facetrust quick start:  `make run`  (set-up + main job on the embedded default)
#                         `make test` (set-up + the whole test suite)
#                         `make test-fast` (the unit tests: no end-to-end or integration test)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= all
# pytest-xdist workers of `make test`/`make test-fast`: a test file runs whole on one worker (its
# module fixtures: SLURM cluster, DVC remote, browser, set up once; tests/conftest.py puts each file
# in its own xdist group, the DVC and browser files in one), the longest files first (LONGEST_FIRST)
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
TARGET ?= results/ijbc_table.csv
export PATH := $(BIN):$(PATH)

.PHONY: run test test-fast install install-test mxnet-reference all-reports dag install-profile lint slurm-deps bench browser-deps

## run: create .venv, install pinned deps, run the main job on the embedded default
run: install
	snakemake --cores $(CORES) $(TARGET)
	@echo
	@echo "Main job done. Outputs:"
	@echo "  $(TARGET)"
	@echo "  results/metrics/<model>/<testset>.json   per-model metrics (TAR@FAR, AUC, settings)"
	@echo "  results/roc/                             ROC points"
	@echo "  logs/                                    one log and one benchmark file per job"
	@cat $(TARGET)

## all-reports: every table, figure and per-paper report
all-reports: install
	snakemake --cores $(CORES) all

## test: create .venv if missing, install test deps, run the whole suite
test: install-test mxnet-reference browser-deps
	$(BIN)/python -m pytest $(XDIST)

## test-fast: the unit tests only (markers `slow` and `integration` left out: no Snakemake DAG run,
##            no SLURM/DVC/browser/MXNet set-up, no benchmark script); a few minutes on 2 cores
test-fast: install-test
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not integration"

install: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r envs/requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed envs/requirements-test.txt
	$(BIN)/pip install --quiet -r envs/requirements-test.txt
	touch $@

## bench: every benchmark beside its reference (IJB-C-scale 1:1, reject curve, RecordIO decode vs MXNet,
##        CPU throughput, Bessel, GPU iResNet-50 when a GPU is present); one table of figures and ratios.
##        One BLAS/OpenMP thread; about 10-15 min on 2 cores (the first run also generates 1.2 GB of data).
bench: install-test mxnet-reference
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_all.py

## mxnet-reference: real MXNet (1.9.1, numpy<1.24) in its own venv, the RecordIO reference of the tests
mxnet-reference: .venv-mxnet/.installed

.venv-mxnet/.installed:
	test -x .venv-mxnet/bin/python || $(PYTHON) -m venv .venv-mxnet
	.venv-mxnet/bin/pip install --quiet mxnet==1.9.1 'numpy<1.24'
	touch $@

## slurm-deps: Debian packages of the single-node SLURM test cluster (root; the test installs them too)
slurm-deps:
	tests/integration/slurm/install.sh

## browser-deps: headless Chromium (Debian package) that opens the Snakemake report in a test (root)
browser-deps:
	tests/browser/install.sh

## dag: the rule graph of the main job as PNG (needs graphviz `dot`)
dag: install
	snakemake --rulegraph dot $(TARGET) | dot -Tpng > docs/rulegraph.png

## install-profile: make profiles/slurm the user profile `slurm` (snakemake --profile slurm ...)
install-profile:
	mkdir -p $(HOME)/.config/snakemake
	ln -sfn $(CURDIR)/profiles/slurm $(HOME)/.config/snakemake/slurm
	@echo "linked $(HOME)/.config/snakemake/slurm -> $(CURDIR)/profiles/slurm"

lint: install-test
	snakemake --lint
	snakefmt --check Snakefile workflow/rules
