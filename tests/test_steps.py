"""Table-driven tests of presrm.steps: each case is an input and the step texts expected from it."""

from __future__ import annotations

import random
import re

import pytest

from presrm.jsonio import read_jsonl
from presrm.steps import (
    SegmentOptions,
    final_answer_index,
    format_steps,
    gold_to_steps,
    is_final_answer,
    marker_family,
    segment,
    step_body,
    step_parts,
)
from presrm.verify import extract_answer
from tests.gsm8k_data import GSM8K_DIR


def texts(text: str, options: SegmentOptions | None = None) -> list[str]:
    return [step.text for step in segment(text, options)]


STEP_MARKERS = [
    ("Step 1: 16 - 3 = 13\nStep 2: 13 * 2 = 26\nThe answer is 26.",
     ["Step 1: 16 - 3 = 13", "Step 2: 13 * 2 = 26", "The answer is 26."]),
    # All on one line: mid-line markers with a colon.
    ("Step 1: 16 - 3 = 13 Step 2: 13 * 2 = 26 Step 3: The answer is 26.",
     ["Step 1: 16 - 3 = 13", "Step 2: 13 * 2 = 26", "Step 3: The answer is 26."]),
    ("Step 1. 16 - 3 = 13\nStep 2. 13 * 2 = 26", ["Step 1. 16 - 3 = 13", "Step 2. 13 * 2 = 26"]),
    ("step 1 - 16 - 3 = 13\nSTEP 2: 13 * 2 = 26", ["step 1 - 16 - 3 = 13", "STEP 2: 13 * 2 = 26"]),
    ("**Step 1:** 16 - 3 = 13\n**Step 2:** 13 * 2 = 26\n**Final Answer:** 26",
     ["**Step 1:** 16 - 3 = 13", "**Step 2:** 13 * 2 = 26", "**Final Answer:** 26"]),
    ("**Step 1**: 16 - 3 = 13\n**Step 2**: 13 * 2 = 26", ["**Step 1**: 16 - 3 = 13", "**Step 2**: 13 * 2 = 26"]),
    # Lines under a heading marker belong to its step; "#### 26" is the answer, "#### Step 1" is not.
    ("## Step 1\n16 - 3 = 13\n## Step 2\n13 * 2 = 26\n#### 26",
     ["## Step 1\n16 - 3 = 13", "## Step 2\n13 * 2 = 26", "#### 26"]),
    ("#### Step 1: 2 + 2 = 4\n#### Step 2: 4 * 3 = 12", ["#### Step 1: 2 + 2 = 4", "#### Step 2: 4 * 3 = 12"]),
    ("- Step 1: 16 - 3 = 13\n- Step 2: 13 * 2 = 26", ["- Step 1: 16 - 3 = 13", "- Step 2: 13 * 2 = 26"]),
    # A lowercase "step 2:" mid-sentence is a reference, not a marker.
    ("Step 1: use the result from step 2: 26 * 2 = 52\nStep 2: 52 - 2 = 50",
     ["Step 1: use the result from step 2: 26 * 2 = 52", "Step 2: 52 - 2 = 50"]),
    # "Step 1.5" and "Steps" are not markers; one marker alone is not a format (lines are used).
    ("Step 1.5 is odd.\nSteps 2 and 3 follow.\nDone with 3 steps.",
     ["Step 1.5 is odd.", "Steps 2 and 3 follow.", "Done with 3 steps."]),
    # A preamble too short to judge joins the first step.
    ("Sure!\nStep 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12", ["Sure!\nStep 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12"]),
    ("Let me solve this carefully.\nStep 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12",
     ["Let me solve this carefully.", "Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12"]),
]

