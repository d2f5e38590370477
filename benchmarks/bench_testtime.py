"""Test-time payoff of the model's own judge: greedy, maj@k, best-of-k and a judge-weighted vote, against M0's judge.

Like for like: the policy samples k solutions per problem *once*; maj@k votes over them, and the same k
candidates are reranked by the process reward (``--aggregate`` of per-step scores of ``--judge``) of two
judges: the policy's own (the trained self-judge) and the base model M0's. The weighted vote counts each
candidate's answer with its own judge's process reward. pass@k (any candidate right) is the ceiling no
reranker can pass. Greedy comes from the same policy (or from an evaluation's samples file of the same
problems, ``--greedy-samples``). Each accuracy has a 95% Wilson interval; every comparison is paired on the
same problems (exact McNemar). ``--engine vllm`` samples and judges on vLLM (docs/engines.md).

    python benchmarks/bench_testtime.py --policy runs/evidence_cpu/iter_1/model --base embedded --limit 500 \
        --judge likelihood --engine vllm
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import publish  # noqa: E402
from presrm.compare import mcnemar  # noqa: E402
from presrm.decoding import majority_vote, vote_key, weighted_vote  # noqa: E402
from presrm.engines import registry as engines  # noqa: E402
from presrm.evaluate import judge_steps, score_record, wilson_interval  # noqa: E402
from presrm.judges.registry import step_modes  # noqa: E402
from presrm.rewards import aggregate  # noqa: E402

KINDS = ("strict", "flexible")
METHODS = ("greedy", "maj", "best_own", "weighted_own", "best_m0", "pass")


def voted_correct(cands, task, kind: str, weights=None) -> bool:
    """maj@k (``weights`` None) or the weighted vote: right when a candidate with the winning answer is right."""
    preds = [getattr(c, f"pred_{kind}") for c in cands]
    winner = majority_vote(preds, task.match)[0] if weights is None else weighted_vote(preds, weights, task.match)
    if winner is None:
        return False
    key = vote_key(winner, task.match)
    return any(getattr(c, f"correct_{kind}") for c, p in zip(cands, preds, strict=True)
               if p is not None and vote_key(p, task.match) == key)


def rewards(scores: list[list[float]], how: str) -> list[float | None]:
    """Each candidate's process reward (None for a candidate without steps)."""
    return [aggregate(s, how) if s else None for s in scores]


def reranked(cands, scores: list[list[float]], how: str) -> int:
    """Index of the candidate with the highest process reward (ties: lowest index; no steps: last)."""
    r = rewards(scores, how)
    return max(range(len(cands)), key=lambda i: (r[i] is not None, r[i] or 0.0, -i))


def _greedy(args, engine, task, problems) -> dict[str, dict[str, bool]]:
    from presrm.jsonio import read_jsonl

    if args.greedy_samples:
        recs = {r["id"]: r for r in read_jsonl(args.greedy_samples)}
        missing = [p.id for p in problems if p.id not in recs]
        if missing:
            raise SystemExit(f"{args.greedy_samples} lacks problem {missing[0]} (and {len(missing) - 1} more)")
        return {p.id: {k: bool(recs[p.id][f"correct_{k}"]) for k in KINDS} for p in problems}
    from presrm.evaluate import build_prompt, load_shots

    shots = load_shots(task)
    outs = engine.greedy([build_prompt(engine.tok, task, p.question, shots) for p in problems],
                         max_new_tokens=args.max_new_tokens, stop=task.stop, batch_size=args.batch_size, desc="greedy")
    recs = [score_record(p, task.response_prefix + o, task) for p, o in zip(problems, outs, strict=True)]
    return {r.id: {k: bool(getattr(r, f"correct_{k}")) for k in KINDS} for r in recs}


def _judged(args, engine, flat, desc: str) -> None:
    from presrm.judge import context_options, make_judge

    opts = context_options(args.judge, task=args.task, seed=args.seed)
    judge_steps(make_judge(args.judge, engine, batch_size=args.judge_batch_size, **opts), flat, desc=desc)


