# The README's two commands: `make index` then `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-installs only when pyproject.toml changes, so a second `make index` installs nothing.
INSTALLED := $(VENV)/.installed
# cpu: faiss-cpu; gpu: faiss-gpu-cu12 (same module, CUDA 12 driver needed). Switching: `make clean-venv`.
FAISS ?= cpu

.PHONY: index test bench bench-quick clean clean-venv

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,$(FAISS)]'
	touch $@

index: $(INSTALLED)
	$(BIN)/xlsearch index corpora/demo --index indexes/demo

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

# `make bench QUICK=1` (or `make bench-quick`): small sizes, a smoke test whose timings mean nothing
bench: $(INSTALLED)
	$(BIN)/python -m bench $(if $(QUICK),--quick)

bench-quick: $(INSTALLED)
	$(BIN)/python -m bench --quick

clean:
	rm -rf indexes .pytest_cache

clean-venv:
	rm -rf $(VENV)