NUMBERED = [
    ("1. 16 - 3 = 13\n2. 13 * 2 = 26\n3. The answer is 26.",
     ["1. 16 - 3 = 13", "2. 13 * 2 = 26", "3. The answer is 26."]),
    ("1) 16 - 3 = 13\n2) 13 * 2 = 26", ["1) 16 - 3 = 13", "2) 13 * 2 = 26"]),
    ("(1) 16 - 3 = 13\n(2) 13 * 2 = 26", ["(1) 16 - 3 = 13", "(2) 13 * 2 = 26"]),
    ("**1.** 16 - 3 = 13\n**2.** 13 * 2 = 26", ["**1.** 16 - 3 = 13", "**2.** 13 * 2 = 26"]),
    ("1. Find the cost:\n   3 * 2 = 6\n2. Add tax:\n   6 + 1 = 7",
     ["1. Find the cost:\n   3 * 2 = 6", "2. Add tax:\n   6 + 1 = 7"]),
    # Decimals at a line start are not list items.
    ("3.5 kg of flour\n2.5 kg of sugar", ["3.5 kg of flour", "2.5 kg of sugar"]),
]

DISCOURSE = [
    ("First, she buys 3 apples.\nThen she buys 4 more, 3 + 4 = 7.\nFinally, she eats 2, 7 - 2 = 5.\nThe answer is 5.",
     ["First, she buys 3 apples.", "Then she buys 4 more, 3 + 4 = 7.", "Finally, she eats 2, 7 - 2 = 5.",
      "The answer is 5."]),
    # Discourse markers add boundaries, they never remove the line breaks.
    ("First, she buys 3 apples.\nThey cost $2 each.\nNext, 3 * 2 = 6 dollars.",
     ["First, she buys 3 apples.", "They cost $2 each.", "Next, 3 * 2 = 6 dollars."]),
    # One paragraph: the sentences after a marker stay with it.
    ("She has 5 apples. First, she eats 2, 5 - 2 = 3. Then she buys 4. She now has 7. The answer is 7.",
     ["She has 5 apples.", "First, she eats 2, 5 - 2 = 3.", "Then she buys 4. She now has 7.", "The answer is 7."]),
    ("Firstly, 2 + 2 = 4. Secondly, 4 * 2 = 8. Lastly, 8 - 1 = 7.",
     ["Firstly, 2 + 2 = 4.", "Secondly, 4 * 2 = 8.", "Lastly, 8 - 1 = 7."]),
]

LINES_AND_SENTENCES = [
    ("She buys 3 apples.\n\n  Then 4 more.  \n3 + 4 = 7\n", ["She buys 3 apples.", "Then 4 more.", "3 + 4 = 7"]),
    ("a + b = 3\r\nc = 4\r\n", ["a + b = 3", "c = 4"]),
    # Decimals and abbreviations do not end sentences.
    ("She has 3.5 kg, i.e. a lot. She eats 1.5 kg. The answer is 2.",
     ["She has 3.5 kg, i.e. a lot.", "She eats 1.5 kg.", "The answer is 2."]),
    ("Mr. Smith paid $1.50 for 3 pens. Dr. Jones paid 2. So they paid 3.50 in total.",
     ["Mr. Smith paid $1.50 for 3 pens.", "Dr. Jones paid 2.", "So they paid 3.50 in total."]),
    ("Fruit, e.g. apples, costs 2. Each costs $0.75 each. Total 1.5 dollars.",
     ["Fruit, e.g. apples, costs 2.", "Each costs $0.75 each.", "Total 1.5 dollars."]),
    # A lowercase word after a period is no sentence start; "Yes." is too short and joins its neighbour.
    ("He walks 3 miles. he rests. Then he runs 2 miles! Is that 5? Yes.",
     ["He walks 3 miles. he rests.", "Then he runs 2 miles!", "Is that 5? Yes."]),
    ('He said "stop." Then 2 + 2 = 4.', ['He said "stop."', "Then 2 + 2 = 4."]),
    ("Wait... Let me compute 2 + 2 = 4.", ["Wait... Let me compute 2 + 2 = 4."]),
    ("", []),
    (" \n\t \n", []),
    ("42", ["42"]),
]

