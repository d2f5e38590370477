"""The likelihood judge's cost: one pass per step against one pass per solution, HF engine against vLLM.

Writes the "likelihood-speed" section of docs/BENCHMARKS.md. Two sets of steps, scored by
:class:`presrm.judge.LikelihoodJudge` on the same model (default: the embedded SmolLM2-135M-Instruct):

- **labelled** (ProcessBench format): the gold solutions of ``--problems`` GSM8K test problems in
  ``Step n:`` form and a copy of each with one result changed (:func:`presrm.labelled.build_labelled_set`);
  every step is scored after the ones before it, plus each flawed step's correct twin (what
  ``judge-eval --labelled`` scores);
- **natural**: the model's own candidate steps on ``--natural-problems`` test problems (``--k`` per
  prefix, paths of up to ``--max-steps`` steps; what ``judge-eval --natural`` scores), sampled once on
  vLLM and judged by every row.

Rows: the HF engine with one pass per step (``one_pass=False``, what presrm did before), the HF engine
with one pass per solution, and vLLM (prompt log-probs) with one pass per solution. Each row reports the
tokens fed to the model (``engine.span_tokens``), the wall time, judged steps/s and the largest score
difference against the first row (the scores must not change). Loading is timed apart.

Needs vLLM importable: run it with ``.venv-vllm/bin/python``. Run:
``OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/bench_likelihood.py [--problems 40]
[--natural-problems 30] [--k 4] [--max-steps 6] [--no-write]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import command_line, publish  # noqa: E402 - after the path set-up

log = logging.getLogger("bench_likelihood")
SPEED_JSON = ROOT / ".benchcache" / "likelihood_speed.json"


def labelled_items(problems):
    """The steps ``judge-eval --labelled`` scores: every step of every solution, and each flawed step's twin."""
    from presrm.judge import StepToJudge
    from presrm.labelled import build_labelled_set

    items: dict = {}
    for sol in build_labelled_set(problems).solutions:
        for k, step in enumerate(sol.steps):
            items.setdefault(StepToJudge(sol.question, tuple(sol.steps[:k]), step), None)
        if sol.flawed and sol.original_step is not None:
            items.setdefault(StepToJudge(sol.question, tuple(sol.steps[:sol.first_error]), sol.original_step), None)
    return list(items)


def natural_items(engine, problems, args):
    """The model's own candidate steps, sampled on ``engine`` (what ``judge-eval --natural`` scores)."""

    from presrm.config import SearchConfig
    from presrm.data import load_task
    from presrm.generate import STEP_STOP, step_prompter
    from presrm.judge import StepToJudge
    from presrm.labelled import build_natural_set
    from presrm.search import step_sampler

    task = load_task("gsm8k")
    sampler = step_sampler(engine, SearchConfig(k=args.k, temperature=0.7, top_p=0.95, max_step_tokens=80),
                           [STEP_STOP, *task.stop])
    nat = build_natural_set(problems, step_prompter(engine.tok, task), sampler, max_steps=args.max_steps,
                            desc=None)
    return [StepToJudge(s.question, s.previous, s.step) for s in nat.steps], nat.meta


def measure(engine, items, *, one_pass: bool) -> dict:
    from presrm.judge import LikelihoodJudge

    judge = LikelihoodJudge(engine, batch_size=16, one_pass=one_pass)
    judge.score(items[:2])  # warm-up: first-call allocations
    before = engine.span_tokens
    start = time.perf_counter()
    scores = judge.score(items)
    seconds = time.perf_counter() - start
    return {"tokens": engine.span_tokens - before, "seconds": seconds, "steps": len(items), "scores": scores}


