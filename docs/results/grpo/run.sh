#!/bin/bash
# GRPO from the reproduction's M1 (issue "other self-rewarding systems"): one iteration of online RL rewarded by
# the model's own likelihood judge (train.algorithm=grpo), on the same 48 search problems as the self-judge arm's
# iteration 0, then the same guard and the same 300-problem evaluation; compared paired with M1 and with
# step-DPO's M2 from the same M1. Run from the root of a clone where `make reproduce` has run (commit cd81a94;
# runs/reproduce/ holds its M1 and evaluations), with the data in ../shared/data.
export HF_HUB_OFFLINE=1 PRESRM_DATA_DIR=../shared/data GLIBC_TUNABLES=glibc.malloc.hugetlb=1
date -u +"start %F %T"
.venv-vllm/bin/presrm train --config configs/reproduce.yaml name=grpo output_dir=runs engine=vllm iterations=1 \
  init.ift=false init.model=runs/reproduce/self_judge/init/model init.evaluate=false eval.before=false \
  eval.judge_eval=false train.algorithm=grpo --resume
echo "rc=$?"
date -u +"end %F %T"
.venv-vllm/bin/presrm compare runs/reproduce/self_judge/init/eval.json runs/grpo/iter_0/eval.json --common \
  --output runs/grpo/compare_m1_grpo.json
.venv-vllm/bin/presrm compare runs/reproduce/self_judge/iter_0/eval.json runs/grpo/iter_0/eval.json \
  --output runs/grpo/compare_stepdpo_grpo.json