FINAL_ANSWER = [
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12. The answer is 12.",
     ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12.", "The answer is 12."]),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12. So the answer is 12.",
     ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12.", "So the answer is 12."]),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12\nThe final answer is $12.\nThe answer is 12.",
     ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12", "The final answer is $12.", "The answer is 12."]),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12 #### 12", ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12 #### 12"]),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12\n#### 12", ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12", "#### 12"]),
    # A heading that states no answer takes the next non-blank line.
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12\n\n**Final Answer**\n\n\\boxed{12}",
     ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12", "**Final Answer**\n\n\\boxed{12}"]),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12\nThe answer is:\n12",
     ["Step 1: 2 + 2 = 4", "Step 2: 4 * 3 = 12", "The answer is:\n12"]),
    ("2 + 2 = 4\nAnswer: 4", ["2 + 2 = 4", "Answer: 4"]),
    ("2 + 2 = 4\n**Answer:** 4", ["2 + 2 = 4", "**Answer:** 4"]),
    # "the final answer" inside a sentence does not announce one.
    ("Step 1: To find the final answer, add 2 + 2 = 4.\nStep 2: 4 * 3 = 12",
     ["Step 1: To find the final answer, add 2 + 2 = 4.", "Step 2: 4 * 3 = 12"]),
    # A fragment after the answer never joins the answer step.
    ("2 + 2 = 4\nThe answer is 4.\nDone.", ["2 + 2 = 4", "The answer is 4.", "Done."]),
]

MERGES = [
    ("Step 1: 2 + 2 = 4\nStep 2:\nStep 3: 4 * 3 = 12", ["Step 1: 2 + 2 = 4\nStep 2:", "Step 3: 4 * 3 = 12"]),
    ("Step 1: ok\nStep 2: 4 * 3 = 12", ["Step 1: ok\nStep 2: 4 * 3 = 12"]),
    ("Step 1: Let us see.\nStep 2: Good.\nStep 3: 4 * 3 = 12",
     ["Step 1: Let us see.\nStep 2: Good.", "Step 3: 4 * 3 = 12"]),
    # Short steps with a digit state something checkable and stay.
    ("Step 1: x=26\nStep 2: y=2", ["Step 1: x=26", "Step 2: y=2"]),
]


@pytest.mark.parametrize(("text", "expected"),
                         STEP_MARKERS + NUMBERED + DISCOURSE + LINES_AND_SENTENCES + FINAL_ANSWER + MERGES)
def test_segment(text: str, expected: list[str]) -> None:
    steps = segment(text)
    assert [s.text for s in steps] == expected
    assert [s.index for s in steps] == list(range(len(expected)))
    assert all(text[s.start:s.end] == s.text for s in steps)


@pytest.mark.parametrize(("cases", "family"), [
    (STEP_MARKERS[:10], "step"), (NUMBERED[:5], "numbered"), (DISCOURSE, "discourse"),
    (LINES_AND_SENTENCES[:2], "lines"), (LINES_AND_SENTENCES[2:8], "sentences"), (LINES_AND_SENTENCES[8:10], "empty"),
])
def test_marker_family(cases: list[tuple[str, list[str]]], family: str) -> None:
    assert [marker_family(text) for text, _ in cases] == [family] * len(cases)


@pytest.mark.parametrize(("text", "options", "expected"), [
    ("The cat sat on the mat and then it went to sleep for a long while. " * 3, SegmentOptions(max_chars=80),
     ["The cat sat on the mat and then it went to sleep for a long while."] * 3),
    # No sentence boundary: split at the last whitespace that fits.
    ("word " * 12, SegmentOptions(max_chars=20), ["word word word word", "word word word word", "word word word word"]),
    # One huge token: hard cuts at the limit.
    ("a" * 50, SegmentOptions(max_chars=20), ["a" * 20, "a" * 20, "a" * 10]),
    # A long step splits at its own line breaks first.
    ("Step 1: 2 + 2 = 4\nand 4 + 4 = 8\nStep 2: 8 * 2 = 16", SegmentOptions(max_chars=20),
     ["Step 1: 2 + 2 = 4", "and 4 + 4 = 8", "Step 2: 8 * 2 = 16"]),
    # A long final-answer line is split too, its pieces still capped.
    ("2 + 2 = 4\nThe answer is 4 because two and two make four.", SegmentOptions(max_chars=20),
     ["2 + 2 = 4", "The answer is 4", "because two and two", "make four."]),
    # min_chars=0 merges nothing; a large min_chars merges every digit-free step it can.
    ("Step 1: Good.\nStep 2: Fine.", SegmentOptions(min_chars=0), ["Step 1: Good.", "Step 2: Fine."]),
    ("Step 1: Good.\nStep 2: Fine.\nStep 3: 2 + 2 = 4", SegmentOptions(min_chars=100),
     ["Step 1: Good.\nStep 2: Fine.\nStep 3: 2 + 2 = 4"]),
    # A merge never makes a step longer than max_chars.
    ("Step 1: Good.\nStep 2: Fine.", SegmentOptions(min_chars=100, max_chars=15), ["Step 1: Good.", "Step 2: Fine."]),
])
def test_segment_options(text: str, options: SegmentOptions, expected: list[str]) -> None:
    steps = segment(text, options)
    assert [s.text for s in steps] == expected
    assert all(len(s.text) <= options.max_chars for s in steps)


