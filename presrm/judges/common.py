"""Records, prompt templates, verdict rules and the one interface shared by every judge.

Every judge (:class:`Judge`) has a ``mode``, the ``unit`` it judges and its
``item_type`` (``StepToJudge``, ``PairToJudge`` or ``SolutionToJudge``),
``prompt(item)`` (the exact text its engine reads, ending in ``prefill``) and
``tournaments(groups)``, which ranks candidate next steps: pairwise judges play
every match, score judges rank the candidates by their scores.

A pairwise judge answers, for one ``PairToJudge``, which of two candidate next
steps is better. Judged in both orders (A first, then B first), the two
answers are combined by ``combine_orders``: the probability that A is better
is the mean over the orders, and the verdict is a tie when the orders disagree
or the mean is within ``tie_margin / 2`` of one half.

>>> combine_orders([0.9, 0.7], tie_margin=0.1)
('A', 0.8)
>>> combine_orders([0.9, 0.3], tie_margin=0.1)
('tie', 0.6)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from presrm.errors import ConfigError
from presrm.templating import Template, compile_template

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True)
class StepToJudge:
    """One step in context: the question, the steps before it, and the step itself."""

    question: str
    previous: tuple[str, ...]
    step: str


@dataclass(frozen=True)
class PairToJudge:
    """Two candidate next steps A and B after the same question and previous steps."""

    question: str
    previous: tuple[str, ...]
    a: str
    b: str


@dataclass(frozen=True)
class SolutionToJudge:
    """A whole solution to a question (the outcome judge's item)."""

    question: str
    solution: str


@dataclass
class PairVerdict:
    """Which of A and B is better.

    ``winner`` is "A", "B", "tie", or None when a reply could not be parsed
    (generative judge only). ``p_a`` is the probability that A is better,
    averaged over the orders judged. Each entry of ``orders`` is
    ``{"order": "AB"|"BA", "p_a", "verdict", "raw"}``; there ``p_a`` and
    ``verdict`` always refer to this pair's A (``item.a``), whichever position
    it was shown in, and ``raw`` is the judge's reply (None for logit judges).
    Note: a logit judge's per-order ``verdict`` is None only at exactly 0.5.
    """

    winner: str | None
    p_a: float | None
    orders: list[dict[str, Any]] = field(default_factory=list)
    raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tournament:
    """A round robin over candidates: ``wins[i]`` counts a win as 1 and a tie as 0.5 to each.

    ``matches`` holds ``{"i", "j", "winner", "p_a"}`` for every i < j, with
    candidate i shown as A and candidate j as B. A match with ``winner`` None
    (an unparseable generative reply) gives no points, so the wins then sum to
    less than n(n-1)/2. ``scores`` is each candidate's score of kind
    ``score_kind``: its win rate for pairwise judges, its own score for score
    judges ("pointwise", "outcome"; None where a reply was unparseable).
    """

    wins: list[float]
    matches: list[dict[str, Any]]
    scores: list[float | None] = field(default_factory=list)
    score_kind: str = "win_rate"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_path(name_or_path: str | None, default: str) -> Path:
    """The file of a judge template: ``name_or_path`` as a path; else, where no such file exists and it is a
    bare name, the built-in ``presrm/prompts/<name>.jinja`` (``generative_spct``); None: the mode's built-in.

    >>> template_path("generative_spct", "generative").name, template_path(None, "pointwise").name
    ('generative_spct.jinja', 'pointwise.jinja')
    """
    if not name_or_path:
        return PROMPTS / f"{default}.jinja"
    path, builtin = Path(name_or_path), PROMPTS / f"{name_or_path}.jinja"
    if not path.exists() and "/" not in name_or_path and builtin.is_file():
        return builtin
    return path


def load_template(name_or_path: str | None, default: str, **sample: Any) -> Template:
    """A judge prompt template: a file path, or a built-in name from presrm/prompts/.

    It renders in the sandbox of :mod:`presrm.templating` (its variables and nothing behind them);
    any failure to compile or render is a ConfigError naming the file. With ``sample`` values, the
    template is rendered once on them so that an unknown variable fails now and not halfway through
    a run; every sample value must appear in the rendering.
    """
    path = template_path(name_or_path, default)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"judge template {path} cannot be read ({e.strerror or e})") from e
    template = compile_template(source.strip(), f"judge template {path}")
    if sample:
        try:
            text = template.render(**sample)
        except ConfigError as e:
            raise ConfigError(f"{e} (variables available to a {default} template: {', '.join(sample)})") from e
        missing = [k for k, v in sample.items() if isinstance(v, str) and v not in text]
        if missing:
            uses = ", ".join("{{ " + k + " }}" for k in missing)
            raise ConfigError(f"judge template {path} never shows {', '.join(missing)}; a {default} "
                              f"template must use {uses}")
    return template


