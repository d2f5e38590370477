#!/bin/bash
# Judge ablation arm (c) at M3: approach 4's recipe (SFT term + search.no_repeats) with the candidates ranked at random.
cd /tmp/wt_nr
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PRESRM_DATA_DIR=/work/shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
date -u +"start %F %T"
/work/main/.venv-vllm/bin/python -m presrm train --config configs/evidence_cpu.yaml output_dir=/tmp/evid_rand/runs train.sft_weight=1.0 search.no_repeats=true judge.mode=random eval.judge_eval=false --resume
echo "rc=$?"
date -u +"end %F %T"
