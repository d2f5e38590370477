"""Step-DPO with each pair's prompt read once: one sequence ``[prompt | chosen | rejected]`` per pair.

In step-level DPO the prompt (the question and the previous steps) is long and the two steps are short; TRL's
standard path runs ``prompt + chosen`` and ``prompt + rejected`` as two rows, reading the prompt twice, in the
policy's forward and again in the reference log-probs. Here each pair is one row (the technique of "Accelerating
Direct Preference Optimization with Prefix Sharing", arXiv 2410.20305)::

    tokens     p0 p1 p2 p3 | c0 c1 | p3' r0 r1 r2
    positions   0  1  2  3 |  4  5 |  3   4  5  6
    segment     1  1  1  2 |  2  2 |  3   3  3  3

- The chosen branch is the prompt's last token and the chosen step (segment 2), the rejected branch a copy of
  that last token followed by the rejected step (segment 3). The copy sits at the last token's position and sees
  what it saw, so its hidden state is the one the rejected step's first token is predicted from in the standard
  path: every step token keeps the usual one-position shift of the labels, and TRL's fused LM head applies as is.
- The attention mask is causal, except that a rejected-branch token never sees the chosen branch (segment 2), and
  padding is seen by nothing (a padding query sees itself only, so no softmax row is empty).
- Position ids restart after the prompt for the rejected branch.

:class:`SharedPrefixCollator` lays a batch out this way. Beside the model's inputs (``shared_*`` keys) it hands
TRL's loss a *virtual* batch in TRL's standard two-row shape (chosen rows, then rejected rows), whose step tokens
are the shared pass's (:func:`unfold`); TRL's loss, SFT term and metrics then run unchanged. The virtual
``attention_mask`` is one column holding each standard row's length, so TRL's ``num_tokens`` counts what the
standard path would. Truncation follows TRL's ``keep_start``: each of ``prompt + chosen`` and ``prompt + rejected``
is cut to ``max_length``. Attention runs through the model's own SDPA (or eager) attention with a 4D mask, which
computes this on CPU and on CUDA; FlashAttention-2 takes no such mask, so those models keep TRL's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3
"""Segment ids of the shared layout."""

SHARED_KEYS = ("shared_input_ids", "shared_position_ids", "shared_segments", "shared_labels", "shared_source")
"""The keys of a collated batch that hold the shared pass's inputs (the rest is TRL's virtual batch)."""

MASKED_ATTENTION = ("sdpa", "eager")
"""The attention implementations that take the custom 4D mask."""


def layout(prompt: list[int], chosen: list[int], rejected: list[int],
           max_length: int | None = None) -> dict[str, list[int]]:
    """One pair's shared row: ids, positions, segments, labels (-100: no label) and the truncated step lengths.

    >>> row = layout([10, 11, 12, 13], [20, 21], [30, 31, 32])
    >>> row["ids"], row["positions"], row["segments"]
    ([10, 11, 12, 13, 20, 21, 13, 30, 31, 32], [0, 1, 2, 3, 4, 5, 3, 4, 5, 6], [1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    >>> row["labels"]
    [-100, -100, -100, -100, 20, 21, -100, 30, 31, 32]
    >>> layout([10, 11, 12], [20, 21], [30, 31], max_length=4)["ids"]  # prompt + step cut to 4, as TRL cuts
    [10, 11, 12, 20, 12, 30]
    """
    if not prompt:
        raise ValueError("a shared-prefix pair needs a prompt of at least one token")
    if max_length is not None:
        prompt = prompt[:max_length]
        room = max_length - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    n = len(prompt)
    ids = prompt + chosen + [prompt[-1]] + rejected
    positions = list(range(n + len(chosen))) + list(range(n - 1, n + len(rejected)))
    segments = [PROMPT] * (n - 1) + [CHOSEN] * (len(chosen) + 1) + [REJECTED] * (len(rejected) + 1)
    labels = [-100] * n + list(chosen) + [-100] + list(rejected)
    return {"ids": ids, "positions": positions, "segments": segments, "labels": labels,
            "prompt": n, "chosen": len(chosen), "rejected": len(rejected)}


@dataclass
class SharedPrefixCollator:
    """Collate tokenized preference pairs (``prompt_ids``, ``chosen_ids``, ``rejected_ids``, and
    ``ref_chosen_logps`` / ``ref_rejected_logps`` once precomputed) into the shared layout plus TRL's virtual
    two-row batch. ``max_length`` truncates as TRL's ``DataCollatorForPreference`` does (``keep_start``).

    >>> batch = SharedPrefixCollator(pad_token_id=0)([
    ...     {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
    ...     {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11]}])
    >>> batch["shared_input_ids"].tolist()
    [[1, 2, 3, 4, 5, 3, 6], [7, 8, 9, 8, 10, 11, 0]]
    >>> batch["completion_mask"].tolist()  # TRL's rows: chosen of each pair, then rejected
    [[0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 1]]
    >>> batch["shared_source"].tolist()  # where each step token's log-prob is read in the shared pass
    [[2, 3], [1, 0], [5, 0], [3, 4]]
    >>> batch["attention_mask"].flatten().tolist()  # the standard rows' lengths
    [5, 3, 4, 4]
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [layout(list(e["prompt_ids"]), list(e["chosen_ids"]), list(e["rejected_ids"]), self.max_length)
                for e in examples]
        width = max(len(r["ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        steps = max(max(r["chosen"], r["rejected"]) for r in rows)  # the virtual rows' completion width

        def padded(key: str, value: int) -> torch.Tensor:
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows], dtype=torch.long)

        batch = {"shared_input_ids": padded("ids", self.pad_token_id), "shared_position_ids": padded("positions", 0),
                 "shared_segments": padded("segments", PAD), "shared_labels": padded("labels", -100)}
        # TRL's virtual batch: row i < B is pair i's chosen step, row B + i its rejected step, each after one
        # column that stands for the prompt; shared_source[row, j] is the shifted position of the shared pass
        # whose log-prob is the step's token j (0 where the step is shorter: masked out).
        ids, completion, source, lengths = [], [], [], []
        for key in ("chosen", "rejected"):
            for e, r in zip(examples, rows, strict=True):
                n, length = r["prompt"], r[key]
                step = (list(e[f"{key}_ids"]))[:length]
                first = n - 1 if key == "chosen" else n + r["chosen"]
                ids.append([self.pad_token_id] + step + [self.pad_token_id] * (steps - length))
                completion.append([0] + [1] * length + [0] * (steps - length))
                source.append([first + j for j in range(length)] + [0] * (steps - length))
                lengths.append([n + length])
        batch.update(input_ids=torch.tensor(ids, dtype=torch.long),
                     completion_mask=torch.tensor(completion, dtype=torch.long),
                     shared_source=torch.tensor(source, dtype=torch.long),
                     attention_mask=torch.tensor(lengths, dtype=torch.long))
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples])
        return batch


def shared_mask(segments, implementation: str, dtype=None):
    """The 4D mask of the shared layout, ``(batch, 1, length, length)``, from its segment ids.

    SDPA takes a boolean mask (True: attend); eager attention an additive one in ``dtype``.

    >>> import torch
    >>> m = shared_mask(torch.tensor([[1, 2, 2, 3, 3, 0]]), "sdpa")[0, 0].int()
    >>> for row in m.tolist():  # the rejected branch (rows 3, 4) sees the prompt and itself, never the chosen one
    ...     print(row)
    [1, 0, 0, 0, 0, 0]
    [1, 1, 0, 0, 0, 0]
    [1, 1, 1, 0, 0, 0]
    [1, 0, 0, 1, 0, 0]
    [1, 0, 0, 1, 1, 0]
    [0, 0, 0, 0, 0, 1]
    """
    import torch

    length = segments.shape[1]
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (key != PAD) & (query != PAD) & ~((query == REJECTED) & (key == CHOSEN))
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)  # padding sees itself: no empty row
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        dtype = dtype or torch.float32
        return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    raise ValueError(f"the shared-prefix mask needs sdpa or eager attention, not {implementation!r}")


