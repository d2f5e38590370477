"""Inference engines side by side; writes the "engine-speed" section of docs/BENCHMARKS.md.

On the same GSM8K test prompts and the same model (default: the embedded SmolLM2-135M-Instruct),
three ways of running the three kinds of inference presrm does:

- **presrm, engine hf**: :class:`presrm.engines.HFEngine` (transformers ``generate``, presrm's batching
  and two-level prefix reuse for the judge);
- **presrm, engine vllm**: :class:`presrm.engines.vllm.VLLMEngine`;
- **raw vLLM**: the same ``vllm.LLM`` called directly with text prompts and ``SamplingParams``, so the
  gap to the row above is what presrm's layer costs.

and three workloads: greedy evaluation (``--max-new-tokens`` per prompt), step-search sampling (``--k``
continuations per prompt after ``Step 1:`` at T 0.7, stopped at the next step, up to 96 tokens), and
pointwise judging of the gold solutions' steps (one choice read per step). Throughput counts generated
tokens (the tokenizer's count of the returned text) or judged steps; model loading is timed apart.
Both engines run in ``--precision`` (fp32 by default: the same weights give the same greedy text), with
one CPU thread (set ``OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=0`` when running it).

Needs vLLM importable (``make vllm-setup``, then run it with ``.venv-vllm/bin/python``).

Run: ``OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=0 .venv-vllm/bin/python benchmarks/bench_engine.py
[--model embedded] [--prompts 64] [--max-new-tokens 128] [--k 4] [--precision fp32] [--no-write]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import command_line, publish  # noqa: E402 - after the path set-up

log = logging.getLogger("bench_engine")
STEP_TOKENS = 96
SPEED_JSON = ROOT / ".benchcache" / "engine_speed.json"


def workloads(tok, args):
    """The prompts of the three workloads, rendered once for every engine."""
    from presrm.data import load_problems, load_task
    from presrm.evaluate import build_prompt
    from presrm.generate import STEP_STOP, step_prompter
    from presrm.judge import StepToJudge
    from presrm.steps import format_steps, gold_to_steps

    task = load_task("gsm8k")
    problems = load_problems(task, limit=args.prompts)
    greedy = [build_prompt(tok, task, p.question) for p in problems]
    sample = [step_prompter(tok, task)(p.question, (), 1) for p in problems]
    steps = []
    for p in problems:
        gold = format_steps(gold_to_steps(p.solution)).split("\n") if p.solution else []
        steps += [StepToJudge(p.question, tuple(gold[:i]), s) for i, s in enumerate(gold)]
    return task, greedy, sample, [STEP_STOP, *task.stop], steps


def n_tokens(tok, outs: list[list[str]]) -> int:
    texts = [t for o in outs for t in o]
    return sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]) if texts else 0


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cold(llm) -> None:
    """Empty vLLM's prefix cache, so that no workload reuses the prompts another one (or run) left there."""
    if llm is not None:
        llm.reset_prefix_cache()


def measure_presrm(engine, tok, args, task, greedy, sample, stop, steps) -> dict:
    """The three workloads through presrm's engine interface (what search, judges and eval call)."""
    from presrm.config import SearchConfig
    from presrm.judge import PointwiseJudge
    from presrm.search import step_sampler

    llm = getattr(engine, "llm", None)
    engine.greedy(greedy[:2], max_new_tokens=8)  # warm-up: first-call allocations
    cold(llm)
    g_out, g_s = timed(lambda: engine.greedy(greedy, max_new_tokens=args.max_new_tokens, stop=task.stop,
                                             batch_size=args.batch_size))
    cfg = SearchConfig(k=args.k, temperature=0.7, top_p=0.95, max_step_tokens=STEP_TOKENS, batch_size=32)
    cold(llm)
    s_out, s_s = timed(lambda: step_sampler(engine, cfg, stop)(sample, 0))
    judge = PointwiseJudge(engine, batch_size=16)
    cold(llm)
    scores, j_s = timed(lambda: judge.score(steps))
    return {"greedy": (n_tokens(tok, [[t] for t in g_out]), g_s), "sampling": (n_tokens(tok, s_out), s_s),
            "judging": (len(steps), j_s), "greedy_text": g_out, "scores": scores}


