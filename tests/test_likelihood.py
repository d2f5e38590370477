"""The likelihood judge: the model's own probability of the results a step states, against a plain forward pass."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import pytest
import torch

from presrm.cli import main
from presrm.engines import HFEngine
from presrm.errors import ConfigError
from presrm.judge import LikelihoodJudge, StepToJudge, make_judge
from presrm.perturb import result_spans
from presrm.steps import final_answer_span
from tests.test_judge_eval import step_auroc_by_hand


def _head(question: str) -> str:
    """The policy's prompt for gsm8k on the tiny ChatML tokenizer, written out (evaluation's, without ``Step 1:``)."""
    return ("<|im_start|>user\nSolve the following math problem step by step. Write each step on its own line, "
            'starting with "Step 1:", "Step 2:" and so on. End with a line "The answer is N." where N is the final '
            f"number.\n\nProblem: {question}<|im_end|>\n<|im_start|>assistant\n")


# (item, what the judge reads after the policy's prompt, the step's body there)
CASES = [
    (StepToJudge("Tom has 3 apples and buys 4. How many?", (), "Step 1: 3 + 4 = 7 apples"),
     "Step 1: 3 + 4 = 7 apples", "3 + 4 = 7 apples"),
    (StepToJudge("A box holds 6 pens. How many in 5 boxes?", ("Step 1: One box has 6 pens.",),
                 "Step 2: 6 * 5 = 30 pens, and 30 + 2 = 32"),
     "Step 1: One box has 6 pens.\nStep 2: 6 * 5 = 30 pens, and 30 + 2 = 32", "6 * 5 = 30 pens, and 30 + 2 = 32"),
    (StepToJudge("Sam had 20 dollars and spent 8. How much is left?", (), "Step 1: He spends some money."),
     "Step 1: He spends some money.", "He spends some money."),
]
ITEMS = [item for item, _, _ in CASES]


def _span_means(model, tok, text: str, spans) -> list[float]:
    """Mean token log-probability of each character span, from one unbatched forward pass."""
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.inference_mode():
        lp = torch.log_softmax(model(**enc).logits[0].float(), -1)
    ids = enc["input_ids"][0]
    means = []
    for a, b in spans:
        toks = [t for t, (s, e) in enumerate(offsets) if t > 0 and e > a and s < b and e > s]
        means.append(sum(lp[t - 1, ids[t]].item() for t in toks) / len(toks))
    return means


def _reference(model, tok, text: str, body: str, body_weight: float = 0.05) -> float:
    """The judge's score by hand on ``text``, which ends in ``body``: least likely claim (results, else the
    answer, else the body) + weighted body."""
    assert text.endswith(body)
    start = len(text) - len(body)
    claims = result_spans(body) or ([final_answer_span(body)] if final_answer_span(body) else [])
    shift = [(a + start, b + start) for a, b in [(0, len(body)), *(claims or [(0, len(body))])]]
    body_lp, *claim_lps = _span_means(model, tok, text, shift)
    return math.exp(min(claim_lps) + body_weight * body_lp)


def test_scores_equal_a_plain_forward_pass_in_any_batch(tiny):
    model, tok = tiny
    for batch_size in (1, 2, 8):
        for one_pass in (True, False):
            judge = LikelihoodJudge(HFEngine(model, tok), batch_size=batch_size, one_pass=one_pass)
            scores = judge.score(ITEMS)
            for (item, tail, body), score in zip(CASES, scores, strict=True):
                want = _reference(model, tok, _head(item.question) + tail, body)
                assert 0.0 < score <= 1.0 and score == pytest.approx(want, rel=1e-4)
    assert judge.prompt(ITEMS[1]) == _head(ITEMS[1].question) + "Step 1: One box has 6 pens.\nStep 2: "


def test_each_kind_of_step_reads_its_own_claim(tiny):
    """Results decide a step with results, the answer a final-answer step, the text a step with neither;
    body_weight=0 leaves the claim alone, and a step's score changes with its words, not only its numbers."""
    model, tok = tiny
    judge = LikelihoodJudge(HFEngine(model, tok), body_weight=0.0)
    q = "Tom has 3 apples and buys 4. How many?"
    head = _head(q) + "Step 1: "
    bodies = ["3 + 4 = 7 apples", "The answer is 7.", "He buys more apples."]
    got = judge.score([StepToJudge(q, (), "Step 1: " + b) for b in bodies])
    for body, score, claim, text in zip(bodies, got, [(8, 9), (14, 15), (0, 20)],
                                        ["7", "7", "He buys more apples."], strict=True):
        assert body[claim[0]:claim[1]] == text
        (want,) = _span_means(model, tok, head + body, [(len(head) + claim[0], len(head) + claim[1])])
        assert score == pytest.approx(math.exp(want), rel=1e-4)
    # same result after the same words, different endings: equal with body_weight 0, apart with the default
    same = [StepToJudge(q, (), "Step 1: 3 + 4 = 7 apples"), StepToJudge(q, (), "Step 1: 3 + 4 = 7 in all")]
    a, b = judge.score(same)
    assert a == pytest.approx(b, abs=1e-6)
    a, b = LikelihoodJudge(HFEngine(model, tok)).score(same)
    assert a != pytest.approx(b, abs=1e-6)


