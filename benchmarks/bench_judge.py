"""Judge speed and judge quality; writes the "judge-speed" and "judge-eval" sections of docs/BENCHMARKS.md.

``speed``: judged steps per second of the logit pointwise and pairwise judges
against the generative judge (explanation capped at 128 new tokens), on the
same correct/perturbed step pairs with the same model, plus how close the
judge's batched forward pass comes to this machine's matmul throughput,
measured in the same run. A pair holds two candidate steps, so every judge is
credited 2 steps per pair: pointwise scores both, pairwise and generative
compare them (both orders, 2 prompts).

``quality``: a table of ``presrm judge-eval`` results.json files, with the
command that produced each.

Run: ``python benchmarks/bench_judge.py speed [--model embedded] [--device auto] [--pairs 24]
[--no-reuse-rows] [--no-write] [--from-json F]``
and ``python benchmarks/bench_judge.py quality runs/je-*/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402 - after the path set-up
from _report import command_line, git_rev, publish  # noqa: E402

from presrm.data import load_problems, load_task  # noqa: E402
from presrm.engines.hf_forward import _lcp  # noqa: E402
from presrm.judge_eval import build_labelled_set  # noqa: E402

TARGET_SPEEDUP = 20.0
SPEED_JSON = ROOT / ".benchcache" / "judge_speed.json"


class TokenCounter:
    """Counts and times every forward call of a model (padding included: it costs FLOPs too).

    Calls that feed one token per sequence (``input_ids`` of width 1) are counted apart as decoding
    steps: in a generative judge they are the generated tokens, the rest its prompt passes.
    """

    def __init__(self, model):
        self.device = model.device
        self.tokens = self.calls = self.decode_tokens = 0
        self.prompt_seconds = self.decode_seconds = 0.0
        self._open: tuple[float, int, bool] | None = None
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]

    def _pre(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None and kwargs.get("inputs_embeds") is not None:
            ids = kwargs["inputs_embeds"][..., 0]
        if ids is not None:
            _sync(self.device)
            self._open = (time.perf_counter(), ids.numel(), ids.shape[-1] == 1)

    def _post(self, _module, _args, _kwargs, _output):
        if self._open is None:
            return
        start, n, decode = self._open
        self._open = None
        _sync(self.device)
        elapsed = time.perf_counter() - start
        self.tokens += n
        self.calls += 1
        if decode:
            self.decode_tokens += n
            self.decode_seconds += elapsed
        else:
            self.prompt_seconds += elapsed

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def matmul_gflops(dtype: torch.dtype, op: str = "matmul", min_seconds: float = 2.0,
                  device: torch.device | str = "cpu") -> float:
    """Sustained throughput (GFLOP/s) on ``device`` after one warm-up product.

    ``matmul``: ``torch.matmul`` on square matrices (on CPU 2048 in fp32 and 1024 in bf16, which is
    far slower on CPUs without native bf16; 8192 on a GPU). ``linear``: ``F.linear`` at a transformer
    MLP's shape (4096 tokens x 576 -> 1536), the kernel a model's forward pass actually uses.
    """
    dev = torch.device(device)
    if op == "matmul":
        n = 8192 if dev.type == "cuda" else 2048 if dtype == torch.float32 else 1024
        a, b, flops = (torch.randn(n, n, dtype=dtype, device=dev), torch.randn(n, n, dtype=dtype, device=dev),
                       2 * n**3)

        def fn():
            return torch.matmul(a, b)
    else:
        x, w = torch.randn(4096, 576, dtype=dtype, device=dev), torch.randn(1536, 576, dtype=dtype, device=dev)
        flops = 2 * 4096 * 576 * 1536

        def fn():
            return torch.nn.functional.linear(x, w)
    fn()
    _sync(dev)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or reps == 0:
        fn()
        reps += 1
        if reps % 8 == 0 or dev.type != "cuda":
            _sync(dev)
    _sync(dev)
    return flops * reps / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding.

    The (often tied) output head runs once per prompt here (``logits_to_keep=1``), so it is left out too.
    """
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb)


def step_pairs(n_pairs: int) -> list[tuple[str, tuple[str, ...], str, str]]:
    """(question, previous steps, correct step, perturbed twin) from GSM8K test, in file order."""
    problems = load_problems(load_task("gsm8k"), limit=3 * n_pairs)
    flawed = [s for s in build_labelled_set(problems, seed=0).solutions if s.flawed][:n_pairs]
    return [(s.question, s.steps[: s.first_error], s.original_step, s.steps[s.first_error]) for s in flawed]


