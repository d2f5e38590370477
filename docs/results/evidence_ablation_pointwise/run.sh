#!/bin/bash
# Judge ablation arm (b) at M3: approach 4 recipe (SFT term + search.no_repeats), candidates ranked by the model's own pointwise P(Yes) judge (no EFT: same M1).
cd /tmp/wt_nr
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PRESRM_DATA_DIR=/work/shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0
date -u +"start %F %T"
/work/main/.venv-vllm/bin/python -m presrm train --config configs/evidence_cpu.yaml output_dir=/tmp/evid_pw/runs train.sft_weight=1.0 search.no_repeats=true judge.mode=pointwise --resume
echo "rc=$?"
date -u +"end %F %T"
