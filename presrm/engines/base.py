"""The engine interface: what search, the judges and evaluation need from a model, and what engines share.

``Engine`` (the protocol: ``generate``, ``greedy``, ``choice_logprobs``, ``span_logprobs``, ``describe``,
``close``), ``EngineBase`` (``greedy`` on ``generate``, ``span_logprobs`` on one ``_prompt_logprobs``
method, ``with`` support, request checks), ``SpanPlan`` (which token sequences a span request feeds),
``normalise_choices``, ``cut_at_stop`` and ``EngineOptions`` (how to build an engine). No engine lives here: the
HF engine is :mod:`presrm.engines.hf`, the vLLM one :mod:`presrm.engines.vllm`, :mod:`presrm.engines.registry`
names them and :func:`presrm.engines.open_engine` builds the one asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from presrm.engines.registry import DEFAULT, spec

log = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """What search, the judges and evaluation need from a model (see the module docstring).

    ``tok`` is the model's Hugging Face tokenizer: prompts are rendered with its chat template and
    judges read their answer token ids from it. ``batch_size`` arguments are hints for engines that
    batch by hand (HF); vLLM schedules its own batches.
    """

    name: str
    tok: Any

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, stop: Sequence[str] = (), seed: int = 0, batch_size: int | None = None,
                 desc: str | None = None) -> list[list[str]]: ...

    def greedy(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (),
               batch_size: int | None = None, desc: str | None = None) -> list[str]: ...

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[Sequence[int]], *,
                        groups: Sequence[Sequence[int]] | None = None, batch_size: int | None = None,
                        prefix_cache: bool = True, desc: str | None = None, unit: str = "prompt") -> torch.Tensor: ...

    def span_logprobs(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                      batch_size: int | None = None, one_pass: bool = True,
                      desc: str | None = None) -> list[list[float]]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class EngineBase:
    """What every engine shares: ``greedy`` on top of ``generate``, ``with`` support, and the input checks."""

    name = "base"
    tok: Any = None

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, stop: Sequence[str] = (), seed: int = 0, batch_size: int | None = None,
                 desc: str | None = None) -> list[list[str]]:
        """``n`` continuations per prompt, each cut at its first stop string: the request checked, then
        ``_generate`` (each engine's own sampler) on a non-empty list of prompts."""
        self.check_request(n, temperature, top_p, max_new_tokens)
        if not prompts:
            return []
        return self._generate(prompts, max_new_tokens=max_new_tokens, n=n, temperature=temperature, top_p=top_p,
                              stop=stop, seed=seed, batch_size=batch_size, desc=desc)

    def _generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int, temperature: float, top_p: float,
                  stop: Sequence[str], seed: int, batch_size: int | None, desc: str | None) -> list[list[str]]:
        raise NotImplementedError

    def greedy(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (),
               batch_size: int | None = None, desc: str | None = None) -> list[str]:
        """One greedy continuation per prompt, cut at the first stop string."""
        outs = self.generate(prompts, max_new_tokens=max_new_tokens, n=1, temperature=0.0, stop=stop,
                             batch_size=batch_size, desc=desc)
        return [o[0] for o in outs]

    def span_logprobs(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                      batch_size: int | None = None, one_pass: bool = True,
                      desc: str | None = None) -> list[list[float]]:
        """Mean log-probability of the tokens of each character span of each text, given all before it.

        A token belongs to a span when their characters overlap; a span no token covers (or only the
        first token, which has no context) gets ``nan``. With ``one_pass`` (the default), texts that
        begin with the same tokens as a longer text, up to their last wanted token, are read from that
        text's pass: the steps of one solution, each scored after the ones before it, cost one forward
        pass over the whole solution instead of one per step. The log-probabilities are the same
        (a causal model's token ``t`` sees only tokens ``< t``); ``span_tokens`` counts the tokens fed.
        """
        plan = SpanPlan.build(self.tok, texts, spans, one_pass=one_pass)
        lps = self._prompt_logprobs(plan.ids, plan.positions, batch_size=batch_size, desc=desc)
        self.span_tokens += sum(len(plan.ids[r]) for r in range(len(plan.ids)) if plan.positions[r])
        return plan.read(lps)

    span_tokens = 0
    """Tokens fed to the model by ``span_logprobs`` over the engine's life (benchmarks read it)."""
    sampled_from_shared_state = False
    """Whether the engine has drawn samples from a random state that later requests continue (vLLM on CPU,
    where requests carry no seed of their own): the next sample then depends on what came before it."""

    def _prompt_logprobs(self, ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], *,
                         batch_size: int | None = None, desc: str | None = None) -> list[dict[int, float]]:
        """``{t: log p(ids[t] | ids[:t])}`` for the wanted token ``positions`` of each token sequence."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model; the engine cannot be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def check_request(n: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got n={n}, max_new_tokens={max_new_tokens}")
        if temperature < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
        if n > 1 and temperature == 0:
            raise ValueError(f"{n} greedy samples per prompt would all be the same; sample with temperature > 0")


@dataclass
class SpanPlan:
    """Which token sequences ``span_logprobs`` feeds the model, and where each text's spans are read.

    ``ids``/``positions``: the sequences to run and the token positions wanted from each; ``items[i]``:
    for text ``i``, the sequence it is read from and the token positions of each of its spans.
    """

    ids: list[list[int]]
    positions: list[list[int]]
    items: list[tuple[int, list[list[int]]]]

    @classmethod
    def build(cls, tok, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
              one_pass: bool = True) -> SpanPlan:
        if len(texts) != len(spans):
            raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
        if not texts:
            return cls([], [], [])
        enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        all_ids = [list(x) for x in enc["input_ids"]]
        wanted = [[[t for t, (s, e) in enumerate(offsets) if t > 0 and e > a and s < b and e > s] for a, b in spans_i]
                  for offsets, spans_i in zip(enc["offset_mapping"], spans, strict=True)]
        need = [max((t for toks in w for t in toks), default=-1) + 1 for w in wanted]
        root_of = list(range(len(texts)))
        if one_pass:
            index: dict[tuple[int, int], int] = {}  # (L, rolling hash of a root's first L tokens) -> that root
            for i in sorted(range(len(texts)), key=lambda i: -len(all_ids[i])):
                if need[i] == 0:
                    continue
                *_, h = _prefix_hashes(all_ids[i][:need[i]])
                host = index.get((need[i], h))
                if host is not None and all_ids[host][:need[i]] == all_ids[i][:need[i]]:
                    root_of[i] = host
                    continue
                for length, h in enumerate(_prefix_hashes(all_ids[i]), start=1):
                    index.setdefault((length, h), i)
        roots = sorted(set(root_of[i] for i in range(len(texts)) if need[i]))
        slot = {r: n for n, r in enumerate(roots)}
        positions: list[set[int]] = [set() for _ in roots]
        for i, w in enumerate(wanted):
            if need[i]:
                positions[slot[root_of[i]]].update(t for toks in w for t in toks)
        items = [(slot[root_of[i]] if need[i] else -1, w) for i, w in enumerate(wanted)]
        # a sequence is fed up to its last wanted token: what follows cannot change the log-probs before it
        return cls([all_ids[r][:max(p) + 1] for r, p in zip(roots, positions, strict=True)],
                   [sorted(p) for p in positions], items)

    def read(self, lps: Sequence[dict[int, float]]) -> list[list[float]]:
        """Each text's span means from the per-sequence token log-probabilities."""
        return [[sum(lps[r][t] for t in toks) / len(toks) if toks else float("nan") for toks in w]
                for r, w in self.items]


_HASH_MOD = (1 << 61) - 1


def _prefix_hashes(ids: Sequence[int]):
    """The rolling hash of every prefix of ``ids``, shortest first."""
    h = 0
    for t in ids:
        h = (h * 1_000_003 + t + 1) % _HASH_MOD
        yield h


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; return the text and whether a stop was found.

    >>> cut_at_stop("3 + 4 = 7. Step 2: 7 * 2", [" Step ", "<|im_end|>"])
    ('3 + 4 = 7.', True)
    """
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def normalise_choices(logprobs: torch.Tensor) -> torch.Tensor:
    """Rows of log P(set) turned into log P(set | the union of the sets): each row's probabilities sum to 1."""
    return logprobs - torch.logsumexp(logprobs, dim=1, keepdim=True)


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine: ``name`` (one of :mod:`presrm.engines.registry`) and the vLLM settings (see
    ``VLLMConfig``). An unknown ``name`` is a ConfigError that lists the known ones."""

    name: str = DEFAULT
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 16
    adapter: str | None = None
    seed: int = 0
    vllm: Any = None  # a presrm.config.VLLMConfig; None: its defaults

    def __post_init__(self) -> None:
        spec(self.name)  # an unknown engine: a ConfigError listing the known ones
