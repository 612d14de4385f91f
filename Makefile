# The README's two commands: `make index` then `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-installs only when pyproject.toml changes, so a second `make index` installs nothing.
INSTALLED := $(VENV)/.installed
# cpu: faiss-cpu; gpu: the official faiss-gpu and the CUDA 12 runtime wheels it loads (same module, an NVIDIA
# GPU of compute capability 7.0 or newer and a CUDA 12 driver needed). Switching: `make clean-venv`.
FAISS ?= cpu

.PHONY: index test test-fast bench bench-quick eval gpu-check clean clean-venv

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,ray,$(FAISS)]'
	touch $@

index: $(INSTALLED)
	$(BIN)/xlsearch index corpora/demo --index indexes/demo

# Three workers, a test file each at a time (its module fixtures built once): most tests wait on processes
# they start, and on 2 cores shared with 4 busy processes the suite took 9:23 with two workers, 8:34 with
# three (README, Layout: tests). The files in the order the suite's conftest gives them (those with a slow
# test first): xdist would otherwise start the files with the most tests first, and the one-test Tatoeba
# eval (4 minutes) started 11 minutes into a 15.5-minute run. On a quiet 2-core host without AVX-512 the
# suite is CPU-bound either way (26-28 CPU-minutes, much of it the embedding model's): 15:30, 16:17, 14:34.
test: $(INSTALLED)
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

# The in-process tier: real model, files and FAISS, no subprocess (store, search, ranking, library)
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -q -m "not processes"

# `make bench QUICK=1` (or `make bench-quick`): small sizes, a smoke test whose timings mean nothing
bench: $(INSTALLED)
	$(BIN)/python -m bench $(if $(QUICK),--quick)

bench-quick: $(INSTALLED)
	$(BIN)/python -m bench --quick

# The ranking benchmarks the default scoring was chosen on, every scoring on their held-out halves (README,
# "Choosing the default scoring"); the first run embeds for about 20 minutes on 2 busy cores, later ones
# read the embedding cache (2 minutes)
TATOEBA ?= ../shared/corpora/tatoeba
eval: $(INSTALLED)
	mkdir -p bench/results && $(BIN)/xlsearch eval $(TATOEBA) --suite all --out bench/results/eval-suite.json

# What a GPU changes, measured on this machine in under 5 minutes on an H100/H200 (`make index FAISS=gpu`
# first); without a usable GPU its GPU rows say why they were skipped. QUICK=1: small sizes, any machine.
gpu-check: $(INSTALLED)
	$(BIN)/python -m bench.gpu $(if $(QUICK),--quick)

clean:
	rm -rf indexes .pytest_cache

clean-venv:
	rm -rf $(VENV)
