"""`accelerate launch` with two CPU processes (gloo) runs the whole loop on the tiny model.

configs/accelerate/ddp.yaml on a machine without GPUs starts CPU processes over gloo. Checked: the run
(IFT, its eval, search, step-DPO, eval) completes; rank 0 writes every run file once and rank 1 none; the
pairs equal those of single-process runs from the same M1 on each rank's block of problems (the documented
difference: a rank's batches are seeded like a single process's first batches); eval (batch size 1)
equals a single process's; SFT and the adapter train; ``--resume`` redoes exactly the missing stage.
DeepSpeed ZeRO-3 runs too (deepspeed is in the test extra).
"""

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from presrm.config import load_config
from presrm.jsonio import read_json, read_jsonl
from presrm.loop import _stage_labels, run

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "configs" / "accelerate"
SMOKE = ROOT / "configs" / "smoke.yaml"
ACCELERATE_BIN = Path(sys.executable).with_name("accelerate")

# Every os.replace (jsonio's atomic writes, model folders moved into place) logged per rank.
SITECUSTOMIZE = '''
import os
_replace = os.replace
def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    with open(os.environ["PRESRM_TEST_WRITES"] + "." + os.environ.get("RANK", "launcher"), "a") as f:
        f.write(os.path.abspath(os.fspath(dst)) + "\\n")
os.replace = replace
'''


def _overrides(model_dir, data, out, *extra):
    return [f"model={model_dir}", f"output_dir={out}", "name=t", "device=cpu", f"search.data_file={data}",
            f"eval.data_file={data}", "search.offset=3", "loop.guard=off", "search.num_problems=2", "search.k=3",
            "search.max_steps=2",
            "search.max_step_tokens=8", "search.temperature=1.0", "search.deterministic=true",
            "judge.mode=pairwise", "judge.both_orders=false", "judge.tie_margin=0", "train.max_steps=1",
            "train.batch_size=2", "train.lora_r=2", "train.lora_alpha=4", "eval.limit=3", "eval.max_new_tokens=8",
            "eval.batch_size=1", *extra]


