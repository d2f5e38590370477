"""Where a run's time went: each stage's token throughput against this machine's matmul peak.

Reads a finished (or partial) run directory, counts the tokens each stage pushed through the model
(generated tokens for evaluation, the SFT and DPO tokens the trainers report), and turns them into
achieved GFLOP/s with the usual dense-transformer estimate (2 x parameters per token for a forward pass,
6 x for forward + backward). The peak is a square matmul measured here, in the dtype the run used, with
the thread count the run used. Generation is far below the peak by nature (one token at a time, small
batches, memory-bound); the ratio says how far.

    python benchmarks/bench_stages.py /tmp/evid/runs/evidence_cpu --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import publish  # noqa: E402
from presrm.jsonio import read_json, read_jsonl, read_yaml  # noqa: E402


def matmul_peak(dtype, threads: int, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on ``threads`` threads (best of a few seconds of runs)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def _eval_row(name: str, summary_file: Path, tok, params: int) -> dict | None:
    if not summary_file.exists():
        return None
    summary = read_json(summary_file)
    samples = read_jsonl(summary_file.with_name(f"{summary_file.stem}_samples.jsonl"))
    tokens = sum(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) for r in samples)
    seconds = summary["seconds"]
    return {"stage": f"{name}: greedy eval ({summary['n']} problems)", "tokens": tokens, "seconds": seconds,
            "dtype": summary["protocol"].get("dtype"), "flop_per_token": 2 * params}


def _train_row(name: str, train_file: Path, params: int, epochs: float) -> dict | None:
    if not train_file.exists():
        return None
    t = read_json(train_file)
    kind = "SFT (IFT+EFT)" if "examples" in t else "step-DPO"
    tokens = int(t.get("tokens_per_epoch", 0) * epochs)
    # DPO runs the policy on chosen and rejected (forward + backward); the reference was precomputed.
    flop = 6 * params
    return {"stage": f"{name}: {kind} ({t.get('precision')}, {'LoRA' if t.get('lora') else 'full'})",
            "tokens": tokens, "seconds": t["seconds"], "dtype": "bfloat16" if "bf16" in str(t.get("precision"))
            else "float32", "flop_per_token": flop}


def run(args) -> dict:
    import torch

    from presrm.models import cpu_model, load_tokenizer, local_dir

    root = Path(args.run_dir)
    cfg = read_yaml(root / "config.yaml")["config"]
    model_spec = cfg["model"]
    tok = load_tokenizer(model_spec)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(local_dir(model_spec))).parameters())
    rows = [
        _eval_row("M0", root / "iter_0" / "eval_before.json", tok, params),
        _train_row("M0 -> M1", root / "init" / "train.json", params, cfg["init"]["epochs"]),
        _eval_row("M1", root / "init" / "eval.json", tok, params),
    ]
    k = 0
    while (root / f"iter_{k}").is_dir():
        rows += [_train_row(f"iteration {k}", root / f"iter_{k}" / "train.json", params, cfg["train"]["epochs"]),
                 _eval_row(f"M{k + 2}", root / f"iter_{k}" / "eval.json", tok, params)]
        k += 1
    rows = [r for r in rows if r]
    peaks = {d: matmul_peak(getattr(torch, d), args.threads) for d in sorted({r["dtype"] for r in rows})}
    for r in rows:
        r["tok_per_s"] = r["tokens"] / r["seconds"] if r["seconds"] else None
        r["gflops"] = r["tok_per_s"] * r["flop_per_token"] / 1e9 if r["tok_per_s"] else None
        r["share_of_peak"] = r["gflops"] / peaks[r["dtype"]] if r["gflops"] else None
    return {"run_dir": str(root), "params": params, "threads": args.threads, "cpu": cpu_model(), "peaks": peaks,
            "rows": rows}


def render(res: dict) -> str:
    lines = ["## Run stages against the matmul peak", "",
             f"Run `{res['run_dir']}`; model {res['params'] / 1e6:.1f}M parameters; {res['threads']} torch "
             f"thread(s); {res['cpu']}. Peak = best n=2048 matmul here: "
             + ", ".join(f"{d} {g:,.0f} GFLOP/s" for d, g in res["peaks"].items())
             + ". Achieved = tokens/s x 2 x parameters (forward) or x 6 (training: forward and backward).", "",
             "| stage | tokens | seconds | tokens/s | achieved GFLOP/s | share of the peak |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        lines.append(f"| {r['stage']} | {r['tokens']:,} | {r['seconds']:,.0f} | {r['tok_per_s']:,.1f} | "
                     f"{r['gflops']:,.1f} | {100 * r['share_of_peak']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--threads", type=int, default=1, help="the torch threads the run used (its OMP_NUM_THREADS)")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    p.add_argument("--section", default="stages",
                   help="the BENCHMARKS.md section to write (one per run compared, e.g. stages-vllm)")
    args = p.parse_args()
    publish(args.section, render(run(args)), write=not args.no_write)


if __name__ == "__main__":
    main()
