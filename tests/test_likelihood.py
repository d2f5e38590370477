"""The likelihood judge: the model's own probability of the results a step states, against a plain forward pass."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from presrm.cli import main
from presrm.data import load_task
from presrm.engine import HFEngine
from presrm.errors import ConfigError
from presrm.generate import step_prompt
from presrm.judge import LikelihoodJudge, StepToJudge, make_judge
from presrm.perturb import result_spans

ITEMS = [
    StepToJudge("Tom has 3 apples and buys 4. How many?", (), "Step 1: 3 + 4 = 7 apples"),
    StepToJudge("A box holds 6 pens. How many in 5 boxes?", ("Step 1: One box has 6 pens.",),
                "Step 2: 6 * 5 = 30 pens, and 30 + 2 = 32"),
    StepToJudge("Sam had 20 dollars and spent 8. How much is left?", (), "Step 1: He spends some money."),
]


def _reference(model, tok, item: StepToJudge) -> float | None:
    """The same score from one unbatched forward pass, token by token."""
    head = step_prompt(tok, load_task("gsm8k"), item.question, item.previous, len(item.previous) + 1)
    body = item.step.partition(":")[2]
    enc = tok(head + body, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        lp = torch.log_softmax(model(**enc).logits[0].float(), -1)
    ids = enc["input_ids"][0]
    means = []
    for a, b in result_spans(body):
        a, b = a + len(head), b + len(head)
        toks = [t for t, (s, e) in enumerate(offsets) if t > 0 and e > a and s < b and e > s]
        means.append(sum(lp[t - 1, ids[t]].item() for t in toks) / len(toks))
    return math.exp(min(means)) if means else None


def test_scores_equal_a_plain_forward_pass_in_any_batch(tiny):
    model, tok = tiny
    for batch_size in (1, 2, 8):
        judge = LikelihoodJudge(HFEngine(model, tok), batch_size=batch_size, no_claim_score=0.25)
        scores = judge.score(ITEMS)
        for item, score in zip(ITEMS[:2], scores, strict=False):
            assert 0.0 < score <= 1.0 and score == pytest.approx(_reference(model, tok, item), rel=1e-4)
        assert scores[2] == 0.25  # no result stated: the configured neutral score
    assert judge.prompt(ITEMS[1]).endswith("Step 1: One box has 6 pens.\nStep 2:")


def test_the_least_likely_result_decides(tiny):
    """A step with two results scores as its worse one: adding a result never raises the score."""
    judge = LikelihoodJudge(HFEngine(*tiny))
    one = StepToJudge("q?", (), "Step 1: 6 * 5 = 30 pens")
    two = StepToJudge("q?", (), "Step 1: 6 * 5 = 30 pens, and 30 + 2 = 32")
    s_one, s_two = judge.score([one, two])
    assert s_two <= s_one + 1e-6


def test_made_by_name_ranked_tournaments_and_engine_check(tiny):
    judge = make_judge("likelihood", HFEngine(*tiny), batch_size=4)
    assert judge.mode == "likelihood" and judge.unit == "step"
    question = "Tom has 3 apples and buys 4. How many?"
    tour = judge.tournaments([(question, (), ["Step 1: 3 + 4 = 7", "Step 1: 3 + 4 = 9"])])
    assert sorted(tour[0].wins) in ([0.0, 1.0], [0.5, 0.5])
    with pytest.raises(ConfigError, match="needs the hf engine"):
        LikelihoodJudge(SimpleNamespace(name="vllm", tok=tiny[1]))
    with pytest.raises(ConfigError, match="no_claim_score"):
        LikelihoodJudge(HFEngine(*tiny), no_claim_score=2.0)


def test_judge_eval_cli_likelihood_on_both_sets(tiny_model_dir, gsm8k_like, tmp_path):
    out, nat = tmp_path / "je", tmp_path / "natural.jsonl"
    assert main(["judge-eval", "--model", str(tiny_model_dir), "--judge", "likelihood", "--data-file",
                 str(gsm8k_like), "--limit", "3", "--device", "cpu", "--precision", "fp32", "--output-dir", str(out),
                 "--natural", str(nat), "--natural-k", "2", "--natural-max-steps", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"]["mode"] == "likelihood" and 0.0 <= res["step_auroc"]["value"] <= 1.0
    assert res["natural"]["set"]["steps"] == len(nat.read_text().splitlines())