def run(args) -> dict:
    from presrm.config import VLLMConfig
    from presrm.data import load_problems, load_task
    from presrm.engines import EngineOptions, open_engine

    task = load_task("gsm8k")
    problems = load_problems(task, limit=args.problems + args.natural_problems)
    sets = {"labelled": labelled_items(problems[:args.problems])}
    load, rows = {}, {}
    start = time.perf_counter()
    vl = open_engine(args.model, EngineOptions(name="vllm", precision=args.precision,
                                               vllm=VLLMConfig(max_model_len=4096, cpu_kv_cache_gb=2.0)))
    load["vllm"] = time.perf_counter() - start
    with vl:
        sets["natural"], natural_meta = natural_items(vl, problems[args.problems:], args)
        for name, items in sets.items():
            rows[(name, "vllm, one pass per solution")] = measure(vl, items, one_pass=True)
        version = vl.describe()["vllm"]
    start = time.perf_counter()
    hf = open_engine(args.model, EngineOptions(name="hf", device="cpu", precision=args.precision, batch_size=16))
    load["hf"] = time.perf_counter() - start
    with hf:
        hw = hf.describe()["hardware"]
        for name, items in sets.items():
            rows[(name, "hf, one pass per step")] = measure(hf, items, one_pass=False)
            rows[(name, "hf, one pass per solution")] = measure(hf, items, one_pass=True)
    out = {"rows": [], "load_s": load, "vllm": version, "hardware": hw, "args": vars(args),
           "vllm_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
           "natural_set": natural_meta, "loadavg": os.getloadavg()[0]}
    for name in sets:
        ref = rows[(name, "hf, one pass per step")]
        for label in ("hf, one pass per step", "hf, one pass per solution", "vllm, one pass per solution"):
            r = rows[(name, label)]
            diff = max((abs(a - b) for a, b in zip(r["scores"], ref["scores"], strict=True)), default=0.0)
            out["rows"].append({"set": name, "row": label, "steps": r["steps"], "tokens": r["tokens"],
                                "seconds": r["seconds"], "max_score_diff": diff})
    return out


def render(res: dict) -> str:
    a = res["args"]
    hw = res["hardware"]
    lines = [
        f"Model `{a['model']}` in {a['precision']} on {hw.get('gpu') or hw['cpu']} "
        f"({hw.get('torch_threads')} torch threads), vLLM {res['vllm']}. The likelihood judge "
        f"(`LikelihoodJudge`, batch 16) on two sets: **labelled**, the ProcessBench-format set judge-eval builds "
        f"from {a['problems']} GSM8K test problems (gold solutions and one-result-changed copies, every step "
        f"after the ones before it, plus the correct twins); **natural**, the model's own candidate steps on "
        f"{a['natural_problems']} other test problems ({a['k']} per prefix, paths of up to {a['max_steps']} "
        f"steps: {res['natural_set']['steps']} steps), sampled once on vLLM. Tokens: what went through the "
        "model. Score diff: against the first row of the set (one pass per step on the HF engine).", "",
        "| set | engine, passes | steps | tokens | tokens vs per step | seconds | steps/s | vs HF per step | "
        "max score diff |", "|---|---|---|---|---|---|---|---|---|"]
    base = {}
    for r in res["rows"]:
        if r["row"] == "hf, one pass per step":
            base[r["set"]] = r
        b = base[r["set"]]
        rate, brate = r["steps"] / r["seconds"], b["steps"] / b["seconds"]
        lines.append(f"| {r['set']} | {r['row']} | {r['steps']} | {r['tokens']:,} | "
                     f"{b['tokens'] / max(r['tokens'], 1):.2f}x fewer | {r['seconds']:.1f} | {rate:.1f} | "
                     f"{rate / brate:.2f}x | {r['max_score_diff']:.1e} |")
    bind = res.get("vllm_threads_bind", "auto")
    lines += ["", f"Loading: vLLM {res['load_s']['vllm']:.0f} s, HF {res['load_s']['hf']:.0f} s (not in the "
              f"timings). Load average at the end: {res['loadavg']:.2f}. vLLM's CPU worker binds its compute threads "
              f"by `VLLM_CPU_OMP_THREADS_BIND` ({bind} here"
              + ("; on a 2-core machine `auto` computes on one core and reserves the other for vLLM's scheduler "
                 "process" if bind == "auto" else "") + "), while the HF engine computes on every torch thread. "
              "vLLM's natural-set tokens are fewer than the HF engine's because it reads the candidates' shared "
              "start (the policy prompt and the previous steps) from its prefix cache (docs/engines.md)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--problems", type=int, default=40, help="test problems of the labelled set")
    p.add_argument("--natural-problems", type=int, default=30, help="test problems of the natural set")
    p.add_argument("--k", type=int, default=4, help="natural set: candidate steps per prefix")
    p.add_argument("--max-steps", type=int, default=6, help="natural set: steps per path")
    p.add_argument("--from-json", help="render a saved measurement instead of measuring")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        res = run(args)
        if not args.no_write:
            SPEED_JSON.parent.mkdir(parents=True, exist_ok=True)
            SPEED_JSON.write_text(json.dumps(res, indent=1))
    publish("likelihood-speed", render(res), write=not args.no_write, command=command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
