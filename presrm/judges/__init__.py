"""The judge implementations behind ``presrm.judge`` (import from there).

- ``common``: the records (``StepToJudge``, ``PairToJudge``, ``PairVerdict``,
  ``Tournament``), prompt templates, and the rules that turn per-order
  verdicts into a winner or a tie.
- ``forward``: batched next-token log-probabilities, with shared-prefix
  KV-cache reuse.
- ``pointwise``, ``pairwise``, ``generative``, ``outcome``: the four judges.
"""
