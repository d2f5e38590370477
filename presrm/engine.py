"""Inference engines: the one interface every model call of search, judging and evaluation goes through.

An engine holds one model (the policy and judge M_k) and answers three requests:

- ``generate(prompts, n=, temperature=, top_p=, max_new_tokens=, stop=, seed=)``: ``n``
  continuations per prompt (greedy when ``temperature == 0``), each cut at its first stop string;
- ``greedy(prompts, max_new_tokens=, stop=)``: one greedy continuation per prompt;
- ``choice_logprobs(prompts, choices)``: for each prompt, the log-probability that the next token
  is in each of a few token-id sets, normalised over their union, so ``[P(Yes), P(No)]`` sum to one.
  Logit judges read their verdicts from it (``Yes``/``No``, ``A``/``B`` after ``[[``).

Two implementations, chosen by ``engine: hf | vllm`` in a recipe or ``--engine`` on the command line:

- :class:`HFEngine`: transformers ``generate`` in length-sorted batches and batched forward passes
  with two-level shared-prefix KV-cache reuse (:mod:`presrm.judges.forward`);
- :class:`presrm.vllm_engine.VLLMEngine`: ``vllm.LLM`` in the same process, with automatic prefix
  caching, n samples per request and the choice tokens read from its log-probabilities.

Prompts are text that already holds the chat template (:func:`presrm.generate.render_chat`); both
engines tokenize it with the same Hugging Face tokenizer and no added special tokens, so they see the
very same token ids. :func:`open_engine` loads either from a model spec; ``close()`` (or ``with``)
releases the model's memory, which the loop does before every training stage.

>>> engine = open_engine("embedded", EngineOptions(name="hf"))  # doctest: +SKIP
>>> engine.greedy(["Step 1:"], max_new_tokens=8)  # doctest: +SKIP
[' 3 + 4 = 7']
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from presrm.errors import ConfigError

log = logging.getLogger(__name__)
ENGINES = ("hf", "vllm")
LOGITS_BUDGET = 4096
"""Most (row, position) pairs whose vocabulary logits one HF forward pass of ``span_logprobs`` keeps (fp32:
4096 x a 49k vocabulary = 0.8 GB)."""


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


def normalise_choices(logprobs: torch.Tensor) -> torch.Tensor:
    """Rows of log P(set) turned into log P(set | the union of the sets): each row's probabilities sum to 1."""
    return logprobs - torch.logsumexp(logprobs, dim=1, keepdim=True)