@pytest.mark.parametrize("kwargs", [{"min_chars": -1}, {"max_chars": 0}])
def test_segment_options_reject_bad_bounds(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="min_chars"):
        SegmentOptions(**kwargs)


@pytest.mark.parametrize(("step", "body"), [
    ("Step 1: 16 - 3 = 13", "16 - 3 = 13"),
    ("**Step 2:** 13 * 2 = 26", "13 * 2 = 26"),
    ("**Step 2**: 13 * 2 = 26", "13 * 2 = 26"),
    ("## Step 3\n13 * 2 = 26", "13 * 2 = 26"),
    ("- Step 4: done, 4", "done, 4"),
    ("Step 5 - add 2 + 2 = 4", "add 2 + 2 = 4"),
    ("Step 6: -5 + 8 = 3", "-5 + 8 = 3"),
    ("Step 7 \u2014 7 * 1 = 7", "7 * 1 = 7"),
    ("1. 2 + 2 = 4", "2 + 2 = 4"),
    ("(2) 2 + 2 = 4", "2 + 2 = 4"),
    ("3.5 kg of flour", "3.5 kg of flour"),
    ("First, 3 + 4 = 7", "First, 3 + 4 = 7"),
    ("Step 1:", ""),
    ("The answer is 4.", "The answer is 4."),
])
def test_step_body(step: str, body: str) -> None:
    assert step_body(step) == body


@pytest.mark.parametrize(("step", "marker"), [
    ("Step 2: 13 * 2 = 26", "Step 2: "),
    ("Step 2. Time: 3 hours", "Step 2. "),  # the marker ends at "2.", not at the first colon
    ("**Step 2:** 13 * 2 = 26", "**Step 2:** "),
    ("## Step 3\n13 * 2 = 26", "## Step 3\n"),
    ("- Step 4: done, 4", "- Step 4: "),
    ("Step 6: -5 + 8 = 3", "Step 6: "),
    ("1. 2 + 2 = 4", "1. "),
    ("(2) 2 + 2 = 4", "(2) "),
    ("  Step 1:  x = 4  ", "  Step 1:  "),
    ("The answer is 26.", ""),
    ("Total: 3 hours", ""),
    ("  First, 3 + 4 = 7", "  "),
    ("Step 1:", "Step 1:"),
])
def test_step_parts_marker_as_written_then_the_body(step: str, marker: str) -> None:
    """The marker as written (with its blanks) and the body step_body reads: together, the step as written."""
    assert step_parts(step) == (marker, step_body(step))
    assert marker + step_body(step) == step.rstrip()