def run(args) -> dict:
    from presrm.data import load_problems, load_task
    from presrm.engines import EngineOptions, open_engine
    from presrm.evaluate import build_prompt, load_shots

    task = load_task(args.task)
    problems = load_problems(task, limit=args.limit)
    options = EngineOptions(name=args.engine, precision=args.precision, batch_size=args.batch_size, seed=args.seed)
    t0 = time.time()
    engine = open_engine(args.policy, options)
    t_load = time.time() - t0
    hw = engine.describe()
    greedy = _greedy(args, engine, task, problems)
    shots = load_shots(task)
    outs = engine.generate([build_prompt(engine.tok, task, p.question, shots) for p in problems],
                           max_new_tokens=args.max_new_tokens, n=args.k, temperature=args.temperature,
                           top_p=args.top_p, stop=task.stop, seed=args.seed, batch_size=args.batch_size,
                           desc=f"sample {args.k}")
    groups = [[score_record(p, task.response_prefix + c, task) for c in o] for p, o in zip(problems, outs, strict=True)]
    flat = [c for g in groups for c in g]
    t_sample = time.time() - t0
    _judged(args, engine, flat, "own judge")
    own = [[list(c.step_scores or []) for c in g] for g in groups]
    engine.close()
    base = open_engine(args.base, options)
    _judged(args, base, flat, "M0 judge")
    base.close()
    m0 = [[list(c.step_scores or []) for c in g] for g in groups]
    outcome: dict[str, dict[str, list[bool]]] = {m: {k: [] for k in KINDS} for m in METHODS}
    for p, g, so, sm in zip(problems, groups, own, m0, strict=True):
        i_own, i_m0 = reranked(g, so, args.aggregate), reranked(g, sm, args.aggregate)
        for k in KINDS:
            outcome["greedy"][k].append(greedy[p.id][k])
            outcome["maj"][k].append(voted_correct(g, task, k))
            outcome["best_own"][k].append(bool(getattr(g[i_own], f"correct_{k}")))
            outcome["weighted_own"][k].append(voted_correct(g, task, k, rewards(so, args.aggregate)))
            outcome["best_m0"][k].append(bool(getattr(g[i_m0], f"correct_{k}")))
            outcome["pass"][k].append(any(getattr(c, f"correct_{k}") for c in g))
    n = len(problems)
    acc = {m: {k: {"correct": sum(v), "accuracy": sum(v) / n, "ci95": list(wilson_interval(sum(v), n))}
               for k, v in per.items()} for m, per in outcome.items()}
    tests = {}
    for a, b in (("best_own", "greedy"), ("best_own", "maj"), ("weighted_own", "maj"), ("best_own", "best_m0"),
                 ("maj", "greedy")):
        for k in KINDS:
            xa, xb = outcome[a][k], outcome[b][k]
            only_a = sum(x and not y for x, y in zip(xa, xb, strict=True))
            only_b = sum(y and not x for x, y in zip(xa, xb, strict=True))
            tests[f"{a} vs {b} ({k})"] = {"diff": (sum(xa) - sum(xb)) / n, "only_a": only_a, "only_b": only_b,
                                          **mcnemar(only_a, only_b)}
    return {"n": n, "k": args.k, "policy": args.policy, "base": args.base, "aggregate": args.aggregate,
            "judge": args.judge, "engine": args.engine,
            "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed, "accuracy": acc,
            "paired": tests, "hardware": hw["hardware"], "engine_info": hw, "seconds": time.time() - t0,
            "load_seconds": t_load, "sampling_seconds": t_sample,
            "per_problem": {p.id: {m: outcome[m]["strict"][i] for m in METHODS} for i, p in enumerate(problems)}}


LABELS = {"greedy": "greedy", "maj": "maj@{k}", "best_own": "best-of-{k}, own judge (trained self-judge)",
          "weighted_own": "vote weighted by the own judge's process reward", "best_m0": "best-of-{k}, M0's judge",
          "pass": "pass@{k} (ceiling: any candidate right)"}


def render(res: dict) -> str:
    def pct(block):
        lo, hi = block["ci95"]
        return f"{block['correct']}/{res['n']} = {100 * block['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

    rows = ["| decoding | strict [95% Wilson] | flexible [95% Wilson] |", "| --- | --- | --- |"]
    for m, label in LABELS.items():
        rows.append(f"| {label.format(k=res['k'])} | {pct(res['accuracy'][m]['strict'])} | "
                    f"{pct(res['accuracy'][m]['flexible'])} |")
    rows += ["", "| paired comparison | difference | only first right / only second right | McNemar p |",
             "| --- | --- | --- | --- |"]
    for name, t in res["paired"].items():
        rows.append(f"| {name} | {100 * t['diff']:+.1f} pts | {t['only_a']} / {t['only_b']} | {t['p_exact']:.3g} |")
    hw = res["hardware"]
    return (f"## Test-time payoff of the judge (greedy, maj@{res['k']}, best-of-{res['k']})\n\n"
            f"Policy `{res['policy']}`, M0 `{res['base']}`; {res['n']} GSM8K test problems; {res['k']} samples per "
            f"problem at T={res['temperature']}, top_p={res['top_p']}, seed {res['seed']}, shared by maj@k and both "
            f"rerankings (process reward = {res['aggregate']} of the {res['judge']} judge's step scores). "
            f"{hw['dtype']} on {hw['cpu']}, engine {res.get('engine', 'hf')}; "
            f"{res['seconds'] / 60:.1f} min in all ({res['sampling_seconds'] / 60:.1f} min load + greedy + "
            "sampling).\n\n"
            + "\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True, help="the trained model (policy and own judge)")
    p.add_argument("--base", default="embedded", help="M0, whose judge is the baseline reranker")
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aggregate", default="min")
    p.add_argument("--judge", default="pointwise", choices=step_modes(),
                   help="the step judge mode (random: the control, no judge)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--judge-batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--engine", default="hf", choices=engines.names(), help="inference engine (docs/engines.md)")
    p.add_argument("--greedy-samples", help="an eval samples.jsonl of the policy on the same problems (greedy)")
    p.add_argument("--output", help="also write the figures as JSON here")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run(args)
    if args.output:
        from presrm.jsonio import write_json

        write_json(args.output, res)
    publish("testtime", render(res), write=not args.no_write)


if __name__ == "__main__":
    main()
