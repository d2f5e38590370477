import math
import re
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presrm.config import JudgeConfig, load_config
from presrm.engines import HFEngine
from presrm.engines import hf_forward as forward
from presrm.errors import ConfigError
from presrm.judge import (
    GenerativeJudge,
    OutcomeJudge,
    PairToJudge,
    PairwiseJudge,
    PointwiseJudge,
    SolutionToJudge,
    StepToJudge,
    combine_orders,
    make_judge,
    make_judge_from_config,
    parse_score,
    parse_verdict,
)
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
    one = PointwiseJudge(HFEngine(model, tok), batch_size=1).score(ITEMS)
    many = PointwiseJudge(HFEngine(model, tok), batch_size=8).score(ITEMS)
    assert all(0.0 < s < 1.0 for s in one)
    assert one == pytest.approx(many, abs=1e-5)
    assert len(set(round(s, 6) for s in one)) > 1  # different contexts give different scores


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_pointwise_prefix_cache_matches_plain_batches(tiny, batch_size):
    model, tok = tiny
    seen, handle = _count_tokens(model)
    try:
        plain = PointwiseJudge(HFEngine(model, tok), batch_size=batch_size, prefix_cache=False).score(CHAIN_ITEMS)
        plain_tokens = sum(seen)
        seen.clear()
        cached = PointwiseJudge(HFEngine(model, tok), batch_size=batch_size, prefix_cache=True).score(CHAIN_ITEMS)
        cached_tokens = sum(seen)
    finally:
        handle.remove()
    assert cached == pytest.approx(plain, abs=1e-4)
    assert cached_tokens < 0.8 * plain_tokens  # the shared starts really were encoded once


def test_root_prefix_is_encoded_once_and_matches_plain(tiny):
    """No groups: the start every prompt shares (chat turn + instruction) is encoded once for the call."""
    model, tok = tiny
    judge = PointwiseJudge(HFEngine(model, tok))
    prompts = [judge.prompt(it) for it in ITEMS]
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    common = min(forward._lcp(ids[0], x) for x in ids)
    assert common >= forward.MIN_REUSE  # the premise: these prompts do share a long start
    sets = [judge.yes_ids, judge.no_ids]
    seen, handle = _count_tokens(model)
    try:
        plain = forward.answer_logprobs(model, tok, prompts, sets, batch_size=2)
        plain_tokens = sum(seen)
        seen.clear()
        rooted = forward.answer_logprobs(model, tok, prompts, sets, batch_size=2, prefix_cache=True)
        rooted_calls = list(seen)
    finally:
        handle.remove()
    assert torch.allclose(rooted, plain, atol=1e-4)
    assert rooted_calls[0] == common  # the root pass: one row, the shared start only
    assert sum(rooted_calls) <= plain_tokens - (len(prompts) - 1) * common


_WORDS = ["Judge the step.", " Tom has 3 apples.", " 3 + 4 = 7.", " The answer is 7.", " x", "\n"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stems=st.lists(st.lists(st.sampled_from(_WORDS), min_size=3, max_size=20), min_size=1, max_size=3),
       tails=st.lists(st.tuples(st.integers(0, 2), st.lists(st.sampled_from(_WORDS), min_size=1, max_size=8)),
                      min_size=1, max_size=7),
       shared=st.sampled_from(["", "A long common instruction that every prompt of the call starts with. " * 2]),
       batch_size=st.integers(1, 4), data=st.data())
def test_prefix_reuse_matches_plain_for_any_prompts_and_groups(tiny, stems, tails, shared, batch_size, data):
    """Root and group reuse give the plain path's numbers whatever the prompts share and however they are grouped.

    Each prompt is an optional common instruction, one of a few stems (so groups really share a start) and
    its own tail; the groups follow the stems or are an arbitrary partition, with any member as head.
    """
    model, tok = tiny
    prompts = [shared + "".join(stems[i % len(stems)]) + "".join(tail) for i, tail in tails]
    order = data.draw(st.permutations(range(len(prompts))))
    if data.draw(st.booleans()):  # by stem, as chains() would group them (in any head order)
        groups = [[i for i in order if tails[i][0] % len(stems) == g] for g in range(len(stems))]
        groups = [g for g in groups if g]
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(prompts) - 1)), max_size=3)))
        groups = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(prompts)], strict=True) if order[a:b]]
    sets = [[1, 2], [3]]
    plain = forward.answer_logprobs(model, tok, prompts, sets, batch_size=batch_size)
    reused = forward.answer_logprobs(model, tok, prompts, sets, batch_size=batch_size, groups=groups,
                                     prefix_cache=True)
    assert torch.allclose(reused, plain, atol=1e-4)