def judgments(engine, prompts: Sequence[str], *, samples: int, temperature: float, max_new_tokens: int,
              batch_size: int, seed: int, desc: str | None = None) -> list[list[str]]:
    """Each prompt's written judgments, in one engine call: one greedy reply (``samples`` 1, the paper), or
    ``samples`` replies sampled at ``temperature`` with ``seed`` (judge scaling: a vote over several judgments,
    as SPCT / DeepSeek-GRM scale their generative reward model at inference)."""
    if not prompts:
        return []
    if samples == 1:
        return [[r] for r in engine.greedy(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)]
    return engine.generate(prompts, max_new_tokens=max_new_tokens, n=samples, temperature=temperature, top_p=1.0,
                           seed=seed, batch_size=batch_size, desc=desc)


def token_ids(tok, words: Sequence[str]) -> list[int]:
    """First token id of each word variant; the judge's answer starts with one of them.

    A first token that carries none of the word (a bare space, when " A" is
    split into " " + "A") is skipped: it would count every word alike.
    """
    ids = set()
    for w in words:
        enc = tok.encode(w, add_special_tokens=False)
        head = tok.decode(enc[:1]).strip() if enc else ""
        if head and w.strip().startswith(head):
            ids.add(enc[0])
    return sorted(ids)


def disjoint_ids(tok, first: Sequence[str], second: Sequence[str], what: str) -> tuple[list[int], list[int]]:
    """Token ids for two answer words; a ConfigError when the tokenizer cannot tell them apart."""
    a, b = token_ids(tok, first), token_ids(tok, second)
    if not a or not b or set(a) & set(b):
        raise ConfigError(f"the tokenizer maps {first[0]!r} and {second[0]!r} to a shared (or no) first token; "
                          f"{what} judging cannot tell them apart")
    return a, b


def order_verdict(p_a: float | None) -> str | None:
    """The verdict of one order from its probability that A is better."""
    if p_a is None or p_a == 0.5:
        return None
    return "A" if p_a > 0.5 else "B"


def combine_orders(p_as: Sequence[float | None], tie_margin: float) -> tuple[str | None, float | None]:
    """``(winner, p_a)`` from the per-order probabilities that A is better (in A's terms).

    Any unparseable order (None) makes the whole verdict None. Otherwise
    ``p_a`` is the mean, and the winner is a tie when two orders disagree or
    ``|p_a - 0.5| < tie_margin / 2`` (or p_a is exactly one half).
    """
    if not p_as or any(p is None for p in p_as):
        return None, None
    p_a = sum(p_as) / len(p_as)  # type: ignore[arg-type]
    verdicts = {order_verdict(p) for p in p_as}
    if len(verdicts) > 1 or p_a == 0.5 or abs(p_a - 0.5) < tie_margin / 2:
        return "tie", p_a
    return ("A" if p_a > 0.5 else "B"), p_a


def chains(keys: Sequence[tuple[str, tuple[str, ...]]]) -> list[list[int]]:
    """Group ``(question, previous)`` keys whose contexts extend one another; each group's head first.

    The head of a group has the longest ``previous``; every other member's
    ``previous`` is a prefix of the head's, so its prompt shares the head's
    start (the question and its previous steps) and can reuse its KV cache.
    """
    order = sorted(range(len(keys)), key=lambda i: -len(keys[i][1]))
    owner: dict[tuple[str, tuple[str, ...]], int] = {}
    groups: list[list[int]] = []
    for i in order:
        question, previous = keys[i]
        g = owner.get((question, previous))
        if g is None:
            g = len(groups)
            groups.append([])
            for j in range(len(previous) + 1):
                owner.setdefault((question, previous[:j]), g)
        groups[g].append(i)
    return groups


Group = tuple[str, tuple[str, ...], Sequence[str]]
"""``(question, previous steps, candidate next steps)``: one tournament."""


@runtime_checkable
class Judge(Protocol):
    """What every judge offers (see the module docstring); built by ``presrm.judge.make_judge``.

    ``unit`` names the item its prompts and its own scoring method take (``item_type``): "step"
    (``StepToJudge``; ``score``), "pair" (``PairToJudge``; ``compare``) or "solution"
    (``SolutionToJudge``; ``score``).
    """

    mode: str
    unit: str
    item_type: type
    prefill: str

    def prompt(self, item: Any) -> str: ...

    def tournaments(self, groups: Sequence[Group], *, desc: str | None = None) -> list[Tournament]: ...