def test_the_least_likely_result_decides(tiny):
    """Of two results the least likely one decides, not their mean: checked against both results' own means."""
    model, tok = tiny
    judge = LikelihoodJudge(HFEngine(model, tok), body_weight=0.0)
    step = StepToJudge("q?", (), "Step 1: 6 * 5 = 30 pens, and 30 + 2 = 32")
    head, body = _head("q?") + "Step 1: ", "6 * 5 = 30 pens, and 30 + 2 = 32"
    means = _span_means(model, tok, head + body, [(len(head) + a, len(head) + b) for a, b in result_spans(body)])
    assert len(means) == 2 and abs(means[0] - means[1]) > 1e-3  # the two results differ, so min != mean
    (score,) = judge.score([step])
    assert score == pytest.approx(math.exp(min(means)), rel=1e-5)
    assert score != pytest.approx(math.exp(sum(means) / 2), rel=1e-3)


class RecordingEngine:
    """Records what the judge asks for (texts and spans); every span's log-probability is -1."""

    def __init__(self, tok):
        self.tok, self.texts, self.spans = tok, [], []

    def span_logprobs(self, texts, spans, **_):
        self.texts += texts
        self.spans += spans
        return [[-1.0] * len(s) for s in spans]


Q = "Tom has 3 apples and buys 4. How many?"


@pytest.mark.parametrize(("previous", "step", "tail", "body", "claim"), [
    # the marker the segmenter reads, whatever its form; the body after it; nothing the model did not write
    (("Step 1: It takes 2 hours.",), "Step 2. Time: 3 hours",
     "Step 1: It takes 2 hours.\nStep 2. Time: 3 hours", "Time: 3 hours", "Time: 3 hours"),
    (("**Step 1:** 16 - 3 = 13",), "**Step 2:** 13 * 2 = 26",
     "**Step 1:** 16 - 3 = 13\n**Step 2:** 13 * 2 = 26", "13 * 2 = 26", "26"),
    (("Step 1: 13 * 2 = 26",), "The answer is 26.",
     "Step 1: 13 * 2 = 26\nThe answer is 26.", "The answer is 26.", "26"),
    # a preamble segment does not shift the step's number: "Step 1:" stays "Step 1:"
    (("Sure, let us solve it.",), "Step 1: 3 + 4 = 7",
     "Sure, let us solve it.\nStep 1: 3 + 4 = 7", "3 + 4 = 7", "7"),
    # a solution without markers (ProcessBench's) is read without them
    ((), "To find the total, we add 3 and 4: 3 + 4 = 7.",
     "To find the total, we add 3 and 4: 3 + 4 = 7.", "To find the total, we add 3 and 4: 3 + 4 = 7.", "7"),
    (("To find the total, we add 3 and 4: 3 + 4 = 7.",), "So Tom has 7 apples.",
     "To find the total, we add 3 and 4: 3 + 4 = 7.\nSo Tom has 7 apples.", "So Tom has 7 apples.",
     "So Tom has 7 apples."),
], ids=["step-n-period", "bold-marker", "answer-line", "preamble", "unmarked-first", "unmarked-second"])
def test_the_step_is_read_as_the_model_wrote_it(tiny, previous, step, tail, body, claim):
    engine = RecordingEngine(tiny[1])
    LikelihoodJudge(engine).score([StepToJudge(Q, previous, step)])
    (text,), ((whole, *claims),) = engine.texts, engine.spans
    assert text == _head(Q) + tail
    assert text[whole[0]:whole[1]] == body and [text[a:b] for a, b in claims] == [claim]


