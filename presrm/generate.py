"""What the policy is asked and what it writes: prompts and step candidates.

``response_prompt`` is the exact text of a policy that wrote some steps:
evaluation's prompt (:func:`presrm.grading.build_prompt`: the task's layout,
shots and response prefix) followed by the steps; ``step_prompt`` is the one
that ends in the next ``Step n:``;
``step_candidates`` turns sampled continuations into distinct ``Step n: ...``
candidates (step search, beam decoding and the natural-error set all use it,
with generation stopped at :data:`STEP_STOP`). ``render_chat`` wraps a judge's
prompt in the tokenizer's chat template.

The engines sample from these prompts (:mod:`presrm.engines`; the Hugging Face
engine's sampler is :mod:`presrm.engines.hf_generate`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import partial

from presrm.data import Task, load_shots
from presrm.grading import build_prompt
from presrm.schema import Problem
from presrm.steps import step_parts

log = logging.getLogger(__name__)


def render_chat(tok, user: str, assistant_prefix: str = "") -> str:
    """The exact text the model sees: the chat template when the tokenizer has one, then a prefix."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)
    else:
        text = user + "\n\n"
    return text + assistant_prefix


def response_text(task: Task, steps: Sequence[str]) -> str:
    """The answer as the policy writes it: ``steps`` one a line, after the task's response prefix.

    The response prefix starts every answer under evaluation. When it is only a step marker (gsm8k's
    ``Step 1:``) the steps carry their own markers, as written, and nothing is added; a prefix with
    words of its own is put in front unless the steps start with it already.

    >>> from presrm.data import load_task
    >>> response_text(load_task("gsm8k"), ["Step 1: 3 + 4 = 7", "Step 2:"])
    'Step 1: 3 + 4 = 7\\nStep 2:'
    """
    written = "\n".join(steps)
    lead = task.response_prefix
    if not step_parts(lead)[1] or written.startswith(lead):
        return written
    return lead + ("" if lead[-1].isspace() else "\n") + written


def response_prompt(tok, task: Task, question: str, steps: Sequence[str], *, shots: Sequence[Problem]) -> str:
    """The text of a policy that wrote ``steps`` for ``question``: evaluation's prompt, then :func:`response_text`.

    Evaluation's prompt is :func:`presrm.grading.build_prompt` (the task's chat template setting, its
    layout) with ``shots``: the task's own, as evaluation draws them (:func:`presrm.data.load_shots`).
    Step search, the natural set, IFT examples and the likelihood judge all build their text here, so
    the model is searched, judged and trained in the context it is evaluated in. A text is a prefix of
    the text for the same steps and more.
    """
    return build_prompt(tok, task, question, shots, prefix=response_text(task, steps))


def step_prompt(tok, task: Task, question: str, previous: Sequence[str], n: int, *,
                shots: Sequence[Problem]) -> str:
    """The text the policy continues to write step ``n`` after ``previous``: ends in ``Step n:``.

    What step search and the natural set sample from (:func:`response_prompt`). Without its final
    ``Step n:`` it is the prompt of a step pair whose steps are ``Step n: ...`` lines.
    """
    return response_prompt(tok, task, question, [*previous, f"Step {n}:"], shots=shots)


def step_prompter(tok, task: Task) -> Callable[[str, Sequence[str], int], str]:
    """``prompt(question, previous, n)``: :func:`step_prompt` with the task's shots, drawn once as evaluation does."""
    return partial(step_prompt, tok, task, shots=load_shots(task))


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
