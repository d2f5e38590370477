"""Online RL from self-reward (``train.algorithm: grpo``): the reward of a sampled solution is the run's own judge.

RLSR (reinforcement learning from self-reward, 2025) trains with GRPO where the model's own judgment is the
reward and no reference answer is read. presrm's version: TRL's ``GRPOTrainer`` samples ``search.k`` solutions
per problem from step 1's prompt (a GRPO group); :class:`SelfReward` splits each into steps as solution-level
search does (:func:`presrm.search.solution_steps`), scores them with the iteration's judge (a step judge's scores
aggregated with ``judge.aggregate``, or the outcome judge's rubric score) and returns that process reward. The
judge is the model the iteration started from, fixed while the policy trains, as it is in step search.

Verifier grounding (``search.grounding``) caps the reward at 0 for a solution one of whose steps has verifiably
wrong arithmetic; the final answer is never read (no reference answer enters the reward), so the run stays
self-rewarding. An unreadable judgment gives 0, never a guessed score.

Every call's groups are kept in step search's record shape (one round per group, its candidates the sampled
solutions with their rewards as scores and the verifier's verdicts), so ``search.json``'s judge-verifier
agreement, the report and the degeneration counts read the rollouts as they read search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from presrm.config import SearchConfig
from presrm.schema import Problem


class SelfReward:
    """A TRL reward function: ``reward(prompts, completions, id=..., question=..., answer=...) -> [float]``.

    ``answer`` (the gold) only labels the kept rollouts for the verifier's agreement figures; the reward never
    reads it. ``records()`` gives the rollouts as search records, one per problem, in order of first sight.
    """

    __name__ = "self_reward"  # TRL names each reward function in its logs

    def __init__(self, judge, cfg: SearchConfig, *, aggregate_how: str = "min", iteration: int = 0):
        self.judge, self.cfg, self.aggregate_how, self.iteration = judge, cfg, aggregate_how, iteration
        self._records: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], *, id: Sequence[str],  # noqa: A002
                 question: Sequence[str], answer: Sequence[str], **_: Any) -> list[float]:
        from presrm.search import score_solutions, solution_steps
        from presrm.verify import check_solution

        self.calls += 1
        sols = [solution_steps(c, self.cfg.max_steps) for c in completions]
        scored = score_solutions(self.judge, list(question), [[s] for s in sols], self.aggregate_how,
                                 desc=f"iter {self.iteration}: self-reward")
        rewards = []
        for steps, ((score, _),) in zip(sols, scored, strict=True):
            reward = float(score) if score is not None else 0.0
            if self.cfg.grounding and steps and check_solution(steps)[1] is not None:
                reward = min(reward, 0.0)  # a verifiably wrong step caps the reward
            rewards.append(reward)
        self._keep(prompts, sols, scored, rewards, id, question, answer)
        return rewards

    def _keep(self, prompts, sols, scored, rewards, ids, questions, answers) -> None:
        """Group the call's rollouts by problem and record each group as one search round."""
        from presrm.search import solution_round

        groups: dict[str, list[int]] = {}
        for i, pid in enumerate(ids):
            groups.setdefault(pid, []).append(i)
        no_pairs = dataclasses.replace(self.cfg, grounding=False)  # records only: nothing is paired
        for pid, rows in groups.items():
            problem = Problem(id=pid, question=questions[rows[0]], answer=answers[rows[0]])
            group = [(rewards[i], scored[i][0][1]) for i in rows]
            record, _ = solution_round(problem, prompts[rows[0]], [sols[i] for i in rows], group, self.judge,
                                       no_pairs, self.iteration, self.aggregate_how)
            entry = record["search"][0]
            entry.update(round=self.calls, granularity="rollout", pair=False, dropped=None, action="rollout")
            kept = self._records.get(pid)
            if kept is None:
                record["rounds"] = 1
                self._records[pid] = record
            else:
                kept["search"].append(entry)
                kept["rounds"] += 1

    def records(self) -> list[dict[str, Any]]:
        for record in self._records.values():
            record.update(granularity="rollout", pairs_kept=0)
        return list(self._records.values())
