import math
import re
from types import SimpleNamespace

import pytest
import torch

from presrm.config import JudgeConfig, load_config
from presrm.errors import ConfigError
from presrm.judge import (
    PairToJudge,
    PairwiseJudge,
    PointwiseJudge,
    StepToJudge,
    combine_orders,
    make_judge,
    make_judge_from_config,
)
from presrm.judges import forward
from presrm.judges.common import chains

Q1 = "Tom has 3 apples and buys 4. How many?"
Q2 = "A box holds 6 pens. How many pens in 5 boxes?"
ITEMS = [
    StepToJudge(Q1, (), "Step 1: 3 + 4 = 7"),
    StepToJudge(Q1, ("Step 1: 3 + 4 = 7",), "Step 2: The answer is 7."),
    StepToJudge(Q2, (), "Step 1: 6 * 5 = 31"),
]
# Two solutions to Q1 that share their first step, plus Q2: chains, singletons and shared prefixes.
CHAIN_ITEMS = [
    StepToJudge(Q1, (), "Step 1: He has 3 apples."),
    StepToJudge(Q1, ("Step 1: He has 3 apples.",), "Step 2: He buys 4, so 3 + 4 = 7."),
    StepToJudge(Q1, ("Step 1: He has 3 apples.", "Step 2: He buys 4, so 3 + 4 = 7."), "Step 3: The answer is 7."),
    StepToJudge(Q1, ("Step 1: He has 3 apples.",), "Step 2: 3 * 4 = 12."),
    StepToJudge(Q1, ("Step 1: He has 3 apples.", "Step 2: 3 * 4 = 12."), "Step 3: The answer is 12."),
    StepToJudge(Q2, (), "Step 1: 6 * 5 = 30"),
    StepToJudge(Q2, ("Step 1: 6 * 5 = 30",), "Step 2: The answer is 30."),
    StepToJudge("Bo has 9 cards.", (), "Step 1: 9"),
]
PAIRS = [
    PairToJudge(Q1, (), "Step 1: 3 + 4 = 7", "Step 1: 3 + 4 = 8"),
    PairToJudge(Q1, ("Step 1: He has 3 apples.",), "Step 2: 3 + 4 = 7", "Step 2: The answer is 12."),
    PairToJudge(Q1, ("Step 1: He has 3 apples.",), "Step 2: The answer is 12.", "Step 2: 3 * 4 = 12"),
    PairToJudge(Q2, (), "Step 1: 6 * 5 = 30", "Step 1: 6 + 5 = 11"),
]


def _count_tokens(model):
    """A forward pre-hook counting the input tokens the model processes."""
    seen = []

    def hook(_module, _args, kwargs):
        seen.append(kwargs["input_ids"].numel())

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------- pointwise


def test_pointwise_scores_are_probabilities_and_batch_invariant(tiny):
    model, tok = tiny
    one = PointwiseJudge(model, tok, batch_size=1).score(ITEMS)
    many = PointwiseJudge(model, tok, batch_size=8).score(ITEMS)
    assert all(0.0 < s < 1.0 for s in one)
    assert one == pytest.approx(many, abs=1e-5)
    assert len(set(round(s, 6) for s in one)) > 1  # different contexts give different scores


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_pointwise_prefix_cache_matches_plain_batches(tiny, batch_size):
    model, tok = tiny
    seen, handle = _count_tokens(model)
    try:
        plain = PointwiseJudge(model, tok, batch_size=batch_size, prefix_cache=False).score(CHAIN_ITEMS)
        plain_tokens = sum(seen)
        seen.clear()
        cached = PointwiseJudge(model, tok, batch_size=batch_size, prefix_cache=True).score(CHAIN_ITEMS)
        cached_tokens = sum(seen)
    finally:
        handle.remove()
    assert cached == pytest.approx(plain, abs=1e-4)
    assert cached_tokens < 0.8 * plain_tokens  # the shared starts really were encoded once


