"""Step search: build step-level preference pairs from the model's own judgments.

For every active problem, at step n: sample K candidate next steps from the
policy (prompt = question + chosen steps so far), have the self-judge score
each, take the best as *chosen* and the worst as *rejected*, append the chosen
step to the prefix, and go on until a final-answer step or ``max_steps``.
Everything is batched across problems: one generate call and one judge call
per step for all problems still running.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from presrm.config import SearchConfig
from presrm.data import Task
from presrm.generate import generate, policy_prompt
from presrm.judge import PointwiseJudge, StepToJudge
from presrm.rewards import aggregate
from presrm.schema import Problem, StepPair
from presrm.steps import is_final_answer
from presrm.verify import answers_match, check_step, extract_answer

log = logging.getLogger(__name__)
STEP_STOP = "\nStep "


@dataclass
class ProblemState:
    """A problem's search in progress: the chosen steps and a record of every decision."""

    problem: Problem
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def prefix(self) -> str:
        return "".join(s + "\n" for s in self.steps)

    def record(self, aggregate_how: str) -> dict[str, Any]:
        solution = "\n".join(self.steps)
        pred = extract_answer(solution, "strict") if self.finished else None
        return {
            "id": self.problem.id,
            "question": self.problem.question,
            "gold": self.problem.answer,
            "steps": self.steps,
            "step_scores": self.scores,
            "process_reward": aggregate(self.scores, aggregate_how) if self.scores else None,
            "finished": self.finished,
            "pred": pred,
            "correct": bool(pred is not None and answers_match(pred, self.problem.answer)),
            "search": self.trace,
        }


def _candidates(raw: Sequence[str], n: int) -> list[str]:
    """Turn sampled continuations into distinct, non-empty ``Step n: ...`` texts."""
    seen: dict[str, None] = {}
    for text in raw:
        body = text.strip()
        if body:
            seen.setdefault(f"Step {n}: {body}", None)
    return list(seen)


def _decide(state: ProblemState, n: int, cands: list[str], scores: list[float], cfg: SearchConfig,
            iteration: int, prompt: str) -> StepPair | None:
    """Record step n's candidates, extend the prefix with the best, and return a pair if any."""
    checks = [check_step(c) for c in cands]
    best = max(range(len(cands)), key=lambda i: scores[i])
    worst = min(range(len(cands)), key=lambda i: scores[i])
    entry: dict[str, Any] = {
        "step": n,
        "candidates": [{"text": c, "score": s, "verdict": ch.verdict}
                       for c, s, ch in zip(cands, scores, checks, strict=True)],
        "chosen": best, "rejected": worst, "pair": False, "dropped": None,
    }
    pair = None
    if len(cands) < 2:
        entry["dropped"] = "fewer than two distinct candidates"
    elif scores[best] - scores[worst] <= cfg.min_margin:
        entry["dropped"] = f"score margin {scores[best] - scores[worst]:.4f} <= min_margin"
    elif cfg.verifier_filter and checks[best].verdict == "incorrect":
        entry["dropped"] = "chosen step has verifiably wrong arithmetic"
    else:
        entry["pair"] = True
        pair = StepPair(
            prompt=prompt, chosen=cands[best] + "\n", rejected=cands[worst] + "\n",
            meta={"problem_id": state.problem.id, "step": n, "iteration": iteration,
                  "chosen_score": scores[best], "rejected_score": scores[worst],
                  "chosen_verdict": checks[best].verdict, "rejected_verdict": checks[worst].verdict,
                  "previous_steps": list(state.steps)},
        )
    state.trace.append(entry)
    state.steps.append(cands[best])
    state.scores.append(scores[best])
    if is_final_answer(cands[best]):
        state.finished = True
    return pair


def search_stats(records: Sequence[dict[str, Any]], pairs: Sequence[StepPair]) -> dict[str, Any]:
    """Per-iteration figures: outcomes, why steps gave no pair, and judge-verifier agreement.

    Agreement is measured on candidates the verifier could decide (``correct`` or
    ``incorrect``): ``pointwise`` is the share whose judge score is on the same side
    of 0.5 as the verdict; ``within_step`` is, at steps where one candidate is
    verifiably right and another verifiably wrong, the share of such couples the
    judge ranks right-above-wrong (ties count half). A falling figure across
    iterations is the reward-hacking signal.
    """
    dropped: dict[str, int] = {}
    agree = decided = 0
    couples = 0.0
    couples_n = 0
    for rec in records:
        for entry in rec["search"]:
            reason = entry.get("dropped")
            if reason:
                key = reason.split(" ")[0] if reason.startswith("score margin") else reason
                dropped[key] = dropped.get(key, 0) + 1
            cands = entry["candidates"]
            for c in cands:
                if c["verdict"] in ("correct", "incorrect"):
                    decided += 1
                    agree += (c["score"] >= 0.5) == (c["verdict"] == "correct")
            right = [c["score"] for c in cands if c["verdict"] == "correct"]
            wrong = [c["score"] for c in cands if c["verdict"] == "incorrect"]
            for r in right:
                for w in wrong:
                    couples_n += 1
                    couples += 1.0 if r > w else 0.5 if r == w else 0.0
    n = len(records)
    return {
        "problems": n,
        "finished": sum(r["finished"] for r in records),
        "correct": sum(r["correct"] for r in records),
        "pairs": len(pairs),
        "mean_steps": sum(len(r["steps"]) for r in records) / n if n else 0.0,
        "no_pair_reasons": dropped,
        "judge_verifier": {
            "decided_candidates": decided,
            "pointwise_agreement": agree / decided if decided else None,
            "right_vs_wrong_couples": couples_n,
            "within_step_agreement": couples / couples_n if couples_n else None,
        },
    }


def step_search(model, tok, judge: PointwiseJudge, task: Task, problems: Sequence[Problem],
                cfg: SearchConfig, *, seed: int = 0, iteration: int = 0,
                aggregate_how: str = "min") -> tuple[list[dict[str, Any]], list[StepPair]]:
    """Run step search on ``problems``; return per-problem records and the step pairs."""
    states = [ProblemState(p) for p in problems]
    pairs: list[StepPair] = []
    stop = [STEP_STOP, *task.stop]
    bar = tqdm(range(1, cfg.max_steps + 1), desc=f"iter {iteration}: step search", unit="step")
    for n in bar:
        active = [s for s in states if not s.finished]
        if not active:
            break
        bar.set_postfix(active=len(active), pairs=len(pairs))
        pair_prompts = [policy_prompt(tok, task, s.problem.question, prefix=s.prefix()) for s in active]
        raw = generate(model, tok, [p + f"Step {n}:" for p in pair_prompts], max_new_tokens=cfg.max_step_tokens,
                       batch_size=cfg.batch_size, stop=stop, num_return_sequences=cfg.k,
                       temperature=cfg.temperature, top_p=cfg.top_p, seed=seed * 1000 + n)
        cands = [_candidates(r, n) for r in raw]
        items = [StepToJudge(s.problem.question, tuple(s.steps), c)
                 for s, cs in zip(active, cands, strict=True) for c in cs]
        flat = judge.score(items)
        pos = 0
        for state, cs, prompt in zip(active, cands, pair_prompts, strict=True):
            scores, pos = flat[pos:pos + len(cs)], pos + len(cs)
            if not cs:
                state.trace.append({"step": n, "candidates": [], "pair": False, "dropped": "no candidate"})
                state.finished = True
                continue
            pair = _decide(state, n, cs, scores, cfg, iteration, prompt)
            if pair is not None:
                pairs.append(pair)
    bar.close()
    return [s.record(aggregate_how) for s in states], pairs
