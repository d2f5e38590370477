"""vLLM under ``accelerate launch``: two CPU processes, one vLLM engine each, equal a single process.

Every rank builds its own engine in its own process (``distributed_executor_backend="external_launcher"``),
works on its block of the problems, and rank 0 writes the gathered results. Checked against single-process
``engine: vllm`` runs with the same seed: M0's greedy evaluation equals one process's evaluation of all the
problems, the pairs equal those of one process searching each rank's block (the documented difference of
sharded sampling, as with the HF engine in tests/test_accelerate.py; the single process runs vLLM's engine
in-process, as a launched rank does), and the judge evaluation, which rank 0 runs alone while rank 1 opens
and closes the same engines with it, equals one process's (natural set and scores). Skipped where vllm does
not import (``make test-vllm`` runs this file in .venv-vllm).
"""

from __future__ import annotations

from collections import Counter

import pytest

from presrm.engines.vllm import vllm_available
from tests.test_accelerate import ACCELERATE, SMOKE, _launch, _under

pytestmark = pytest.mark.skipif(vllm_available() is not None, reason=f"vLLM not importable: {vllm_available()}")

# fp32 (vllm.dtype) and eager: greedy text does not depend on which other prompts share a batch
VLLM = ["engine=vllm", "vllm.dtype=float32", "vllm.enforce_eager=true", "vllm.cpu_kv_cache_gb=0.25",
        "vllm.max_model_len=1024"]


def _overrides(model_dir, data, out, *extra):
    return [f"model={model_dir}", f"output_dir={out}", "name=t", "device=cpu", *VLLM, f"search.data_file={data}",
            f"eval.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
            "search.max_steps=2",
            "search.max_step_tokens=8", "search.temperature=1.0", "judge.mode=pointwise", "train.max_steps=1",
            "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4", "eval.limit=3", "eval.max_new_tokens=8",
            "eval.judge_eval=true", "eval.judge_eval_limit=2", "eval.judge_eval_k=2", "eval.judge_eval_max_steps=1",
            *extra]


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from tests.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64)  # vLLM's CPU kernels: head >= 32


@pytest.mark.slow
def test_two_processes_on_vllm_equal_one(vllm_model_dir, gsm8k_like, tmp_path, monkeypatch):
    from presrm.config import load_config
    from presrm.jsonio import read_json, read_jsonl
    from presrm.loop import _stage_labels, run

    out = tmp_path / "runs"
    writes = _launch(ACCELERATE / "ddp.yaml", _overrides(vllm_model_dir, gsm8k_like, out), tmp_path, "vllm")
    root = out / "t"
    it = root / "iter_0"
    assert _under(writes["1"], root) == []  # rank 1 writes no run file
    counts = Counter(_under(writes["0"], root))
    # every file is written once, by rank 0; stages.jsonl alone gains a line (and is rewritten) per stage
    assert counts.pop(str(root / "stages.jsonl")) == len(
        _stage_labels(load_config(SMOKE, _overrides(vllm_model_dir, gsm8k_like, out))))
    assert counts and max(counts.values()) == 1, counts
    for f in ("natural.jsonl", "iter_0/eval_before.json", "iter_0/judge_eval_before/results.json",
              "iter_0/pairs.jsonl", "iter_0/model", "iter_0/eval.json", "iter_0/judge_eval/results.json"):
        assert str(root / f) in counts, f
    before = read_json(it / "eval_before.json")
    assert before["protocol"]["processes"] == 2 and before["protocol"]["engine"] == "vllm"
    assert read_json(it / "train.json")["distributed"] == {"processes": 2, "type": "MULTI_CPU"}
    assert read_json(it / "eval.json")["n"] == 3

    # One process, the same seed: rank 0's block (with M0's evaluation and judge evaluation), then rank 1's. A
    # launched rank's engine runs in its own process (external_launcher), so these do too: vLLM's engine core
    # in a process of its own hands the n samples of a request out in another order (seen on rank 1's block).
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    alone = []
    for r in range(2):
        extra = [f"search.offset={3 + r}", "search.num_problems=1", "eval.after=false"]
        if r == 1:
            extra += ["eval.before=false", "eval.judge_eval=false"]
        run(load_config(SMOKE, _overrides(vllm_model_dir, gsm8k_like, tmp_path / f"alone{r}", *extra)))
        alone.append(tmp_path / f"alone{r}" / "t")
    assert read_jsonl(it / "pairs.jsonl") == read_jsonl(alone[0] / "iter_0" / "pairs.jsonl") + read_jsonl(
        alone[1] / "iter_0" / "pairs.jsonl")
    assert len(read_jsonl(it / "pairs.jsonl")) > 0
    two = read_jsonl(it / "eval_before_samples.jsonl")
    one = read_jsonl(alone[0] / "iter_0" / "eval_before_samples.jsonl")
    assert [(r["id"], r["completion"]) for r in two] == [(r["id"], r["completion"]) for r in one] and len(two) == 3
    assert read_jsonl(root / "natural.jsonl") == read_jsonl(alone[0] / "natural.jsonl")
    for name in ("samples.jsonl", "natural_samples.jsonl"):  # every judged step's score, on both sets
        judged = [read_jsonl(a / "iter_0" / "judge_eval_before" / name) for a in (root, alone[0])]
        assert judged[0] == judged[1] and judged[0], name


def test_a_tensor_parallel_size_must_divide_the_processes(monkeypatch, gsm8k_like, tmp_path):
    """Refused before any stage, naming the key: 4 processes cannot hold models of 3 GPUs each."""
    from presrm.config import load_config
    from presrm.errors import ConfigError
    from presrm.loop import check_runnable

    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = load_config(SMOKE, _overrides("embedded", gsm8k_like, tmp_path, "vllm.tensor_parallel_size=3"))
    with pytest.raises(ConfigError, match="key 'vllm.tensor_parallel_size': 3 GPUs per model do not divide the 4"):
        check_runnable(cfg)
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: vLLM spreads the model over GPUs itself
    check_runnable(load_config(SMOKE, _overrides("embedded", gsm8k_like, tmp_path, "vllm.tensor_parallel_size=3")))