def test_chains_put_the_longest_context_first():
    groups = chains([(it.question, it.previous) for it in CHAIN_ITEMS])
    assert sorted(i for g in groups for i in g) == list(range(len(CHAIN_ITEMS)))
    for g in groups:
        head = CHAIN_ITEMS[g[0]].previous
        assert all(CHAIN_ITEMS[i].previous == head[:len(CHAIN_ITEMS[i].previous)] for i in g)
    assert len(groups) == 4  # two Q1 solutions, Q2, and the lone Bo item


def test_prefix_cache_falls_back_for_unsupported_models(tiny, caplog, monkeypatch):
    model, tok = tiny
    plain = PointwiseJudge(model, tok, prefix_cache=False).score(CHAIN_ITEMS)
    monkeypatch.setattr(forward, "prefix_cache_supported", lambda m: False)
    with caplog.at_level("WARNING"):
        again = PointwiseJudge(model, tok, prefix_cache=True).score(CHAIN_ITEMS)
    assert again == pytest.approx(plain, abs=1e-6) and "plain batches" in caplog.text


def test_pointwise_prompt_contains_question_previous_and_step(tiny):
    text = PointwiseJudge(*tiny).prompt(ITEMS[1])
    assert "Tom has 3 apples" in text and "Step 1: 3 + 4 = 7" in text and "Step 2: The answer is 7." in text
    assert text.index("Step 1: 3 + 4 = 7") < text.index("Step 2: The answer is 7.")
    assert text.endswith("<|im_start|>assistant\n")


def test_user_template_override(tiny, tmp_path):
    t = tmp_path / "judge.jinja"
    t.write_text("Q={{ question }} S={{ step }} Yes or No?")
    judge = PointwiseJudge(*tiny, template=str(t))
    assert "Q=Tom has 3 apples and buys 4. How many? S=Step 1: 3 + 4 = 7 Yes or No?" in judge.prompt(ITEMS[0])


@pytest.mark.parametrize(("cls", "content", "match"), [
    (PointwiseJudge, None, "cannot be read"),
    (PointwiseJudge, "{% if %}", "judge.jinja:1"),
    (PointwiseJudge, "{{ question }} {{ step }} {{ answer }}", "'answer' is undefined"),
    (PointwiseJudge, "{{ question }} is it right?", "never shows step"),
    (PairwiseJudge, "{{ question }} {{ a }}", "never shows b"),
    (PairwiseJudge, "{{ question }} {{ a }} {{ b }} {{ step }}", "'step' is undefined"),
])
def test_bad_template_is_a_config_error(tiny, tmp_path, cls, content, match):
    t = tmp_path / "judge.jinja"
    if content is not None:
        t.write_text(content)
    with pytest.raises(ConfigError, match=match):
        cls(*tiny, template=str(t))


# ---------------------------------------------------------------- pairwise (logit)


def test_pairwise_prompt_is_paper_format_and_prefilled(tiny):
    judge = PairwiseJudge(*tiny)
    text = judge.prompt(Q1, ("Step 1: He has 3 apples.",), "Step 2: 3 + 4 = 7", "Step 2: 3 * 4 = 12")
    assert text.index(Q1) < text.index("Step 1: He has 3 apples.")
    assert "[The Start of Step A]\nStep 2: 3 + 4 = 7\n[The End of Step A]" in text
    assert "[The Start of Step B]\nStep 2: 3 * 4 = 12\n[The End of Step B]" in text
    assert '"[[A]]" if step A is better, "[[B]]" if step B is better' in text
    assert text.endswith("<|im_start|>assistant\n[[") and judge.prefill == "[["


def test_pairwise_both_orders_swapping_gives_one_minus_p(tiny):
    judge = PairwiseJudge(*tiny, batch_size=3)
    swapped = [PairToJudge(p.question, p.previous, p.b, p.a) for p in PAIRS]
    out, back = judge.compare(PAIRS), judge.compare(swapped)
    for v, w in zip(out, back, strict=True):
        assert 0.0 < v.p_a < 1.0
        assert v.p_a == pytest.approx(1.0 - w.p_a, abs=1e-5)
        assert [o["order"] for o in v.orders] == ["AB", "BA"]
        assert v.p_a == pytest.approx(sum(o["p_a"] for o in v.orders) / 2)
        assert v.winner in {"A", "B", "tie"} and v.raw is None


