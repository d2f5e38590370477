"""IFT and EFT datasets for the M0 -> M1 initialisation (pure builders, no model).

- **IFT** (instruction fine-tuning): a GSM8K train solution rewritten as
  ``Step n:`` lines (calculator annotations removed, the final answer stated
  as ``The answer is N.``), after the exact prompt the policy sees at search
  and evaluation time, so training and evaluation templates match.
- **EFT** (evaluation fine-tuning): judge examples, i.e. the judge prompt and
  then the verdict, built from verifier-labelled step pairs: a gold step whose
  arithmetic the verifier confirms, and its twin with one result perturbed,
  which the verifier confirms is wrong. Pairwise examples come in both orders
  (the gold step as A, then as B), so the verdicts are exactly balanced.

Prompts are rendered by callables the caller passes (built from the tokenizer
and the judge's own templates), so this module stays free of models.

>>> ift_example("1+1?", "1 + 1 = <<1+1=2>>2\\n#### 2", lambda q: f"Q: {q}\\n", response_prefix="Step 1:")
{'prompt': 'Q: 1+1?\\nStep 1:', 'completion': ' 1 + 1 = 2\\nStep 2: The answer is 2.'}
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from presrm.schema import Problem
from presrm.steps import format_steps, gold_to_steps
from presrm.verify import check_step

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
PERTURBATIONS = ("plus_one", "minus_one", "times_ten", "digit")


def ift_example(question: str, solution: str, render: Callable[[str], str], *,
                response_prefix: str = "") -> dict[str, str]:
    """One SFT example: ``render(question)`` + the gold solution as ``Step n:`` lines.

    When the formatted solution starts with ``response_prefix`` (``Step 1:``),
    the prefix moves into the prompt, which then equals the policy prompt.
    """
    full = format_steps(gold_to_steps(solution))
    prompt = render(question)
    if response_prefix and full.startswith(response_prefix):
        return {"prompt": prompt + response_prefix, "completion": full[len(response_prefix):]}
    return {"prompt": prompt, "completion": full}


def ift_examples(problems: Sequence[Problem], render: Callable[[str], str], *,
                 response_prefix: str = "") -> list[dict[str, Any]]:
    """IFT examples for every problem that has a gold solution."""
    return [{**ift_example(p.question, p.solution, render, response_prefix=response_prefix), "kind": "ift",
             "id": p.id} for p in problems if p.solution]


def perturb_number(text: str, how: str) -> str:
    """A different number in the same notation.

    >>> [perturb_number("1,200", h) for h in PERTURBATIONS]
    ['1201', '1199', '12000', '1203']
    """
    plain = text.replace(",", "")
    if how == "digit":
        return plain[:-1] + str((int(plain[-1]) + 3) % 10)
    if "." in plain:
        whole, frac = plain.split(".", 1)
        return perturb_number(whole, how) + "." + frac
    value = int(plain)
    out = {"plus_one": value + 1, "minus_one": value - 1, "times_ten": value * 10}[how]
    return str(out if out != value and out >= 0 else value + 2)


def perturb_step(body: str, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    """Change one verified arithmetic result of ``body``; None when no result can be perturbed.

    The returned twin is confirmed ``incorrect`` by ``check_step`` (and the
    original ``correct``), so the pair's label comes from the verifier.
    """
    check = check_step(body)
    if check.verdict != "correct":
        return None
    claims = [c for c in check.claims if c.ok and body.find(c.text) >= 0]
    rng.shuffle(claims)
    for claim in claims:
        start = body.find(claim.text)
        rhs_at = start + claim.text.rfind(claim.rhs)
        nums = list(_NUMBER.finditer(claim.rhs))
        if not nums:
            continue
        m = nums[-1]
        how = rng.choice(PERTURBATIONS)
        wrong_num = perturb_number(m.group(), how)
        twin = body[:rhs_at + m.start()] + wrong_num + body[rhs_at + m.end():]
        if twin != body and check_step(twin).verdict == "incorrect":
            info = {"lhs": claim.lhs, "value": claim.value, "rhs": claim.rhs,
                    "wrong_rhs": claim.rhs[:m.start()] + wrong_num + claim.rhs[m.end():], "perturbation": how}
            return twin, info
    return None


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
    """Up to ``per_problem`` verifier-labelled step pairs from each problem's gold solution (seeded)."""
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
            marker, _, body = lines[i].partition(": ")
            twin = perturb_step(body, rng)
            if twin is not None:
                out.append(LabelledPair(p.id, p.question, tuple(lines[:i]), lines[i], f"{marker}: {twin[0]}",
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
                        "id": p.problem_id, "label": label})
    return out


def eft_pointwise_examples(pairs: Sequence[LabelledPair], render: Callable[[str, tuple[str, ...], str], str],
                           ) -> list[dict[str, Any]]:
    """Pointwise judge examples: the gold step answered ``Yes``, its wrong twin ``No`` (balanced)."""
    out = []
    for p in pairs:
        for step, label in ((p.right, "Yes"), (p.wrong, "No")):
            out.append({"prompt": render(p.question, p.previous, step), "completion": label, "kind": "eft",
                        "id": p.problem_id, "label": label})
    return out


def eft_examples(problems: Sequence[Problem], render: Callable[..., str], *, mode: str, seed: int = 0,
                 prefill: str = "") -> list[dict[str, Any]]:
    """EFT examples for the judge ``mode``: pairwise, generative (explanation + verdict) or pointwise."""
    pairs = labelled_pairs(problems, seed=seed)
    if mode == "pointwise":
        return eft_pointwise_examples(pairs, render)
    if mode in ("pairwise", "generative"):
        return eft_pairwise_examples(pairs, render, explain=mode == "generative", prefill=prefill)
    raise ValueError(f"EFT has no examples for judge mode {mode!r}")
