"""The Hugging Face engine's sampler (:class:`presrm.engines.hf.HFEngine`): transformers ``generate`` in batches.

Prompts are sorted by length so each batch pads little, generation stops on the task's stop strings, and the
text is cut at the first stop string (the model may run past it inside a batch). Seeds are set per batch,
so the same seed and batch layout give the same samples.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from presrm.engines.base import cut_at_stop
from presrm.progress import bar as progress_bar

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