def unfold(outputs, source, completion_mask):
    """``outputs`` of the shared pass (TRL's fused LM head: per-token fields of shape ``(B, L - 1)``) laid out as
    TRL's standard path gives them for the virtual batch: ``(2B, steps)`` per field, zero off the steps."""
    import torch

    valid = completion_mask[:, 1:].bool()
    pair = torch.arange(source.shape[0], device=source.device) % (source.shape[0] // 2)
    values = {}
    for name in ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs"):
        field = getattr(outputs, name, None)
        if field is None:
            continue
        gathered = field[pair[:, None], source]
        values[name] = torch.where(valid, gathered, torch.zeros_like(gathered))
    for name, value in values.items():
        setattr(outputs, name, value)
    return outputs


class SharedForward:
    """Stands in for the model in TRL's loss and reference log-probs: one pass over the shared batch, its
    per-token outputs unfolded to TRL's virtual two-row batch. Called with the virtual batch's model arguments,
    it ignores the virtual ids and mask (and the labels TRL makes from them) and keeps any other argument."""

    def __init__(self, model, shared: dict[str, Any], completion_mask, implementation: str, dtype=None):
        self.model, self.shared, self.completion_mask = model, shared, completion_mask
        self.implementation, self.dtype = implementation, dtype

    def __call__(self, *, input_ids=None, attention_mask=None, labels=None, **kwargs):
        shared = self.shared
        mask = shared_mask(shared["shared_segments"], self.implementation, self.dtype)
        outputs = self.model(input_ids=shared["shared_input_ids"], attention_mask=mask,
                             position_ids=shared["shared_position_ids"], labels=shared["shared_labels"], **kwargs)
        return unfold(outputs, shared["shared_source"], self.completion_mask)


def split(inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A collated batch as (TRL's virtual batch, the shared pass's inputs)."""
    virtual = {k: v for k, v in inputs.items() if k not in SHARED_KEYS}
    return virtual, {k: inputs[k] for k in SHARED_KEYS}
