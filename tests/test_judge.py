import pytest

from presrm.errors import ConfigError
from presrm.judge import PointwiseJudge, StepToJudge, make_judge

ITEMS = [
    StepToJudge("Tom has 3 apples and buys 4. How many?", (), "Step 1: 3 + 4 = 7"),
    StepToJudge("Tom has 3 apples and buys 4. How many?", ("Step 1: 3 + 4 = 7",), "Step 2: The answer is 7."),
    StepToJudge("A box holds 6 pens. How many pens in 5 boxes?", (), "Step 1: 6 * 5 = 31"),
]


def test_pointwise_scores_are_probabilities_and_batch_invariant(tiny):
    model, tok = tiny
    one = PointwiseJudge(model, tok, batch_size=1).score(ITEMS)
    many = PointwiseJudge(model, tok, batch_size=8).score(ITEMS)
    assert all(0.0 < s < 1.0 for s in one)
    assert one == pytest.approx(many, abs=1e-5)
    assert len(set(round(s, 6) for s in one)) > 1  # different contexts give different scores


def test_prompt_contains_question_previous_and_step(tiny):
    _, tok = tiny
    text = PointwiseJudge(*tiny).prompt(ITEMS[1])
    assert "Tom has 3 apples" in text and "Step 1: 3 + 4 = 7" in text and "Step 2: The answer is 7." in text
    assert text.index("Step 1: 3 + 4 = 7") < text.index("Step 2: The answer is 7.")
    assert text.endswith("<|im_start|>assistant\n")


def test_user_template_override(tiny, tmp_path):
    t = tmp_path / "judge.jinja"
    t.write_text("Q={{ question }} S={{ step }} Yes or No?")
    judge = PointwiseJudge(*tiny, template=str(t))
    assert "Q=Tom has 3 apples and buys 4. How many? S=Step 1: 3 + 4 = 7 Yes or No?" in judge.prompt(ITEMS[0])


@pytest.mark.parametrize(("content", "match"), [(None, "cannot be read"), ("{% if %}", "judge.jinja:1")])
def test_bad_template_is_a_config_error(tiny, tmp_path, content, match):
    t = tmp_path / "judge.jinja"
    if content is not None:
        t.write_text(content)
    with pytest.raises(ConfigError, match=match):
        PointwiseJudge(*tiny, template=str(t))


def test_unknown_mode(tiny):
    with pytest.raises(ConfigError, match="pairwise"):
        make_judge("pairwise", *tiny)
