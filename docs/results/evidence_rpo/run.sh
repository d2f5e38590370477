#!/bin/bash
# Evidence run, approach 3: step-DPO with an SFT term on the chosen step (train.sft_weight=1, RPO-style).
cd /tmp/wt_rpo
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PRESRM_DATA_DIR=/work/shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
date -u +"start %F %T"
/work/main/.venv-vllm/bin/python -m presrm train --config configs/evidence_cpu.yaml output_dir=/tmp/evid_rpo/runs train.sft_weight=1.0 --resume
echo "rc=$?"
date -u +"end %F %T"
