"""Property-based tests of presrm.steps: on any text, the steps' spans rebuild it exactly, no step
is empty or longer than ``max_chars``, and hostile inputs of a megabyte finish (no quadratic pass)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from presrm.schema import Step
from presrm.steps import SegmentOptions, format_steps, gold_to_steps, segment, step_body, step_parts

# Pieces of real solutions, markup and awkward whitespace, glued in any order with arbitrary text.
TOKENS = [
    "Step 1:", "Step 2.", "**Step 3:**", "**Step 4**:", "## Step 5", "- Step 6:", "step 7:", "STEP 8 -", "Step 1.5",
    "1.", "2)", "(3)", "**4.**", "First,", "Then", "Next,", "Finally,", "after that", "The answer is",
    "So the answer is", "#### 12", "####", "\\boxed{7}", "**Final Answer**", "Final answer:", "Answer:",
    "3.5", "$1.50", "e.g.", "Mr.", "i.e.", "16 - 3 = 13", "x=26", "<<4*6=24>>24", "ok", "Good.", "word",
    "She has 5 apples.", ".", "!", "?", "...", ":", "-", "**", "__", "#",
    "\n", "\n\n", " ", "  ", "\t", "\r\n", "\u2028", "\xa0", "\u3000", "\x0b",
]
chunks = st.one_of(st.sampled_from(TOKENS), st.text(max_size=12))
texts = st.lists(chunks, max_size=80).map("".join)
options = st.builds(SegmentOptions, min_chars=st.integers(0, 40), max_chars=st.integers(1, 300))

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A quadratic pass over a megabyte takes hours; a linear one takes about a second on a busy CPU.
HOSTILE = settings(max_examples=3, deadline=timedelta(seconds=60),
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_steps(text: str, steps: list[Step], opts: SegmentOptions) -> None:
    """The invariants every segmentation keeps."""
    assert [s.index for s in steps] == list(range(len(steps)))
    assert bool(steps) == bool(text.strip())
    previous_end = 0
    for step in steps:
        assert text[step.start:step.end] == step.text
        assert step.text and step.text == step.text.strip()
        assert len(step.text) <= opts.max_chars
        # Ordered, non-overlapping, and only whitespace left between steps: with the spans,
        # every non-whitespace character of the text is covered exactly once.
        assert previous_end <= step.start
        gap = text[previous_end:step.start]
        assert not gap or gap.isspace()
        previous_end = step.end
        body = step_body(step.text)
        assert body == body.strip() and body in step.text
        marker, same = step_parts(step.text)  # the step as written: its marker, then its body
        assert same == body and marker + body == step.text
    tail = text[previous_end:]
    assert not tail or tail.isspace()


@FAST
@given(texts, options)
@example("Step 1: 2 + 2 = 4\nStep 2:\nThe answer is 4.", SegmentOptions(min_chars=8, max_chars=5))
@example("**Final Answer**\n\n\n\\boxed{4}", SegmentOptions(min_chars=40, max_chars=1))
@example("Sure!\u2028Step 1: a\u3000\nStep 2: b", SegmentOptions())
def test_spans_rebuild_the_text(text: str, opts: SegmentOptions) -> None:
    check_steps(text, segment(text, opts), opts)


@FAST
@given(st.text(max_size=300), options)
def test_spans_rebuild_any_unicode_text(text: str, opts: SegmentOptions) -> None:
    check_steps(text, segment(text, opts), opts)


@settings(FAST, max_examples=100)
@given(st.lists(st.lists(chunks, max_size=10).map("".join), max_size=8))
def test_format_steps_writes_one_line_per_step(bodies: list[str]) -> None:
    lines = format_steps(bodies).split("\n") if bodies else []
    assert len(lines) == len(bodies)
    assert all(line.startswith(f"Step {i}: ") for i, line in enumerate(lines, 1))


@FAST
@given(st.lists(st.sampled_from(["she has ", "4", " = ", "2 + 2", ", ", "x", "apples"]), min_size=1,
                max_size=12).map("".join).filter(lambda b: len(b.strip()) >= 8), st.integers(1, 6))
def test_format_steps_round_trips_through_segment(body: str, n: int) -> None:
    """Step bodies without markers or sentence ends of their own come back from segment() as written.

    (A single ``Step 1:`` line of several sentences is split into sentences: one marker is no format.)
    """
    bodies = [f"{body.strip()} {i}" for i in range(n)]
    steps = segment(format_steps(bodies))
    assert [step_body(s.text) for s in steps] == bodies


@FAST
@given(texts)
def test_gold_to_steps_never_returns_an_empty_or_multiline_step(answer: str) -> None:
    steps = gold_to_steps(answer)
    assert all(step and step == step.strip() and "\n" not in step for step in steps)
    assert len(steps) <= sum(1 for line in answer.split("\n") if line.strip())


gold_lines = st.builds(
    lambda who, a, b: f"{who} has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.",
    st.sampled_from(["She", "Tom", "The farmer"]), st.integers(0, 999), st.integers(0, 999),
)


@settings(FAST, max_examples=100)
@given(st.lists(gold_lines, min_size=1, max_size=10), st.integers(-10**6, 10**6))
def test_gold_to_steps_on_gsm8k_shaped_text(lines: list[str], answer: int) -> None:
    steps = gold_to_steps("\n".join([*lines, f"#### {answer}"]))
    assert len(steps) == len(lines) + 1
    assert steps[-1] == f"The answer is {answer}."
    assert not any("<<" in step or ">>" in step for step in steps)


HOSTILE_UNITS = ["\n", " ", " \t\n\r\u2028\xa0", ".", "x", "ab ", "?!", "#", "*", "<<", "Step 1:" + " " * 999,
                 "The answer is" + "\n" * 999, "\u3000\n"]


@HOSTILE
@given(st.sampled_from(HOSTILE_UNITS))
@example("\n")
@example(".")
def test_megabyte_inputs_finish(unit: str) -> None:
    text = unit * (1_000_000 // len(unit)) + "Step 2: the end"
    opts = SegmentOptions()
    check_steps(text, segment(text, opts), opts)


@HOSTILE
@given(st.lists(chunks, min_size=1, max_size=20).map("".join).filter(str.strip))
def test_repeated_chunks_finish(unit: str) -> None:
    """Any short chunk repeated to 100 kB: many steps, still linear."""
    text = unit * (100_000 // len(unit) + 1)
    opts = SegmentOptions()
    check_steps(text, segment(text, opts), opts)
