"""Inference engines: the one interface every model call of search, judging and evaluation goes through.

An engine holds one model (the policy and judge M_k) and answers three requests:

- ``generate(prompts, n=, temperature=, top_p=, max_new_tokens=, stop=, seed=)``: ``n``
  continuations per prompt (greedy when ``temperature == 0``), each cut at its first stop string;
- ``greedy(prompts, max_new_tokens=, stop=)``: one greedy continuation per prompt;
- ``choice_logprobs(prompts, choices)``: for each prompt, the log-probability that the next token
  is in each of a few token-id sets, normalised over their union, so ``[P(Yes), P(No)]`` sum to one.
  Logit judges read their verdicts from it (``Yes``/``No``, ``A``/``B`` after ``[[``).

Two implementations, chosen by ``engine: hf | vllm`` in a recipe or ``--engine`` on the command line (the names,
what each supports and whether it can run here: :mod:`presrm.engines.registry`):

- :class:`presrm.engines.hf.HFEngine`: transformers ``generate`` in length-sorted batches
  (:mod:`presrm.engines.hf_generate`) and batched forward passes with two-level shared-prefix KV-cache reuse
  (:mod:`presrm.engines.hf_forward`);
- :class:`presrm.engines.vllm.VLLMEngine`: ``vllm.LLM`` in the same process, with automatic prefix
  caching, n samples per request and the choice tokens read from its log-probabilities.

Prompts are text that already holds the chat template (:func:`presrm.generate.render_chat`); both
engines tokenize it with the same Hugging Face tokenizer and no added special tokens, so they see the
very same token ids. The interface and what engines share live in :mod:`presrm.engines.base`;
:func:`open_engine` loads either from a model spec; ``close()`` (or ``with``)
releases the model's memory, which the loop does before every training stage (the run's one open engine:
:mod:`presrm.engines.holder`).

Importing this package imports no torch (the CLI reads :mod:`presrm.engines.registry` for its choices); the
names below load their module on first use.

>>> engine = open_engine("embedded", EngineOptions(name="hf"))  # doctest: +SKIP
>>> engine.greedy(["Step 1:"], max_new_tokens=8)  # doctest: +SKIP
[' 3 + 4 = 7']
"""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from presrm.engines.base import Engine, EngineBase, EngineOptions, SpanPlan, normalise_choices
    from presrm.engines.hf import HFEngine

__all__ = ["Engine", "EngineBase", "EngineOptions", "HFEngine", "SpanPlan", "normalise_choices", "open_engine"]
_LAZY = {"Engine": "base", "EngineBase": "base", "EngineOptions": "base", "SpanPlan": "base",
         "normalise_choices": "base", "HFEngine": "hf"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"presrm.engines.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'presrm.engines' has no attribute {name!r}")


def open_engine(spec: str, options: EngineOptions | None = None) -> Engine:
    """Load model ``spec`` (hub id, folder, .gguf, ``embedded``) into the engine ``options.name`` asks for.

    The engine's class comes from :mod:`presrm.engines.registry` and loads the model itself
    (``load(spec, options)``): with ``options.adapter`` a LoRA adapter is applied (HF) or merged into a
    cached folder first (vLLM loads plain checkpoints). ``engine: vllm`` without vLLM installed is a
    ModelLoadError that says what to install.
    """
    from presrm.engines.base import EngineOptions
    from presrm.engines.registry import spec as engine_spec

    options = options or EngineOptions()
    return engine_spec(options.name).load().load(spec, options)
