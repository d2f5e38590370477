"""GPU check: the smoke recipe trains at lr 5e-7 in bf16 autocast over fp32 master weights; the weights change.

Runs ``configs/smoke.yaml`` (one iteration: step search, step-DPO, eval) with full fine-tuning
(``train.lora=false``), ``train.learning_rate=5e-7`` and ``train.precision=bf16``, then prints the largest
absolute change of every weight tensor from M0 to M1, and whether it survives a cast to bf16 (what
bf16 inference sees). On a GPU it then runs, where vllm imports, the same recipe on the vLLM engine in one
process, and under ``accelerate launch`` on every GPU: ``configs/accelerate/single_gpu.yaml`` (one GPU) or
``ddp.yaml`` (more), ``zero3.yaml`` (when deepspeed is installed) and ``fsdp2.yaml``, one DPO step each,
checking that the weights changed; with two or more GPUs and vllm, also ``ddp.yaml`` with ``engine=vllm``
(one vLLM engine per rank). Before those, the shared-prefix step-DPO path against TRL's (the smoke run's
pairs, fp32: reference log-probs and loss). One line per check says ``ok`` or what failed. Figures go to
``<out>/gpu_check.json``.

Exit status 1 when a check fails (no weight changed, not bf16 autocast, not fp32 master weights).
``benchmarks/gpu_check.sh`` installs everything on a bare machine first; ``--device cpu`` is a dry run
of the same checks on the CPU (bf16 autocast is emulated there, so keep the model tiny).

Run: ``python benchmarks/gpu_check.py [--device cuda|cpu] [--model M] [--out DIR] [KEY=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LR = 5e-7
VLLM = ["engine=vllm", "vllm.enforce_eager=true", "vllm.gpu_memory_utilization=0.5"]  # eager: a quick start
# GSM8K-format problems for a machine without the GSM8K files and without the hub (the check needs pairs,
# not a benchmark): used only when the tasks' own data cannot be found.
PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 6 pens. How many pens are in 5 boxes?", "6 * 5 = <<6*5=30>>30\n#### 30"),
    ("Sam had 20 dollars and spent 8. How much is left?", "20 - 8 = <<20-8=12>>12\n#### 12"),
    ("Ann reads 10 pages a day for 3 days. How many pages does she read?", "10 * 3 = <<10*3=30>>30\n#### 30"),
    ("A class of 24 splits into 4 equal teams. How many are in each team?", "24 / 4 = <<24/4=6>>6\n#### 6"),
    ("Bo has 9 cards and gives away 2. How many cards remain?", "9 - 2 = <<9-2=7>>7\n#### 7"),
]


def data_overrides(out: Path) -> list[str]:
    """``search.data_file`` / ``eval.data_file`` pointing at :data:`PROBLEMS` when GSM8K is not on this machine."""
    from presrm.data import load_problems, load_task
    from presrm.errors import PresrmError

    try:
        for task in ("gsm8k_train", "gsm8k"):
            load_problems(load_task(task), limit=1)
        return []
    except (PresrmError, OSError) as e:
        print(f"GSM8K not found here ({type(e).__name__}); using {len(PROBLEMS)} built-in problems")
    path = out / "problems.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    # the first two evaluate, the other four are searched: a run never searches a problem it evaluates on
    return [f"search.data_file={path}", f"eval.data_file={path}", "eval.limit=2", "search.offset=2"]


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def weight_changes(m0: Path, m1: Path) -> list[dict]:
    """Per tensor of M0: shape, largest absolute change to M1 (in fp32), and whether the bf16 casts differ."""
    import torch

    before, after = load_weights(m0), load_weights(m1)
    rows = []
    for name, w0 in before.items():
        w1 = after[name]
        rows.append({"tensor": name, "shape": list(w0.shape), "dtype": str(w1.dtype).removeprefix("torch."),
                     "max_abs_change": float((w1.double() - w0.double()).abs().max()),
                     "bf16_differs": bool((w1.to(torch.bfloat16) != w0.to(torch.bfloat16)).any())})
    return rows


def summarize(rows: list[dict]) -> dict:
    changes = sorted(r["max_abs_change"] for r in rows)
    return {"tensors": len(rows), "changed": sum(c > 0 for c in changes),
            "median_max_abs_change": changes[len(changes) // 2], "largest_change": changes[-1],
            "bf16_differs": sum(r["bf16_differs"] for r in rows)}


def print_rows(rows: list[dict]) -> None:
    print(f"{'tensor':64s} {'shape':>14s} {'max |change|':>13s}  bf16 differs")
    for r in rows:
        print(f"{r['tensor']:64s} {'x'.join(map(str, r['shape'])):>14s} {r['max_abs_change']:13.3e}  "
              f"{'yes' if r['bf16_differs'] else 'no'}")


def check(label: str, train: dict, rows: list[dict], *, lr: float) -> list[str]:
    """What is wrong with a run's training, as lines (none: it trained as intended)."""
    s = summarize(rows)
    print(f"{label}: {s['changed']}/{s['tensors']} tensors changed (median of the largest changes "
          f"{s['median_max_abs_change']:.3e}, largest {s['largest_change']:.3e}, lr {lr:g}); "
          f"{s['bf16_differs']}/{s['tensors']} still differ after a cast to bf16; precision {train['precision']}, "
          f"master weights {train['master_weights_dtype']}, {train['distributed']}")
    problems = []
    if s["changed"] == 0:
        problems.append(f"{label}: no weight changed")
    if train["precision"] != "bf16 autocast":
        problems.append(f"{label}: trained in {train['precision']}, not bf16 autocast")
    if train["master_weights_dtype"] != "float32":
        problems.append(f"{label}: master weights in {train['master_weights_dtype']}, not float32")
    return problems


