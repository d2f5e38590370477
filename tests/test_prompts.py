"""One policy prompt: step search, the natural set, the likelihood judge and IFT examples see the text evaluation
gives the policy (its chat template setting, its shots, its response prefix), then the steps so far."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from presrm.config import SearchConfig
from presrm.data import load_shots, load_task
from presrm.generate import response_prompt, step_prompter
from presrm.grading import build_prompt
from presrm.init_data import ift_example
from presrm.judge import LikelihoodJudge, StepToJudge
from presrm.labelled import build_natural_set
from presrm.schema import Problem
from presrm.search import step_search
from tests.test_likelihood import RecordingEngine
from tests.test_search import FakePointwiseJudge

PROBLEM = Problem(id="p", question="Tom has 3 apples and buys 4. How many?", answer="7",
                  solution="3 + 4 = <<3+4=7>>7\n#### 7")


def _task(tmp_path: Path, name: str, shots: int, pool: Path):
    """Task ``name`` as shipped, with ``shots`` shots drawn from ``pool`` (a GSM8K-format file)."""
    raw = yaml.safe_load(Path(load_task(name).source_file).read_text())
    raw["fewshot"] = {**(raw.get("fewshot") or {"target": "raw"}), "data": {"paths": [str(pool)]}}
    raw["num_fewshot"] = shots
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_task(str(path))


class Sampler:
    """Step 1: two candidates, the first one right; step 2: the answer. Records every prompt."""

    def __init__(self):
        self.prompts = []

    def __call__(self, prompts, seed):
        self.prompts += prompts
        return [[" 3 + 4 = 7.", " 3 + 4 = 8."] if p.endswith("Step 1:") else [" The answer is 7."] for p in prompts]


# (task, shots, what evaluation's prompt is followed by in the step-1 prompt)
SETTINGS = [("gsm8k", 2, ""), ("gsm8k_cot_zeroshot", 0, " Step 1:"), ("gsm8k_cot_zeroshot", 2, " Step 1:")]


@pytest.mark.parametrize(("name", "shots", "after_eval"), SETTINGS, ids=["gsm8k-2shot", "cot-0shot", "cot-2shot"])
def test_search_natural_set_judge_and_ift_see_evaluations_prompt(tiny, gsm8k_like, tmp_path, name, shots,
                                                                   after_eval):
    tok = tiny[1]
    task = _task(tmp_path, name, shots, gsm8k_like)
    evaluation = build_prompt(tok, task, PROBLEM.question, load_shots(task))  # what decoding gives the policy
    assert len(load_shots(task)) == shots
    step1 = evaluation + after_eval
    step2 = step1 + " 3 + 4 = 7.\nStep 2:"

    sampler = Sampler()
    judge = FakePointwiseJudge(lambda step: float("7." in step))
    records, pairs = step_search(SimpleNamespace(tok=tok), judge, task, [PROBLEM], SearchConfig(k=2, max_steps=3),
                                 sampler=sampler)
    assert sampler.prompts == [step1, step2]
    assert records[0]["steps"] == ["Step 1: 3 + 4 = 7.", "Step 2: The answer is 7."]
    (pair,) = pairs  # the pair's text is what the policy saw, then the step it wrote
    assert pair.prompt + pair.chosen == step1 + " 3 + 4 = 7.\n"
    assert pair.prompt + pair.rejected == step1 + " 3 + 4 = 8.\n"

    natural = Sampler()
    build_natural_set([PROBLEM], step_prompter(tok, task), natural, max_steps=2, seed=0, desc=None)
    assert natural.prompts[0] == step1 and natural.prompts[1].startswith(step1) and natural.prompts[1].endswith(
        "\nStep 2:")

    engine = RecordingEngine(tok)
    LikelihoodJudge(engine, task=task).score([StepToJudge(PROBLEM.question, (), "Step 1: 3 + 4 = 7."),
                                              StepToJudge(PROBLEM.question, ("Step 1: 3 + 4 = 7.",),
                                                          "Step 2: The answer is 7.")])
    assert engine.texts == [step1 + " 3 + 4 = 7.", step2 + " The answer is 7."]

    shots_ = load_shots(task)
    ex = ift_example(PROBLEM.question, PROBLEM.solution, lambda q: build_prompt(tok, task, q, shots_),
                     lambda q, steps: response_prompt(tok, task, q, steps, shots=shots_))
    assert ex["prompt"] == evaluation
    assert ex["prompt"] + ex["completion"] == step1 + " 3 + 4 = 7\nStep 2: The answer is 7."


def test_lm_eval_layout_is_plain_text_in_search_too(tiny, gsm8k_like, tmp_path):
    """gsm8k_cot_zeroshot is plain text (chat_template: false) in evaluation, so it is in search."""
    task = _task(tmp_path, "gsm8k_cot_zeroshot", 0, gsm8k_like)
    prompt = step_prompter(tiny[1], task)("How many?", ["Step 1: 3 + 4 = 7."], 2)
    assert prompt == "Q: How many?\nA: Let's think step by step. Step 1: 3 + 4 = 7.\nStep 2:"


def test_a_response_prefix_with_words_starts_every_step_prompt(tiny, gsm8k_like, tmp_path):
    """A response prefix that is more than a step marker stays in front of the steps, as in evaluation."""
    task = _task(tmp_path, "gsm8k", 0, gsm8k_like)
    task = dataclasses.replace(task, response_prefix="Let us think.")
    evaluation = build_prompt(tiny[1], task, "How many?")
    assert evaluation.endswith("assistant\nLet us think.")
    assert step_prompter(tiny[1], task)("How many?", [], 1) == evaluation + "\nStep 1:"