def measure_raw(llm, tok, args, task, greedy, sample, stop, steps) -> dict:
    """The same workloads straight on ``vllm.LLM`` (text prompts, the user's own SamplingParams)."""
    from vllm import SamplingParams

    from presrm.engines.vllm import VLLMEngine
    from presrm.judge import PointwiseJudge

    cold(llm)
    g, g_s = timed(lambda: llm.generate(greedy, SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens,
                                                               stop=list(task.stop)), use_tqdm=False))
    params = SamplingParams(n=args.k, temperature=0.7, top_p=0.95, max_tokens=STEP_TOKENS, stop=stop)
    cold(llm)
    s, s_s = timed(lambda: llm.generate(sample, params, use_tqdm=False))
    judge = PointwiseJudge(VLLMEngine(llm, tok))  # only for its prompts and answer token ids
    prompts = [judge.prompt(it) for it in steps]
    union = judge.yes_ids + judge.no_ids
    cold(llm)
    j, j_s = timed(lambda: llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=1,
                                                                logprob_token_ids=union), use_tqdm=False))

    def p_yes(o):
        lp = o.outputs[0].logprobs[0]
        yes = sum(math.exp(lp[t].logprob) for t in judge.yes_ids if t in lp)
        no = sum(math.exp(lp[t].logprob) for t in judge.no_ids if t in lp)
        return yes / (yes + no)

    return {"greedy": (n_tokens(tok, [[c.text for c in o.outputs] for o in g]), g_s),
            "sampling": (n_tokens(tok, [[c.text for c in o.outputs] for o in s]), s_s),
            "judging": (len(steps), j_s), "scores": [p_yes(o) for o in j]}


def run(args) -> dict:
    from presrm.config import VLLMConfig
    from presrm.engines import EngineOptions, open_engine
    from presrm.models import load_tokenizer

    tok = load_tokenizer(args.model)
    task, greedy, sample, stop, steps = workloads(tok, args)
    load_before = os.getloadavg()[0]
    rows, load = {}, {}
    hf, load["presrm, engine hf"] = timed(lambda: open_engine(args.model, EngineOptions(
        name="hf", device=args.device, precision=args.precision, batch_size=args.batch_size)))
    with hf:
        rows["presrm, engine hf"] = measure_presrm(hf, tok, args, task, greedy, sample, stop, steps)
        hw = hf.describe()["hardware"]
    log.info("HF engine measured: %s", {w: rows["presrm, engine hf"][w] for w in ("greedy", "sampling", "judging")})
    vcfg = VLLMConfig(max_model_len=args.max_model_len, cpu_kv_cache_gb=args.kv_cache_gb)
    vl, load["presrm, engine vllm"] = timed(lambda: open_engine(args.model, EngineOptions(
        name="vllm", device=args.device, precision=args.precision, vllm=vcfg)))
    with vl:
        rows["presrm, engine vllm"] = measure_presrm(vl, tok, args, task, greedy, sample, stop, steps)
        rows["raw vLLM"] = measure_raw(vl.llm, tok, args, task, greedy, sample, stop, steps)
        version = vl.describe()["vllm"]
    ref, alt = rows["presrm, engine hf"], rows["presrm, engine vllm"]
    agree = {"greedy_same_text": sum(a == b for a, b in zip(ref["greedy_text"], alt["greedy_text"], strict=True)),
             "score_max_diff": max((abs(a - b) for a, b in zip(ref["scores"], alt["scores"], strict=True)),
                                   default=0.0),
             "raw_score_max_diff": max((abs(a - b) for a, b in zip(alt["scores"], rows["raw vLLM"]["scores"],
                                                                    strict=True)), default=0.0)}
    return {"rows": {k: {w: v[w] for w in ("greedy", "sampling", "judging")} for k, v in rows.items()},
            "load_s": load, "agree": agree, "prompts": len(greedy), "steps": len(steps), "hardware": hw,
            "vllm": version, "args": vars(args), "loadavg": [load_before, os.getloadavg()[0]],
            "cores": os.cpu_count()}


def _where(hw: dict) -> str:
    if hw.get("gpu"):
        return f"{hw['gpu']} (GPU)"
    return f"{hw['cpu']} ({hw['torch_threads']} thread{'s' * (hw['torch_threads'] > 1)} per engine)"