def timed(model, fn) -> dict:
    counter = TokenCounter(model)
    _sync(model.device)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        out = fn()
        _sync(model.device)
    finally:
        counter.close()
    wall = time.perf_counter() - start
    return {"seconds": wall, "cpu_share": (time.process_time() - cpu) / wall / torch.get_num_threads(),
            "tokens": counter.tokens, "forwards": counter.calls,
            "decode_tokens": counter.decode_tokens, "prompt_seconds": counter.prompt_seconds,
            "decode_seconds": counter.decode_seconds, "out": out}


def trie_tokens(tok, prompts: list[str]) -> int:
    """Distinct token prefixes among ``prompts``: the fewest tokens any exact prefix-reusing judge must feed."""
    ids = sorted(tuple(x) for x in tok(prompts, add_special_tokens=False)["input_ids"])
    total, prev = 0, ()
    for x in ids:
        total += len(x) - _lcp(x, prev)
        prev = x
    return total


def run_speed(args: argparse.Namespace) -> dict:
    from presrm.engines import HFEngine
    from presrm.judge import PairToJudge, StepToJudge, make_judge
    from presrm.judges.pairwise import orders_of
    from presrm.models import load_model

    model, tok = load_model(args.model, device=args.device, precision=args.precision)
    engine = HFEngine(model, tok)  # the HF engine: its token counts are what this benchmark reads
    pairs = step_pairs(args.pairs)
    steps = [StepToJudge(q, prev, s) for q, prev, good, bad in pairs for s in (good, bad)]
    compare = [PairToJudge(q, prev, good, bad) for q, prev, good, bad in pairs]
    judges = {
        "pointwise": make_judge("pointwise", engine, batch_size=args.batch_size),
        "pairwise": make_judge("pairwise", engine, batch_size=args.batch_size),
        "generative": make_judge("generative", engine, batch_size=args.gen_batch_size, max_new_tokens=128),
    }
    if args.no_reuse_rows:
        judges["pointwise, no prefix reuse"] = make_judge("pointwise", engine, batch_size=args.batch_size,
                                                          prefix_cache=False)
        judges["pairwise, no prefix reuse"] = make_judge("pairwise", engine, batch_size=args.batch_size,
                                                         prefix_cache=False)

    def call(mode: str, judge, n: int):
        return judge.score(steps[: 2 * n]) if mode.startswith("pointwise") else judge.compare(compare[:n])

    for mode, judge in judges.items():  # warm-up: first-call allocations and lazy set-up
        call(mode, judge, 1)
    rows = {}
    for mode, judge in judges.items():
        logging.info("timing %s on %d pairs", mode, len(pairs))
        r = timed(model, lambda judge=judge, mode=mode: call(mode, judge, len(pairs)))
        out = r.pop("out")
        r.update(pairs=len(pairs), steps=2 * len(pairs), steps_per_s=2 * len(pairs) / r["seconds"])
        if not mode.startswith("pointwise"):
            r["unparseable"] = sum(v.winner is None for v in out)
        rows[mode] = r
    pair_prompts = [judges["pairwise"].prompt(shown) for it in compare for _, shown in orders_of(it, True)]
    rows["pointwise"]["trie_tokens"] = trie_tokens(tok, [judges["pointwise"].prompt(it) for it in steps])
    rows["pairwise"]["trie_tokens"] = trie_tokens(tok, pair_prompts)
    n_params = matmul_params(model)
    peaks = {f"{op} {name}": matmul_gflops(dtype, op, device=model.device) for op in ("matmul", "linear")
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for r in rows.values():
        r["gflops"] = 2 * n_params * r["tokens"] / r["seconds"] / 1e9
    dev = model.device
    return {"rows": rows, "peaks": peaks, "n_params": n_params, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "model": args.model,
            "gen_batch_size": args.gen_batch_size, "batch_size": args.batch_size}


def speed_section(res: dict) -> str:
    rows, peaks, dt = res["rows"], res["peaks"], res["dtype"]
    dt = dt.replace("float32", "fp32").replace("bfloat16", "bf16")
    gen = rows["generative"]["steps_per_s"]
    peak = peaks[f"matmul {dt}"]
    lines = [
        "## judge speed (`presrm.judge`)", "",
        f"Model `{res['model']}` in {dt} on {_where(res)}, the same "
        f"{rows['pointwise']['pairs']} GSM8K step pairs (a gold step and its perturbed twin, same prefix) for "
        "every judge; each pair counts as 2 judged steps. Pointwise scores both steps (2 prompts); pairwise and "
        "generative compare them in both orders (2 prompts); generative writes up to 128 new tokens per prompt"
        f" ({res.get('gen_batch_size', 8)} sequences per `generate` call; logit judges: up to "
        f"{res.get('batch_size', 16)} prompts per pass). The logit judges reuse shared prefixes by default: "
        "the start common to all prompts of a call (chat turn and instruction) is encoded once, and the "
        "question and previous steps once per group of prompts that share them (`presrm.engines.hf_forward`).",
        "", "| judge | seconds | steps/s | speed-up vs generative | tokens through the model | "
        f"achieved GFLOP/s | share of {dt} torch.matmul |", "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, r in rows.items():
        unparse = f" ({r['unparseable']}/{r['pairs']} verdicts unparseable)" if r.get("unparseable") else ""
        lines.append(f"| {mode}{unparse} | {r['seconds']:.1f} | {r['steps_per_s']:.2f} | "
                     f"{r['steps_per_s'] / gen:.1f}x | {r['tokens']:,} | {r['gflops']:.2f} | "
                     f"{100 * r['gflops'] / peak:.0f}% |")
    worst = min(rows["pointwise"]["steps_per_s"], rows["pairwise"]["steps_per_s"]) / gen
    verdict = "met" if worst >= TARGET_SPEEDUP else "NOT met"
    lines += [
        "", f"Target: logit judges at least {TARGET_SPEEDUP:.0f}x faster than generative: **{verdict}** "
        f"(the slower logit judge is {worst:.1f}x faster).", "",
        *_why(rows, worst, on_gpu=_on_gpu(res)),
        "Machine throughput measured in the same run (GFLOP/s): "
        + ", ".join(f"{name} {v:.2f}" for name, v in peaks.items())
        + f". `matmul`: torch.matmul on square matrices ({'8192' if _on_gpu(res) else '2048 fp32, 1024 bf16'}); "
        "`linear`: F.linear at an "
        "MLP shape (4096 x 576 -> 1536), the kernel the model's forward uses. "
        f"Achieved = 2 x {res['n_params'] / 1e6:.1f} M matmul parameters (all but the input embedding) x "
        "tokens processed (padding included) / time; attention-score FLOPs are not counted, so the share is "
        "a lower bound. Generation feeds one token per sequence per forward pass, hence its low share.",
        "", _provenance(res),
    ]
    return "\n".join(lines)


def _on_gpu(res: dict) -> bool:
    return res.get("device", "cpu") != "cpu"


def _where(res: dict) -> str:
    if _on_gpu(res):
        return f"{res['device']} (GPU)"
    return f"CPU ({res['threads']} thread{'' if res['threads'] == 1 else 's'})"


def _provenance(res: dict) -> str:
    m = res.get("measured")
    if not m:
        return "Timings are indicative: the machine may have been shared with other jobs."
    shares = [] if _on_gpu(res) else [r["cpu_share"] for r in res["rows"].values() if "cpu_share" in r]
    lo, hi = (min(shares), max(shares)) if shares else (0.0, 0.0)
    share = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"
    busy = (f" While each judge was timed, this process got {share} of the CPU time its {res['threads']} "
            f"thread{' was' if res['threads'] == 1 else 's were'} allowed (1.00: it never waited for a "
            "core).") if shares else ""
    return f"Measured {m['utc']} on commit {m['commit']}.{busy}"


def _why(rows: dict, worst: float, *, on_gpu: bool = False) -> list[str]:
    """Where a missed speed-up comes from: what a judged step costs each judge, token by token."""
    if worst >= TARGET_SPEEDUP:
        return []
    gen = rows["generative"]
    if "decode_tokens" not in gen:  # a measurement saved before prompt and decode passes were timed apart
        return []
    s = gen["steps"]
    prompt_tok, decode_tok = gen["tokens"] - gen["decode_tokens"], gen["decode_tokens"]
    c_prompt, c_decode = gen["prompt_seconds"] / prompt_tok, gen["decode_seconds"] / decode_tok
    gen_step = gen["seconds"] / s
    out = [f"Why: per judged step the generative judge feeds {prompt_tok / s:.0f} prompt tokens "
           f"({1e3 * c_prompt:.1f} ms each) and decodes {decode_tok / s:.0f} ({1e3 * c_decode:.1f} ms each), "
           f"{gen_step:.2f} s in all."]
    for mode in ("pointwise", "pairwise"):
        r = rows[mode]
        cost = r["seconds"] / r["tokens"]
        budget = gen_step / TARGET_SPEEDUP / cost
        out.append(f"The {mode} judge feeds {r['tokens'] / s:.0f} tokens per judged step ({1e3 * cost:.1f} ms "
                   f"each); {TARGET_SPEEDUP:.0f}x would allow {budget:.0f}, yet its prompts hold "
                   f"{r['trie_tokens'] / s:.0f} distinct tokens per judged step, the least any exact reuse of "
                   "shared prefixes can feed (each pair's question and previous steps, its two steps, and the "
                   "instruction and verdict request around them).")
    need = (TARGET_SPEEDUP * max(rows[m]["seconds"] for m in ("pointwise", "pairwise")) / s
            - prompt_tok / s * c_prompt) / (decode_tok / s) / c_prompt
    out.append(f"On these prompts {TARGET_SPEEDUP:.0f}x needs a decoded token to cost about {need:.0f}x a prompt "
               f"token, not {c_decode / c_prompt:.1f}x as here"
               + ("." if on_gpu else ": the situation on a GPU, where one decoding step of a small model takes "
                  "about as long as encoding a whole batch of prompts. No GPU was available to measure that here."))
    return [" ".join(out), ""]


def quality_section(paths: list[str]) -> str:
    def f(x) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        "## judge quality (`presrm judge-eval`)", "",
        "GSM8K test problems: each gold solution in `Step n:` form (no error) plus a copy with one arithmetic "
        "result changed (first error known, confirmed by the verifier). ProcessBench F1 = harmonic mean of exact "
        "first-error accuracy (flawed) and no-error accuracy (correct); pointwise predicts the first step "
        "scored below the threshold. Pairwise accuracy: the correct step vs its perturbed twin (ties 0.5). "
        "Solution AUROC: correct vs flawed solutions (pointwise: min step score; outcome: rubric score). "
        "F1 at best threshold: the threshold chosen on this same set (optimistic; it shows how much of a low "
        "F1 is calibration). "
        "Pairwise modes also show the accuracy of the averaged p(correct step better) without the tie margin, "
        "and how often a single-order verdict picks the step shown first (0.5: no position bias). "
        "Chance is 0.5 for AUROC and pairwise accuracy.", "",
        "| judge | solutions (correct/flawed) | ProcessBench F1 (first error / no error) | F1 at best threshold | "
        "step AUROC | pairwise acc. (ties, unparseable) | solution AUROC | steps/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands = []
    for path in paths:
        res = json.loads(Path(path).read_text())
        n, pb, pw, sp = res["n"], res["processbench"], res["pairwise"], res["speed"]
        pb_text = f"{f(pb['f1'])} ({f(pb['acc_flawed'])} / {f(pb['acc_correct'])})" if "acc_flawed" in pb else "n/a"
        pw_text = (f"{f(pw['accuracy'])} ({f(pw['tie_rate'])}, {f(pw['unparseable_rate'])})"
                   if pw.get("accuracy") is not None else "n/a")
        if pw.get("first_shown_wins") is not None:
            pw_text += f"; no margin {f(pw['accuracy_no_margin'])}; first shown wins {f(pw['first_shown_wins'])}"
        sa = res["solution_auroc"]
        sa_text = f(sa.get("value"))
        if sa.get("unparseable"):
            sa_text += (f" (on the {sa['n_correct']} + {sa['n_flawed']} scored solutions; "
                        f"{sa['unparseable']} replies unparseable)")
        best = res.get("processbench_best_threshold")
        best_text = f"{f(best['f1'])} (t = {best['threshold']:.3f})" if best else "n/a"
        lines.append(f"| {res['protocol']['mode']} | {n['solutions']} ({n['correct_solutions']}/"
                     f"{n['flawed_solutions']}) | {pb_text} | {best_text} | {f(res['step_auroc']['value'])} | "
                     f"{pw_text} | {sa_text} | {sp['steps_per_s']:.2f} |")
        commands.append(f"- `{res['protocol']['command']}` ({res['protocol']['dtype']}, "
                        f"labelled set: {res['labelled_set']['candidates_rejected']} perturbations rejected by "
                        f"the verifier of {res['labelled_set']['candidates_tried']} tried)")
    lines += ["", "Commands:", "", *commands, "",
              "steps/s are indicative: each is its run's wall time, and other jobs may have shared the machine."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default="embedded")
    s.add_argument("--pairs", type=int, default=24)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--gen-batch-size", type=int, default=8)
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")
    s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="model dtype (auto: bf16 on a GPU, fp32 on CPU, where bf16 matmuls are emulated and slow)")
    s.add_argument("--no-reuse-rows", action="store_true",
                   help="also time the logit judges without prefix reuse (prefix_cache=False)")
    s.add_argument("--no-write", action="store_true")
    s.add_argument("--from-json",
                   help=f"re-render a saved measurement (runs that write the section save one to {SPEED_JSON.name})")
    q = sub.add_parser("quality")
    q.add_argument("results", nargs="+", help="results.json files of presrm judge-eval runs")
    q.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.what == "quality":
        publish("judge-eval", quality_section(args.results), write=not args.no_write)
        return
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        res = run_speed(args)
        res["measured"] = {"command": command_line(), "commit": git_rev(), "utc": started}
        if not args.no_write:  # a trial run (--no-write) leaves the recorded measurement alone
            SPEED_JSON.parent.mkdir(exist_ok=True)
            SPEED_JSON.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    publish("judge-speed", speed_section(res), write=not args.no_write,
            command=res.get("measured", {}).get("command"))


if __name__ == "__main__":
    main()
