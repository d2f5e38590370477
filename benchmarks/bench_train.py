"""Training throughput of presrm's step-DPO vs a plain TRL ``DPOTrainer``; writes the "train" section.

Both trainers get the same step pairs: GSM8K train problems, prompt = the
policy prompt plus the gold steps so far, chosen = the next gold step,
rejected = its verifier-confirmed perturbed twin (``presrm.init_data``), the
shape step search produces. Model: the embedded SmolLM2-135M-Instruct.

- presrm: ``presrm.train.train_step_dpo`` with the default ``TrainConfig``
  (LoRA r=16 on q/k/v/o, fp32 on CPU, reference log-probs precomputed once,
  EOS only on final steps).
- plain: ``DPOTrainer(model, args=DPOConfig(output_dir=...), train_dataset=pairs,
  processing_class=tok)`` with TRL's defaults (full fine-tuning, a second
  reference model, bf16, gradient checkpointing), with only the batch size and
  step count set to match presrm's, and whatever the CPU forces (reported).

Tokens/s = (2 x prompt + chosen + rejected tokens of every pair trained on) /
seconds of ``trainer.train()``; "end to end" adds trainer construction
(tokenisation, reference model, precompute).

Run: ``python benchmarks/bench_train.py [--pairs 32] [--batch-size 4] [--repeats 1] [--no-write] [--from-json F]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


SAVED = ROOT / ".benchcache" / "train.json"


def step_pairs(tok, n: int) -> list[dict]:
    """``n`` step pairs from GSM8K train (problems 6000+), gold step vs its perturbed twin."""
    from presrm.data import load_problems, load_task
    from presrm.generate import step_prompter
    from presrm.init_data import labelled_pairs

    task = load_task("gsm8k_train")
    problems = load_problems(task, limit=3 * n, offset=6000)
    prompt_for, out = step_prompter(tok, task), []
    for lp in labelled_pairs(problems, seed=0):
        n = len(lp.previous) + 1  # the pair's prompt: the policy's text before the ``Step n:`` of both steps
        prompt = prompt_for(lp.question, lp.previous, n).removesuffix(f"Step {n}:")
        out.append({"prompt": prompt, "chosen": lp.right + "\n", "rejected": lp.wrong + "\n"})
    return out[:n]


def _tokens(dataset) -> int:
    return sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset)


def run_presrm(pairs: list[dict], batch_size: int) -> dict:
    from presrm.config import TrainConfig
    from presrm.models import load_model
    from presrm.train import train_step_dpo

    model, tok = load_model("embedded", device="cpu", training=True)
    cfg = TrainConfig(batch_size=batch_size)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        metrics, _ = train_step_dpo(model, tok, pairs, cfg, Path(tmp) / "adapter", device="cpu")
    total = time.time() - t0
    return {"train_s": metrics["seconds"], "total_s": total, "tokens": metrics["tokens_per_epoch"] * cfg.epochs,
            "steps": metrics["optimizer_steps"], "precision": metrics["precision"], "forced": []}


def run_plain(pairs: list[dict], batch_size: int) -> dict:
    import datasets
    from trl import DPOConfig, DPOTrainer

    from presrm.models import load_model

    model, tok = load_model("embedded", device="cpu", training=True)
    forced = []
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"output_dir": tmp, "per_device_train_batch_size": batch_size, "report_to": [],
                  "save_strategy": "no"}
        try:
            args = DPOConfig(**kwargs)
        except (ValueError, RuntimeError) as e:  # a CPU without bf16 support
            forced.append(f"bf16=False ({type(e).__name__})")
            args = DPOConfig(**kwargs, bf16=False)
        t0 = time.time()
        trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(pairs),
                             processing_class=tok)
        t1 = time.time()
        trainer.train()
        t2 = time.time()
        steps = trainer.state.global_step
        tokens = _tokens(trainer.train_dataset) * args.num_train_epochs
    return {"train_s": t2 - t1, "total_s": t2 - t0, "tokens": tokens, "steps": steps,
            "precision": "bf16" if args.bf16 else "fp32", "forced": forced,
            "settings": f"lr {args.learning_rate}, gradient checkpointing {args.gradient_checkpointing}, "
                        f"precompute_ref_log_probs {args.precompute_ref_log_probs}"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--from-json",
                   help=f"re-render a saved measurement (runs that write the section save one to {SAVED.name})")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from presrm.models import load_tokenizer

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows, n_pairs, args.batch_size = saved["rows"], saved["pairs"], saved["batch_size"]
    else:
        pairs = step_pairs(load_tokenizer("embedded"), args.pairs)
        n_pairs = len(pairs)
        rows = {"presrm step-DPO (LoRA, precomputed ref)": [], "plain DPOTrainer (defaults)": []}
        for _ in range(args.repeats):  # alternate, so both see the same background load on a shared machine
            rows["presrm step-DPO (LoRA, precomputed ref)"].append(run_presrm(pairs, args.batch_size))
            rows["plain DPOTrainer (defaults)"].append(run_plain(pairs, args.batch_size))
        if not args.no_write:  # a trial run (--no-write) leaves the recorded measurement alone
            SAVED.parent.mkdir(exist_ok=True)
            SAVED.write_text(json.dumps({"rows": rows, "pairs": n_pairs, "batch_size": args.batch_size}, indent=2))
    lines = [
        "## train (`presrm.train.train_step_dpo` vs TRL `DPOTrainer` defaults)",
        "",
        f"{n_pairs} step pairs from GSM8K train (gold step vs its verifier-confirmed perturbed twin), "
        f"embedded SmolLM2-135M-Instruct, batch {args.batch_size}, CPU; best of {len(next(iter(rows.values())))}. "
        "presrm trains one epoch (its default); the plain trainer keeps TRL's default of 3 epochs, "
        "so compare tokens/s, not seconds.",
        "",
        "| trainer | precision | optimizer steps | train tokens | train s | tokens/s (train) | end-to-end s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    best = {}
    for name, runs in rows.items():
        r = min(runs, key=lambda x: x["train_s"])
        best[name] = r
        lines.append(f"| {name} | {r['precision']} | {r['steps']} | {int(r['tokens']):,} | {r['train_s']:.1f} | "
                     f"{r['tokens'] / r['train_s']:,.0f} | {r['total_s']:.1f} |")
    ours, plain = best.values()
    lines += ["", f"Speed-up of presrm's step-DPO in training tokens/s: "
              f"{(ours['tokens'] / ours['train_s']) / (plain['tokens'] / plain['train_s']):.2f}x.", "",
              f"Plain DPOTrainer settings: {plain.get('settings')}; forced for CPU: "
              f"{', '.join(plain['forced']) or 'nothing'}. Its token count includes the EOS it appends to every "
              "step (presrm keeps EOS on final steps only).",
              "", "The machine was shared with other jobs while this ran, so timings are noisy."]
    from _report import publish

    publish("train", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
