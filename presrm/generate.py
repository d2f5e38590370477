"""What the policy is asked and what it writes: prompts, step candidates, and batched HF generation.

``response_prompt`` is the exact text of a policy that wrote some steps:
evaluation's prompt (:func:`presrm.grading.build_prompt`: the task's layout,
shots and response prefix) followed by the steps; ``step_prompt`` is the one
that ends in the next ``Step n:``;
``step_candidates`` turns sampled continuations into distinct ``Step n: ...``
candidates (step search, beam decoding and the natural-error set all use it,
with generation stopped at :data:`STEP_STOP`). ``render_chat`` wraps a judge's
prompt in the tokenizer's chat template.

``generate`` is the Hugging Face engine's sampler (:class:`presrm.engines.HFEngine`):
prompts are sorted by length so each batch pads little, generation stops on
the task's stop strings, and the text is cut at the first stop string (the
model may run past it inside a batch). Seeds are set per batch, so the same
seed and batch layout give the same samples.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable, Sequence
from functools import partial

import torch

from presrm.data import Task, load_shots
from presrm.grading import build_prompt
from presrm.progress import bar as progress_bar
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


# Building transformers' StopStringCriteria scans the whole vocabulary (~3 s for SmolLM2's 49k tokens
# on a busy CPU), and its own cache misses because get_vocab() returns the vocabulary in a different
# order on every call; so each tokenizer keeps its criteria here, per tuple of stop strings.
_STOP_CRITERIA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stop_criteria(tok, stop: Sequence[str]):
    """A ``StopStringCriteria`` for ``stop``, built once per tokenizer (it holds no per-call state)."""
    from transformers import StopStringCriteria

    per_tok = _STOP_CRITERIA.setdefault(tok, {})
    key = tuple(stop)
    if key not in per_tok:
        per_tok[key] = StopStringCriteria(tok, list(key))
    return per_tok[key]


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


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; return the text and whether a stop was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.inference_mode()
def generate(
    model,
    tok,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    num_return_sequences: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str | None = None,
) -> list[list[str]]:
    """Generate ``num_return_sequences`` continuations for each prompt.

    Greedy when ``temperature == 0``. Returns one list of strings per prompt,
    in the order of ``prompts``; each string is cut at the first stop string.
    """
    # Longest first by token count, ties by text: lm-evaluation-harness's order, so equal batch sizes
    # give the very same batches (and bit-identical fp32 greedy outputs) in both.
    lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=False)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], prompts[i]))
    per_batch = max(1, batch_size // num_return_sequences)
    results: list[list[str]] = [[] for _ in prompts]
    sampling = temperature > 0
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sampling, pad_token_id=tok.pad_token_id,
                      num_return_sequences=num_return_sequences)
    if sampling:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    stop = [s for s in stop if s]
    if stop:
        from transformers import StoppingCriteriaList

        gen_kwargs.update(stopping_criteria=StoppingCriteriaList([stop_criteria(tok, stop)]))
    bar = progress_bar(total=len(prompts), desc=desc or "generate", unit="prompt", disable=desc is None,
                       leave=False)
    for b, start in enumerate(range(0, len(order), per_batch)):
        idx = order[start:start + per_batch]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        torch.manual_seed(seed + b)
        out = model.generate(**enc, **gen_kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        texts = tok.batch_decode(new, skip_special_tokens=True)
        for j, i in enumerate(idx):
            chunk = texts[j * num_return_sequences:(j + 1) * num_return_sequences]
            results[i] = [cut_at_stop(t, stop)[0] for t in chunk]
        bar.update(len(idx))
    bar.close()
    return results