def test_pairwise_single_order_and_prefix_cache_match_plain(tiny):
    model, tok = tiny
    seen, handle = _count_tokens(model)
    try:
        plain = PairwiseJudge(model, tok, prefix_cache=False, batch_size=4).compare(PAIRS * 2)
        plain_tokens = sum(seen)
        seen.clear()
        cached = PairwiseJudge(model, tok, prefix_cache=True, batch_size=4).compare(PAIRS * 2)
        cached_tokens = sum(seen)
    finally:
        handle.remove()
    assert [v.p_a for v in cached] == pytest.approx([v.p_a for v in plain], abs=1e-4)
    assert cached_tokens < 0.5 * plain_tokens
    one = PairwiseJudge(model, tok, both_orders=False).compare(PAIRS)
    assert all(len(v.orders) == 1 for v in one)
    assert [v.p_a for v in one] == pytest.approx([v.orders[0]["p_a"] for v in plain[:4]], abs=1e-4)


@pytest.mark.parametrize(("p_as", "margin", "expected"), [
    ([0.9, 0.7], 0.1, ("A", 0.8)),
    ([0.2, 0.3], 0.1, ("B", 0.25)),
    ([0.9, 0.3], 0.1, ("tie", 0.6)),  # the orders disagree: position bias, not preference
    ([0.3, 0.9], 0.0, ("tie", 0.6)),
    ([0.53, 0.51], 0.1, ("tie", 0.52)),  # agree, but within the margin
    ([0.53, 0.51], 0.0, ("A", 0.52)),
    ([0.56, 0.56], 0.1, ("A", 0.56)),
    ([0.5, 0.5], 0.0, ("tie", 0.5)),
    ([0.7], 0.1, ("A", 0.7)),
    ([0.52], 0.1, ("tie", 0.52)),
    ([0.1], 0.5, ("B", 0.1)),
    ([None, 0.9], 0.1, (None, None)),
    ([], 0.1, (None, None)),
])
def test_combine_orders_tie_rule(p_as, margin, expected):
    winner, p_a = combine_orders(p_as, margin)
    assert winner == expected[0]
    assert p_a == (None if expected[1] is None else pytest.approx(expected[1]))


def test_tournament_win_counts_sum_to_number_of_matches(tiny):
    judge = PairwiseJudge(*tiny)
    cands = ["Step 2: 3 + 4 = 7", "Step 2: 3 + 4 = 8", "Step 2: The answer is 7.", "Step 2: 4 + 3 = 7", "Step 2: 7"]
    t = judge.tournament(Q1, ("Step 1: He has 3 apples.",), cands)
    n = len(cands)
    assert sum(t.wins) == n * (n - 1) / 2
    assert [(m["i"], m["j"]) for m in t.matches] == [(i, j) for i in range(n) for j in range(i + 1, n)]
    batched = judge.tournaments([(Q1, ("Step 1: He has 3 apples.",), cands), (Q2, (), cands[:3])])
    assert batched[0].wins == t.wins and sum(batched[1].wins) == 3
    assert [m["p_a"] for m in batched[0].matches] == pytest.approx([m["p_a"] for m in t.matches], abs=1e-5)