@pytest.mark.parametrize("steps", [
    ["Step 1: One box has 6 pens.", "Step 2: 6 * 5 = 30 pens.", "Step 3: 30 + 2 = 32", "Step 4: The answer is 32."],
    ["One box has 6 pens.", "So 5 boxes have 6 * 5 = 30 pens.", "With the loose ones, 30 + 2 = 32.",
     "The answer is 32."],
    ["Sure!", "**Step 1:** 6 * 5 = 30", "Step 2. Loose pens: 30 + 2 = 32", "#### 32"],
], ids=["marked", "unmarked", "mixed"])
def test_each_steps_text_starts_the_next_ones_so_one_pass_shares_them(tiny, steps):
    """The text read for a step is a prefix of the text read for the step after it (the steps of one
    solution): one pass over the whole solution reads them all, with the same scores as one pass per step."""
    q = "A box holds 6 pens. How many pens are in 5 boxes, plus 2 loose pens?"
    items = [StepToJudge(q, tuple(steps[:i]), s) for i, s in enumerate(steps)]
    recorder = RecordingEngine(tiny[1])
    LikelihoodJudge(recorder).score(items)
    for shorter, longer in pairwise(recorder.texts):
        assert longer.startswith(shorter + "\n")
    assert recorder.texts[-1] == _head(q) + "\n".join(steps)
    scores, tokens = {}, {}
    for one_pass in (True, False):
        engine = HFEngine(*tiny)
        scores[one_pass] = LikelihoodJudge(engine, one_pass=one_pass).score(items)
        tokens[one_pass] = engine.span_tokens
    assert scores[True] == pytest.approx(scores[False], rel=1e-5)
    assert tokens[True] * 2 < tokens[False]  # one pass over ~1 solution against ~4 nested prefixes


def test_made_by_name_ranks_by_score(tiny):
    """A tournament ranks the candidates by their scores: the higher score wins every match."""
    judge = make_judge("likelihood", HFEngine(*tiny), batch_size=4)
    assert judge.mode == "likelihood" and judge.unit == "step"
    question = "Tom has 3 apples and buys 4. How many?"
    cands = ["Step 1: 3 + 4 = 7", "Step 1: 3 + 4 = 9", "Step 1: 3 + 4 = 12 apples"]
    scores = judge.score([StepToJudge(question, (), c) for c in cands])
    assert len(set(scores)) == 3
    (tour,) = judge.tournaments([(question, (), cands)])
    rank = sorted(range(3), key=lambda i: scores[i])
    assert [tour.wins[i] for i in rank] == [0.0, 1.0, 2.0] and tour.scores == scores
    with pytest.raises(ConfigError, match="body_weight"):
        LikelihoodJudge(HFEngine(*tiny), body_weight=2.0)


def test_judge_eval_cli_likelihood_on_both_sets(tiny_model_dir, gsm8k_like, tmp_path):
    out, nat = tmp_path / "je", tmp_path / "natural.jsonl"
    assert main(["judge-eval", "--model", str(tiny_model_dir), "--judge", "likelihood", "--data-file",
                 str(gsm8k_like), "--limit", "3", "--device", "cpu", "--precision", "fp32", "--output-dir", str(out),
                 "--natural", str(nat), "--natural-k", "2", "--natural-max-steps", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert res["protocol"]["mode"] == "likelihood"
    assert res["step_auroc"]["value"] == pytest.approx(step_auroc_by_hand(samples))
    assert res["natural"]["set"]["steps"] == len(nat.read_text().splitlines())