# IFT (SFT under DDP) on problems 3-4 (0-2 are eval problems) makes M1; M0 is not evaluated, M1 is.
IFT = ["init.ift=true", "init.offset=3", "init.ift_problems=2", "init.max_steps=1", "init.batch_size=2",
       "init.max_length=512", "eval.before=false"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# accelerate picks FSDP only on accelerators: on CPU processes the launch of fsdp2.yaml becomes plain DDP
# (AcceleratorState keeps MULTI_CPU). This hook lifts that one check, as accelerate itself does for GPUs
# (`distributed_type = FSDP` in both states, the plugin, its mixed precision); everything after it (accelerate's FSDP2
# preparation, TRL's DPO under FSDP, presrm's gather and rebuild) runs unchanged, over gloo.
FSDP_ON_CPU = '''
from accelerate import state as _state
_init = _state.AcceleratorState.__init__
def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == _state.DistributedType.MULTI_CPU:
        self.distributed_type = _state.DistributedType.FSDP
        _state.PartialState._shared_state["distributed_type"] = self.distributed_type  # as accelerate's init does
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
_state.AcceleratorState.__init__ = _fsdp_on_cpu
'''


def _launch(config: Path, overrides: list[str], tmp_path: Path, tag: str, *flags: str,
            hook: str = "") -> dict[str, list[str]]:
    """``accelerate launch --num_processes 2 -m presrm train``; return each rank's replaced paths. ``hook``: more
    code for every process's sitecustomize."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE + hook)
    log = tmp_path / f"writes-{tag}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PRESRM_TEST_WRITES": str(log),
           "PYTHONPATH": os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)}
    cmd = [str(ACCELERATE_BIN), "launch", "--config_file", str(config), "--num_processes", "2",
           "--main_process_port", str(_port()), "-m", "presrm", "train", "--config", str(SMOKE), *flags, *overrides]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert r.stdout.count("Run directory:") == 1  # rank 0 prints the summary, rank 1 nothing
    return {rank: Path(f"{log}.{rank}").read_text().split() if Path(f"{log}.{rank}").exists() else []
            for rank in ("0", "1")}


def _under(paths: list[str], root: Path) -> list[str]:
    """Run files among ``paths``: under ``root``, outside the trainers' scratch folders."""
    return [p for p in paths if p.startswith(str(root)) and "/.trainer/" not in p]


@pytest.mark.slow
def test_two_processes_run_the_loop(tiny_model_dir, gsm8k_like, tmp_path):
    out = tmp_path / "runs"
    overrides = _overrides(tiny_model_dir, gsm8k_like, out, *IFT, f"init.data_file={gsm8k_like}")
    writes = _launch(ACCELERATE / "ddp.yaml", overrides, tmp_path, "first")
    root = out / "t"
    it = root / "iter_0"
    assert (root / "report.html").exists() and (it / "model" / "config.json").exists()
    assert _under(writes["1"], root) == []
    counts = Counter(_under(writes["0"], root))
    # every file is written once, by rank 0; stages.jsonl alone gains a line (and is rewritten) per stage
    assert counts.pop(str(root / "stages.jsonl")) == len(_stage_labels(load_config(SMOKE, overrides)))
    assert counts and max(counts.values()) == 1, counts
    for f in ("config.yaml", "init/ift.jsonl", "init/model", "init/train.json", "init/eval.json",
              "iter_0/samples.jsonl", "iter_0/search.json", "iter_0/pairs.jsonl", "iter_0/model",
              "iter_0/train.json", "iter_0/eval.json", "report.json"):
        assert str(root / f) in counts, f
    sft = read_json(root / "init" / "train.json")
    assert sft["distributed"]["processes"] == 2 and sft["optimizer_steps"] == 1 and sft["lora_b_norm"] > 0

    train = read_json(it / "train.json")
    assert train["distributed"] == {"processes": 2, "type": "MULTI_CPU"}
    assert train["optimizer_steps"] == 1 and train["lora_b_norm"] > 0 and train["master_weights_dtype"] == "float32"
    assert (it / "adapter" / "adapter_config.json").exists()
    assert read_json(it / "eval.json")["protocol"]["processes"] == 2

    # Each rank searched one problem with M1; a single process searching that problem alone with M1 gives the
    # same pairs.
    alone = []
    for r in range(2):
        cfg = load_config(SMOKE, _overrides(root / "init" / "model", gsm8k_like, tmp_path / f"alone{r}",
                                            f"search.offset={3 + r}", "search.num_problems=1",
                                            f"eval.before={'true' if r == 0 else 'false'}", "eval.after=false"))
        run(cfg)
        alone.append(tmp_path / f"alone{r}" / "t")
    assert read_jsonl(it / "pairs.jsonl") == read_jsonl(alone[0] / "iter_0" / "pairs.jsonl") + read_jsonl(
        alone[1] / "iter_0" / "pairs.jsonl")
    assert [r["id"] for r in read_jsonl(it / "samples.jsonl")] == [
        r["id"] for a in alone for r in read_jsonl(a / "iter_0" / "samples.jsonl")]
    # Greedy eval one problem at a time: sharding changes nothing (M1 evaluated by both).
    two = read_jsonl(root / "init" / "eval_samples.jsonl")
    one = read_jsonl(alone[0] / "iter_0" / "eval_before_samples.jsonl")
    assert [(r["id"], r["completion"]) for r in two] == [(r["id"], r["completion"]) for r in one] and len(two) == 3

    # --resume after losing the last eval: only that stage runs again (plus the report).
    eval_before = read_json(it / "eval.json")
    (it / "eval.json").unlink()
    writes = _launch(ACCELERATE / "ddp.yaml", overrides, tmp_path, "resume", "--resume")
    assert _under(writes["1"], root) == []
    assert sorted(_under(writes["0"], root)) == sorted(str(root / f) for f in (
        "iter_0/eval_samples.jsonl", "iter_0/eval.json", "stages.jsonl", "report.json", "report.html"))
    again = read_json(it / "eval.json")
    assert again["strict"] == eval_before["strict"] and again["n"] == 3


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)) for p in sorted(ACCELERATE.glob("*.yaml"))}
    assert set(kinds) == {"single_gpu", "ddp", "zero3", "fsdp2"}
    assert {k: str(c.distributed_type.value) for k, c in kinds.items()} == {
        "single_gpu": "NO", "ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "fsdp2": "FSDP"}
    ds = kinds["zero3"].deepspeed_config
    assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is False  # whole fp32 weights, then sharded
    fsdp = kinds["fsdp2"].fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_cpu_ram_efficient_loading"] is False
    for path in ACCELERATE.glob("*.yaml"):  # each header shows the command that uses it
        assert "accelerate launch --config_file configs/accelerate/" + path.name in path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_deepspeed_zero3_trains_fp32_master_weights(tiny_model_dir, gsm8k_like, tmp_path, lora):
    """ZeRO-3 over two CPU processes: full fine-tuning at lr 5e-7 moves every weight (bf16 via torch autocast
    over fp32 weights; the fp32 master values gathered into the saved model); LoRA SFT and DPO train and merge.
    deepspeed comes with the test extra, so this runs in CI."""
    from safetensors.torch import load_file

    lr = 5e-7 if not lora else 1e-2
    extra = ["eval.before=false", "eval.after=false", f"train.lora={str(lora).lower()}",
             f"train.learning_rate={lr}"] + ([*IFT, f"init.data_file={gsm8k_like}"] if lora else [])
    _launch(ACCELERATE / "zero3.yaml", _overrides(tiny_model_dir, gsm8k_like, tmp_path / "runs", *extra), tmp_path,
            "zero3")
    it = tmp_path / "runs" / "t" / "iter_0"
    train = read_json(it / "train.json")
    assert train["distributed"]["type"] == "DEEPSPEED" and train["master_weights_dtype"] == "float32"
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(it / "model" / "model.safetensors")
    change = {n: float((after[n].float() - before[n].float()).abs().max()) for n in before}
    if lora:
        sft = read_json(it.parent / "init" / "train.json")
        assert sft["distributed"]["type"] == "DEEPSPEED" and sft["lora_b_norm"] > 0
        assert train["lora_b_norm"] > 0 and (it / "adapter" / "adapter_config.json").exists()
        assert change["model.layers.0.self_attn.q_proj.weight"] > 0  # the merged adapter
        assert change["model.layers.0.mlp.up_proj.weight"] == 0  # not adapted
    else:
        assert all(after[n].dtype == before[n].dtype for n in before)  # saved in fp32
        assert all(0 < c <= 1.01 * lr for c in change.values()), change


FSDP2_GATHER = """
import json, sys, torch, torch.distributed as dist
from types import SimpleNamespace
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM
from peft import get_peft_model
from presrm.config import TrainConfig
from presrm.train import _lora_config, gather_trained, rebuild

dist.init_process_group("gloo")
base, out, result = sys.argv[1], sys.argv[2], {}
for lora in (False, True):
    cfg = TrainConfig(lora=lora, lora_r=2, lora_alpha=4)

    def fresh():
        m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        torch.manual_seed(0)  # the same LoRA initialisation every time
        return get_peft_model(m, _lora_config(cfg)) if lora else m

    model = fresh()
    for layer in (model.base_model.model if lora else model).model.layers:
        fully_shard(layer)
    fully_shard(model)
    with torch.no_grad():  # "training": every trainable shard moves by 0.01
        for p in model.parameters():
            if p.requires_grad:
                p.to_local().add_(0.01)
    params = gather_trained(SimpleNamespace(is_deepspeed_enabled=False, model=model))
    if dist.get_rank() == 0:
        got = dict(rebuild(base, params, _lora_config(cfg) if lora else None).named_parameters())
        want = {n: p + 0.01 if p.requires_grad else p for n, p in fresh().named_parameters()}
        result["lora" if lora else "full"] = {"trained": len(params), "names_match": sorted(got) == sorted(want),
                                              "max_diff": max(float((got[n] - want[n]).abs().max()) for n in want)}
if dist.get_rank() == 0:
    json.dump(result, open(out, "w"))
dist.barrier()  # rank 1 leaves only after rank 0's rebuild: an early exit aborted in gloo's teardown (CI, once)
dist.destroy_process_group()
"""


def test_fsdp2_gather_and_rebuild(tiny_model_dir, tmp_path):
    """What rank 0 does after FSDP2 training, on a model sharded by hand over two CPU processes, full and LoRA:
    the trained DTensors gathered whole and the model rebuilt exactly (training itself through accelerate's
    FSDP2: test_fsdp2_trains_through_accelerate_like_one_process)."""
    script, out = tmp_path / "fsdp2_gather.py", tmp_path / "result.json"
    script.write_text(FSDP2_GATHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port",
                        str(_port()), str(script), str(tiny_model_dir), str(out)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["full"] == {"trained": 20, "names_match": True, "max_diff": 0.0}
    assert result["lora"] == {"trained": 16, "names_match": True, "max_diff": 0.0}  # A and B of q/k/v/o x 2 layers


@pytest.mark.slow
def test_fsdp2_trains_through_accelerate_like_one_process(tiny_model_dir, gsm8k_like, tmp_path):
    """configs/accelerate/fsdp2.yaml over two CPU processes: the loop searches, then step-DPO trains under FSDP2
    (full fine-tuning, fp32, one rank's batch of 1 each) and rank 0 saves the gathered model. One process
    training on the same pairs with a batch of 2 (the same global batch, in the same order) gives the same
    update: the relative L2 difference of the two weight updates is below 1e-3 (fp32 reductions in another
    order; Adam's first step divides each gradient by its own size, so the check is on the update itself)."""
    import torch
    from safetensors.torch import load_file

    from presrm.models import load_model
    from presrm.train import train_step_dpo

    lr = 1e-4
    extra = ["eval.before=false", "eval.after=false", "search.num_problems=4", "train.lora=false",
             f"train.learning_rate={lr}", "train.precision=fp32", "train.max_steps=1"]
    out = tmp_path / "runs"
    _launch(ACCELERATE / "fsdp2.yaml", _overrides(tiny_model_dir, gsm8k_like, out, *extra, "train.batch_size=1"),
            tmp_path, "fsdp2", hook=FSDP_ON_CPU)
    it = out / "t" / "iter_0"
    train = read_json(it / "train.json")
    assert train["distributed"] == {"processes": 2, "type": "FSDP"} and train["master_weights_dtype"] == "float32"
    pairs = read_jsonl(it / "pairs.jsonl")
    assert len(pairs) >= 2 and train["optimizer_steps"] == 1

    cfg = load_config(SMOKE, _overrides(tiny_model_dir, gsm8k_like, tmp_path / "one", *extra, "train.batch_size=2"))
    model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
    _, alone = train_step_dpo(model, tok, pairs, cfg.train, tmp_path / "one" / "adapter", seed=cfg.seed,
                              device="cpu")
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(it / "model" / "model.safetensors")
    own = {n: p.detach() for n, p in alone.named_parameters()}
    two = torch.cat([(after[n].float() - before[n].float()).flatten() for n in before])
    one = torch.cat([(own[n].float() - before[n].float()).flatten() for n in before])
    assert float(one.norm()) > 0 and all(after[n].dtype == torch.float32 for n in after)
    assert float((two - one).norm() / one.norm()) < 1e-3


SHARED_PREFIX_RUN = """
import json, sys
from pathlib import Path
from presrm import dist
from presrm.config import TrainConfig
from presrm.models import load_model
from presrm.train import train_step_dpo

model_dir, pairs_file, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
pairs = json.loads(pairs_file.read_text())
model, tok = load_model(model_dir, device="cpu", training=True, precision="fp32")
cfg = TrainConfig(**json.loads(sys.argv[4]))
metrics, _ = train_step_dpo(model, tok, pairs, cfg, out / "adapter", device="cpu")
if dist.is_main():
    (out / "train.json").write_text(json.dumps(metrics, default=str))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("config", "hook"), [("ddp", ""), ("zero3", ""), ("fsdp2", FSDP_ON_CPU)],
                         ids=["ddp", "zero3", "fsdp2"])
def test_shared_prefix_losses_equal_one_process(tiny_model_dir, tmp_path, config, hook):
    """Step-DPO on the shared-prefix path over two CPU processes (one pair per rank and step) logs the losses of
    one process with the same global batch of two, on the shared path and on TRL's standard path, within 1e-5
    (full fine-tuning, fp32, DPO's loss alone: the SFT term is a token mean over a rank's batch, which two ranks
    take over different token counts)."""
    from presrm.config import TrainConfig
    from presrm.models import load_model
    from presrm.train import train_step_dpo
    from tests.test_shared_prefix import _pairs

    _, tok = load_model(str(tiny_model_dir), device="cpu", precision="fp32")
    pairs = _pairs(tok)
    pairs_file, script = tmp_path / "pairs.json", tmp_path / "shared_prefix_run.py"
    pairs_file.write_text(json.dumps(pairs))
    script.write_text(SHARED_PREFIX_RUN)
    settings = {"lora": False, "learning_rate": 1e-4, "precision": "fp32", "max_steps": 2, "shared_prefix": True}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(hook)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(hooks), str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    cmd = [str(ACCELERATE_BIN), "launch", "--config_file", str(ACCELERATE / f"{config}.yaml"), "--num_processes",
           "2", "--main_process_port", str(_port()), str(script), str(tiny_model_dir), str(pairs_file),
           str(tmp_path / "two"), json.dumps({**settings, "batch_size": 1})]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    two = read_json(tmp_path / "two" / "train.json")
    assert two["shared_prefix"] is True and two["distributed"]["processes"] == 2

    def losses(metrics):
        return [h["loss"] for h in metrics["log_history"] if "loss" in h]

    for shared in (True, False):
        model, tok = load_model(str(tiny_model_dir), device="cpu", training=True, precision="fp32")
        cfg = TrainConfig(**{**settings, "batch_size": 2, "shared_prefix": shared})
        one, _ = train_step_dpo(model, tok, pairs, cfg, tmp_path / f"one-{shared}" / "adapter", device="cpu")
        assert one["shared_prefix"] is shared and len(losses(one)) == 2
        assert losses(two) == pytest.approx(losses(one), rel=1e-5, abs=1e-5), (shared, losses(two), losses(one))
