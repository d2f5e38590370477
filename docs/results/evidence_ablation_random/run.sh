#!/bin/bash
# Judge ablation arm (c) at M3: approach 4's recipe (SFT term + search.no_repeats) with the candidates ranked at random.
# Run from the root of a checkout (with .venv-vllm built there, the data in ../shared/data): the run used a
# frozen worktree of commit 63d5bb1 (README.md beside this script), made beside the checkout.
C=$PWD
[ -d ../wt_nr ] || git worktree add ../wt_nr 63d5bb1 || exit 1
cd ../wt_nr || exit 1
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PRESRM_DATA_DIR=../shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
date -u +"start %F %T"
"$C"/.venv-vllm/bin/python -m presrm train --config configs/evidence_cpu.yaml output_dir=runs/evid_rand train.sft_weight=1.0 search.no_repeats=true judge.mode=random eval.judge_eval=false --resume
echo "rc=$?"
date -u +"end %F %T"