class HFEngine(EngineBase):
    """A loaded transformers model behind the engine interface (presrm's own batching and prefix reuse).

    >>> engine = HFEngine(model, tok, batch_size=16)  # doctest: +SKIP
    """

    name = "hf"

    def __init__(self, model, tok, *, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tok, batch_size

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, stop: Sequence[str] = (), seed: int = 0, batch_size: int | None = None,
                 desc: str | None = None) -> list[list[str]]:
        """``n`` continuations per prompt from ``model.generate`` (see :func:`presrm.generate.generate`)."""
        from presrm.generate import generate

        self.check_request(n, temperature, top_p, max_new_tokens)
        if not prompts:
            return []
        return generate(self.model, self.tok, prompts, max_new_tokens=max_new_tokens,
                        batch_size=batch_size or self.batch_size, stop=stop, num_return_sequences=n,
                        temperature=temperature, top_p=top_p, seed=seed, desc=desc)

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[Sequence[int]], *,
                        groups: Sequence[Sequence[int]] | None = None, batch_size: int | None = None,
                        prefix_cache: bool = True, desc: str | None = None, unit: str = "prompt") -> torch.Tensor:
        """``[len(prompts), len(choices)]`` log-probabilities, one forward pass per batch.

        With ``prefix_cache`` the start every prompt shares, and each group's shared start
        (``groups``: prompt indices, head first, see :func:`presrm.judges.common.chains`), are
        encoded once (:func:`presrm.judges.forward.answer_logprobs`).
        """
        from presrm.judges.forward import answer_logprobs

        with torch.inference_mode():
            lp = answer_logprobs(self.model, self.tok, prompts, choices, batch_size=batch_size or self.batch_size,
                                 groups=groups, prefix_cache=prefix_cache, desc=desc, unit=unit)
        return normalise_choices(lp) if len(prompts) else lp

    def _prompt_logprobs(self, ids: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], *,
                         batch_size: int | None = None, desc: str | None = None) -> list[dict[int, float]]:
        """``log p(ids[t] | ids[:t])`` at each of the token ``positions`` of each sequence, batched.

        Left-padded batches with explicit position ids, so the wanted tokens (a step's, or a solution's,
        at the end of every sequence) line up at the right edge and only the last ``keep`` logits go
        through the vocabulary projection (``logits_to_keep``): a full [batch, length, vocabulary]
        log-softmax costs more than the forward pass itself for a 49k-token vocabulary. A batch keeps
        at most :data:`LOGITS_BUDGET` (row, position) logits.
        """
        from presrm.progress import bar

        out: list[dict[int, float]] = [{} for _ in ids]
        size = batch_size or self.batch_size
        order = sorted((i for i in range(len(ids)) if positions[i]), key=lambda i: -len(ids[i]))
        tail = {i: len(ids[i]) - min(positions[i]) + 1 for i in order}  # logits kept to reach the first wanted
        progress = bar(total=len(order), desc=desc or "span log-probs", unit="text", disable=desc is None)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        try:
            start = 0
            while start < len(order):
                batch, keep = [order[start]], tail[order[start]]
                for i in order[start + 1:start + size]:
                    if (len(batch) + 1) * max(keep, tail[i]) > LOGITS_BUDGET:
                        break
                    batch.append(i)
                    keep = max(keep, tail[i])
                start += len(batch)
                width = len(ids[batch[0]])
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, width - len(ids[i]):] = torch.tensor(list(ids[i]), dtype=torch.long)
                    mask[row, width - len(ids[i]):] = 1
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                device = self.model.device
                with torch.inference_mode():
                    logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                        position_ids=pos.to(device), logits_to_keep=keep).logits
                    # kept column j predicts the token at padded index width - keep + j + 1
                    target = torch.cat([input_ids[:, width - keep + 1:], input_ids[:, :1]], dim=1).to(logits.device)
                    lp = torch.log_softmax(logits.float(), -1).gather(-1, target[..., None])[..., 0].cpu()
                for row, i in enumerate(batch):
                    shift = width - len(ids[i]) - (width - keep) - 1  # token t -> kept column t + shift
                    out[i] = {t: float(lp[row, t + shift]) for t in positions[i]}
                progress.update(len(batch))
        finally:
            progress.close()
        return out

    def describe(self) -> dict[str, Any]:
        from presrm.models import hardware

        param = next(self.model.parameters(), None) if hasattr(self.model, "parameters") else None
        device = param.device if param is not None else getattr(self.model, "device", None)
        dtype = param.dtype if param is not None else getattr(self.model, "dtype", None)
        return {"engine": self.name, "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
                "device": str(device) if device is not None else None, "hardware": hardware(device, dtype)}

    def close(self) -> None:
        """Drop the model and return its memory (CUDA cache included) before training loads another."""
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine: ``name`` (hf or vllm) and the vLLM settings (see ``VLLMConfig``)."""

    name: str = "hf"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 16
    adapter: str | None = None
    seed: int = 0
    vllm: Any = None  # a presrm.config.VLLMConfig; None: its defaults

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ConfigError(f"engine {self.name!r} is not one of: {', '.join(ENGINES)}")


def open_engine(spec: str, options: EngineOptions | None = None) -> Engine:
    """Load model ``spec`` (hub id, folder, .gguf, ``embedded``) into the engine ``options.name`` asks for.

    With ``options.adapter`` a LoRA adapter is applied (HF) or merged into a cached folder first
    (vLLM loads plain checkpoints). ``engine: vllm`` without vLLM installed is a ModelLoadError that
    says what to install.
    """
    options = options or EngineOptions()
    if options.name == "vllm":
        from presrm.vllm_engine import VLLMEngine

        return VLLMEngine.load(spec, options)
    from presrm.models import load_model

    model, tok = load_model(spec, device=options.device, precision=options.precision)
    if options.adapter:
        from presrm.train import load_with_adapter

        model = load_with_adapter(model, options.adapter)
    return HFEngine(model, tok, batch_size=options.batch_size)