def checked(result: dict, label: str, problems: list[str], before: int = 0) -> None:
    """One line for the check ``label``: ok, or its problems (those added since ``before``)."""
    mine = problems[before:]
    result.setdefault("checks", {})[label] = "ok" if not mine else mine
    print(f"gpu_check: {label}: {'ok' if not mine else 'FAILED: ' + '; '.join(mine)}", flush=True)


def recipe_overrides(model: str, device: str, out: Path, name: str) -> list[str]:
    """The smoke recipe with full fine-tuning at lr 5e-7 in bf16 autocast, one DPO step; 4 problems searched
    (the recipe's 2 can leave no pair to train on)."""
    return [f"model={model}", f"device={device}", f"output_dir={out}", f"name={name}", "train.lora=false",
            f"train.learning_rate={LR}", "train.precision=bf16", "train.max_steps=1", "search.num_problems=4",
            "loop.guard=off"]  # the check is training's; the guard has its own tests


def launch(config: str, processes: int, overrides: list[str]) -> int:
    """``accelerate launch`` of the smoke recipe; its exit status."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / config), "--num_processes", str(processes), "--main_process_port",
           str(port), "-m", "presrm", "train", "--resume", "--config", str(ROOT / "configs" / "smoke.yaml"), *overrides]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def shared_prefix_check(model: str, device: str, pairs: list[dict], out: Path) -> tuple[dict, list[str]]:
    """``train.shared_prefix`` on this device: the one-pass-per-pair path against TRL's two rows, in fp32 with
    LoRA, on the smoke run's own pairs: the precomputed reference log-probs and the loss of one batch (the
    adapter moved off zero first). On CUDA the masked and the causal passes run different SDPA kernels, so the
    bound is 1e-4 relative, where the CPU test (tests/test_shared_prefix.py) holds 1e-5."""
    import copy

    import torch

    from presrm.config import TrainConfig
    from presrm.models import load_model
    from presrm.train import step_dpo_trainer

    base, tok = load_model(model, device=device, training=True, precision="fp32")
    got = {}
    for shared in (False, True):
        cfg = TrainConfig(lora=True, precision="fp32", batch_size=len(pairs), max_steps=1, shared_prefix=shared)
        trainer = step_dpo_trainer(copy.deepcopy(base), tok, pairs, cfg, out / f"shared_prefix_{shared}" / ".trainer",
                                   device=device)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, p in sorted(trainer.model.named_parameters()):
                if p.requires_grad:
                    p.add_(0.01 * torch.randn(p.shape, generator=g).to(p.device))
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(trainer.data_collator(rows)))
        refs = [r[key] for key in ("ref_chosen_logps", "ref_rejected_logps") for r in rows]
        got[shared] = (torch.tensor(refs), float(loss), trainer.shared_attention)
    (ref_a, loss_a, _), (ref_b, loss_b, attention) = got[False], got[True]
    ref_diff = float(((ref_b - ref_a).abs() / ref_a.abs().clamp(min=1.0)).max())
    loss_diff = abs(loss_b - loss_a) / max(abs(loss_a), 1.0)
    figures = {"pairs": len(pairs), "attention": attention, "ref_logps_max_rel_diff": ref_diff,
               "loss_rel_diff": loss_diff, "loss": loss_a}
    problems = [f"shared prefix: {what} differs from TRL's path by {d:.2g} (relative)"
                for what, d in (("a reference log-prob", ref_diff), ("the loss", loss_diff)) if d > 1e-4]
    if attention is None:
        problems.append("shared prefix: not used (the model's attention takes no 4D mask)")
    return figures, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="embedded", help="M0: hub id, model folder, .gguf file or 'embedded'")
    p.add_argument("--out", default="runs/gpu_check", help="where the runs and gpu_check.json go")
    p.add_argument("overrides", nargs="*", help="more recipe overrides, KEY=VALUE")
    args = p.parse_args(argv)

    import torch

    from presrm.config import load_config
    from presrm.jsonio import read_json, write_json
    from presrm.loop import run
    from presrm.models import hardware, local_dir

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (pass --device cpu for a dry run on the CPU)")
        return 1
    out = Path(args.out).resolve()
    extra = data_overrides(out) + args.overrides
    m0 = Path(local_dir(args.model))
    result: dict = {"hardware": hardware(args.device), "lr": LR, "model": args.model, "runs": {}}
    problems: list[str] = []

    def record(label: str, run_dir: Path) -> None:
        train = read_json(run_dir / "iter_0" / "train.json")
        rows = weight_changes(m0, run_dir / "iter_0" / "model")
        if label == "one process":
            print_rows(rows)
        problems.extend(check(label, train, rows, lr=LR))
        result["runs"][label] = {"summary": summarize(rows), "precision": train["precision"],
                                 "master_weights_dtype": train["master_weights_dtype"],
                                 "distributed": train["distributed"], "seconds": train["seconds"],
                                 "pairs": train["pairs"], "per_tensor": rows}

    name = f"one_{args.device}"
    cfg = load_config(ROOT / "configs" / "smoke.yaml", recipe_overrides(args.model, args.device, out, name) + extra)
    run(cfg, resume=True)  # a rerun continues its earlier runs
    record("one process", out / name)
    checked(result, "one process", problems)
    before = len(problems)
    pairs = [json.loads(line) for line in (out / name / "iter_0" / "pairs.jsonl").read_text().splitlines()][:4]
    result["shared_prefix"], found = shared_prefix_check(args.model, args.device, pairs, out)
    problems.extend(found)
    checked(result, "shared prefix", problems, before)

    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    has_vllm = importlib.util.find_spec("vllm") is not None
    if gpus and has_vllm:  # the vLLM engine on one GPU: search and evaluation on vLLM, training on transformers
        name = "vllm"
        before = len(problems)
        recipe = [*recipe_overrides(args.model, args.device, out, name), *VLLM, "eval.before=false", *extra]
        code = subprocess.run([sys.executable, "-m", "presrm", "train", "--resume", "--config",
                               str(ROOT / "configs" / "smoke.yaml"), *recipe], cwd=ROOT).returncode
        if code:
            problems.append(f"vllm: the run failed (exit {code})")
        else:
            record("vllm", out / name)
        checked(result, "vllm", problems, before)
    elif gpus:
        print("gpu_check: vllm: not run (vllm does not import here)")
    launches = [("single_gpu.yaml" if gpus == 1 else "ddp.yaml", [])]
    launches += [("zero3.yaml", [])] if importlib.util.find_spec("deepspeed") else []
    launches += [("fsdp2.yaml", [])]
    if gpus > 1 and has_vllm:
        launches += [("ddp.yaml", VLLM)]
    for config, more in launches if gpus else []:
        name = config.removesuffix(".yaml") + ("_vllm" if more else "")
        label, before = f"{name} x{gpus}", len(problems)
        code = launch(config, gpus, recipe_overrides(args.model, args.device, out, name)
                      + ["eval.before=false", f"eval.after={'true' if more else 'false'}"] + more + extra)
        if code:
            problems.append(f"{label}: accelerate launch failed (exit {code})")
        else:
            record(label, out / name)
        checked(result, label, problems, before)
    if not gpus:
        print("gpu_check: no GPU: the vLLM and accelerate launch checks are not run")
    result["problems"] = problems
    write_json(out / "gpu_check.json", result)
    print(f"gpu_check: {'FAILED: ' + '; '.join(problems) if problems else 'all checks passed'} "
          f"({out / 'gpu_check.json'})")
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
