"""Step-DPO on the shared-prefix path against TRL's standard path, side by side; writes the "train" section.

Both paths train presrm's step-DPO (``presrm.train.train_step_dpo``) on the same step pairs with the same
settings; they differ only in ``train.shared_prefix``:

- shared prefix: one sequence ``[prompt | chosen | rejected]`` per pair (presrm.shared_prefix);
- TRL's standard path: TRL's ``DPOTrainer`` as it is, ``prompt + chosen`` and ``prompt + rejected`` as two rows.

Pairs: the evidence run's iteration-0 step pairs (docs/results/evidence_norepeat/iter_0/pairs.jsonl, made by the
embedded model's step search; prompts average 748 characters, steps 59 and 73). Settings: the evidence recipe's
(LoRA r=16 on q/k/v/o, lr 3e-4, the SFT term at weight 1, batch 4, max_length 512), precision as
``--precision`` (default ``auto``: what a run on this machine uses). Model: the embedded SmolLM2-135M-Instruct.

Each run is its own process (``--worker``), so that its peak memory is its own; the paths alternate, so both
see the same background. Per run: seconds of ``trainer.train()``, of the reference precompute with the trainer's
construction, pairs per second of each, the tokens each pass reads, the peak resident memory of the process
and that peak less the memory after the model was loaded (what training added: activations, optimizer state,
reference log-probs), and the logged losses (the two paths' must agree; in bf16 within bf16's rounding).

``--sft`` measures IFT the same way instead (section "train-sft"): padding-free batches (``init.padding_free``)
against padded ones, on the evidence run's IFT examples (docs/results/evidence_amx/init/ift.jsonl: GSM8K train
solutions as ``Step n:`` lines), full fine-tuning at batch 8 as the reproduction trains, with the share of this
machine's matmul peak each reaches (6 x parameters x the tokens trained on, per second, against the best
2048 x 2048 matmul in the dtype it trains in, on the same threads).

Run: ``python benchmarks/bench_train.py [--sft] [--pairs 64] [--repeats 2] [--precision auto] [--no-write]
[--from-json F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

PAIRS = ROOT / "docs" / "results" / "evidence_norepeat" / "iter_0" / "pairs.jsonl"
SAVED = ROOT / ".benchcache" / "train.json"
PATHS = {"shared": "shared prefix (presrm)", "standard": "TRL's standard path"}
IFT = ROOT / "docs" / "results" / "evidence_amx" / "init" / "ift.jsonl"
SFT_PATHS = {"padding_free": "padding-free (presrm)", "padded": "padded (TRL's default)"}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(path: str, n_pairs: int, precision: str) -> dict:
    """One training run in this process; its figures as a dict."""
    from presrm.config import TrainConfig
    from presrm.jsonio import read_jsonl
    from presrm.models import load_model
    from presrm.train import step_dpo_trainer

    pairs = read_jsonl(PAIRS)[:n_pairs]
    model, tok = load_model("embedded", device="cpu", training=True, precision=precision)
    loaded = _peak_mb()
    cfg = TrainConfig(lora=True, learning_rate=3e-4, sft_weight=1.0, batch_size=4, max_length=512,
                      precision=precision, shared_prefix=path == "shared")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = step_dpo_trainer(model, tok, pairs, cfg, Path(tmp) / ".trainer", device="cpu")
        t1 = time.perf_counter()
        trainer.train()
        t2 = time.perf_counter()
    shared = trainer.shared_attention is not None
    assert shared == (path == "shared"), (path, trainer.shared_attention)
    rows = trainer.train_dataset
    tokens = sum(len(r["prompt_ids"]) * (1 if shared else 2) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                 + (1 if shared else 0) for r in rows)
    return {"path": path, "pairs": len(pairs), "steps": trainer.state.global_step, "precompute_s": t1 - t0,
            "train_s": t2 - t1, "tokens": tokens, "peak_mb": _peak_mb(), "loaded_mb": loaded,
            "precision": "bf16 autocast" if trainer.args.bf16 else "fp32",
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def sft_worker(path: str, n_examples: int, precision: str) -> dict:
    """One IFT run in this process (full fine-tuning, batch 8, lr 5e-5, max_length 512, one epoch)."""
    import torch
    from bench_stages import matmul_peak

    from presrm.config import InitConfig, TrainConfig
    from presrm.jsonio import read_jsonl
    from presrm.models import load_model
    from presrm.train import sft_trainer

    examples = read_jsonl(IFT)[:n_examples]
    model, tok = load_model("embedded", device="cpu", training=True, precision=precision)
    params = sum(p.numel() for p in model.parameters())
    loaded = _peak_mb()
    init = InitConfig(batch_size=8, learning_rate=5e-5, max_length=512, padding_free=path == "padding_free")
    cfg = TrainConfig(lora=False, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = sft_trainer(model, tok, examples, init, cfg, Path(tmp) / ".trainer", device="cpu")
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    assert bool(trainer.padding_free) == (path == "padding_free")
    bf16 = bool(trainer.args.bf16)
    tokens = sum(len(r["input_ids"]) for r in trainer.train_dataset)
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32, torch.get_num_threads())
    return {"path": path, "examples": len(examples), "steps": trainer.state.global_step, "train_s": seconds,
            "tokens": tokens, "params": params, "peak_gflops": peak, "threads": torch.get_num_threads(),
            "precision": "bf16 autocast" if bf16 else "fp32", "peak_mb": _peak_mb(), "loaded_mb": loaded,
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def _run_worker(path: str, n: int, precision: str, sft: bool = False) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--worker", path, "--pairs", str(n), "--precision",
                        precision, "--out", out.name] + (["--sft"] if sft else []), check=True, cwd=ROOT)
        return json.loads(Path(out.name).read_text())


def render_sft(saved: dict) -> str:
    runs = saved["runs"]
    best = {p: min((r for r in runs if r["path"] == p), key=lambda r: r["train_s"]) for p in SFT_PATHS}
    pf, pd = best["padding_free"], best["padded"]
    lines = [
        "## train-sft: IFT, padding-free vs padded batches (`benchmarks/bench_train.py --sft`)",
        "",
        f"{pf['examples']} IFT examples of the evidence run (docs/results/evidence_amx/init/ift.jsonl), embedded "
        f"SmolLM2-135M-Instruct ({pf['params'] / 1e6:.1f}M parameters), full fine-tuning, batch 8, "
        f"{pf['precision']}, {pf['threads']} threads; both in one run, alternating, each run its own process; best "
        f"of {len(runs) // 2}. Share of the peak = 6 x parameters x tokens trained on / seconds, against the best "
        "2048 x 2048 matmul in that dtype measured in the same process after training.",
        "",
        "| batches | optimizer steps | tokens trained on | train s | tokens/s | achieved GFLOP/s | matmul peak "
        "GFLOP/s | share of the peak | added memory MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p, r in best.items():
        achieved = 6 * r["params"] * r["tokens"] / r["train_s"] / 1e9
        lines.append(f"| {SFT_PATHS[p]} | {r['steps']} | {r['tokens']:,} | {r['train_s']:.1f} | "
                     f"{r['tokens'] / r['train_s']:,.0f} | {achieved:.0f} | {r['peak_gflops']:.0f} | "
                     f"{achieved / r['peak_gflops']:.0%} | {r['peak_mb'] - r['loaded_mb']:,.0f} |")
    diffs = [abs(a - b) for a, b in zip(pf["losses"], pd["losses"], strict=True)]
    lines += ["", f"Padding-free against padded: **{pd['train_s'] / pf['train_s']:.2f}x** the speed. Logged "
              f"losses, largest difference over the {len(diffs)} steps: {max(diffs):.2g}.", "",
              "All runs: " + "; ".join(f"{SFT_PATHS[r['path']]} {r['train_s']:.1f} s" for r in runs) + "."]
    return "\n".join(lines)


def render(saved: dict) -> str:
    runs = saved["runs"]
    best = {p: min((r for r in runs if r["path"] == p), key=lambda r: r["train_s"]) for p in PATHS}
    sh, st = best["shared"], best["standard"]
    lines = [
        "## train: step-DPO, shared prefix vs TRL's standard path (`benchmarks/bench_train.py`)",
        "",
        f"{sh['pairs']} step pairs of the evidence run's iteration 0 (docs/results/evidence_norepeat), embedded "
        f"SmolLM2-135M-Instruct, the evidence recipe's step-DPO (LoRA r=16, lr 3e-4, SFT term 1, batch 4), "
        f"{sh['precision']}; both paths in one run, alternating, each run its own process; best of "
        f"{len(runs) // 2}. \"precompute\" is the trainer's construction with the reference log-probs; \"added "
        "memory\" is the process's peak less its size once the model was loaded.",
        "",
        "| path | optimizer steps | tokens read per epoch | train s | pairs/s (train) | precompute s | "
        "pairs/s (precompute) | peak RSS MB | added memory MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p, r in best.items():
        lines.append(f"| {PATHS[p]} | {r['steps']} | {r['tokens']:,} | {r['train_s']:.1f} | "
                     f"{r['pairs'] / r['train_s']:.2f} | {r['precompute_s']:.1f} | "
                     f"{r['pairs'] / r['precompute_s']:.2f} | {r['peak_mb']:,.0f} | "
                     f"{r['peak_mb'] - r['loaded_mb']:,.0f} |")
    diffs = [abs(a - b) for a, b in zip(sh["losses"], st["losses"], strict=True)]
    lines += [
        "",
        f"Shared prefix against TRL's path: **{st['train_s'] / sh['train_s']:.2f}x** the pairs per second in "
        f"training, {st['precompute_s'] / sh['precompute_s']:.2f}x in the precompute, "
        f"{sh['tokens'] / st['tokens']:.2f} of the tokens, "
        f"{(sh['peak_mb'] - sh['loaded_mb']) / max(st['peak_mb'] - st['loaded_mb'], 1):.2f} of the added memory. "
        f"Logged losses, largest difference over the {len(diffs)} steps: {max(diffs):.2g}.",
        "",
        "All runs: " + "; ".join(f"{PATHS[r['path']]} {r['train_s']:.1f} s" for r in runs) + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--from-json", help=f"re-render a saved measurement (runs that write save one to {SAVED.name})")
    p.add_argument("--sft", action="store_true", help="IFT, padding-free vs padded (--pairs: examples)")
    p.add_argument("--worker", choices=sorted({**PATHS, **SFT_PATHS}), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        run = sft_worker if args.sft else worker
        Path(args.out).write_text(json.dumps(run(args.worker, args.pairs, args.precision)))
        return
    paths, saved_file = (SFT_PATHS, SAVED.with_name("train_sft.json")) if args.sft else (PATHS, SAVED)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
    else:
        runs = []
        for _ in range(args.repeats):
            for path in paths:
                runs.append(_run_worker(path, args.pairs, args.precision, args.sft))
                print(f"{paths[path]}: train {runs[-1]['train_s']:.1f} s", flush=True)
        saved = {"runs": runs}
        if not args.no_write:
            saved_file.parent.mkdir(exist_ok=True)
            saved_file.write_text(json.dumps(saved, indent=2))
    from _report import publish

    if args.sft:
        publish("train-sft", render_sft(saved), write=not args.no_write)
    else:
        publish("train", render(saved), write=not args.no_write)


if __name__ == "__main__":
    main()
