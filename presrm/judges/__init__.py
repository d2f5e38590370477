"""The judge implementations behind ``presrm.judge`` (import from there).

- ``registry``: every judge mode once (its class, the unit it judges, what it needs from an engine, its
  config keys, the stages that can use it); read by the CLI, config validation, judge-eval and the loop.
- ``common``: the ``Judge`` interface and its bases (score judges rank a
  tournament's candidates, pair judges play its matches), the records
  (``StepToJudge``, ``PairToJudge``, ``SolutionToJudge``, ``PairVerdict``,
  ``Tournament``), prompt templates, and the rules that turn per-order
  verdicts into a winner or a tie.
- ``pointwise``, ``pairwise``, ``generative``, ``outcome``, ``likelihood``: the judges;
  ``random``: a control that scores steps by a seeded hash (no model call).

The batched forward passes with shared-prefix KV-cache reuse that the logit judges run on the HF engine
are the engine's (``presrm.engines.hf_forward``).
"""
