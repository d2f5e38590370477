"""presrm: process-based self-rewarding language models for math reasoning.

The public API, one module per pipeline stage:

- ``presrm.verify``: ``extract_answer``, ``answers_match``, ``check_step``, ``check_solution``, and the one
  number reader ``parse_number`` / ``NUMBER`` / ``NUMBER_RE`` every module uses
- ``presrm.layout``: ``RunLayout``, ``EvalLayout``: where every file of a run or an evaluation lives
- ``presrm.steps``: ``segment``, ``step_body``, ``format_steps``, ``gold_to_steps``
- ``presrm.rewards``: ``aggregate`` and the aggregators
- ``presrm.engines``: ``Engine`` (``generate``, ``greedy``, ``choice_logprobs``), ``HFEngine``, ``open_engine``;
  ``presrm.engines.vllm.VLLMEngine`` behind the same interface (docs/engines.md)
- ``presrm.judge``: ``Judge`` (``prompt(item)``, ``tournaments``), ``make_judge(mode, engine)``
- ``presrm.search``, ``presrm.train``, ``presrm.evaluate``, ``presrm.loop``
  (these and the two above import torch; import them explicitly)
- ``presrm.dist`` (ranks, shards and gathers under ``accelerate launch``), ``presrm.tracking``
  (``train.report_to``), ``presrm.hub`` (``train.push_to_hub`` and the model card)
"""

from presrm.rewards import aggregate
from presrm.steps import format_steps, gold_to_steps, segment, step_body
from presrm.verify import answers_match, check_solution, check_step, extract_answer

__version__ = "0.1.0"

__all__ = [
    "aggregate",
    "answers_match",
    "check_solution",
    "check_step",
    "extract_answer",
    "format_steps",
    "gold_to_steps",
    "segment",
    "step_body",
    "__version__",
]
