"""Step search: build step-level preference pairs from the model's own judgments.

For every active problem, at step n: sample K candidate next steps from the
policy (prompt = question + chosen steps so far, generation stops at the next
``Step n+1:``), judge them in a tournament (pairwise round-robin, or ranked by
pointwise score), append the candidate with the most wins to the prefix and
pair it (chosen) with the one with the fewest wins (rejected). When every
candidate ties, the previous step is rolled back and re-sampled; the pair that
chose it stays (``search.rollback_pairs: keep``, the paper) or is withdrawn
(``drop``). A lone distinct candidate is appended unjudged: its score is None
and the process reward aggregates judged steps only. A problem ends at a
final-answer step, when the model stops writing, or after ``max_steps`` rounds
(steps + rollbacks).

Verifier grounding (``search.grounding``, on by default) changes which pairs
are kept, never the search path itself: a pair whose chosen step is verifiably
wrong is dropped; a pair whose rejected step is verifiably right while the
chosen one is only unverifiable is kept but flagged; optionally a problem's
pairs are kept only if its finished answer is right. With grounding off the
pairs are exactly the paper's.

``search.no_repeats`` (off by default) does change the path: a candidate that
repeats an earlier step of its solution word for word is never chosen while
another candidate exists and is the first to be rejected, whatever the judge
says (a step the model already wrote is likely under it, so a likelihood judge
scores it high, and the verifier finds its arithmetic as right as the first
time). A pair of a fresh step over a repeat needs no win margin.

Everything is batched across problems: one engine call to sample and one
tournaments call per round for all problems still running. The engine (HF or
vLLM, :mod:`presrm.engines`) and the judge (any of :mod:`presrm.judge`) are
interchangeable: search only calls ``engine.generate`` and ``judge.tournaments``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from presrm.config import SearchConfig
from presrm.data import Task
from presrm.generate import STEP_STOP, step_candidates, step_prompter
from presrm.judges.registry import scores_p_correct
from presrm.progress import bar as progress_bar
from presrm.rewards import aggregate
from presrm.schema import Problem, StepPair
from presrm.steps import final_answer_index, is_final_answer, segment, step_body
from presrm.verify import answers_match, check_solution, check_step, extract_answer

log = logging.getLogger(__name__)
__all__ = ["STEP_STOP", "ProblemState", "Sampler", "run_tournaments", "search_stats", "solution_sampler",
           "solution_search", "step_candidates", "step_sampler", "step_search"]
ALL_TIE = "all candidates tie (rolled back)"
CHOSEN_WRONG = "chosen step has verifiably wrong arithmetic"
FLAG_REJECTED_RIGHT = "rejected step verifiably right, chosen step unverifiable"
ANSWER_WRONG = "final answer wrong (require_correct_answer)"
ROLLED_BACK = "chosen step rolled back later (search.rollback_pairs: drop)"
ALL_REPEAT = "every candidate repeats an earlier step (search.no_repeats)"

Sampler = Callable[[Sequence[str], int], list[list[str]]]
Group = tuple[str, tuple[str, ...], Sequence[str]]


@dataclass
class ProblemState:
    """A problem's search in progress: the chosen steps, its pairs and a record of every decision.

    ``scores[i]`` is the judge's score of step i (a pointwise score or a win
    rate), None for a step appended unjudged (the only distinct candidate);
    ``origins[i]`` is the trace entry that appended step i and the pair it made.
    """

    problem: Problem
    steps: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    origins: list[tuple[dict[str, Any], StepPair | None]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[StepPair] = field(default_factory=list)
    rounds: int = 0
    rollbacks: int = 0
    end: str | None = None

    @property
    def done(self) -> bool:
        return self.end is not None

    def append(self, text: str, score: float | None, entry: dict[str, Any], pair: StepPair | None) -> None:
        self.steps.append(text)
        self.scores.append(score)
        self.origins.append((entry, pair))
        if pair is not None:
            self.pairs.append(pair)
        if is_final_answer(text):
            self.end = "final answer"

    def roll_back(self, cfg: SearchConfig) -> bool:
        """Remove the last step; with ``rollback_pairs: drop`` withdraw the pair that chose it (True if so)."""
        self.steps.pop()
        self.scores.pop()
        entry, pair = self.origins.pop()
        if pair is None or cfg.rollback_pairs != "drop":
            return False
        self.pairs = [p for p in self.pairs if p is not pair]
        entry.update(pair=False, dropped=ROLLED_BACK)
        return True

    def record(self, aggregate_how: str) -> dict[str, Any]:
        solution = "\n".join(self.steps)
        pred = extract_answer(solution, "strict") if self.steps else None
        judged = [s for s in self.scores if s is not None]  # unjudged steps have no score to aggregate
        return {
            "id": self.problem.id,
            "question": self.problem.question,
            "gold": self.problem.answer,
            "steps": self.steps,
            "step_scores": self.scores,
            "process_reward": aggregate(judged, aggregate_how) if judged else None,
            "finished": self.end == "final answer",
            "end": self.end,
            "rounds": self.rounds,
            "rollbacks": self.rollbacks,
            "pred": pred,
            "correct": bool(pred is not None and answers_match(pred, self.problem.answer)),
            "search": self.trace,
        }


def run_tournaments(judge, groups: Sequence[Group], *, desc: str | None = None) -> list[dict[str, Any]]:
    """Judge every group's candidates in one batched call; return wins, matches and scores per group.

    Every judge plays ``tournaments``: pairwise judges play each match, score
    judges (pointwise) rank the candidates by score. ``scores`` is the
    pointwise score or, for pairwise judges, the win rate (``score_kind``).
    """
    if not groups:
        return []
    return [{"wins": [float(w) for w in t.wins], "matches": [dict(m) for m in t.matches], "scores": list(t.scores),
             "score_kind": t.score_kind} for t in judge.tournaments(groups, desc=desc)]


def _drop_reason(cfg: SearchConfig, wins: list[float], best: int, worst: int, verdicts: list[str],
                 repeats: list[bool]) -> str | None:
    if repeats[best]:
        return ALL_REPEAT
    if not repeats[worst] and wins[best] - wins[worst] <= cfg.min_margin:
        return f"win margin {wins[best] - wins[worst]:.2f} <= min_margin"
    if cfg.grounding and verdicts[best] == "incorrect":
        return CHOSEN_WRONG
    return None


def _decide(state: ProblemState, n: int, cands: list[str], tour: dict[str, Any], cfg: SearchConfig,
            iteration: int, prompt: str) -> None:
    """Record one tournament, then roll back (all tie) or append the winner and keep a pair."""
    wins, scores = tour["wins"], tour["scores"]
    verdicts = [check_step(c).verdict for c in cands]
    earlier = {step_body(s) for s in state.steps} if cfg.no_repeats else None
    repeats = [step_body(c) in earlier for c in cands] if earlier else [False] * len(cands)
    entry: dict[str, Any] = {
        "round": state.rounds, "step": n,
        "candidates": [{"text": c, "wins": w, "score": s, "verdict": v, **({"repeat": True} if r else {})}
                       for c, w, s, v, r in zip(cands, wins, scores, verdicts, repeats, strict=True)],
        "matches": tour["matches"], "score_kind": tour["score_kind"], "pair": False, "dropped": None,
    }
    state.trace.append(entry)
    if max(wins) == min(wins):
        entry.update(action="rollback", dropped=ALL_TIE, popped=state.steps[-1] if state.steps else None)
        if state.steps:
            entry["withdrawn_pair"] = state.roll_back(cfg)
        state.rollbacks += 1
        return
    best = max(range(len(cands)), key=lambda i: (not repeats[i], wins[i], -i))
    worst = min(range(len(cands)), key=lambda i: (not repeats[i], wins[i], i))
    entry.update(action="append", chosen=best, rejected=worst)
    reason = _drop_reason(cfg, wins, best, worst, verdicts, repeats)
    pair = None
    if reason:
        entry["dropped"] = reason
    else:
        flag = (FLAG_REJECTED_RIGHT if cfg.grounding and verdicts[worst] == "correct"
                and verdicts[best] == "unverifiable" else None)
        entry.update(pair=True, flag=flag)
        pair = StepPair(
            prompt=prompt, chosen=cands[best] + "\n", rejected=cands[worst] + "\n",
            meta={"problem_id": state.problem.id, "step": n, "round": state.rounds, "iteration": iteration,
                  "chosen_wins": wins[best], "rejected_wins": wins[worst],
                  "chosen_score": scores[best], "rejected_score": scores[worst],
                  "chosen_verdict": verdicts[best], "rejected_verdict": verdicts[worst], "flag": flag,
                  "rejected_repeats": repeats[worst],
                  "previous_steps": list(state.steps)},
        )
    state.append(cands[best], scores[best], entry, pair)


def _single(state: ProblemState, n: int, cands: list[str]) -> None:
    """Zero or one distinct candidate: the model stopped, or there is nothing to compare.

    A lone candidate is appended unjudged: its score is None (no invented
    score), and the process reward aggregates the judged steps only.
    """
    if not cands:
        state.trace.append({"round": state.rounds, "step": n, "action": "end", "candidates": [], "matches": [],
                            "pair": False, "dropped": "no candidate"})
        state.end = "model stopped"
        return
    verdict = check_step(cands[0]).verdict
    entry = {"round": state.rounds, "step": n, "action": "append", "chosen": 0, "rejected": 0,
             "candidates": [{"text": cands[0], "wins": None, "score": None, "verdict": verdict}],
             "matches": [], "pair": False, "dropped": "fewer than two distinct candidates"}
    state.trace.append(entry)
    state.append(cands[0], None, entry, None)


def step_sampler(engine, cfg: SearchConfig, stop: Sequence[str] = (STEP_STOP,)) -> Sampler:
    """``sample(prompts, seed)``: ``cfg.k`` continuations per prompt from ``engine``, stopped at the next step."""
    def sample(prompts: Sequence[str], seed: int) -> list[list[str]]:
        return engine.generate(prompts, max_new_tokens=cfg.max_step_tokens, n=cfg.k, temperature=cfg.temperature,
                               top_p=cfg.top_p, stop=stop, seed=seed, batch_size=cfg.batch_size)
    return sample


def _finish_pairs(states: Sequence[ProblemState], records: list[dict[str, Any]], cfg: SearchConfig) -> list[StepPair]:
    """Collect the kept pairs in problem order; apply ``require_correct_answer``."""
    pairs: list[StepPair] = []
    for state, rec in zip(states, records, strict=True):
        keep = not (cfg.grounding and cfg.require_correct_answer and not rec["correct"])
        rec["pairs_kept"] = len(state.pairs) if keep else 0
        rec["pairs_dropped_answer"] = 0 if keep else len(state.pairs)
        if keep:
            pairs.extend(state.pairs)
    return pairs


def step_search(engine, judge, task: Task, problems: Sequence[Problem], cfg: SearchConfig, *,
                seed: int = 0, iteration: int = 0, aggregate_how: str = "min",
                sampler: Sampler | None = None) -> tuple[list[dict[str, Any]], list[StepPair]]:
    """Run step search on ``problems``; return per-problem records and the kept step pairs.

    ``engine`` samples the candidates; its tokenizer renders the prompts, evaluation's prompt for
    the task with the task's shots (:func:`presrm.generate.step_prompt`); ``judge`` is any
    :class:`presrm.judge.Judge`. ``sampler(prompts, seed)``
    replaces the engine's sampling (default: :func:`step_sampler`); tests pass a scripted one.
    """
    prompt_for = step_prompter(engine.tok, task)
    states = [ProblemState(p) for p in problems]
    sample = sampler or step_sampler(engine, cfg, [STEP_STOP, *task.stop])
    bar = progress_bar(total=cfg.max_steps, desc=f"iter {iteration}: step search", unit="round")
    rnd = 0
    while active := [s for s in states if not s.done]:
        rnd += 1
        bar.set_postfix(active=len(active), pairs=sum(len(s.pairs) for s in states),
                        rollbacks=sum(s.rollbacks for s in states))
        ns = [len(s.steps) + 1 for s in active]
        asked = [prompt_for(s.problem.question, s.steps, n) for s, n in zip(active, ns, strict=True)]
        raw = sample(asked, seed * 1_000_003 + rnd * 1009)
        # a pair's prompt: what the policy saw before the ``Step n:`` that starts both of its steps
        prompts = [p.removesuffix(f"Step {n}:") for p, n in zip(asked, ns, strict=True)]
        cands = [step_candidates(r, n) for r, n in zip(raw, ns, strict=True)]
        groups = [(s.problem.question, tuple(s.steps), c) for s, c in zip(active, cands, strict=True) if len(c) > 1]
        tours = iter(run_tournaments(judge, groups, desc=f"iter {iteration}: judge round {rnd}"))
        for state, cs, prompt, n in zip(active, cands, prompts, ns, strict=True):
            state.rounds += 1
            if len(cs) > 1:
                _decide(state, n, cs, next(tours), cfg, iteration, prompt)
            else:
                _single(state, n, cs)
            if not state.done and state.rounds >= cfg.max_steps:
                state.end = "cap"
        bar.update(1)
    bar.close()
    records = [s.record(aggregate_how) for s in states]
    return records, _finish_pairs(states, records, cfg)


SOLUTION_WRONG = "chosen solution has a step with verifiably wrong arithmetic"
SOLUTION_TIE = "every solution scores the same"
FEW_SCORED = "fewer than two distinct solutions with a score"
FLAG_SOLUTION_REJECTED_RIGHT = "rejected solution verifiably right, chosen solution not"


def solution_sampler(engine, cfg: SearchConfig, stop: Sequence[str] = ()) -> Sampler:
    """``sample(prompts, seed)``: ``cfg.k`` whole solutions per prompt, each up to ``max_steps`` x
    ``max_step_tokens`` new tokens (the budget step search gives one problem)."""
    def sample(prompts: Sequence[str], seed: int) -> list[list[str]]:
        return engine.generate(prompts, max_new_tokens=cfg.max_steps * cfg.max_step_tokens, n=cfg.k,
                               temperature=cfg.temperature, top_p=cfg.top_p, stop=stop, seed=seed,
                               batch_size=cfg.batch_size)
    return sample


def solution_steps(raw: str, max_steps: int) -> list[str]:
    """A sampled solution (what followed the prompt's ``Step 1:``) as its steps, up to its first final-answer step
    and at most ``max_steps`` of them.

    >>> solution_steps(" 3 + 4 = 7\\nStep 2: The answer is 7.\\nStep 3: more", 8)
    ['Step 1: 3 + 4 = 7', 'Step 2: The answer is 7.']
    """
    if not raw.strip():
        return []  # the model wrote nothing: no solution
    steps = segment("Step 1:" + raw.rstrip())
    end = final_answer_index(steps)
    return [st.text for st in steps[:max_steps if end is None else min(end + 1, max_steps)]]


def _solution_verdict(steps: Sequence[str], gold: str) -> tuple[str, str | None, list[str]]:
    """``(verdict, answer, step verdicts)`` of a whole solution: ``incorrect`` when its answer is wrong or a
    step's arithmetic is; ``correct`` when its answer is right and no step is wrong; else ``unverifiable``."""
    checks, first_bad = check_solution(steps)
    answer = extract_answer("\n".join(steps), "strict") if steps else None
    if first_bad is not None or (answer is not None and not answers_match(answer, gold)):
        verdict = "incorrect"
    else:
        verdict = "correct" if answer is not None else "unverifiable"
    return verdict, answer, [c.verdict for c in checks]


def solution_search(engine, judge, task: Task, problems: Sequence[Problem], cfg: SearchConfig, *,
                    seed: int = 0, iteration: int = 0, aggregate_how: str = "min",
                    sampler: Sampler | None = None) -> tuple[list[dict[str, Any]], list[StepPair]]:
    """Solution-level self-rewarding (Self-Rewarding LMs, Yuan et al. 2024; ``search.granularity: solution``):
    ``cfg.k`` whole solutions per problem, scored by the run's judge, the best and the worst a DPO pair.

    A solution's score is the outcome judge's (a solution judge), or its steps' scores aggregated with
    ``aggregate_how`` (a step judge; unreadable scores left out). The highest score is chosen and the lowest
    rejected; a tie between them, or fewer than two distinct scored solutions, gives no pair. Grounding is step
    search's: it drops a pair whose chosen solution has a step with verifiably wrong arithmetic, and flags one
    whose rejected solution is verifiably right (right answer, no wrong step) while the chosen is not; the gold
    answer decides only with ``require_correct_answer``, which keeps a problem's pair only when the chosen
    answer is right (as step search keeps a problem's pairs). So both granularities train on what the same
    verifier lets through. Records and pairs have step search's shapes (one round per problem, whose candidates
    are whole solutions), so stats, reports and training read them as they are; the pair's prompt is step 1's,
    its chosen and rejected whole solutions.
    """
    prompt_for = step_prompter(engine.tok, task)
    sample = sampler or solution_sampler(engine, cfg, task.stop)
    asked = [prompt_for(p.question, (), 1) for p in problems]
    raw = sample(asked, seed * 1_000_003 + 1009)
    solutions = []
    for outs in raw:
        distinct: dict[str, list[str]] = {}
        for out in outs:
            steps = solution_steps(out, cfg.max_steps)
            if steps:
                distinct.setdefault("\n".join(steps), steps)
        solutions.append(list(distinct.values()))
    scores = score_solutions(judge, [p.question for p in problems], solutions, aggregate_how,
                             desc=f"iter {iteration}: judge solutions")
    records, pairs = [], []
    for problem, prompt, sols, scs in zip(problems, asked, solutions, scores, strict=True):
        record, pair = solution_round(problem, prompt.removesuffix("Step 1:"), sols, scs, judge, cfg, iteration,
                                      aggregate_how)
        records.append(record)
        if pair is not None:
            pairs.append(pair)
    return records, pairs


def score_solutions(judge, questions: Sequence[str], solutions: Sequence[Sequence[Sequence[str]]],
                    aggregate_how: str, *, desc: str | None = None) -> list[list[tuple[float | None, list]]]:
    """Per problem, per solution: ``(score, step scores)``, every problem judged in one call."""
    from presrm.judges.common import SolutionToJudge, StepToJudge

    if judge.unit == "solution":
        items = [SolutionToJudge(q, "\n".join(sol)) for q, sols in zip(questions, solutions, strict=True)
                 for sol in sols]
        flat = iter(judge.score(items, desc=desc) if items else [])
        return [[(next(flat), []) for _ in sols] for sols in solutions]
    if judge.unit != "step":
        raise ValueError(f"solution-level search ranks by a score; the {judge.mode} judge compares pairs")
    items = [StepToJudge(q, tuple(sol[:i]), step) for q, sols in zip(questions, solutions, strict=True)
             for sol in sols for i, step in enumerate(sol)]
    flat = iter(judge.score(items, desc=desc) if items else [])
    out = []
    for sols in solutions:
        row = []
        for sol in sols:
            step_scores = [next(flat) for _ in sol]
            judged = [x for x in step_scores if x is not None]
            row.append((aggregate(judged, aggregate_how) if judged else None, step_scores))
        out.append(row)
    return out


def solution_round(problem: Problem, prompt: str, sols: list[list[str]], scs: list[tuple[float | None, list]],
                   judge, cfg: SearchConfig, iteration: int,
                   aggregate_how: str) -> tuple[dict[str, Any], StepPair | None]:
    """One problem's solution-level round: ``sols`` (each a list of steps) scored ``scs`` by
    :func:`score_solutions`, checked by the verifier; the trace record, and the best-against-worst pair (None when
    fewer than two are scored, best and worst tie, or grounding drops the chosen). Shared with
    :class:`presrm.self_reward.SelfReward`, which logs GRPO's groups as the same records."""
    checked = [_solution_verdict(sol, problem.answer) for sol in sols]
    score = [s for s, _ in scs]
    scored = [i for i, x in enumerate(score) if x is not None]
    wins = [sum(1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0 for j in scored if j != i)
            if i in scored else None for i in range(len(sols))]
    entry: dict[str, Any] = {
        "round": 1, "step": None, "granularity": "solution", "score_kind": judge.mode, "matches": [],
        "candidates": [{"text": "\n".join(sol), "score": sc, "step_scores": steps, "wins": w, "verdict": v,
                        "answer": a, "step_verdicts": sv}
                       for sol, (sc, steps), w, (v, a, sv) in zip(sols, scs, wins, checked, strict=True)],
        "pair": False, "dropped": None,
    }
    pair, chosen = None, None
    if len(scored) < 2:
        entry.update(action="end", dropped=FEW_SCORED)
        chosen = scored[0] if scored else (0 if sols else None)
    else:
        best = max(scored, key=lambda i: (score[i], -i))
        worst = min(scored, key=lambda i: (score[i], i))
        chosen = best
        entry.update(action="append", chosen=best, rejected=worst)
        verdicts = [v for v, _, _ in checked]
        if score[best] == score[worst]:
            entry["dropped"] = SOLUTION_TIE
        elif cfg.grounding and "incorrect" in checked[best][2]:  # a step's arithmetic, as step search checks
            entry["dropped"] = SOLUTION_WRONG
        elif cfg.grounding and cfg.require_correct_answer and verdicts[best] != "correct":
            entry["dropped"] = ANSWER_WRONG
        else:
            flag = (FLAG_SOLUTION_REJECTED_RIGHT if cfg.grounding and verdicts[worst] == "correct"
                    and verdicts[best] != "correct" else None)
            entry.update(pair=True, flag=flag)
            pair = StepPair(
                prompt=prompt, chosen="\n".join(sols[best]) + "\n", rejected="\n".join(sols[worst]) + "\n",
                meta={"problem_id": problem.id, "granularity": "solution", "iteration": iteration,
                      "chosen_score": score[best], "rejected_score": score[worst],
                      "chosen_verdict": verdicts[best], "rejected_verdict": verdicts[worst], "flag": flag,
                      "chosen_steps": len(sols[best]), "rejected_steps": len(sols[worst])})
    steps = sols[chosen] if chosen is not None else []
    step_scores = scs[chosen][1] if chosen is not None else []
    judged = [x for x in step_scores if x is not None]
    solution = "\n".join(steps)
    pred = extract_answer(solution, "strict") if steps else None
    finished = bool(steps) and is_final_answer(steps[-1])
    record = {
        "id": problem.id, "question": problem.question, "gold": problem.answer, "granularity": "solution",
        "steps": steps, "step_scores": step_scores,
        "process_reward": (score[chosen] if chosen is not None and judge.unit == "solution"
                           else aggregate(judged, aggregate_how) if judged else None),
        "finished": finished, "end": "final answer" if finished else ("model stopped" if not steps else "cap"),
        "rounds": 1, "rollbacks": 0, "pred": pred,
        "correct": bool(pred is not None and answers_match(pred, problem.answer)),
        "pairs_kept": int(pair is not None), "pairs_dropped_answer": 0, "search": [entry],
    }
    return record, pair


def _agreement(entry: dict[str, Any]) -> tuple[float, int, float, int, int]:
    """Judge vs verifier at one tournament: (couples agreed, couples, matches agreed, matches, unparsed)."""
    cands = entry["candidates"]
    verdict = [c["verdict"] if c["wins"] is not None else None for c in cands]  # unranked: no score to compare
    right = [i for i, v in enumerate(verdict) if v == "correct"]
    wrong = [i for i, v in enumerate(verdict) if v == "incorrect"]
    couples = 0.0
    for r in right:
        for w in wrong:
            wr, ww = cands[r]["wins"], cands[w]["wins"]
            couples += 1.0 if wr > ww else 0.5 if wr == ww else 0.0
    agreed = 0.0
    n = unparsed = 0
    for m in entry.get("matches", []):
        vi, vj = verdict[m["i"]], verdict[m["j"]]
        if {vi, vj} != {"correct", "incorrect"}:
            continue
        if m["winner"] is None:
            unparsed += 1
            continue
        n += 1
        right_side = "A" if vi == "correct" else "B"
        agreed += 0.5 if m["winner"] == "tie" else float(m["winner"] == right_side)
    return couples, len(right) * len(wrong), agreed, n, unparsed


def search_stats(records: Sequence[dict[str, Any]], pairs: Sequence[StepPair]) -> dict[str, Any]:
    """Per-iteration figures: outcomes, why steps gave no pair, and judge-verifier agreement.

    Agreement is measured on candidates the verifier could decide (``correct`` or
    ``incorrect``). ``within_step_agreement``: at tournaments with a verifiably
    right and a verifiably wrong candidate, the share of such couples the judge
    ranks right above wrong by wins (ties count half). ``match_agreement``: the
    share of right-vs-wrong matches whose verdict picks the right one (ties
    half; unparseable verdicts counted apart). ``pointwise_agreement`` (judges whose score is a
    probability that the step is correct, ``JudgeSpec.p_correct``: pointwise): the share of decided
    candidates whose score is on the verdict's side of 0.5. ``chosen_incorrect``: appended steps the
    verifier finds wrong.
    A falling agreement across iterations is the reward-hacking signal. ``tie_rollback_rate``: the
    share of rounds (tournaments) where every candidate tied and the search rolled back.
    ``repeat_rejected_pairs`` (``search.no_repeats``): pairs whose rejected step repeats an earlier one.
    """
    reasons: dict[str, int] = {}
    agree = decided = scored = 0
    couples = matches = 0.0
    couples_n = matches_n = unparsed = chosen_wrong = chosen_wrong_alt = 0
    for rec in records:
        if rec.get("pairs_dropped_answer"):
            reasons[ANSWER_WRONG] = reasons.get(ANSWER_WRONG, 0) + rec["pairs_dropped_answer"]
        for entry in rec["search"]:
            reason = entry.get("dropped")
            if reason:
                key = "win margin <= min_margin" if reason.startswith("win margin") else reason
                reasons[key] = reasons.get(key, 0) + 1
            cands = entry["candidates"]
            if len(cands) < 2:
                continue
            for c in cands:
                if c["verdict"] in ("correct", "incorrect"):
                    decided += 1
                    if scores_p_correct(entry.get("score_kind", "")) and c["score"] is not None:
                        scored += 1
                        agree += (c["score"] >= 0.5) == (c["verdict"] == "correct")
            c_ok, c_n, m_ok, m_n, m_bad = _agreement(entry)
            couples, couples_n, matches, matches_n = couples + c_ok, couples_n + c_n, matches + m_ok, matches_n + m_n
            unparsed += m_bad
            if entry.get("action") == "append" and cands[entry["chosen"]]["verdict"] == "incorrect":
                chosen_wrong += 1
                chosen_wrong_alt += any(c["verdict"] == "correct" for c in cands)
    n = len(records)
    finished = [r for r in records if r["finished"]]
    step_chars = [len(s) for r in finished for s in r["steps"]]
    return {
        "problems": n,
        "finished": len(finished),
        "correct": sum(r["correct"] for r in records),
        "pairs": len(pairs),
        "flagged_pairs": sum(1 for p in pairs if p.meta.get("flag")),
        "repeat_rejected_pairs": sum(1 for p in pairs if p.meta.get("rejected_repeats")),
        "mean_steps": sum(len(r["steps"]) for r in records) / n if n else 0.0,
        "mean_steps_finished": sum(len(r["steps"]) for r in finished) / len(finished) if finished else None,
        "mean_step_chars_finished": sum(step_chars) / len(step_chars) if step_chars else None,
        "rounds": sum(len(r["search"]) for r in records),
        "rollbacks": sum(r.get("rollbacks", 0) for r in records),
        "tie_rollback_rate": (sum(e.get("dropped") == ALL_TIE for r in records for e in r["search"])
                              / max(sum(len(r["search"]) for r in records), 1)),
        "capped": sum(r.get("end") == "cap" for r in records),
        "no_pair_reasons": reasons,
        "judge_verifier": {
            "decided_candidates": decided,
            "pointwise_agreement": agree / scored if scored else None,
            "right_vs_wrong_couples": couples_n,
            "within_step_agreement": couples / couples_n if couples_n else None,
            "right_vs_wrong_matches": matches_n,
            "match_agreement": matches / matches_n if matches_n else None,
            "unparsed_matches": unparsed,
            "chosen_incorrect": chosen_wrong,
            "chosen_incorrect_with_correct_alternative": chosen_wrong_alt,
        },
    }
