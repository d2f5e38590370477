"""How good is the self-judge? Measured against steps whose correctness is known.

Three labelled sets (built in :mod:`presrm.labelled`):

* **synthetic** (default): GSM8K gold solutions in ``Step n:`` form and a copy
  with one arithmetic result perturbed, every label confirmed by the verifier.
  Built like the EFT data, so it flatters an EFT-trained judge.
* **natural** (``--natural FILE``): the model's own candidate steps after its own
  prefixes on GSM8K *test* problems, labelled by the verifier; built once per
  generating model, then reused for every model judged (M0, M1, ...). Reported
  beside the synthetic set: step AUROC and right-vs-wrong pairwise accuracy at
  the same prefix, each with a 95% bootstrap interval over problems.
* **any ProcessBench-format file** (``--labelled FILE``), to compare with published PRMs.

In three parts:

* :mod:`presrm.judge_eval.metrics`: pure functions (ProcessBench F1, AUROC, pairwise accuracy,
  position bias), each with a table-driven test; intervals come from :mod:`presrm.stats`;
* :mod:`presrm.judge_eval.runners`: :func:`evaluate_judge` runs any judge of :mod:`presrm.judge` on a
  labelled set, by the unit it judges (step, pair, solution); :func:`evaluate_natural` on the natural set;
* :mod:`presrm.judge_eval.command`: the ``presrm judge-eval`` command (:class:`JudgeEvalArgs`,
  :func:`run_judge_eval`, :func:`summary_lines`), writing through :class:`presrm.layout.EvalLayout`.
"""

from presrm.judge_eval.command import (
    JUDGE_OPTIONS,
    SCHEMA_VERSION,
    JudgeEvalArgs,
    natural_set_for,
    run_judge_eval,
    summary_lines,
)
from presrm.judge_eval.metrics import auroc, first_error, pairwise_accuracy, position_bias, processbench
from presrm.judge_eval.runners import evaluate_judge, evaluate_natural
from presrm.labelled import build_labelled_set
from presrm.stats import bootstrap_ci

__all__ = ["JUDGE_OPTIONS", "SCHEMA_VERSION", "JudgeEvalArgs", "auroc", "bootstrap_ci",
           "build_labelled_set", "evaluate_judge", "evaluate_natural", "first_error", "natural_set_for",
           "pairwise_accuracy", "position_bias", "processbench", "run_judge_eval", "summary_lines"]
