#!/bin/bash
# Evidence run, approach 3: step-DPO with an SFT term on the chosen step (train.sft_weight=1, RPO-style).
# Run from the root of a checkout (with .venv-vllm built there, the data in ../shared/data): the run used a
# frozen worktree of commit 1bd44db (README.md beside this script), made beside the checkout.
C=$PWD
[ -d ../wt_rpo ] || git worktree add ../wt_rpo 1bd44db || exit 1
cd ../wt_rpo || exit 1
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PRESRM_DATA_DIR=../shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
date -u +"start %F %T"
"$C"/.venv-vllm/bin/python -m presrm train --config configs/evidence_cpu.yaml output_dir=runs/evid_rpo train.sft_weight=1.0 --resume
echo "rc=$?"
date -u +"end %F %T"