def render(res: dict) -> str:
    a, rows = res["args"], res["rows"]
    hf = rows["presrm, engine hf"]

    def rate(v):
        return v[0] / v[1]

    lines = [
        f"Model `{a['model']}` in {a['precision']} on {_where(res['hardware'])}, "
        f"vLLM {res['vllm']}, the same {res['prompts']} GSM8K test prompts for every engine. Greedy: up to "
        f"{a['max_new_tokens']} new tokens per prompt, stopped at the task's stop strings. Sampling: step search's "
        f"call, {a['k']} continuations per prompt after `Step 1:` at T 0.7 (top-p 0.95), stopped at the next "
        f"step, up to {STEP_TOKENS} tokens. Judging: the pointwise judge on the {res['steps']} steps of the gold "
        "solutions (P(Yes) from one next-token distribution per step).", "",
        "| engine | greedy tok/s | sampling tok/s | judged steps/s | greedy vs HF | sampling vs HF | judging vs HF |",
        "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        vs_hf = " | ".join(f"{rate(r[w]) / rate(hf[w]):.2f}x" for w in ("greedy", "sampling", "judging"))
        lines.append(f"| {name} | {rate(r['greedy']):.0f} | {rate(r['sampling']):.0f} | {rate(r['judging']):.1f} | "
                     f"{vs_hf} |")
    vl, raw = rows["presrm, engine vllm"], rows["raw vLLM"]
    gap = {w: 1 - rate(vl[w]) / rate(raw[w]) for w in ("greedy", "sampling", "judging")}
    ag = res["agree"]
    lines += ["", f"Tokens: greedy {hf['greedy'][0]:,} (HF) and {vl['greedy'][0]:,} (vLLM); sampling "
              f"{hf['sampling'][0]:,} and {vl['sampling'][0]:,} (samples differ: each engine draws its own). "
              f"Loading: HF {res['load_s']['presrm, engine hf']:.0f} s, vLLM "
              f"{res['load_s']['presrm, engine vllm']:.0f} s (a model's first vLLM load on a machine includes "
              "torch.compile; later loads reuse ~/.cache/vllm). vLLM's prefix cache is emptied before every "
              "workload, so no row reuses another's prompts.",
              f"presrm's layer over raw vLLM: {100 * gap['greedy']:+.0f}% greedy, {100 * gap['sampling']:+.0f}% "
              f"sampling, {100 * gap['judging']:+.0f}% judging (positive: presrm slower). Agreement, HF vs vLLM "
              f"in {a['precision']}: {ag['greedy_same_text']}/{res['prompts']} greedy texts identical, pointwise "
              f"scores within {ag['score_max_diff']:.1e} (presrm vs raw vLLM: {ag['raw_score_max_diff']:.1e}).",
              f"The machine was shared: load average {res['loadavg'][0]:.1f} at the start and "
              f"{res['loadavg'][1]:.1f} at the end on {res['cores']} cores, so the absolute rates are low and "
              "noisy; the engines ran one after the other under the same load."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--k", type=int, default=4, help="samples per prompt (step-search sampling)")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16, help="the HF engine's generation batch")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--kv-cache-gb", type=float, default=2.0)
    p.add_argument("--no-write", action="store_true", help="print the section without writing BENCHMARKS.md")
    p.add_argument("--from-json", help=f"re-render a saved measurement (runs that write the section save one to "
                                       f"{SPEED_JSON.name})")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        from presrm.engines.vllm import vllm_available

        why = vllm_available()
        if why:
            raise SystemExit(f"bench_engine: {why}")
        bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
        res = run(args)
        res["command"] = (f"VLLM_CPU_OMP_THREADS_BIND={bind} " if bind else "") + command_line()
        if not args.no_write:
            SPEED_JSON.parent.mkdir(exist_ok=True)
            SPEED_JSON.write_text(json.dumps(res, indent=2))
    publish("engine-speed", "## Inference engines: HF vs vLLM\n\n" + render(res), write=not args.no_write,
            command=res["command"])


if __name__ == "__main__":  # vLLM starts its workers with spawn, which re-imports this file
    main()
