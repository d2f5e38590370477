"""The self-judge: the policy model scores its own reasoning steps.

Pointwise judging asks, for step k, whether it is correct given the question
and steps 1..k-1, and reads the answer from the next-token distribution:
``score = P(Yes) / (P(Yes) + P(No))``, one batched forward pass for many
steps, no sampling. Prompts are Jinja templates in ``presrm/prompts/``; a user
can pass their own template file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import torch
from tqdm.auto import tqdm

from presrm.errors import ConfigError
from presrm.generate import render_chat

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).resolve().parent / "prompts"
_YES = ("Yes", " Yes", "yes", " yes")
_NO = ("No", " No", "no", " no")


@dataclass(frozen=True)
class StepToJudge:
    """One step in context: the question, the steps before it, and the step itself."""

    question: str
    previous: tuple[str, ...]
    step: str


def load_template(name_or_path: str | None, default: str) -> jinja2.Template:
    """A judge prompt template: a file path, or a built-in name from presrm/prompts/."""
    path = Path(name_or_path) if name_or_path else PROMPTS / f"{default}.jinja"
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"judge template {path} cannot be read ({e.strerror or e})") from e
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    try:
        return env.from_string(source.strip())
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"judge template {path}:{e.lineno}: {e.message}") from e


def _token_ids(tok, words: Sequence[str]) -> list[int]:
    """First token id of each word variant; the judge's answer starts with one of them."""
    ids = {tok.encode(w, add_special_tokens=False)[0] for w in words if tok.encode(w, add_special_tokens=False)}
    return sorted(ids)


class PointwiseJudge:
    """Scores steps with P(Yes) from the next-token logits after a judge prompt.

    >>> judge = PointwiseJudge(model, tok)  # doctest: +SKIP
    >>> judge.score([StepToJudge("1+1?", (), "Step 1: 1 + 1 = 2")])  # doctest: +SKIP
    [0.73]
    """

    mode = "pointwise"

    def __init__(self, model, tok, *, template: str | None = None, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tok, batch_size
        self.template = load_template(template, "pointwise")
        self.yes_ids = _token_ids(tok, _YES)
        self.no_ids = _token_ids(tok, _NO)
        if set(self.yes_ids) & set(self.no_ids):
            raise ConfigError("the tokenizer maps 'Yes' and 'No' to a shared first token; pointwise judging "
                              "cannot tell them apart")

    def prompt(self, item: StepToJudge) -> str:
        user = self.template.render(question=item.question, previous=list(item.previous), step=item.step)
        return render_chat(self.tok, user)

    @torch.inference_mode()
    def score(self, items: Sequence[StepToJudge], *, desc: str | None = None) -> list[float]:
        """P(Yes)/(P(Yes)+P(No)) for each step, in the order given."""
        prompts = [self.prompt(it) for it in items]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        scores = [0.0] * len(prompts)
        yes = torch.tensor(self.yes_ids)
        no = torch.tensor(self.no_ids)
        bar = tqdm(total=len(prompts), desc=desc or "judge", unit="step", disable=desc is None, leave=False)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(self.model.device)
            # Left padding puts every prompt's last token at position -1.
            logits = self.model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            p_yes = torch.logsumexp(logp[:, yes], dim=-1)
            p_no = torch.logsumexp(logp[:, no], dim=-1)
            s = torch.sigmoid(p_yes - p_no)
            for j, i in enumerate(idx):
                scores[i] = float(s[j])
            bar.update(len(idx))
        bar.close()
        return scores


def make_judge(mode: str, model, tok, *, template: str | None = None, batch_size: int = 16) -> PointwiseJudge:
    if mode == "pointwise":
        return PointwiseJudge(model, tok, template=template, batch_size=batch_size)
    raise ConfigError(f"judge.mode {mode!r} is not supported (choose: pointwise)")
