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

    def span_logprobs(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                      batch_size: int | None = None, desc: str | None = None) -> list[list[float]]:
        """Mean log-probability of the tokens of each character span of each text, given all before it.

        One forward pass per batch (right-padded, so positions are the unpadded ones); a token belongs
        to a span when their characters overlap. A span no token covers gets ``nan``.
        """
        from presrm.progress import bar

        out: list[list[float]] = [[] for _ in texts]
        size = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        progress = bar(total=len(texts), desc=desc or "span log-probs", unit="step", disable=desc is None)
        side = self.tok.padding_side
        self.tok.padding_side = "right"
        try:
            for start in range(0, len(order), size):
                idx = order[start:start + size]
                enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False,
                               return_offsets_mapping=True)
                offsets = enc.pop("offset_mapping").tolist()
                wanted = [[[t for t, (s, e) in enumerate(offsets[row]) if t > 0 and e > a and s < b and e > s]
                           for a, b in spans[i]] for row, i in enumerate(idx)]
                lp = self._token_logprobs(enc, sorted({t for row in wanted for toks in row for t in toks}))
                for row, i in enumerate(idx):
                    out[i] += [float(torch.stack([lp[row][t] for t in toks]).mean()) if toks else float("nan")
                               for toks in wanted[row]]
                progress.update(len(idx))
        finally:
            self.tok.padding_side = side
            progress.close()
        return out

    def _token_logprobs(self, enc, positions: list[int]) -> list[dict[int, torch.Tensor]]:
        """``log p(token t | tokens < t)`` for each row at the token ``positions`` (shared by all rows).

        Only the logits before those positions go through the vocabulary projection
        (``logits_to_keep``): a full [batch, length, vocabulary] log-softmax costs more than the
        forward pass itself for a 49k-token vocabulary.
        """
        if not positions:
            return [{} for _ in range(enc["input_ids"].shape[0])]
        keep = torch.tensor([t - 1 for t in positions], device=self.model.device)
        with torch.inference_mode():
            logits = self.model(**enc.to(self.model.device), logits_to_keep=keep).logits.float()
        ids = enc["input_ids"][:, [t for t in positions]].to(logits.device)
        lp = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0].cpu()
        return [{t: lp[row, j] for j, t in enumerate(positions)} for row in range(lp.shape[0])]

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