def test_no_root_when_prompts_share_little(tiny):
    model, tok = tiny
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Tom has 3 apples.", "Bo has 9 cards.")]
    assert forward._root(model, ids, 0) is None
    assert forward._root(model, ids[:1], 0) is None  # a single prompt has nothing to share


@pytest.mark.parametrize(("lengths", "batch_size", "expected"), [
    ([10, 10, 10], 2, [[0, 1], [2]]),  # the row limit
    ([100, 90, 80, 79], 16, [[0, 1, 2], [3]]),  # 79 < 0.8 * 100: its padding would exceed MAX_PAD
    ([100, 50, 45, 41, 40], 16, [[0], [1, 2, 3, 4]]),
    ([5], 4, [[0]]),
    ([], 4, []),
])
def test_batches_bound_rows_and_padding(lengths, batch_size, expected):
    assert list(forward._batches(lengths, batch_size)) == expected


def test_chains_put_the_longest_context_first():
    groups = chains([(it.question, it.previous) for it in CHAIN_ITEMS])
    assert sorted(i for g in groups for i in g) == list(range(len(CHAIN_ITEMS)))
    for g in groups:
        head = CHAIN_ITEMS[g[0]].previous
        assert all(CHAIN_ITEMS[i].previous == head[:len(CHAIN_ITEMS[i].previous)] for i in g)
    assert len(groups) == 4  # two Q1 solutions, Q2, and the lone Bo item


def test_prefix_cache_falls_back_for_unsupported_models(tiny, caplog, monkeypatch):
    model, tok = tiny
    plain = PointwiseJudge(HFEngine(model, tok), prefix_cache=False).score(CHAIN_ITEMS)
    monkeypatch.setattr(forward, "prefix_cache_supported", lambda m: False)
    with caplog.at_level("WARNING"):
        again = PointwiseJudge(HFEngine(model, tok), prefix_cache=True).score(CHAIN_ITEMS)
    assert again == pytest.approx(plain, abs=1e-6) and "plain batches" in caplog.text


def test_pointwise_prompt_contains_question_previous_and_step(tiny):
    text = PointwiseJudge(HFEngine(*tiny)).prompt(ITEMS[1])
    assert "Tom has 3 apples" in text and "Step 1: 3 + 4 = 7" in text and "Step 2: The answer is 7." in text
    assert text.index("Step 1: 3 + 4 = 7") < text.index("Step 2: The answer is 7.")
    assert text.endswith("<|im_start|>assistant\n")


def test_user_template_override(tiny, tmp_path):
    t = tmp_path / "judge.jinja"
    t.write_text("Q={{ question }} S={{ step }} Yes or No?")
    judge = PointwiseJudge(HFEngine(*tiny), template=str(t))
    assert "Q=Tom has 3 apples and buys 4. How many? S=Step 1: 3 + 4 = 7 Yes or No?" in judge.prompt(ITEMS[0])


