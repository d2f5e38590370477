"""IFT and EFT datasets for the M0 -> M1 initialisation (pure builders, no model).

- **IFT** (instruction fine-tuning): a GSM8K train solution rewritten as
  ``Step n:`` lines (calculator annotations removed, the final answer stated
  as ``The answer is N.``), after the exact prompt the policy sees at search
  and evaluation time (shots included), so training and evaluation texts match.
- **EFT** (evaluation fine-tuning): judge examples, i.e. the judge prompt and
  then the verdict, from two sources:

  (a) *gold*: a gold step whose arithmetic the verifier confirms, and its twin
      with one result perturbed (:mod:`presrm.perturb`), which the verifier
      confirms is wrong;
  (b) *on-policy*: the policy's own candidate steps on train problems, sampled
      after its own prefixes (:func:`presrm.labelled.build_natural_set`) and
      labelled by the verifier: the errors the model really makes.

  Pairwise examples come in both orders (the right step as A, then as B), so the
  verdicts are exactly balanced; pointwise ones are balanced Yes/No.

Prompts are rendered by callables the caller passes (built from the tokenizer
and the judge's own templates), so this module stays free of models.

>>> ift_example("1+1?", "1 + 1 = <<1+1=2>>2\\n#### 2", lambda q: f"Q: {q}\\nStep 1:",
...             lambda q, steps: f"Q: {q}\\n" + "\\n".join(steps))
{'prompt': 'Q: 1+1?\\nStep 1:', 'completion': ' 1 + 1 = 2\\nStep 2: The answer is 2.'}
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from presrm.judges.registry import eft_modes, on_policy_eft_modes, spec
from presrm.labelled import NaturalStep, right_wrong_couples
from presrm.perturb import KINDS, confirmed_perturbation
from presrm.schema import Problem
from presrm.steps import format_steps, gold_to_steps, step_parts


def ift_example(question: str, solution: str, prompt: Callable[[str], str],
                written: Callable[[str, Sequence[str]], str]) -> dict[str, str]:
    """One SFT example: the gold solution as ``Step n:`` lines, after the prompt evaluation gives the policy.

    ``prompt(question)`` is evaluation's prompt (it ends in the task's response prefix);
    ``written(question, steps)`` is the text of a policy that wrote ``steps``
    (:func:`presrm.generate.response_prompt`). The example is that text, cut where
    evaluation's prompt ends (where the two part, should the prompt not start it).
    """
    head, full = prompt(question), written(question, format_steps(gold_to_steps(solution)).split("\n"))
    cut = len(os.path.commonprefix([head, full]))
    return {"prompt": full[:cut], "completion": full[cut:]}


def ift_examples(problems: Sequence[Problem], prompt: Callable[[str], str],
                 written: Callable[[str, Sequence[str]], str]) -> list[dict[str, Any]]:
    """IFT examples (:func:`ift_example`) for every problem that has a gold solution."""
    return [{**ift_example(p.question, p.solution, prompt, written), "kind": "ift", "id": p.id}
            for p in problems if p.solution]


@dataclass(frozen=True)
class LabelledPair:
    """A gold step and its verifiably wrong twin, after the gold steps before them (``Step n:`` texts)."""

    problem_id: str
    question: str
    previous: tuple[str, ...]
    right: str
    wrong: str
    info: dict[str, Any]


def labelled_pairs(problems: Sequence[Problem], *, seed: int = 0, per_problem: int = 1) -> list[LabelledPair]:
    """Up to ``per_problem`` verifier-labelled step pairs from each problem's gold solution (seeded).

    The wrong twin changes one result by any of :data:`presrm.perturb.KINDS`; the verifier confirms it.
    """
    rng = random.Random(seed)
    out = []
    for p in problems:
        if not p.solution:
            continue
        lines = format_steps(gold_to_steps(p.solution)).split("\n")
        order = list(range(len(lines)))
        rng.shuffle(order)
        made = 0
        for i in order:
            if made >= per_problem:
                break
            marker, body = step_parts(lines[i])
            twin = confirmed_perturbation(body, rng, kinds=KINDS)
            if twin is not None:
                out.append(LabelledPair(p.id, p.question, tuple(lines[:i]), lines[i], marker + twin[0],
                                        {"step": i + 1, **twin[1]}))
                made += 1
    return out


def explanation(pair: LabelledPair, right_label: str) -> str:
    """A verifier-grounded explanation for generative judges, ending in the verdict.

    >>> explanation(LabelledPair("p", "q", (), "Step 1: 2 + 2 = 4", "Step 1: 2 + 2 = 5",
    ...             {"lhs": "2 + 2", "value": "4", "wrong_rhs": "5"}), "A")
    'Step B claims 2 + 2 = 5, but 2 + 2 = 4, so step A is the better step. [[A]]'
    """
    wrong_label = "B" if right_label == "A" else "A"
    i = pair.info
    return (f"Step {wrong_label} claims {i['lhs']} = {i['wrong_rhs']}, but {i['lhs']} = {i['value']}, "
            f"so step {right_label} is the better step. [[{right_label}]]")


def eft_pairwise_examples(pairs: Sequence[LabelledPair], render: Callable[[str, tuple[str, ...], str, str], str],
                          *, explain: bool = False, prefill: str = "") -> list[dict[str, Any]]:
    """Pairwise judge examples in both orders: ``render(question, previous, a, b)`` then ``[[A]]``/``[[B]]``.

    ``prefill`` is what the judge's prompt already ends with (``[[`` for the
    logit judge); the completion is the rest of the verdict (``A]]``).
    """
    out = []
    for p in pairs:
        for label, a, b in (("A", p.right, p.wrong), ("B", p.wrong, p.right)):
            target = explanation(p, label) if explain else f"[[{label}]]"
            if prefill and target.startswith(prefill):
                target = target[len(prefill):]
            out.append({"prompt": render(p.question, p.previous, a, b), "completion": target, "kind": "eft",
                        "source": "gold", "id": p.problem_id, "label": label})
    return out


def eft_pointwise_examples(pairs: Sequence[LabelledPair], render: Callable[[str, tuple[str, ...], str], str],
                           verdicts: tuple[str, str]) -> list[dict[str, Any]]:
    """Step judge examples: the gold step answered ``verdicts[0]``, its wrong twin ``verdicts[1]`` (balanced).

    ``verdicts``: the judge's words for a right and a wrong step (its registry entry's; pointwise: Yes, No).
    """
    yes, no = verdicts
    out = []
    for p in pairs:
        for step, label in ((p.right, yes), (p.wrong, no)):
            out.append({"prompt": render(p.question, p.previous, step), "completion": label, "kind": "eft",
                        "source": "gold", "id": p.problem_id, "label": label})
    return out


def eft_examples(problems: Sequence[Problem], render: Callable[..., str], *, mode: str, seed: int = 0,
                 prefill: str = "", per_problem: int = 1) -> list[dict[str, Any]]:
    """Gold-source EFT examples for the judge ``mode`` (its registry entry decides): a step judge's verdict words
    (pointwise: Yes, No), a pair judge's ``[[A]]``/``[[B]]``, after an explanation when the judge writes one
    (generative)."""
    if mode not in eft_modes():
        raise ValueError(f"EFT has no examples for judge mode {mode!r}")
    entry = spec(mode)
    pairs = labelled_pairs(problems, seed=seed, per_problem=per_problem)
    if entry.unit == "step":
        return eft_pointwise_examples(pairs, render, entry.verdicts)
    return eft_pairwise_examples(pairs, render, explain=entry.generates, prefill=prefill)


def on_policy_examples(steps: Sequence[NaturalStep], render: Callable[..., str], *, mode: str, seed: int = 0,
                       prefill: str = "", per_group: int = 2) -> list[dict[str, Any]]:
    """On-policy EFT examples from the policy's own verifier-labelled steps (a natural set on train problems).

    Step judges (pointwise): every verifiably right step answered with the judge's right verdict (``Yes``) and
    every verifiably wrong one with its wrong verdict (``No``), the larger class cut down (seeded) to the size
    of the smaller, so the labels are balanced. Pair judges (pairwise): a right and a wrong candidate sampled
    after the same prefix, in both orders (at most ``per_group`` couples a prefix). Judges that write an
    explanation (generative) have none (:func:`presrm.judges.registry.on_policy_eft_modes`): their explanation
    needs the perturbation.
    """
    entry = spec(mode)
    if mode not in on_policy_eft_modes():  # config validation refuses the recipe first
        raise ValueError(f"EFT has no on-policy examples for judge mode {mode!r}")
    if entry.unit == "step":
        right = [s for s in steps if s.label == "correct"]
        wrong = [s for s in steps if s.label == "incorrect"]
        rng = random.Random(seed)
        n = min(len(right), len(wrong))
        chosen = sorted(rng.sample(right, n) + rng.sample(wrong, n), key=lambda s: s.id)
        word = dict(zip(("correct", "incorrect"), entry.verdicts, strict=True))
        return [{"prompt": render(s.question, s.previous, s.step), "completion": word[s.label], "kind": "eft",
                 "source": "on_policy", "id": s.problem_id, "label": word[s.label]} for s in chosen]
    if entry.unit == "pair":
        pairs = [LabelledPair(r.problem_id, r.question, r.previous, r.step, w.step, {"group": r.group})
                 for r, w in right_wrong_couples(steps, per_group=per_group, seed=seed)]
        return [{**e, "source": "on_policy"} for e in eft_pairwise_examples(pairs, render, prefill=prefill)]
    return []
