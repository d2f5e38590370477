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

Run: ``python benchmarks/bench_train.py [--pairs 64] [--repeats 2] [--precision auto] [--no-write]
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


def _run_worker(path: str, n_pairs: int, precision: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--worker", path, "--pairs", str(n_pairs), "--precision",
                        precision, "--out", out.name], check=True, cwd=ROOT)
        return json.loads(Path(out.name).read_text())


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
    p.add_argument("--worker", choices=sorted(PATHS), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        Path(args.out).write_text(json.dumps(worker(args.worker, args.pairs, args.precision)))
        return
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
    else:
        runs = []
        for _ in range(args.repeats):
            for path in PATHS:
                runs.append(_run_worker(path, args.pairs, args.precision))
                print(f"{PATHS[path]}: train {runs[-1]['train_s']:.1f} s, precompute {runs[-1]['precompute_s']:.1f} s",
                      flush=True)
        saved = {"runs": runs}
        if not args.no_write:
            SAVED.parent.mkdir(exist_ok=True)
            SAVED.write_text(json.dumps(saved, indent=2))
    from _report import publish

    publish("train", render(saved), write=not args.no_write)


if __name__ == "__main__":
    main()
