"""The Hugging Face engine: a loaded transformers model behind the engine interface.

``generate`` is :func:`presrm.engines.hf_generate.generate` (length-sorted batches); ``choice_logprobs`` batched forward
passes with shared-prefix KV-cache reuse (:mod:`presrm.engines.hf_forward`); ``span_logprobs`` left-padded
batches that keep only the logits they read (:data:`LOGITS_BUDGET`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

import torch

from presrm.engines.base import EngineBase, EngineOptions, normalise_choices

LOGITS_BUDGET = 4096
"""Most (row, position) pairs whose vocabulary logits one HF forward pass of ``span_logprobs`` keeps (fp32:
4096 x a 49k vocabulary = 0.8 GB)."""


class HFEngine(EngineBase):
    """A loaded transformers model behind the engine interface (presrm's own batching and prefix reuse).

    >>> engine = HFEngine(model, tok, batch_size=16)  # doctest: +SKIP
    """

    name = "hf"

    def __init__(self, model, tok, *, batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tok, batch_size

    @classmethod
    def load(cls, spec: str, options: EngineOptions) -> HFEngine:
        """Load ``spec`` on ``options.device`` in ``options.precision``, with ``options.adapter`` merged in."""
        from presrm.models import load_model, load_with_adapter

        model, tok = load_model(spec, device=options.device, precision=options.precision)
        if options.adapter:
            model = load_with_adapter(model, options.adapter)
        return cls(model, tok, batch_size=options.batch_size)

    def _generate(self, prompts: Sequence[str], *, max_new_tokens: int, n: int, temperature: float, top_p: float,
                  stop: Sequence[str], seed: int, batch_size: int | None, desc: str | None) -> list[list[str]]:
        """``n`` continuations per prompt from ``model.generate`` (see :func:`presrm.engines.hf_generate.generate`)."""
        from presrm.engines.hf_generate import generate

        return generate(self.model, self.tok, prompts, max_new_tokens=max_new_tokens,
                        batch_size=batch_size or self.batch_size, stop=stop, num_return_sequences=n,
                        temperature=temperature, top_p=top_p, seed=seed, desc=desc)

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[Sequence[int]], *,
                        groups: Sequence[Sequence[int]] | None = None, batch_size: int | None = None,
                        prefix_cache: bool = True, desc: str | None = None, unit: str = "prompt") -> torch.Tensor:
        """``[len(prompts), len(choices)]`` log-probabilities, one forward pass per batch.

        With ``prefix_cache`` the start every prompt shares, and each group's shared start
        (``groups``: prompt indices, head first, see :func:`presrm.judges.common.chains`), are
        encoded once (:func:`presrm.engines.hf_forward.answer_logprobs`).
        """
        from presrm.engines.hf_forward import answer_logprobs

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
