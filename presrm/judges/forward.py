"""Batched next-token log-probabilities for logit judges, with shared-prefix KV-cache reuse.

A logit judge needs one number per prompt: the log-probability that the next
token is one of a few answer tokens ("Yes"/"No", "A"/"B"). ``answer_logprobs``
computes it for many prompts in length-sorted, left-padded batches.

Judge prompts come in groups that share a long start: the steps of one
solution (the question and steps 1..k-1 are the start of step k's prompt),
or the matches of one tournament (the question and the previous steps). With
``prefix_cache=True`` the head of each group is encoded once, and every
member runs only its own suffix (the tokens after its longest common token
prefix with the head) against a copy of the head's KV cache, cut to that
prefix by the attention mask. Because the shared part is a *token* prefix, the
scores equal the plain path's up to float rounding, for any template. The
cache path needs a plain full-attention ``DynamicCache`` (Llama, Qwen2,
Mistral without sliding windows, ...); for other models it falls back to the
plain path with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
MIN_REUSE = 16  # tokens: a shorter shared prefix is not worth copying a cache for


def prefix_cache_supported(model) -> bool:
    """Whether the model's cache is a plain full-attention DynamicCache (what prefix reuse needs)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=cfg)
    except Exception:  # noqa: BLE001 - any model whose config the cache cannot read is unsupported
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _pad_id(tok) -> int:
    for cand in (tok.pad_token_id, tok.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0  # pragma: no cover


def _set_logprobs(logits: torch.Tensor, sets: Sequence[torch.Tensor]) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    return torch.stack([torch.logsumexp(logp[:, s], dim=-1) for s in sets], dim=1)


def _left_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def answer_logprobs(model, tok, prompts: Sequence[str], answer_sets: Sequence[Sequence[int]], *,
                    batch_size: int = 16, groups: Sequence[Sequence[int]] | None = None,
                    prefix_cache: bool = False, desc: str | None = None, unit: str = "prompt") -> torch.Tensor:
    """``[len(prompts), len(answer_sets)]``: log P(next token in set) after each prompt.

    ``groups`` lists prompt indices that share a start, head first (see
    ``presrm.judges.common.chains``); it is used only when ``prefix_cache``.
    """
    out = torch.zeros((len(prompts), len(answer_sets)))
    if not prompts:
        return out
    ids = [list(x) for x in tok(list(prompts), add_special_tokens=False)["input_ids"]]
    sets = [torch.tensor(list(s), dtype=torch.long) for s in answer_sets]
    bar = tqdm(total=len(prompts), desc=desc or "judge", unit=unit, disable=desc is None, leave=False)
    todo: list[int] = list(range(len(prompts)))
    if prefix_cache and groups:
        if prefix_cache_supported(model):
            todo = _cached(model, ids, groups, sets, out, batch_size, _pad_id(tok), bar)
        else:
            log.warning("prefix KV-cache reuse does not support %s (not a plain full-attention DynamicCache); "
                        "judging with plain batches", type(model).__name__)
    _plain(model, ids, todo, sets, out, batch_size, _pad_id(tok), bar)
    bar.close()
    return out


def _plain(model, ids, todo, sets, out, batch_size, pad, bar) -> None:
    """Whole prompts, longest first, left-padded so every last token sits at position -1."""
    order = sorted(todo, key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        input_ids, mask = _left_pad([ids[i] for i in idx], pad)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                       position_ids=pos.to(model.device), use_cache=False, logits_to_keep=1).logits[:, -1, :]
        out[idx] = _set_logprobs(logits, sets)
        bar.update(len(idx))


def _plan(ids, groups) -> tuple[list[tuple[list[int], list[tuple[int, int]]]], list[int]]:
    """Per group: the head's tokens to encode and ``(row, shared length)``; rows not worth it go plain."""
    plans, plain = [], []
    for g in groups:
        head = ids[g[0]]
        rows, alone = [], []
        for r in g:
            p = min(_lcp(ids[r], head), len(ids[r]) - 1)
            (rows if p >= MIN_REUSE else alone).append((r, p))
        if len(rows) < 2:
            plain.extend(r for r, _ in rows + alone)
            continue
        plain.extend(r for r, _ in alone)
        plans.append((head[:max(p for _, p in rows)], rows))
    plans.sort(key=lambda pl: -len(pl[0]))
    return plans, plain


def _cached(model, ids, groups, sets, out, batch_size, pad, bar) -> list[int]:
    """Score grouped rows off their heads' caches; return the rows left for the plain path."""
    from transformers import DynamicCache

    plans, plain = _plan(ids, groups)
    dev = model.device
    for start in range(0, len(plans), batch_size):
        chunk = plans[start:start + batch_size]
        ctx_ids, ctx_mask = _left_pad([c for c, _ in chunk], pad)
        width = ctx_ids.shape[1]
        cache = DynamicCache(config=model.config)
        pos = (ctx_mask.cumsum(1) - 1).clamp(min=0)
        model(input_ids=ctx_ids.to(dev), attention_mask=ctx_mask.to(dev), position_ids=pos.to(dev),
              past_key_values=cache, use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        rows = [(r, g, p, width - len(c)) for g, (c, rs) in enumerate(chunk) for r, p in rs]
        rows.sort(key=lambda x: -(len(ids[x[0]]) - x[2]))
        for s in range(0, len(rows), batch_size):
            batch = rows[s:s + batch_size]
            out[[r for r, *_ in batch]] = _suffixes(model, ids, batch, kv, width, sets, pad)
            bar.update(len(batch))
        del cache, kv
    return plain


def _suffixes(model, ids, batch, kv, width, sets, pad) -> torch.Tensor:
    """One forward pass over the rows' suffixes, attending to their head's cached prefix."""
    from transformers import DynamicCache

    dev = model.device
    sfx_ids, sfx_mask = _left_pad([ids[r][p:] for r, _, p, _ in batch], pad)
    ctx_mask = torch.zeros((len(batch), width), dtype=torch.long)
    pos = torch.zeros_like(sfx_ids)
    n = sfx_ids.shape[1]
    for b, (r, _, p, left) in enumerate(batch):
        ctx_mask[b, left:left + p] = 1  # the head's tokens beyond the shared prefix stay masked
        k = len(ids[r]) - p
        pos[b, n - k:] = torch.arange(p, p + k)
    sel = torch.tensor([g for _, g, _, _ in batch], device=dev)
    cache = DynamicCache(ddp_cache_data=[(k.index_select(0, sel), v.index_select(0, sel)) for k, v in kv])
    logits = model(input_ids=sfx_ids.to(dev), attention_mask=torch.cat([ctx_mask, sfx_mask], 1).to(dev),
                   position_ids=pos.to(dev), past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    return _set_logprobs(logits[:, -1, :], sets)