@pytest.mark.parametrize("bodies", [
    ["16 - 3 = 13", "13 * 2 = 26", "The answer is 26."],
    ["She has 3.5 kg, i.e. a lot.", "-5 + 8 = 3", "x=26", "The answer is 3."],
    ["Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "She makes 9 * 2 = $18 every day at the market."],
])
def test_format_steps_round_trip(bodies: list[str]) -> None:
    formatted = format_steps(bodies)
    assert formatted.splitlines()[0].startswith("Step 1: ")
    assert [step_body(s.text) for s in segment(formatted)] == bodies


def test_format_steps_keeps_each_step_on_one_line() -> None:
    assert format_steps(["a = 1\n\n  b = 2", "  c   = 3  "]) == "Step 1: a = 1 b = 2\nStep 2: c   = 3"


@pytest.mark.parametrize(("text", "final"), [
    ("The answer is 18.", True), ("So the final answer is 18", True), ("The correct answer is 18.", True),
    ("#### 18", True), ("####18", True), ("#### $1,000", True), ("\\boxed{18}", True),
    ("Final answer: 18", True), ("**Final Answer**", True), ("Final Answer = 18", True),
    ("Answer: 18", True), ("**Answer**: 18", True), ("> Answer: 18", True),
    ("x = 18", False), ("#### Step 1: 2 + 2 = 4", False), ("To find the final answer, add them.", False),
    ("The answers are 3 and 4.", False), ("Her answer: yes", False), ("", False),
])
def test_is_final_answer(text: str, final: bool) -> None:
    assert is_final_answer(text) is final


@pytest.mark.parametrize(("text", "index"), [
    ("Step 1: 2 + 2 = 4\nStep 2: The answer is 4.\nThe answer is 4.", 1),
    ("Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12", None),
    ("The answer is 4.", 0),
])
def test_final_answer_index(text: str, index: int | None) -> None:
    assert final_answer_index(segment(text)) == index


@pytest.mark.parametrize(("answer", "steps"), [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
     "in April and May.\n#### 72",
     ["Natalia sold 48/2 = 24 clips in May.", "Natalia sold 48+24 = 72 clips altogether in April and May.",
      "The answer is 72."]),
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the "
     "farmer\u2019s market.\n#### 18",
     ["Janet sells 16 - 3 - 4 = 9 duck eggs a day.", "She makes 9 * 2 = $18 every day at the farmer\u2019s market.",
      "The answer is 18."]),
    # Blank lines dropped, thousands separators and negatives kept.
    ("Total is 16*10=<<16*10=160>>160 square feet\n\nThere are 3+3=<<3+3=6>>6 rooms\n#### 1,000",
     ["Total is 16*10=160 square feet", "There are 3+3=6 rooms", "The answer is 1,000."]),
    ("He lost 5-8=<<5-8=-3>>-3 dollars.\n####  -3 ", ["He lost 5-8=-3 dollars.", "The answer is -3."]),
    # A line broken off mid-sentence joins the line before it.
    ("The total is 3*3 = <<3*3=9>>9 answers per\nhour.\n#### 9", ["The total is 3*3 = 9 answers per hour.",
                                                                   "The answer is 9."]),
    ("no annotations here, 2 + 2 = 4\n#### 4", ["no annotations here, 2 + 2 = 4", "The answer is 4."]),
])
def test_gold_to_steps(answer: str, steps: list[str]) -> None:
    assert gold_to_steps(answer) == steps


def _gold_records(sample: int = 1500, seed: int = 0) -> list[dict]:
    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip(f"GSM8K not found in {GSM8K_DIR} (set PRESRM_GSM8K_DIR to run this test)")
    records = read_jsonl(GSM8K_DIR / "train.jsonl") + read_jsonl(GSM8K_DIR / "test.jsonl")
    return random.Random(seed).sample(records, min(sample, len(records)))


def test_gold_to_steps_on_real_gsm8k() -> None:
    """Every sampled gold solution converts: no empty step, no annotation left, the answer last."""
    for rec in _gold_records():
        gold = rec["answer"].rsplit("####", 1)[1].strip()
        steps = gold_to_steps(rec["answer"])
        assert len(steps) >= 1, rec["answer"]
        assert all(step.strip() == step and step for step in steps), steps
        assert not any(re.search(r"<<|>>|####", step) for step in steps), steps
        assert steps[-1] == f"The answer is {gold}."
        assert is_final_answer(steps[-1])
        assert extract_answer(format_steps(steps)) == gold


def test_segment_agrees_with_gold_lines_on_real_gsm8k() -> None:
    """On raw gold text, segment() finds the lines gold_to_steps() does, with the #### line last."""
    records = _gold_records()
    same = 0
    for rec in records:
        steps = segment(rec["answer"])
        assert steps[-1].text == "#### " + rec["answer"].rsplit("####", 1)[1].strip(), rec["answer"]
        assert final_answer_index(steps) is not None
        same += len(steps) == len(gold_to_steps(rec["answer"]))
    assert same >= 0.99 * len(records)