def rank_tournament(scores: Sequence[float | None], kind: str = "pointwise") -> Tournament:
    """A round robin decided by scores: the higher score wins, equal scores tie, None ranks below any number.

    >>> rank_tournament([0.2, 0.9, 0.2]).wins
    [0.5, 2.0, 0.5]
    """
    n = len(scores)
    key = [float("-inf") if s is None else s for s in scores]
    wins = [0.0] * n
    matches = []
    for i in range(n):
        for j in range(i + 1, n):
            if key[i] > key[j]:
                winner, wins[i] = "A", wins[i] + 1
            elif key[i] < key[j]:
                winner, wins[j] = "B", wins[j] + 1
            else:
                winner = "tie"
                wins[i] += 0.5
                wins[j] += 0.5
            matches.append({"i": i, "j": j, "winner": winner, "p_a": None})
    return Tournament(wins=wins, matches=matches, scores=list(scores), score_kind=kind)


class JudgeBase:
    """What every judge shares: ``tournament`` for one group on top of the batched ``tournaments``."""

    mode = "base"
    unit = "step"
    item_type: type = StepToJudge
    prefill = ""
    template_sample: dict[str, Any] = {}
    """The values a prompt template of this judge is checked on (:func:`load_template`); none without a template."""

    def prompt(self, item: Any) -> str:
        raise NotImplementedError

    def tournaments(self, groups: Sequence[Group], *, desc: str | None = None) -> list[Tournament]:
        raise NotImplementedError

    def tournament(self, question: str, previous: Sequence[str], candidates: Sequence[str]) -> Tournament:
        """One group's tournament (for pair judges: A = candidate i, B = candidate j for every i < j)."""
        return self.tournaments([(question, tuple(previous), candidates)])[0]


class ScoreJudgeBase(JudgeBase):
    """Tournaments for judges that score one item at a time: each candidate is scored, the ranking decides."""

    mode = "score"

    def score(self, items: Sequence[Any], *, desc: str | None = None) -> list[float | None]:
        raise NotImplementedError

    def candidate_item(self, question: str, previous: tuple[str, ...], candidate: str) -> Any:
        """The item that scores ``candidate`` as the next step after ``previous``."""
        return StepToJudge(question, previous, candidate)

    def tournaments(self, groups: Sequence[Group], *, desc: str | None = None) -> list[Tournament]:
        """One ranking tournament per ``(question, previous, candidates)`` group; all scores in one call."""
        items = [self.candidate_item(q, tuple(prev), c) for q, prev, cands in groups for c in cands]
        flat = self.score(items, desc=desc) if items else []
        out, pos = [], 0
        for _, _, cands in groups:
            out.append(rank_tournament(flat[pos:pos + len(cands)], self.mode))
            pos += len(cands)
        return out


class PairJudgeBase(JudgeBase):
    """Round-robin tournaments on top of a ``compare`` that judges many pairs in one batched call."""

    mode = "pair"
    unit = "pair"
    item_type = PairToJudge

    def compare(self, items: Sequence[PairToJudge], *, desc: str | None = None) -> list[PairVerdict]:
        raise NotImplementedError

    def tournaments(self, groups: Sequence[Group], *, desc: str | None = None) -> list[Tournament]:
        """One tournament per ``(question, previous, candidates)`` group; all matches in one batched call."""
        items: list[PairToJudge] = []
        spans: list[tuple[int, int, list[tuple[int, int]]]] = []
        for question, previous, candidates in groups:
            ij = [(i, j) for i in range(len(candidates)) for j in range(i + 1, len(candidates))]
            spans.append((len(items), len(candidates), ij))
            items.extend(PairToJudge(question, tuple(previous), candidates[i], candidates[j]) for i, j in ij)
        verdicts = self.compare(items, desc=desc)
        out = []
        for start, n, ij in spans:
            wins = [0.0] * n
            matches = []
            for (i, j), v in zip(ij, verdicts[start:start + len(ij)], strict=True):
                if v.winner == "A":
                    wins[i] += 1.0
                elif v.winner == "B":
                    wins[j] += 1.0
                elif v.winner == "tie":
                    wins[i] += 0.5
                    wins[j] += 0.5
                matches.append({"i": i, "j": j, "winner": v.winner, "p_a": v.p_a})
            out.append(Tournament(wins=wins, matches=matches, scores=[w / max(n - 1, 1) for w in wins]))
        return out
