"""What the policy is asked and what it writes: prompts and step candidates.

``policy_prompt`` / ``step_prompt`` render the exact text the policy continues;
``step_candidates`` turns sampled continuations into distinct ``Step n: ...``
candidates (step search, beam decoding and the natural-error set all use it,
with generation stopped at :data:`STEP_STOP`).

The engines sample from these prompts (:mod:`presrm.engines`; the Hugging Face
engine's sampler is :mod:`presrm.engines.hf_generate`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import jinja2

from presrm.data import Task

log = logging.getLogger(__name__)
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


def render_chat(tok, user: str, assistant_prefix: str = "") -> str:
    """The exact text the model sees: the chat template when the tokenizer has one, then a prefix."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)
    else:
        text = user + "\n\n"
    return text + assistant_prefix


def policy_prompt(tok, task: Task, question: str, prefix: str | None = None) -> str:
    """Prompt for solving ``question``; ``prefix`` (default: the task's response prefix) starts the answer."""
    user = _JINJA.from_string(task.prompt).render(question=question)
    return render_chat(tok, user, task.response_prefix if prefix is None else prefix)


def step_prompt(tok, task: Task, question: str, previous: Sequence[str], n: int) -> str:
    """The policy prompt after ``previous`` steps, ending in ``Step n:``: what step search samples from."""
    return policy_prompt(tok, task, question, prefix="".join(s + "\n" for s in previous)) + f"Step {n}:"


STEP_STOP = "\nStep "
"""Where a sampled step ends: at a new line that starts the next step."""


def step_candidates(raw: Sequence[str], n: int | None) -> list[str]:
    """Distinct, non-empty candidate steps from sampled continuations, in order of first appearance.

    With a step number ``n`` (the prompt ended in ``Step n:``), each text is cut
    where the model starts ``Step n+1:`` mid-line (generation already stops at a
    new line starting with ``Step``) and written as ``Step n: <text>``. With
    ``n`` None (a task without step markers, searched line by line) the
    stripped text is the candidate.

    >>> step_candidates([" 3 + 4 = 7. Step 3: 7 * 2 = 14", " 3 + 4 = 7.", ""], 2)
    ['Step 2: 3 + 4 = 7.']
    >>> step_candidates(["  So x = 4 ", "So x = 4"], None)
    ['So x = 4']
    """
    nxt = re.compile(rf"\bStep\s*{n + 1}\s*:") if n is not None else None
    seen: dict[str, None] = {}
    for text in raw:
        m = nxt.search(text) if nxt is not None else None
        body = (text[:m.start()] if m else text).strip()
        if body:
            seen.setdefault(body if n is None else f"Step {n}: {body}", None)
    return list(seen)