@pytest.mark.parametrize(("cls", "content", "match"), [
    (PointwiseJudge, None, "cannot be read"),
    (PointwiseJudge, "{% if %}", "judge.jinja, line 1"),
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
        cls(HFEngine(*tiny), template=str(t))


# ---------------------------------------------------------------- pairwise (logit)


def test_pairwise_prompt_is_paper_format_and_prefilled(tiny):
    judge = PairwiseJudge(HFEngine(*tiny))
    text = judge.prompt(PairToJudge(Q1, ("Step 1: He has 3 apples.",), "Step 2: 3 + 4 = 7", "Step 2: 3 * 4 = 12"))
    assert text.index(Q1) < text.index("Step 1: He has 3 apples.")
    assert "[The Start of Step A]\nStep 2: 3 + 4 = 7\n[The End of Step A]" in text
    assert "[The Start of Step B]\nStep 2: 3 * 4 = 12\n[The End of Step B]" in text
    assert '"[[A]]" if step A is better, "[[B]]" if step B is better' in text
    assert text.endswith("<|im_start|>assistant\n[[") and judge.prefill == "[["


def test_pairwise_both_orders_swapping_gives_one_minus_p(tiny):
    judge = PairwiseJudge(HFEngine(*tiny), batch_size=3)
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
        plain = PairwiseJudge(HFEngine(model, tok), prefix_cache=False, batch_size=4).compare(PAIRS * 2)
        plain_tokens = sum(seen)
        seen.clear()
        cached = PairwiseJudge(HFEngine(model, tok), prefix_cache=True, batch_size=4).compare(PAIRS * 2)
        cached_tokens = sum(seen)
    finally:
        handle.remove()
    assert [v.p_a for v in cached] == pytest.approx([v.p_a for v in plain], abs=1e-4)
    assert cached_tokens < 0.5 * plain_tokens
    one = PairwiseJudge(HFEngine(model, tok), both_orders=False).compare(PAIRS)
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
    judge = PairwiseJudge(HFEngine(*tiny))
    cands = ["Step 2: 3 + 4 = 7", "Step 2: 3 + 4 = 8", "Step 2: The answer is 7.", "Step 2: 4 + 3 = 7", "Step 2: 7"]
    t = judge.tournament(Q1, ("Step 1: He has 3 apples.",), cands)
    n = len(cands)
    assert sum(t.wins) == n * (n - 1) / 2
    assert [(m["i"], m["j"]) for m in t.matches] == [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert judge.tournaments([]) == [] and judge.compare([]) == [] and PointwiseJudge(HFEngine(*tiny)).score([]) == []
    assert judge.tournament(Q1, (), cands[:1]).wins == [0.0]
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
    judge = PairwiseJudge(HFEngine(*tiny), both_orders=both, prefix_cache=False)
    judge.engine.model = ScriptedLM(tok, judge, bias)
    cands = [f"Step 1: option q={q}" for q in (9, 7, 5, 3, 1)]
    t = judge.tournament(Q1, (), cands)
    assert t.wins == expected and sum(t.wins) == 10
    if both and bias == 0.0:
        assert all(m["winner"] == "A" and m["p_a"] > 0.5 for m in t.matches)
        expected_p = 1 / (1 + math.exp(-2.0))  # q differs by 2 between neighbours
        assert t.matches[0]["p_a"] == pytest.approx(expected_p, abs=1e-5)


# ---------------------------------------------------------------- factory and config


def test_make_judge_modes_and_errors(tiny):
    assert isinstance(make_judge("pointwise", HFEngine(*tiny)), PointwiseJudge)
    judge = make_judge("pairwise", HFEngine(*tiny), both_orders=False, tie_margin=0.2, batch_size=4)
    assert isinstance(judge, PairwiseJudge) and judge.mode == "pairwise"
    assert (judge.both_orders, judge.tie_margin, judge.batch_size) == (False, 0.2, 4)
    with pytest.raises(ConfigError, match="is not one of"):
        make_judge("telepathy", HFEngine(*tiny))
    with pytest.raises(ConfigError, match="both_orders"):
        make_judge("pointwise", HFEngine(*tiny), both_orders=True)


def test_make_judge_from_config(tiny, tmp_path):
    t = tmp_path / "pair.jinja"
    t.write_text("{{ question }} | {{ a }} | {{ b }} | {% for s in previous %}{{ s }};{% endfor %}")
    cfg = JudgeConfig(mode="pairwise", pairwise_template=str(t), both_orders=False, tie_margin=0.3,
                      prefix_cache=False)
    judge = make_judge_from_config(cfg, HFEngine(*tiny))
    assert isinstance(judge, PairwiseJudge) and not judge.both_orders and judge.tie_margin == 0.3
    assert "Q | x | y | s1;" in judge.prompt(PairToJudge("Q", ("s1",), "x", "y"))
    point = make_judge_from_config(cfg, HFEngine(*tiny), mode="pointwise")
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


# ---------------------------------------------------------------- generative


VERDICTS = [
    ("Step A is right, B adds wrongly. [[A]]", "A"),
    ("[[B]]", "B"),
    ('I must output "[[A]]" if A is better or "[[B]]" otherwise. Step B errs. My verdict: [[A]]', "A"),
    ("[[A]] ... on reflection, [[B]]", "B"),  # the last verdict counts
    ("Final verdict: [[ B ]]", "B"),
    ("[[Step A]]", "A"),
    ("[[a]]", "A"),
    ("**[[B]]**", "B"),
    ("[[A]", "A"),
    ("Step A computes 3 + 4 = 7 correctly. Therefore: [[A", "A"),  # cut off by max_new_tokens
    ("The better step is [A].", "A"),
    ("[B]", "B"),
    ("Verdict: B", "B"),
    ("Final verdict: **A**", "A"),
    ("My final answer is Step B.", "B"),
    ("Decision - A", "A"),
    ("Step A is better than step B.", "A"),
    ("A is more accurate.", "A"),
    ("I choose B.", "B"),
    ("I would pick step A, because it adds correctly.", "A"),
    ("Step B is clearly better; step B is the better choice.", "B"),
    # ambiguous or no verdict: None, never a guess
    ("Step A is better. Actually, Step B is better.", None),
    ("Neither A nor B is better.", None),
    ("Both are equally good, though Step A is better in style.", None),
    ("It is a tie.", None),
    ("Verdict: a tie", None),
    ("Verdict: A/B", None),
    ("Step A is not better.", None),
    ("Step B is incorrect.", None),
    ("Step A: 3 + 4 = 7. Step B: 3 + 4 = 8.", None),
    ("The answer is 12.", None),
    ("[[C]]", None),
    ("[[AB]]", None),
    ("[[Answer]]", None),
    ("", None),
]


@pytest.mark.parametrize(("reply", "expected"), VERDICTS)
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


_NO_BRACKETS = st.text(st.characters(blacklist_characters="[]"), max_size=80)


@given(st.text(max_size=200))
def test_parse_verdict_never_fails(text):
    assert parse_verdict(text) in {"A", "B", None}


@given(_NO_BRACKETS, st.sampled_from(["A", "B"]), _NO_BRACKETS)
def test_parse_verdict_reads_the_requested_format_anywhere(before, letter, after):
    assert parse_verdict(f"{before}[[{letter}]]{after}") == letter


@given(st.text(st.characters(blacklist_characters="ABab"), max_size=200))
def test_parse_verdict_never_guesses_without_a_letter(text):
    assert parse_verdict(text) is None


class ScriptedGenerator:
    """A fake LM whose greedy ``generate`` writes the reply ``script(prompt text)``."""

    device = torch.device("cpu")

    def __init__(self, tok, script):
        self.tok, self.script = tok, script
        self.prompts: list[str] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **_):
        rows = []
        for r in range(input_ids.shape[0]):
            text = self.tok.decode(input_ids[r][attention_mask[r].bool()])
            self.prompts.append(text)
            rows.append(self.tok.encode(self.script(text), add_special_tokens=False)[:max_new_tokens])
        width = max(len(x) for x in rows)
        new = torch.full((len(rows), width), self.tok.pad_token_id)
        for r, x in enumerate(rows):
            new[r, :len(x)] = torch.tensor(x, dtype=torch.long)
        return torch.cat([input_ids, new], dim=1)


def _shown(text, label):
    step = re.search(rf"\[The Start of Step {label}\]\n(.*?)\n\[The End of Step {label}\]", text, re.S).group(1)
    return int(re.search(r"q=(\d+)", step).group(1))


def _fair(text):
    a, b = _shown(text, "A"), _shown(text, "B")
    if a == 0 or b == 0:
        return "I am not sure."
    return f"Step {'A' if a > b else 'B'} has the higher quality. [[{'A' if a > b else 'B'}]]"


@pytest.mark.parametrize(("script", "both", "wins", "winners"), [
    (_fair, True, [3.0, 2.0, 1.0, 0.0], {"A"}),
    (lambda text: "Explanation... [[A]]", True, [1.5, 1.5, 1.5, 1.5], {"tie"}),  # pure position bias
    (lambda text: "Explanation... [[A]]", False, [3.0, 2.0, 1.0, 0.0], {"A"}),
    (lambda text: "Both look fine.", True, [0.0, 0.0, 0.0, 0.0], {None}),
])
def test_generative_tournament_scripted(tiny, script, both, wins, winners):
    _, tok = tiny
    judge = GenerativeJudge(HFEngine(ScriptedGenerator(tok, script), tok), both_orders=both, max_new_tokens=64)
    t = judge.tournament(Q1, (), [f"Step 1: option q={q}" for q in (9, 7, 5, 3)])
    assert t.wins == wins and {m["winner"] for m in t.matches} == winners
    assert len(judge.engine.model.prompts) == 6 * (2 if both else 1)
    assert all(p.endswith("<|im_start|>assistant\n") and "[[A]]" in p for p in judge.engine.model.prompts)


def test_generative_keeps_raw_text_and_unparseable_order_gives_none(tiny):
    _, tok = tiny
    judge = GenerativeJudge(HFEngine(ScriptedGenerator(tok, _fair), tok))
    v, half = judge.compare([PairToJudge(Q1, (), "Step 1: q=3", "Step 1: q=5"),
                             PairToJudge(Q1, (), "Step 1: q=3", "Step 1: q=0")])
    assert v.winner == "B" and v.p_a == 0.0
    assert [(o["order"], o["verdict"], o["p_a"]) for o in v.orders] == [("AB", "B", 0.0), ("BA", "B", 0.0)]
    assert v.orders[0]["raw"].endswith("[[B]]") and v.orders[1]["raw"].endswith("[[A]]")  # B was shown first
    assert "[AB] Step B has" in v.raw and "[BA] Step A has" in v.raw
    assert half.winner is None and half.p_a is None and half.orders[0]["raw"] == "I am not sure."


def test_generative_on_tiny_model(tiny):
    """The real decoding path: each order's reply is the engine's own greedy reply to the pair as shown, cut at
    ``max_new_tokens``, kept raw. The tiny model writes newlines only (no verdict), so every pair is None."""
    judge = GenerativeJudge(HFEngine(*tiny), max_new_tokens=6, batch_size=4)
    out = judge.compare(PAIRS[:2])
    alone = HFEngine(*tiny)  # one prompt at a time: no batch, no padding
    for item, v in zip(PAIRS[:2], out, strict=True):
        shown = {"AB": item, "BA": PairToJudge(item.question, item.previous, item.b, item.a)}
        assert [o["order"] for o in v.orders] == ["AB", "BA"]
        for o in v.orders:
            reply = alone.greedy([judge.prompt(shown[o["order"]])], max_new_tokens=6, batch_size=1)[0]
            assert o["raw"] == reply == "\n" * 6 and (o["verdict"], o["p_a"]) == (None, None)
        assert (v.winner, v.p_a) == (None, None)
    assert make_judge_from_config(JudgeConfig(mode="generative", max_new_tokens=5), HFEngine(*tiny)).max_new_tokens == 5


# ---------------------------------------------------------------- outcome


SCORES = [
    ("Relevant and correct. Score: 4", 4.0),
    ("score: 0", 0.0),
    ("Score: 5/5", 5.0),
    ("Score: **3**", 3.0),
    ("I award a score of 2 out of 5.", 2.0),
    ("Total score: 5", 5.0),
    ("Score (total): 1", 1.0),
    ("Score:\n2", 2.0),
    ("Score: 4.5", 4.5),
    ("Score: 3. On reflection the last step is wrong. Score: 2", 2.0),
    ("Score: <total points>", None),
    ("Score: 7", None),
    ("Score: 8/10", None),
    ("Score: -1", None),
    ("I would give it 4 points.", None),
    ("4/5", None),
    ("", None),
]


@pytest.mark.parametrize(("reply", "expected"), SCORES)
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


@given(st.text(max_size=200))
def test_parse_score_never_fails(text):
    s = parse_score(text)
    assert s is None or 0.0 <= s <= 5.0


@given(st.text(max_size=100).filter(lambda t: "score" not in t.lower()), st.integers(0, 5))
def test_parse_score_reads_the_format(text, n):
    assert parse_score(f"{text} Score: {n}") == n


def test_outcome_judge_scripted(tiny):
    _, tok = tiny

    def rubric(text):
        m = re.search(r"answer is (\d+)", text)
        return "No idea." if m is None else f"Correct final answer. Score: {min(int(m.group(1)), 5)}"

    judge = OutcomeJudge(HFEngine(ScriptedGenerator(tok, rubric), tok))
    scores = judge.score_solutions([Q1, Q1, Q2], ["Step 1: 3 + 4. The answer is 4.", "Step 1: dunno", "answer is 5"])
    assert scores == [0.8, None, 1.0]
    assert [v.points for v in judge.last_verdicts] == [4.0, None, 5.0] and judge.last_verdicts[1].raw == "No idea."
    shown = "[The Start of the Solution]\nStep 1: dunno\n[The End of the Solution]"
    assert any(shown in p for p in judge.engine.model.prompts)
    assert all("Score: <total points>" in p for p in judge.engine.model.prompts)
    with pytest.raises(ValueError, match="2 questions but 1 solutions"):
        judge.score_solutions([Q1, Q2], ["x"])


def test_outcome_judge_on_tiny_model_and_template_override(tiny, tmp_path):
    t = tmp_path / "rubric.jinja"
    t.write_text("Rate {{ solution }} for {{ question }}. Score: <0-5>")
    judge = make_judge("outcome", HFEngine(*tiny), template=str(t), max_new_tokens=4)
    assert "Rate Step 1: 7 for Q. Score: <0-5>" in judge.prompt(SolutionToJudge("Q", "Step 1: 7"))
    out = judge.score_solutions([Q1, Q2], ["Step 1: 3 + 4 = 7", "Step 1: 6 * 5 = 30"])
    assert len(out) == 2 and all(s is None or 0.0 <= s <= 1.0 for s in out)
    bad = tmp_path / "bad.jinja"
    bad.write_text("{{ question }}")
    with pytest.raises(ConfigError, match="never shows solution"):
        make_judge("outcome", HFEngine(*tiny), template=str(bad))
