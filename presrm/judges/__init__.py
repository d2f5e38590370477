"""The judge implementations behind ``presrm.judge`` (import from there).

- ``common``: the ``Judge`` interface and its bases (score judges rank a
  tournament's candidates, pair judges play its matches), the records
  (``StepToJudge``, ``PairToJudge``, ``SolutionToJudge``, ``PairVerdict``,
  ``Tournament``), prompt templates, and the rules that turn per-order
  verdicts into a winner or a tie.
- ``forward``: batched next-token log-probabilities with shared-prefix
  KV-cache reuse: the HF engine's ``choice_logprobs`` (``presrm.engine``).
- ``pointwise``, ``pairwise``, ``generative``, ``outcome``, ``likelihood``: the judges;
  ``random``: a control that scores steps by a seeded hash (no model call).
"""