class ScriptedLM:
    """A fake causal LM whose next-token logits after a pairwise prompt follow a script.

    The logit of "A" over "B" is quality(step shown as A) - quality(step shown
    as B) + ``bias`` (a preference for whatever is shown first); quality is
    the number after ``q=`` in the step.
    """

    device = torch.device("cpu")
    config = None

    def __init__(self, tok, judge, bias=0.0):
        self.tok, self.bias = tok, bias
        self.a, self.b = judge.a_ids[0], judge.b_ids[0]

    @staticmethod
    def quality(text, label):
        step = re.search(rf"\[The Start of Step {label}\]\n(.*?)\n\[The End of Step {label}\]", text, re.S).group(1)
        return float(re.search(r"q=(\d+)", step).group(1))

    def __call__(self, input_ids, attention_mask, **_):
        logits = torch.full((input_ids.shape[0], 1, len(self.tok)), -1e4)
        for r in range(input_ids.shape[0]):
            text = self.tok.decode(input_ids[r][attention_mask[r].bool()])
            logits[r, 0, self.a] = self.quality(text, "A") - self.quality(text, "B") + self.bias
            logits[r, 0, self.b] = 0.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize(("bias", "both", "expected"), [
    (0.0, True, [4.0, 3.0, 2.0, 1.0, 0.0]),
    (0.5, True, [4.0, 3.0, 2.0, 1.0, 0.0]),  # a small position bias cancels out
    (3.0, True, [3.5, 3.0, 2.0, 1.0, 0.5]),  # a strong bias: only the clear differences (q 9 vs 1) survive
    (20.0, True, [2.0, 2.0, 2.0, 2.0, 2.0]),  # whatever is shown first wins: every match is a tie
    (20.0, False, [4.0, 3.0, 2.0, 1.0, 0.0]),  # one order: candidate i is always shown first and "wins"
])
def test_scripted_tournament(tiny, bias, both, expected):
    _, tok = tiny
    judge = PairwiseJudge(*tiny, both_orders=both, prefix_cache=False)
    judge.model = ScriptedLM(tok, judge, bias)
    cands = [f"Step 1: option q={q}" for q in (9, 7, 5, 3, 1)]
    t = judge.tournament(Q1, (), cands)
    assert t.wins == expected and sum(t.wins) == 10
    if both and bias == 0.0:
        assert all(m["winner"] == "A" and m["p_a"] > 0.5 for m in t.matches)
        expected_p = 1 / (1 + math.exp(-2.0))  # q differs by 2 between neighbours
        assert t.matches[0]["p_a"] == pytest.approx(expected_p, abs=1e-5)


# ---------------------------------------------------------------- factory and config


def test_make_judge_modes_and_errors(tiny):
    assert isinstance(make_judge("pointwise", *tiny), PointwiseJudge)
    judge = make_judge("pairwise", *tiny, both_orders=False, tie_margin=0.2, batch_size=4)
    assert isinstance(judge, PairwiseJudge) and judge.mode == "pairwise"
    assert (judge.both_orders, judge.tie_margin, judge.batch_size) == (False, 0.2, 4)
    with pytest.raises(ConfigError, match="not supported"):
        make_judge("telepathy", *tiny)
    with pytest.raises(ConfigError, match="both_orders"):
        make_judge("pointwise", *tiny, both_orders=True)


def test_make_judge_from_config(tiny, tmp_path):
    t = tmp_path / "pair.jinja"
    t.write_text("{{ question }} | {{ a }} | {{ b }} | {% for s in previous %}{{ s }};{% endfor %}")
    cfg = JudgeConfig(mode="pairwise", pairwise_template=str(t), both_orders=False, tie_margin=0.3,
                      prefix_cache=False)
    judge = make_judge_from_config(cfg, *tiny)
    assert isinstance(judge, PairwiseJudge) and not judge.both_orders and judge.tie_margin == 0.3
    assert "Q | x | y | s1;" in judge.prompt("Q", ("s1",), "x", "y")
    point = make_judge_from_config(cfg, *tiny, mode="pointwise")
    assert isinstance(point, PointwiseJudge) and not point.prefix_cache


@pytest.mark.parametrize(("override", "match"), [
    ("judge.mode=telepathy", "judge.mode"),
    ("judge.tie_margin=1.5", "tie_margin"),
    ("judge.max_new_tokens=0", "max_new_tokens"),
    ("judge.batch_size=0", "batch_size"),
    ("judge.both_orders=maybe", "both_orders"),
])
def test_judge_config_validation(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize("mode", ["pointwise", "pairwise", "generative"])
def test_judge_config_accepts_modes(mode):
    assert load_config(None, [f"judge.mode={mode}"]).judge.mode == mode
